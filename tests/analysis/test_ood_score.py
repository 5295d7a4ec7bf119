"""Scoring in-distribution circuits on shifted pairs: component level (``score_shifted``) and node level
(``score_shifted_nodes``), on models whose answers are known.

- A random small model on real shifted pairs: the whole graph scores f = 1 and the empty circuit f = 0; the model
  cannot do the task, so the gate fails and f is withheld (None) while f_raw keeps the measurement. At node level
  the whole mask's loss is the model's own loss from a plain forward, its KL 0, and a random node mask's loss and
  KL equal those of a run ablated by hooks written here.
- A planted model that does a task through one known path: it passes the gate, and f (component) or the loss
  (node) of circuits with and without that path are what the construction says.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from test_masks_planted import planted_batch as masks_planted_batch
from tests_analysis_support import small_config

from glassformer.analysis.component.ablation import writer_means
from glassformer.analysis.component.circuits import circuit_mask
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.component.ood import circuit_ood, score_shifted
from glassformer.analysis.node.graph import NodeGraph, node_means
from glassformer.analysis.node.ood import node_circuit_ood, score_shifted_nodes
from glassformer.analysis.tasks import TASKS, TaskBatch, logit_diff
from glassformer.archs import ModelConfig, build_model

MAX_LEN = 64


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return build_model(small_config(n_ctx=MAX_LEN)).eval()


@pytest.fixture(scope="module")
def corpus():
    return torch.randint(0, 4096, (8, MAX_LEN), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module", params=["kwarg_recall", "induction"])
def shifted(request, stdlib_bpe):
    return TASKS[request.param].shifted().generate(stdlib_bpe, 16, seed=0, max_len=MAX_LEN)


@pytest.mark.parametrize("ablation", ["mean", "position-mean", "zero"])
def test_whole_graph_scores_one_and_empty_zero_on_shifted_pairs(random_model, corpus, shifted, ablation):
    graph = ComponentGraph.from_config(random_model.cfg)
    means = None if ablation == "zero" else writer_means(random_model, graph, corpus,
                                                         per_position=ablation == "position-mean")
    E = graph.n_edges
    r = score_shifted(random_model, graph, shifted, ablation, means,
                      {"all": torch.ones(E, dtype=torch.bool), "none": torch.zeros(E, dtype=torch.bool)})
    assert r["task"].endswith("@shifted") and r["n_pairs"] == 16 and r["ablation"] == ablation
    assert r["circuits"]["all"]["f_raw"] == pytest.approx(1.0, abs=1e-5)
    assert r["circuits"]["none"]["f_raw"] == pytest.approx(0.0, abs=1e-5)
    assert r["circuits"]["all"]["edges"] == E and r["circuits"]["none"]["edges"] == 0
    by_forward = logit_diff(random_model(shifted.clean), shifted).mean().item()  # no patching involved
    assert r["m_model"] == pytest.approx(by_forward, abs=1e-5)
    assert r["circuits"]["all"]["m"] == pytest.approx(by_forward, abs=1e-5)
    assert r["gate"]["logit_diff_empty"] == pytest.approx(r["m_empty"], abs=1e-6)  # the gate read the empty row
    # An untrained model cannot do the task: the gate fails there, and f is withheld.
    assert r["capable"] is False and r["gate"]["passed"] is False and r["gate"]["reasons"]
    assert r["circuits"]["all"]["f"] is None and r["circuits"]["none"]["f"] is None
    assert r["capability"]["accuracy"] == pytest.approx((logit_diff(random_model(shifted.clean), shifted) > 0)
                                                        .float().mean().item())


def test_position_means_shorter_than_the_shifted_prompts_are_refused(random_model, corpus, shifted):
    graph = ComponentGraph.from_config(random_model.cfg)
    T = shifted.clean.shape[1]
    short = writer_means(random_model, graph, corpus[:, : T - 1], per_position=True)
    with pytest.raises(ValueError, match=f"position-mean ablation on the shifted pairs of '{shifted.task}' needs "
                                         f"writer means for at least {T} positions"):
        score_shifted(random_model, graph, shifted, "position-mean", short, {})
    flat = writer_means(random_model, graph, corpus)  # one mean per writer, no positions
    with pytest.raises(ValueError, match=r"got \(\d+, 32\)"):
        score_shifted(random_model, graph, shifted, "position-mean", flat, {})


def test_bad_circuits_and_prompts_beyond_the_context_are_refused(random_model, shifted):
    graph = ComponentGraph.from_config(random_model.cfg)
    with pytest.raises(ValueError, match=rf"circuit 'half' is \({graph.n_edges - 1},\) of torch.bool: expected a "
                                         rf"boolean mask over the graph's {graph.n_edges} edges"):
        score_shifted(random_model, graph, shifted, "zero", None,
                      {"half": torch.ones(graph.n_edges - 1, dtype=torch.bool)})
    with pytest.raises(ValueError, match="circuit 'float'"):
        score_shifted(random_model, graph, shifted, "zero", None, {"float": torch.ones(graph.n_edges)})
    small = build_model(small_config(n_ctx=16)).eval()
    with pytest.raises(ValueError, match=r"beyond the model's context n_ctx=16: generate them with max_len=16"):
        score_shifted(small, ComponentGraph.from_config(small.cfg), shifted, "zero", None, {})


# --- A planted model: the answer is the last token's, through one known path ---------------------------------------
V, D, T = 8, 8, 6
A, B, X, Y = 0, 1, 2, 3


def planted_batch(n: int, seed: int, name: str = "planted@shifted") -> TaskBatch:
    """A prompt ending in A calls for X, one ending in B for Y; every other token is filler (4..7): the pairs
    of test_masks_planted.py under another name."""
    return replace(masks_planted_batch(n, seed), task=name)


def planted_model(attn_only: bool):
    """RMSNorm (the sign of a channel survives it); channel 0 holds +2 for A, -2 for B; attention writes nothing.
    ``attn_only``: the unembedding reads channel 0 (the direct path input -> logits carries the task). Otherwise
    MLP 0's neuron 0 reads +channel 0 and neuron 1 -channel 0 (both write channel 1), every other neuron and MLP 1
    write nothing, and the unembedding reads channel 1 (the task goes through those two neurons)."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_vocab=V, n_ctx=T, d_model=D, n_layers=2, n_heads=2, d_mlp=8, norm="rmsnorm",
                      attn_only=attn_only, kernels="reference")
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.embed.weight.zero_()
        model.embed.weight[:, 2:] = torch.randn(V, D - 2, generator=torch.Generator().manual_seed(0))
        model.embed.weight[A, 0], model.embed.weight[B, 0] = 2.0, -2.0
        model.pos_embed.weight.zero_()
        model.unembed.weight.zero_()
        for block in model.blocks:
            block.attn.W_O.weight.zero_()
            block.attn.W_O.bias.zero_()
            if not attn_only:
                for p in (block.mlp.W_in.weight, block.mlp.W_in.bias, block.mlp.W_out.weight, block.mlp.W_out.bias):
                    p.zero_()
        read = 0 if attn_only else 1
        if not attn_only:
            mlp = model.blocks[0].mlp
            mlp.W_in.weight[0, 0], mlp.W_in.weight[1, 0] = 3.0, -3.0
            mlp.W_out.weight[1, 0], mlp.W_out.weight[1, 1] = 1.0, -1.0
        model.unembed.weight[X, read], model.unembed.weight[Y, read] = 2.0, -2.0
    return model


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_on_a_planted_model_f_is_one_exactly_with_the_direct_path(ablation):
    model = planted_model(attn_only=True)
    graph = ComponentGraph.from_config(model.cfg)
    corpus = torch.randint(0, V, (32, T), generator=torch.Generator().manual_seed(2))
    means = writer_means(model, graph, corpus) if ablation == "mean" else None
    names = graph.edge_names()
    direct = torch.tensor([n == "input->logits" for n in names])
    assert direct.sum() == 1, [n for n in names if n.startswith("input->")]
    batch = planted_batch(16, 0)
    r = score_shifted(model, graph, batch, ablation, means, {"direct": direct, "all_but_direct": ~direct})
    assert r["capable"] is True and r["gate"]["accuracy"] == 1.0
    assert r["gate"]["logit_diff_empty"] == pytest.approx(r["m_empty"], abs=1e-6)
    # Heads write zero whatever they read, so every edge but input -> logits changes nothing.
    assert r["circuits"]["direct"]["f"] == pytest.approx(1.0, abs=1e-5)
    assert r["circuits"]["all_but_direct"]["f"] == pytest.approx(0.0, abs=1e-5)
    assert r["circuits"]["direct"]["f"] == r["circuits"]["direct"]["f_raw"]


