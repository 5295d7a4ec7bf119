"""Completeness and minimality (Wang et al. 2022) of component circuits, on the planted model of test_acdc.py: a
1-layer attention-only model whose head 1 writes nothing, so the 5 edges through head 0 and the direct path are
the whole mechanism. Every f expected here is measured by the test's own patched forwards (Patcher and the logit
difference), not by the checks' code."""

from __future__ import annotations

import pytest
import torch
from test_acdc import NEEDED, _planted
from tests_analysis_support import VOCAB, make_batch

from glassformer.analysis.component.ablation import Patcher
from glassformer.analysis.component.checks import completeness, faithfulness_checks, minimality
from glassformer.analysis.component.faithfulness import Faithfulness
from glassformer.analysis.tasks import TaskBatch, logit_diff

MISSING = "a0.h0->logits"


def capable_batch(model, B: int = 8) -> TaskBatch:
    """make_batch's prompts with the model's own top token as the correct answer and its least likely as the
    alternative, and unrelated random prompts as the corrupted ones, so the model has a clear gap over the empty
    circuit under either ablation."""
    batch = make_batch(B=B, T=7)
    last = model(batch.clean)[torch.arange(B), batch.last]  # (B, d_vocab)
    corrupt = torch.randint(0, VOCAB, batch.clean.shape, generator=torch.Generator().manual_seed(11))
    return TaskBatch("planted", batch.clean, corrupt, batch.last, last.argmax(-1), last.argmin(-1))


@pytest.fixture(scope="module", params=["zero", "corrupt"])
def planted(request):
    model, graph = _planted()
    batch = capable_batch(model)
    fa = Faithfulness(model, graph, batch, request.param)
    patcher = Patcher(model, graph, batch, request.param)
    E = graph.n_edges

    def f_by_hand(masks: torch.Tensor) -> list[float]:
        masks = torch.cat([torch.ones(1, E, dtype=torch.bool), torch.zeros(1, E, dtype=torch.bool), masks])
        logits = patcher.run(graph.weights(masks.float()))  # (K, B, d_vocab)
        m = [logit_diff(lg[:, None], batch).mean().item() for lg in logits]
        return [(x - m[1]) / (m[0] - m[1]) for x in m[2:]]

    assert fa.gap > 1.0
    return graph, fa, f_by_hand


def mask_of(graph, names) -> torch.Tensor:
    return torch.tensor([n in names for n in graph.edge_names()])


def test_the_planted_circuit_is_exactly_complete(planted):
    """Outside NEEDED lie only head 1's edges, and head 1 writes zeros: knocking any K out of the circuit or out
    of the whole model gives the same circuit, so every incompleteness is 0."""
    graph, fa, f_by_hand = planted
    out = completeness(fa, mask_of(graph, NEEDED), graph.edge_names(), n_subsets=20, seed=0)
    assert out["random"]["n_subsets"] == 20 and len(out["random"]["subsets"]) == 20
    assert out["random"]["max"] < 1e-5 and out["random"]["mean"] < 1e-5
    assert out["greedy"]["incompleteness"] < 1e-5 and len(out["greedy"]["steps"]) == len(NEEDED)
    assert {s["size"] for s in out["random"]["subsets"]} - {0, 5} != set()  # proper subsets were drawn
    assert f_by_hand(mask_of(graph, NEEDED)[None])[0] == pytest.approx(1.0, abs=1e-5)


