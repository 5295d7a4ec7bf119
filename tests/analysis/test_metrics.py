"""Faithfulness metrics: areas, circuit sizes, the N_p search, and f measured on a model."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests_analysis_support import VOCAB, make_batch, make_model

from glassformer.analysis.common import geometric_mean
from glassformer.analysis.component.ablation import writer_means
from glassformer.analysis.component.faithfulness import (
    Faithfulness,
    areas,
    evaluate_ranking,
    size_for_percent,
)
from glassformer.analysis.component.graph import ComponentGraph


def test_areas_are_trapezoids_over_the_fraction_of_edges():
    curve = [{"percent": 10, "f": 0.2}, {"percent": 50, "f": 0.6}, {"percent": 100, "f": 1.0}]
    out = areas(curve)
    assert out["CPR"] == pytest.approx(0.4 * 0.4 + 0.5 * 0.8)
    assert out["CMD"] == pytest.approx(0.4 * 0.6 + 0.5 * 0.2)


def test_sizes_follow_the_percent_grid():
    assert [size_for_percent(32_491, p) for p in (0.1, 1, 100)] == [32, 325, 32_491]
    assert size_for_percent(10, 0.1) == 1


def test_geometric_mean_ignores_missing_values():
    assert geometric_mean([1, 100]) == pytest.approx(10)
    assert geometric_mean([None]) is None


class StubGraph:
    """Ten edges, nothing pruned: the N_p search seen apart from pruning (test_dangling_edges.py covers that)."""

    n_edges = 10

    def prune(self, masks):
        return masks


class StubFaithfulness:
    """f(C_k) = curve[k] for a ranking 0..E-1 (one pair, ld = f, model 1, empty circuit 0): lets the N_p search be
    checked against a known answer."""

    def __init__(self, curve):
        self.graph = StubGraph()
        assert len(curve) == self.graph.n_edges + 1
        self.curve, self.signal, self.calls = curve, True, 0
        self.ld_model, self.ld_empty = torch.tensor([1.0]), torch.tensor([0.0])

    def per_pair(self, masks):
        self.calls += 1
        return torch.tensor([[self.curve[int(m.sum())]] for m in masks], dtype=torch.float64)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 0.2), min_size=10, max_size=10), st.floats(0.5, 0.99))
def test_n_p_is_the_smallest_size_reaching_p_on_a_monotone_curve(steps, p):
    E = StubGraph.n_edges
    values = [0.0]
    for s in steps[: E - 1]:
        values.append(round(min(values[-1] + s, 0.999), 4))  # 4 decimals: stored exactly at 5 significant digits
    values.append(1.0)
    fa = StubFaithfulness(values)
    out = evaluate_ranking(fa, torch.arange(E), thresholds=(p,), probes=2, rounds=10)
    expected = next(k for k, v in enumerate(values) if v >= p)
    assert out[f"N_{p:g}"]["edges"] == out[f"N_{p:g}"]["k"] == expected
    assert out[f"N_{p:g}"]["bracket"] == [expected - 1, expected]
    assert out[f"N_{p:g}"]["fraction"] == pytest.approx(expected / E)


def test_faithfulness_of_all_edges_is_one_and_of_none_is_zero():
    model = make_model()
    graph = ComponentGraph.from_config(model.cfg)
    means = writer_means(model, graph, torch.randint(0, VOCAB, (4, 16)))
    fa = Faithfulness(model, graph, make_batch(B=4), "mean", means)
    E = graph.n_edges
    f = fa.f(torch.stack([torch.ones(E, dtype=torch.bool), torch.zeros(E, dtype=torch.bool)]))
    torch.testing.assert_close(f, torch.tensor([1.0, 0.0]), rtol=1e-4, atol=1e-4)
    logits = model(make_batch(B=4).clean)
    batch = make_batch(B=4)
    ld = logits[torch.arange(4), batch.last, batch.correct] - logits[torch.arange(4), batch.last, batch.alternative]
    assert fa.m_model == pytest.approx(ld.mean().item(), rel=1e-4, abs=1e-5)
    assert not math.isnan(fa.gap)