# --- Node level ------------------------------------------------------------------------------------------------------
def loss_by_hooks(model, graph: NodeGraph, keep: torch.Tensor, batch: TaskBatch, base: torch.Tensor):
    """(task loss, last-position log-probs) with every node outside ``keep`` set to ``base`` at its site, by hooks
    written here (not the code under test)."""
    hooks = []
    for s in graph.sites:
        kept, value = keep[s.nodes], base[s.nodes]

        def fn(x, hook, kept=kept, value=value):
            flat = x.reshape(*x.shape[:2], -1)  # (B, T, size)
            return torch.where(kept, flat, value).reshape(x.shape)
        hooks.append((s.hook, fn))
    with model.hooks(hooks):
        logits = model(batch.clean)
    rows = torch.arange(len(batch))
    logp = torch.log_softmax(logits[rows, batch.last].double(), dim=-1)
    return F.softplus(-logit_diff(logits, batch)).mean().item(), logp


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_node_scores_match_the_plain_model_and_hand_ablation(random_model, corpus, shifted, ablation):
    graph = NodeGraph.from_config(random_model.cfg)
    means = node_means(random_model, graph, corpus) if ablation == "mean" else None
    n = graph.n_nodes
    half = torch.rand(n, generator=torch.Generator().manual_seed(3)) < 0.5
    r = score_shifted_nodes(random_model, graph, shifted, ablation, means,
                            {"all": torch.ones(n, dtype=torch.bool), "half": half,
                             "none": torch.zeros(n, dtype=torch.bool)}, max_tokens=2 * shifted.clean.numel())
    own = F.softplus(-logit_diff(random_model(shifted.clean), shifted)).mean().item()  # plain forward
    assert r["loss_full"] == pytest.approx(own, abs=1e-5)
    assert r["circuits"]["all"]["loss"] == pytest.approx(own, abs=1e-5)
    assert r["circuits"]["all"]["kl"] == pytest.approx(0.0, abs=1e-9)
    assert r["circuits"]["none"]["loss"] == pytest.approx(r["loss_empty"], abs=1e-6)
    base = means if means is not None else torch.zeros(n)
    full_logp = loss_by_hooks(random_model, graph, torch.ones(n, dtype=torch.bool), shifted, base)[1]
    loss_half, logp_half = loss_by_hooks(random_model, graph, half, shifted, base)
    assert r["circuits"]["half"]["loss"] == pytest.approx(loss_half, rel=1e-4, abs=1e-5)
    kl_half = (full_logp.exp() * (full_logp - logp_half)).sum(-1).mean().item()
    assert kl_half > 1e-5 and r["circuits"]["half"]["kl"] == pytest.approx(kl_half, rel=1e-3, abs=1e-8)
    assert r["circuits"]["half"]["nodes"] == int(half.sum())
    assert r["circuits"]["half"]["loss_over_full"] == pytest.approx(loss_half - own, abs=1e-4)
    assert r["capable"] is False and all(c["reached"] is None for c in r["circuits"].values())


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_on_a_planted_model_the_node_circuit_through_the_two_neurons_is_needed(ablation):
    model = planted_model(attn_only=False)
    graph = NodeGraph.from_config(model.cfg)
    corpus = torch.randint(0, V, (32, T), generator=torch.Generator().manual_seed(2))
    means = node_means(model, graph, corpus) if ablation == "mean" else None
    n = graph.n_nodes
    full = torch.ones(n, dtype=torch.bool)
    without = full.clone()
    hidden = graph.site("m0.hidden").start
    without[hidden:hidden + 2] = False  # the two neurons that carry the task
    r = score_shifted_nodes(model, graph, planted_batch(16, 0), ablation, means,
                            {"all": full, "without_path": without, "none": torch.zeros(n, dtype=torch.bool)},
                            margin=0.05)
    assert r["capable"] is True
    assert r["circuits"]["all"]["reached"] is True and r["circuits"]["all"]["loss"] == r["loss_full"]
    # Without the two neurons the last token no longer reaches the unembedding: the loss is the empty circuit's.
    assert r["circuits"]["without_path"]["reached"] is False and r["circuits"]["none"]["reached"] is False
    assert r["circuits"]["without_path"]["loss"] == pytest.approx(r["loss_empty"], abs=1e-5)
    assert r["target"] == pytest.approx(r["loss_full"] + 0.05) and r["target_rule"] == "relative"
    # An absolute target between the full model's loss and the empty circuit's: the same verdicts, by that rule.
    middle = (r["loss_full"] + r["loss_empty"]) / 2
    a = score_shifted_nodes(model, graph, planted_batch(16, 0), ablation, means, {"all": full, "without_path": without},
                            target=middle)
    assert a["target_rule"] == "absolute" and a["target"] == middle and a["margin"] is None
    assert a["circuits"]["all"]["reached"] is True and a["circuits"]["without_path"]["reached"] is False
    low = score_shifted_nodes(model, graph, planted_batch(16, 0), ablation, means, {"all": full},
                              target=r["loss_full"] / 2)
    assert low["circuits"]["all"]["reached"] is False  # not even the whole model meets a target below its loss


