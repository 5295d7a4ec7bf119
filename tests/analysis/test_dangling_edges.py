"""Dangling-edge pruning: hand-worked circuits on a 2-layer graph, its invariants against a path search written
here, and on a small random model that removing edges whose reader feeds nothing changes nothing measured."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests_analysis_support import VOCAB, make_batch, make_model

from glassformer.analysis.component.ablation import writer_means
from glassformer.analysis.component.circuits import circuit_mask
from glassformer.analysis.component.faithfulness import Faithfulness, evaluate_ranking
from glassformer.analysis.component.graph import ComponentGraph

# ComponentGraph(2, 1): nodes input, a0.h0, m0, a1.h0, m1, logits; 23 edges.
CORE = {"input->a0.h0<v>", "a0.h0->a1.h0<k>", "a1.h0->logits"}
HAND_CASES = {
    # m0 and m1 are reached from the input but feed nothing kept that reaches the logits: every edge into them
    # dangles. The chain input -> a0.h0 -> a1.h0 -> logits survives.
    "downstream dead": (CORE | {"a0.h0->m0", "m0->m1", "a1.h0->m1"}, CORE),
    # a0.h0 reads nothing kept, so nothing reaches it from the input: its path to the logits dangles upstream.
    "upstream dead": ({"a0.h0->a1.h0<q>", "a1.h0->logits", "input->logits"}, {"input->logits"}),
    # m0 now feeds a1.h0's query, which reaches the logits: the edge into m0 comes back; m1 still feeds nothing.
    "revived": (CORE | {"a0.h0->m0", "m0->m1", "a1.h0->m1", "m0->a1.h0<q>"},
                CORE | {"a0.h0->m0", "m0->a1.h0<q>"}),
}


def mask_of(graph: ComponentGraph, names: set[str]) -> torch.Tensor:
    mask = torch.zeros(graph.n_edges, dtype=torch.bool)
    for name in names:
        mask[graph.edge_index(name)] = True
    return mask


def names_of(graph: ComponentGraph, mask: torch.Tensor) -> set[str]:
    names = graph.edge_names()
    return {names[e] for e in mask.nonzero().flatten().tolist()}


@pytest.mark.parametrize("case", HAND_CASES)
def test_pruning_a_hand_worked_two_layer_circuit(case):
    graph = ComponentGraph(2, 1)
    assert graph.n_edges == 23
    kept, expected = HAND_CASES[case]
    assert names_of(graph, graph.prune(mask_of(graph, kept))) == expected


def test_pruning_a_batch_of_circuits_prunes_each():
    graph = ComponentGraph(2, 1)
    masks = torch.stack([mask_of(graph, kept) for kept, _ in HAND_CASES.values()])
    out = graph.prune(masks)
    assert [names_of(graph, m) for m in out] == [expected for _, expected in HAND_CASES.values()]


def on_a_path(graph: ComponentGraph, mask: torch.Tensor) -> set[int]:
    """Edges of ``mask`` on some path input -> logits through edges of ``mask``, by a search written here."""
    edges = [(graph.writers[int(graph.edge_writer[e])].name, graph.readers[int(graph.edge_reader[e])].node.name, e)
             for e in mask.nonzero().flatten().tolist()]

    def closure(start: str, step) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            node = todo.pop()
            for nxt in step(node):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    from_input = closure("input", lambda n: [v for u, v, _ in edges if u == n])
    to_logits = closure("logits", lambda n: [u for u, v, _ in edges if v == n])
    return {e for u, v, e in edges if u in from_input and v in to_logits}


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(1, 3), st.integers(1, 3), st.booleans(), st.floats(0.05, 0.9), st.integers(0, 2**31 - 1))
def test_pruning_keeps_exactly_the_edges_on_a_path_and_is_idempotent(n_layers, n_heads, attn_only, density, seed):
    graph = ComponentGraph(n_layers, n_heads, attn_only=attn_only)
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(graph.n_edges, generator=gen) < density
    pruned = graph.prune(mask)
    assert not (pruned & ~mask).any()  # never adds an edge
    assert set(pruned.nonzero().flatten().tolist()) == on_a_path(graph, mask)
    assert torch.equal(graph.prune(pruned), pruned)
    larger = mask | (torch.rand(graph.n_edges, generator=gen) < density)
    assert not (pruned & ~graph.prune(larger)).any()  # monotone


def downstream_dead(graph: ComponentGraph, mask: torch.Tensor) -> torch.Tensor:
    """Edges of ``mask`` whose reader's node has no path to the logits through edges of ``mask`` (written here)."""
    alive, changed = {"logits"}, True
    pairs = [(graph.writers[int(graph.edge_writer[e])].name, graph.readers[int(graph.edge_reader[e])].node.name)
             for e in range(graph.n_edges)]
    while changed:
        changed = False
        for e, (u, v) in enumerate(pairs):
            if mask[e] and v in alive and u not in alive:
                alive.add(u)
                changed = True
    return mask & torch.tensor([v not in alive for _, v in pairs])


@pytest.fixture(scope="module")
def measured():
    model = make_model()
    graph = ComponentGraph.from_config(model.cfg)
    means = writer_means(model, graph, torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(3)))
    batch = make_batch(B=4)
    return graph, {a: Faithfulness(model, graph, batch, a, means) for a in ("mean", "zero", "corrupt")}


@settings(max_examples=12, deadline=None, derandomize=True)
@given(st.integers(0, 2**31 - 1), st.floats(0.1, 0.6), st.sampled_from(["mean", "zero", "corrupt"]))
def test_removing_edges_that_feed_nothing_changes_nothing_measured(measured, seed, density, ablation):
    """Every writer with a kept out-edge also gets a kept edge from the input, so nothing dangles upstream and
    pruning removes only edges whose reader feeds nothing that reaches the logits: the logits cannot change."""
    graph, fas = measured
    mask = torch.rand(graph.n_edges, generator=torch.Generator().manual_seed(seed)) < density
    names = graph.edge_names()
    for w in graph.edge_writer[mask].unique().tolist():
        node = graph.writers[w]
        if node.kind != "input":
            reader = next(r for r in graph.readers if r.node == node)
            mask[names.index(f"input->{reader.name}")] = True
    dead = downstream_dead(graph, mask)
    pruned = graph.prune(mask)
    assert torch.equal(pruned, mask & ~dead)
    fa = fas[ablation]
    ld = fa.per_pair(torch.stack([mask, pruned]))
    torch.testing.assert_close(ld[1], ld[0], rtol=1e-5, atol=1e-5)


def test_evaluate_ranking_measures_and_counts_the_pruned_circuits(measured):
    """A ranking whose first edge dangles (a head to the logits, nothing into the head): C_1 prunes to the empty
    circuit, so its f is 0 and its size 0 edges; every size on the curve is the pruned count of C_k."""
    graph, fas = measured
    fa = fas["zero"]
    first = graph.edge_index("a1.h1->logits")
    ranking = torch.tensor([first] + [e for e in range(graph.n_edges) if e != first])
    out = evaluate_ranking(fa, ranking, percents=(1, 50, 100))
    point = out["curve"][0]
    assert (point["percent"], point["k"], point["edges"]) == (1, 1, 0)
    assert point["f"] == pytest.approx(0.0, abs=1e-6)
    for point in out["curve"]:
        assert point["edges"] == int(graph.prune(circuit_mask(ranking, point["k"])).sum()) <= point["k"]
    n08 = out["N_0.8"]
    assert n08["edges"] == int(graph.prune(circuit_mask(ranking, n08["k"])).sum())
    assert n08["fraction"] == pytest.approx(n08["edges"] / graph.n_edges)