def test_a_circuit_missing_a_member_that_matters_is_far_from_complete(planted):
    """Without a0.h0 -> logits, C \\ K = M \\ (K + the missing edge) for every K (the rest of M is silent), so the
    first greedy step's incompleteness is max over members e of |f(M \\ {e, missing}) - f(M \\ {e})|, measured
    here by hand; each random K's numbers are measured by hand too."""
    graph, fa, f_by_hand = planted
    names = graph.edge_names()
    circuit = mask_of(graph, NEEDED - {MISSING})
    out = completeness(fa, circuit, names, n_subsets=8, seed=3)
    full = torch.ones(graph.n_edges, dtype=torch.bool)
    members = sorted(NEEDED - {MISSING})
    alone = f_by_hand(torch.stack([full & ~mask_of(graph, {e}) for e in members]))
    with_missing = f_by_hand(torch.stack([full & ~mask_of(graph, {e, MISSING}) for e in members]))
    first = max(abs(a - b) for a, b in zip(alone, with_missing, strict=True))
    assert out["greedy"]["steps"][0]["incompleteness"] == pytest.approx(first, abs=1e-4)
    assert first > 0.3  # the missing edge matters in every context the first knockout leaves
    assert out["greedy"]["incompleteness"] >= first - 1e-6
    assert out["random"]["mean"] > 0.1
    gen = torch.Generator().manual_seed(3)
    member_idx = circuit.nonzero().flatten()
    for s in out["random"]["subsets"]:
        knock = torch.zeros_like(circuit)
        knock[member_idx[torch.rand(len(member_idx), generator=gen) < 0.5]] = True
        f_c, f_m = f_by_hand(torch.stack([circuit & ~knock, full & ~knock]))
        assert s["size"] == int(knock.sum())
        assert (s["f_circuit"], s["f_model"]) == (pytest.approx(f_c, abs=1e-4), pytest.approx(f_m, abs=1e-4))
    values = [s["incompleteness"] for s in out["random"]["subsets"]]
    assert out["random"]["mean"] == pytest.approx(sum(values) / len(values))
    assert out["random"]["max"] == max(values)


def test_minimality_measures_each_members_drop_and_flags_the_idle_one(planted):
    """The planted circuit plus a0.h1 -> logits (head 1 writes zeros, its ablated value under zero ablation, and
    under corrupt ablation too): that member's drop is 0; each drop is f(C) - f(C \\ {e}) measured by hand."""
    graph, fa, f_by_hand = planted
    circuit = mask_of(graph, NEEDED | {"a0.h1->logits"})
    out = minimality(fa, circuit, graph.edge_names())
    members = sorted(NEEDED | {"a0.h1->logits"})
    f_c = f_by_hand(circuit[None])[0]
    by_hand = dict(zip(members, [f_c - v for v in f_by_hand(torch.stack([circuit & ~mask_of(graph, {e})
                                                                          for e in members]))], strict=True))
    assert sorted(name for name, _ in out["drops"]) == members
    for name, drop in out["drops"]:
        assert drop == pytest.approx(by_hand[name], abs=1e-4)
    assert [d for _, d in out["drops"]] == sorted((d for _, d in out["drops"]), reverse=True)
    assert abs(dict(out["drops"])["a0.h1->logits"]) < 1e-5
    assert out["fraction_below"] == pytest.approx(sum(v < 0.01 for v in by_hand.values()) / 6)
    assert out["fraction_below"] >= 1 / 6


def test_the_checks_record_both_and_are_seeded(planted):
    graph, fa, _ = planted
    circuit = mask_of(graph, NEEDED - {MISSING})
    a = faithfulness_checks(fa, circuit, graph.edge_names(), n_subsets=5, seed=1)
    b = faithfulness_checks(fa, circuit, graph.edge_names(), n_subsets=5, seed=1)
    assert a == b and a["edges"] == 4
    assert a["minimality"] == minimality(fa, circuit, graph.edge_names())
    assert a["completeness"] == completeness(fa, circuit, graph.edge_names(), n_subsets=5, seed=1)


def test_without_random_knockouts_only_the_greedy_set_is_searched(planted):
    graph, fa, _ = planted
    out = completeness(fa, mask_of(graph, NEEDED - {MISSING}), graph.edge_names(), n_subsets=0)
    assert out["random"]["subsets"] == [] and out["random"]["mean"] is None and out["random"]["max"] is None
    assert len(out["greedy"]["steps"]) == 4


@pytest.mark.parametrize("bad", [-1, 2.5, True, "20"])
def test_the_number_of_random_knockouts_is_a_checked_setting(bad):
    from glassformer.analysis import AnalysisConfig

    assert AnalysisConfig().n_subsets == 20 and AnalysisConfig(n_subsets=0).n_subsets == 0
    with pytest.raises(ValueError, match=r"n_subsets=.* is not allowed: expected an integer >= 0"):
        AnalysisConfig(n_subsets=bad)