def test_node_margin_and_masks_are_checked(random_model, shifted):
    graph = NodeGraph.from_config(random_model.cfg)
    with pytest.raises(ValueError, match=r"margin=-0.1 is not allowed: expected a number >= 0"):
        score_shifted_nodes(random_model, graph, shifted, "zero", None, {}, margin=-0.1)
    with pytest.raises(ValueError, match=r"target=nan is not allowed"):
        score_shifted_nodes(random_model, graph, shifted, "zero", None, {}, target=float("nan"))
    with pytest.raises(ValueError, match=rf"circuit 'c' is \(3,\) of torch.bool: expected a boolean mask over the "
                                         rf"graph's {graph.n_nodes} nodes"):
        score_shifted_nodes(random_model, graph, shifted, "zero", None, {"c": torch.ones(3, dtype=torch.bool)})


# --- The entries the analysis records per circuit -------------------------------------------------------------------
def test_circuit_ood_scores_each_selections_circuits_on_the_shifted_pairs_the_batch_carries():
    model = planted_model(attn_only=True)
    graph = ComponentGraph.from_config(model.cfg)
    E = graph.n_edges
    direct = [n for n in graph.edge_names()].index("input->logits")
    others = [e for e in range(E) if e != direct]
    rankings = {"topn": torch.tensor([direct, *others]), "greedy": torch.tensor([*others, direct])}
    sizes = {"topn": {"N_0.8": 1, "N_0.9": None}, "greedy": {"N_0.8": 1, "N_0.9": E}}
    batch = replace(planted_batch(16, 1, "planted"), shifted=planted_batch(16, 0))
    circuits = {s: {name: None if k is None else circuit_mask(rankings[s], k) for name, k in by.items()}
                for s, by in sizes.items()}
    ood = circuit_ood(model, graph, batch, "zero", None, circuits)
    assert set(ood) == {"topn", "greedy"}
    assert ood["topn"]["task"] == "planted@shifted" and ood["topn"]["capable"] is True
    assert ood["topn"]["gate"] == ood["greedy"]["gate"]  # one gate, shared
    assert ood["topn"]["circuits"]["N_0.8"]["f"] == pytest.approx(1.0, abs=1e-5)  # the direct edge alone
    assert ood["topn"]["circuits"]["N_0.9"] is None  # no size: nothing scored
    assert ood["greedy"]["circuits"]["N_0.8"]["f"] == pytest.approx(0.0, abs=1e-5)  # one edge, not the direct one
    assert ood["greedy"]["circuits"]["N_0.9"]["f"] == pytest.approx(1.0, abs=1e-5)
    assert ood["greedy"]["circuits"]["N_0.9"]["edges"] == E
    none = circuit_ood(model, graph, replace(batch, shifted=None, shifted_note="why not"), "zero", None, circuits)
    assert none == {"topn": {"skipped": "why not"}, "greedy": {"skipped": "why not"}}
    corpus = torch.randint(0, V, (8, T - 1), generator=torch.Generator().manual_seed(2))
    short = writer_means(model, graph, corpus, per_position=True)  # one position short of the prompts
    out = circuit_ood(model, graph, batch, "position-mean", short, circuits)
    assert out["topn"]["skipped"].startswith("position-mean ablation on the shifted pairs of 'planted@shifted' "
                                             f"needs writer means for at least {T} positions")


