"""Exact patching of chosen edges, and EAP-IG-GL rescored by it: measured effects are the measured drops, the
measured edges rank first in their measured order, and with every edge measured the method is exact patching."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_attribution import setup  # noqa: F401  (the same small model, batch and means)

from glassformer.analysis.component.ablation import Patcher
from glassformer.analysis.component.attribution import eap_ig_gl_exact
from glassformer.analysis.component.faithfulness import Faithfulness
from glassformer.analysis.component.records import Attribution
from glassformer.analysis.component.rescore import exact_effects, reader_stages, rescore


@pytest.mark.parametrize("ablation", ["mean", "corrupt"])
def test_measured_effects_are_the_drops_of_removing_each_chosen_edge(setup, ablation):  # noqa: F811
    model, graph, batch, means = setup
    # Any order (answers in that order), edges into every block and the logits: runs that start at a later block
    # from the clean prefix must measure what the full patched forward measures.
    stages = reader_stages(graph)[graph.edge_reader]
    firsts = [int((stages == s).nonzero()[0]) for s in range(graph.n_layers + 1)]
    lasts = [int((stages == s).nonzero()[-1]) for s in range(graph.n_layers + 1)]
    edges = torch.tensor([graph.n_edges - 1, 3, graph.n_edges // 2, *firsts[::-1], *lasts])
    effects, _ = exact_effects(model, graph, batch, ablation, means, edges, max_tokens=40)  # chunks and replicas
    fa = Faithfulness(model, graph, batch, ablation, means)
    for i, e in enumerate(edges.tolist()):
        mask = torch.ones(graph.n_edges, dtype=torch.bool)
        mask[e] = False
        assert effects[i].item() == pytest.approx(fa.m_model - fa.m(mask[None]).item(), rel=1e-4, abs=1e-6)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.integers(-5000, 5000).map(lambda i: i / 1000), min_size=2, max_size=12,
                unique_by=abs), st.data())
@example([1.0, -3.0, 0.5], None)
def test_measured_edges_rank_first_in_measured_order_and_the_rest_keep_their_order(estimates, data):
    n = len(estimates)
    if data is None:  # the explicit example: measure the last edge only
        chosen, measured = [2], [0.01]
    else:
        chosen = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
        measured = data.draw(st.lists(st.floats(0.01, 9, allow_nan=False), min_size=len(chosen),
                                      max_size=len(chosen), unique=True))
    att = Attribution("eap-ig-gl", torch.tensor(estimates), 0.0, 1, 12)
    order = rescore(att, torch.tensor(measured), torch.tensor(chosen)).abs().argsort(descending=True).tolist()
    by_measure = [e for _, e in sorted(zip(measured, chosen, strict=True), reverse=True)]
    rest = sorted((e for e in range(n) if e not in chosen), key=lambda e: -abs(estimates[e]))
    assert order[:len(chosen)] == by_measure
    assert [abs(estimates[e]) for e in order[len(chosen):]] == [abs(estimates[e]) for e in rest]


def test_with_every_edge_measured_it_is_exact_patching(setup):  # noqa: F811
    model, graph, batch, means = setup
    from glassformer.analysis.component.attribution import attribute

    exact = attribute("exact", model, graph, batch, "mean", means)
    both = eap_ig_gl_exact(model, graph, batch, "mean", means, rescore_edges=graph.n_edges + 5)
    assert torch.allclose(both.effects, exact.effects, rtol=1e-4, atol=1e-6)
    assert both.details["rescored_edges"] == graph.n_edges
    with pytest.raises(ValueError, match="rescore_edges=0 is not allowed"):
        eap_ig_gl_exact(model, graph, batch, "mean", means, rescore_edges=0)


def test_a_run_from_a_later_block_refuses_a_setting_that_removes_an_earlier_edge(setup):  # noqa: F811
    model, graph, batch, means = setup
    patcher = Patcher(model, graph, batch, "mean", means)
    keep = torch.ones(graph.n_edges)
    keep[0] = 0  # an edge into block 0
    with pytest.raises(ValueError, match="removes an edge into a block before start=1"):
        patcher.run(graph.weights(keep[None]), start=1, prefix=patcher.clean_prefix())
    with pytest.raises(ValueError, match="needs the clean prefix"):
        patcher.run(graph.weights(torch.ones(1, graph.n_edges)), start=1)


def test_the_default_above_the_exact_budget_is_checked_on_the_estimate_that_chose_its_edges(setup):  # noqa: F811
    model, graph, batch, means = setup
    from glassformer.analysis.component.attribution import attribute, completeness

    fa = Faithfulness(model, graph, batch, "mean", means)
    estimate = completeness(attribute("eap-ig-gl", model, graph, batch, "mean", means), fa)
    both = completeness(eap_ig_gl_exact(model, graph, batch, "mean", means, rescore_edges=10), fa)
    assert both["relative_error"] is not None and estimate["relative_error"] is not None
    assert both["attributed"] == pytest.approx(estimate["attributed"], rel=1e-5)
    assert both["measured"] == pytest.approx(estimate["measured"], rel=1e-6)
    assert both["identity"].startswith("EAP-IG-GL estimate before rescoring")
