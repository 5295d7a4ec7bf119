"""The component graph: edge counts against the closed-form count (docs/methods.md) and published numbers, edge directions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.analysis.component.circuits import circuit_mask, rank
from glassformer.analysis.component.graph import ComponentGraph, edge_count
from glassformer.archs import presets


def test_edge_count_formula_gives_the_published_numbers():
    assert edge_count(12, 12) == 32_491  # GPT-2 small
    assert edge_count(2, 4) == 110
    assert edge_count(4, 8) == 1_519


def test_graph_of_gpt2_small_has_32491_edges():
    assert ComponentGraph.from_config(presets.get("gpt2-small")).n_edges == 32_491


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.booleans())
def test_graph_edges_match_the_formula(n_layers, n_heads, attn_only):
    g = ComponentGraph(n_layers, n_heads, attn_only=attn_only)
    assert g.n_edges == edge_count(n_layers, n_heads, attn_only)
    L, H = n_layers, n_heads
    # Counted by hand from the definition: q/k/v of each head see the input and every earlier head (and MLP);
    # each MLP also sees its own layer's heads; the logits see every writer.
    per_layer = H + (0 if attn_only else 1)
    by_hand = sum(3 * H * (1 + l * per_layer) for l in range(L))
    if not attn_only:
        by_hand += sum(1 + l * per_layer + H for l in range(L))
    by_hand += 1 + L * per_layer
    assert g.n_edges == by_hand


def test_attention_only_graph_has_no_mlp_nodes():
    g = ComponentGraph(2, 4, attn_only=True)
    assert not any(n.kind == "mlp" for n in g.nodes)
    assert g.n_edges == 81


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.booleans())
def test_every_edge_runs_forward(n_layers, n_heads, attn_only):
    g = ComponentGraph(n_layers, n_heads, attn_only=attn_only)
    for w, r in zip(g.edge_writer.tolist(), g.edge_reader.tolist(), strict=True):
        writer, reader = g.writers[w], g.readers[r].node
        if reader.kind == "head":
            assert writer.kind == "input" or writer.layer < reader.layer
        elif reader.kind == "mlp":
            assert writer.kind == "input" or writer.layer < reader.layer or (
                writer.layer == reader.layer and writer.kind == "head")
    names = g.edge_names()
    assert len(set(names)) == len(names)


def test_edge_names_and_indices_round_trip():
    g = ComponentGraph(2, 4)
    e = g.edge_index("a0.h1->a1.h3<k>")
    assert g.writers[int(g.edge_writer[e])].name == "a0.h1"
    assert g.readers[int(g.edge_reader[e])].name == "a1.h3<k>"
    with pytest.raises(KeyError, match="not in this graph"):
        g.edge_index("a5.h0->logits")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.booleans(), st.integers(0, 2**31 - 1))
def test_greedy_growth_keeps_every_prefix_connected_to_the_logits(n_layers, n_heads, attn_only, seed):
    g = ComponentGraph(n_layers, n_heads, attn_only=attn_only)
    scores = torch.rand(g.n_edges, generator=torch.Generator().manual_seed(seed))
    order = rank("greedy", g, scores).tolist()
    assert sorted(order) == list(range(g.n_edges))
    reached = {"logits"}
    for e in order:
        assert g.readers[int(g.edge_reader[e])].node.name in reached
        reached.add(g.writers[int(g.edge_writer[e])].name)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 46))
def test_top_n_takes_the_highest_scores(seed, k):
    g = ComponentGraph(2, 2)
    scores = torch.rand(g.n_edges, generator=torch.Generator().manual_seed(seed))
    mask = circuit_mask(rank("topn", g, scores), k)
    assert int(mask.sum()) == k
    if 0 < k < g.n_edges:
        assert scores[mask].min() >= scores[~mask].max()


def test_selection_and_scores_are_checked():
    g = ComponentGraph(1, 1)
    with pytest.raises(ValueError, match="selection='best' is not allowed.*topn"):
        rank("best", g, torch.zeros(g.n_edges))
    with pytest.raises(ValueError, match="do not fit the graph"):
        rank("topn", g, torch.zeros(3))