def test_node_circuit_ood_scores_the_models_circuit_or_says_why_not():
    model = planted_model(attn_only=False)
    graph = NodeGraph.from_config(model.cfg)
    full = torch.ones(graph.n_nodes, dtype=torch.bool)
    batch = replace(planted_batch(16, 1, "planted"), shifted=planted_batch(16, 0))
    ood = node_circuit_ood(model, graph, batch, "zero", None, full, margin=0.05)
    assert ood["task"] == "planted@shifted" and ood["capable"] is True
    assert set(ood["circuits"]) == {"model"} and ood["circuits"]["model"]["reached"] is True
    assert ood["circuits"]["model"]["loss"] == ood["loss_full"] and ood["circuits"]["model"]["nodes"] == graph.n_nodes
    assert node_circuit_ood(model, graph, batch, "zero", None, None) == {
        "skipped": "the model's circuit did not reach its target in distribution"}
    assert node_circuit_ood(model, graph, replace(batch, shifted=None), "zero", None, full) == {
        "skipped": "no shifted pairs were built for this task"}
    long = planted_batch(2, 0)
    long = replace(batch, shifted=replace(long, clean=long.clean.repeat(1, 2), corrupt=long.corrupt.repeat(1, 2)))
    assert "beyond the model's context n_ctx=6" in node_circuit_ood(model, graph, long, "zero", None, full)["skipped"]
