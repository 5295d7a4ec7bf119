"""ACDC: on a hand-wired model it keeps the edges that matter and prunes the rest; its decisions are the sequential
ones whatever the batching; its threshold is a checked setting."""

from __future__ import annotations

import pytest
import torch
from tests_analysis_support import VOCAB, make_batch, make_model

from glassformer.analysis import AnalysisConfig
from glassformer.analysis.component.ablation import Patcher
from glassformer.analysis.component.acdc import ACDCAttribution, acdc
from glassformer.analysis.component.attribution import attribute
from glassformer.analysis.component.graph import ComponentGraph


def _planted():
    """1-layer attention-only model, 2 heads; head 1 writes nothing (its W_O columns are zero), head 0 matters."""
    model = make_model(n_layers=1, attn_only=True, init_std=0.3)
    d_head = model.cfg.head_dim
    with torch.no_grad():
        model.blocks[0].attn.W_O.weight[:, d_head:2 * d_head] = 0.0
    return model, ComponentGraph.from_config(model.cfg)


NEEDED = {"input->logits", "a0.h0->logits", "input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>"}
IRRELEVANT = {"a0.h1->logits", "input->a0.h1<q>", "input->a0.h1<k>", "input->a0.h1<v>"}


def _kl(model, graph, batch, ablation, keep: torch.Tensor) -> torch.Tensor:
    """The test's own KL(full || circuit) at the last position, mean over pairs, for (K, n_edges) circuits."""
    p = Patcher(model, graph, batch, ablation)
    full = p.run(graph.weights(torch.ones(1, graph.n_edges)))[0].double().log_softmax(-1)
    out = p.run(graph.weights(keep.float())).double().log_softmax(-1)
    return (full.exp() * (full - out)).sum(-1).mean(-1)


def _kept_names(graph, att) -> set[str]:
    names = graph.edge_names()
    return {names[e] for e in att.kept.nonzero().flatten().tolist()}


@pytest.mark.parametrize("threshold", [0.0, 1e-6])
def test_on_a_planted_model_acdc_keeps_the_needed_edges_and_prunes_the_rest(threshold):
    model, graph = _planted()
    batch = make_batch(B=4, T=7)
    assert set(graph.edge_names()) == NEEDED | IRRELEVANT
    # Each needed edge matters by itself, measured here without ACDC.
    alone = torch.ones(len(NEEDED), graph.n_edges)
    for i, name in enumerate(sorted(NEEDED)):
        alone[i, graph.edge_index(name)] = 0
    assert bool((_kl(model, graph, batch, "zero", alone) > 1e-4).all())
    att = acdc(model, graph, batch, "zero", acdc_threshold=threshold)
    assert isinstance(att, ACDCAttribution) and att.method == "acdc"
    assert _kept_names(graph, att) == NEEDED
    assert att.n_kept == len(NEEDED)


def test_a_huge_threshold_prunes_everything():
    model, graph = _planted()
    att = acdc(model, graph, make_batch(B=4, T=7), "zero", acdc_threshold=1e9)
    assert att.n_kept == 0


@pytest.mark.parametrize(("ablation", "threshold"), [("zero", 5e-4), ("zero", 2e-3), ("corrupt", 5e-3)])
def test_kept_edges_rank_above_removed_ones_and_the_circuit_is_within_budget(ablation, threshold):
    torch.manual_seed(0)
    model = make_model(init_std=0.2)
    graph = ComponentGraph.from_config(model.cfg)
    batch = make_batch(B=4, T=7)
    att = acdc(model, graph, batch, ablation, acdc_threshold=threshold)
    kept = att.kept
    assert 0 < att.n_kept < graph.n_edges
    assert float(att.scores[kept].min()) > float(att.scores[~kept].max())
    assert float(att.scores[~kept].max()) <= threshold
    # Every removal raised the divergence by at most the threshold, from 0 for the full graph.
    removed = graph.n_edges - att.n_kept
    assert float(_kl(model, graph, batch, ablation, kept[None])[0]) <= removed * threshold + 1e-6


def _reference_acdc(model, graph, batch, ablation, threshold) -> torch.Tensor:
    """One forward per edge, in ACDC's order written out here: logits, then layers backwards (MLP, then heads
    backwards, q k v), each reader's edges latest writer first."""
    names = [r.name for r in graph.readers]
    readers = [names.index("logits")]
    for layer in reversed(range(graph.n_layers)):
        readers.append(names.index(f"m{layer}"))
        for head in reversed(range(graph.n_heads)):
            readers += [names.index(f"a{layer}.h{head}<{c}>") for c in "qkv"]
    keep = torch.ones(graph.n_edges)
    current = float(_kl(model, graph, batch, ablation, keep[None])[0])
    for r in readers:
        for e in sorted((graph.edge_reader == r).nonzero().flatten().tolist(), reverse=True):
            trial = keep.clone()
            trial[e] = 0
            value = float(_kl(model, graph, batch, ablation, trial[None])[0])
            if value - current <= threshold:
                keep, current = trial, value
    return keep.bool()


@pytest.mark.parametrize("max_candidates", [1, 4, 32])
def test_batched_candidates_give_the_sequential_decisions(max_candidates):
    model = make_model(init_std=0.2)
    graph = ComponentGraph.from_config(model.cfg)
    batch = make_batch(B=3, T=6, seed=2)
    expected = _reference_acdc(model, graph, batch, "zero", 1e-3)
    att = acdc(model, graph, batch, "zero", acdc_threshold=1e-3, max_candidates=max_candidates)
    assert torch.equal(att.kept, expected)
    assert 0 < int(expected.sum()) < graph.n_edges


@pytest.mark.parametrize("bad", [-0.1, -1, float("nan"), float("inf"), "0.1", True])
def test_a_negative_or_non_numeric_threshold_is_refused(bad):
    model, graph = _planted()
    batch = make_batch(B=2, T=5)
    with pytest.raises(ValueError, match=r"acdc_threshold=.* is not allowed: expected a finite number >= 0"):
        acdc(model, graph, batch, "zero", acdc_threshold=bad)
    with pytest.raises(ValueError, match=r"acdc_threshold=.* is not allowed"):
        AnalysisConfig(method="acdc", acdc_threshold=bad)


def test_acdc_is_a_registered_component_method():
    model, graph = _planted()
    att = attribute("acdc", model, graph, make_batch(B=2, T=5), "zero", acdc_threshold=0.0)
    assert att.effects.shape == (graph.n_edges,) and att.forwards >= 2
    assert AnalysisConfig(method="acdc").acdc_threshold >= 0
    assert VOCAB == model.cfg.d_vocab


def test_analyze_hands_the_configured_threshold_to_acdc(tmp_path, small_model_dir, monkeypatch):
    import shutil

    from glassformer.analysis import analyze
    from glassformer.analysis.component.attribution import METHODS, Method

    seen, results = [], []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("acdc_threshold"))
        results.append(acdc(*args, **kwargs))
        return results[-1]

    monkeypatch.setitem(METHODS, "acdc", Method("acdc", spy, "spy"))
    path = tmp_path / "model"
    shutil.copytree(small_model_dir, path)
    # A random-init model fails the capability gate: size_gated_out sizes its task anyway, so ACDC runs.
    out = analyze(path, tasks=["induction"], method="acdc", acdc_threshold=0.25, ablation="zero", n_pairs=4,
                  controls=False, sparse_layers=False, progress=False, size_gated_out=True)
    assert seen == [0.25, 0.25]  # the model under zero ablation, then under the second ablation (corrupt)
    circuit = out["tasks"]["induction"]["circuits"][0]
    assert circuit["method"] == "acdc" and circuit["N_0.8"]["model"]["edges"] is not None
    # The task's attribution record says how many edges ACDC kept, at which threshold, under each ablation.
    record = out["tasks"]["induction"]["attribution"]
    assert record["acdc"]["threshold"] == 0.25
    assert record["acdc"]["n_kept"] == {"model": int(results[0].kept.sum())}
    assert 0 <= record["acdc"]["n_kept_pruned"]["model"] <= record["acdc"]["n_kept"]["model"]
    assert record["second_ablation"]["acdc"]["n_kept"] == {"model": int(results[1].kept.sum())}
    assert record["completeness"]["model"]["relative_error"] is None  # KL effects have no completeness identity


def test_the_default_method_recovers_the_planted_circuit_at_component_level():
    """The planted model read by the default analysis (method auto: exact patching on this 9-edge graph): every
    edge into or out of the silent head has effect exactly 0 and lies outside every circuit; each needed edge
    has an effect."""
    from glassformer.analysis.component.run import analyze_task

    model, graph = _planted()
    batch = make_batch(B=8, T=7)
    config = AnalysisConfig(ablation="zero", controls=False, size_gated_out=True)
    assert config.method == "auto"
    entry = analyze_task("planted", "", batch, graph, {"model": model}, {"model": None}, config)
    assert entry["attribution"]["method"] == "exact"
    effects = dict(entry["circuits"][0]["top_edges"]["model"])
    assert set(effects) == NEEDED | IRRELEVANT
    assert all(effects[name] == 0.0 for name in IRRELEVANT)
    assert all(abs(effects[name]) > 1e-6 for name in NEEDED)
    for circuit in entry["circuits"]:
        assert set(circuit["circuit_nodes"]) <= {"input", "a0.h0", "logits"}, circuit["selection"]


def test_the_task_record_says_how_many_edges_acdc_kept_and_at_which_threshold():
    """On the planted model ACDC at threshold 0 keeps exactly the 5 needed edges (see above), all on paths from
    the input to the logits."""
    from glassformer.analysis.component.run import analyze_task

    model, graph = _planted()
    config = AnalysisConfig(method="acdc", acdc_threshold=0.0, ablation="zero", controls=False,
                            size_gated_out=True, second_ablation=None)
    entry = analyze_task("planted", "", make_batch(B=8, T=7), graph, {"model": model}, {"model": None}, config)
    assert entry["attribution"]["ranked_on_pairs"] == 4
    assert entry["attribution"]["acdc"] == {"threshold": 0.0, "n_kept": {"model": len(NEEDED)},
                                            "n_kept_pruned": {"model": len(NEEDED)}}


def test_above_the_exact_budget_the_default_still_recovers_the_planted_circuit():
    """With a budget below the graph's 9 edges, auto becomes eap-ig-gl+exact: the 5 edges measured exactly rank
    first, so the needed edges (each with a measured effect) come before every edge of the silent head."""
    from glassformer.analysis.component.run import analyze_task

    model, graph = _planted()
    config = AnalysisConfig(ablation="zero", controls=False, size_gated_out=True, exact_max_edges=8,
                            rescore_edges=5, second_ablation=None)
    entry = analyze_task("planted", "", make_batch(B=8, T=7), graph, {"model": model}, {"model": None}, config)
    assert entry["attribution"]["method"] == "eap-ig-gl+exact"
    assert entry["attribution"]["details"]["model"]["rescored_edges"] == 5
    names = [name for name, _ in entry["circuits"][0]["top_edges"]["model"]]
    assert set(names[:len(NEEDED)]) == NEEDED
    for circuit in entry["circuits"]:
        assert set(circuit["circuit_nodes"]) <= {"input", "a0.h0", "logits"}, circuit["selection"]
