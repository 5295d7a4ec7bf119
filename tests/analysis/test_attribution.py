"""Edge scores: exact patching is the measured effect, EAP-IG with one step is EAP, scores are |effects|."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests_analysis_support import VOCAB, make_batch, make_model

from glassformer.analysis.component.ablation import writer_means
from glassformer.analysis.component.attribution import METHODS, attribute, quadrature
from glassformer.analysis.component.faithfulness import Faithfulness
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.component.rescore import ld_sum


@pytest.fixture(scope="module")
def setup():
    model = make_model()
    graph = ComponentGraph.from_config(model.cfg)
    means = writer_means(model, graph, torch.randint(0, VOCAB, (4, 16)))
    return model, graph, make_batch(B=5, seed=3), means


@pytest.mark.parametrize("ablation", ["mean", "corrupt"])
def test_exact_patching_is_the_measured_drop_when_one_edge_is_removed(setup, ablation):
    model, graph, batch, means = setup
    att = attribute("exact", model, graph, batch, ablation, means, max_tokens=40)  # several chunks and replicas
    fa = Faithfulness(model, graph, batch, ablation, means)
    for e in (0, graph.n_edges // 2, graph.n_edges - 1):
        mask = torch.ones(graph.n_edges, dtype=torch.bool)
        mask[e] = False
        measured = fa.m_model - fa.m(mask[None]).item()
        assert att.effects[e].item() == pytest.approx(measured, rel=1e-4, abs=1e-6)


def test_eap_ig_with_one_step_is_eap(setup):
    model, graph, batch, means = setup
    a = attribute("eap", model, graph, batch, "mean", means)
    b = attribute("eap-ig", model, graph, batch, "mean", means, ig_steps=1)
    torch.testing.assert_close(a.effects, b.effects)


@pytest.mark.parametrize(("method", "ablation"), [("eap-ig", "corrupt"), ("eap-ig-act", "mean")])
def test_gradient_methods_split_pairs_and_steps_into_chunks_without_changing_effects(setup, method, ablation):
    model, graph, batch, means = setup
    whole = attribute(method, model, graph, batch, ablation, means, ig_steps=3)
    chunked = attribute(method, model, graph, batch, ablation, means, ig_steps=3, max_tokens=7)
    torch.testing.assert_close(whole.effects, chunked.effects, rtol=1e-4, atol=1e-6)
    assert chunked.forwards > whole.forwards


def test_eap_is_the_first_order_change_of_the_metric_along_an_edge():
    """Keeping edge m0 -> logits at weight 1 - eps moves the metric by eps times EAP's effect, to first order:
    a finite difference through the patched model checks the gradient and the delta separately computed."""
    model = make_model(n_layers=1)
    graph = ComponentGraph.from_config(model.cfg)
    batch = make_batch(B=2, seed=5)
    e = graph.edge_index("m0->logits")
    att = attribute("eap", model, graph, batch, "zero")
    fa = Faithfulness(model, graph, batch, "zero")
    # Keep the edge at weight 1 - eps: the metric changes by eps * (estimated effect) to first order.
    eps = 1e-3
    keep = torch.ones(1, graph.n_edges)
    keep[0, e] = 1 - eps
    m_eps = sum(ld_sum(p.run(graph.weights(keep)), p.batch).item() for p in fa.patchers) / len(batch)
    assert (fa.m_model - m_eps) / eps == pytest.approx(att.effects[e].item(), rel=1e-2, abs=1e-4)


def test_scores_are_absolute_effects_and_methods_are_registered(setup):
    model, graph, batch, means = setup
    att = attribute("eap-ig", model, graph, batch, "zero", means)
    assert torch.equal(att.scores, att.effects.abs()) and att.scores.shape == (graph.n_edges,)
    assert set(METHODS) == {"exact", "eap", "eap-ig", "eap-ig-gl", "eap-ig-act", "acdc", "eap-ig-gl+exact"}
    with pytest.raises(ValueError, match="method='nope' is not allowed: expected one of exact, eap, eap-ig"):
        attribute("nope", model, graph, batch, "zero")
    with pytest.raises(ValueError, match="ig_steps=0 is not allowed"):
        attribute("eap-ig", model, graph, batch, "zero", ig_steps=0)


@settings(max_examples=30, derandomize=True, deadline=None)
@given(n=st.integers(1, 12), data=st.data())
def test_quadrature_integrates_polynomials_of_degree_below_2n_exactly(n, data):
    degree = data.draw(st.integers(0, 2 * n - 1))
    alphas, weights = quadrature(n)
    assert bool(((alphas > 0) & (alphas < 1)).all())  # the corrections vanish at 1: no point may sit there
    assert float((weights * alphas ** degree).sum()) == pytest.approx(1 / (degree + 1), rel=1e-9)


def test_eap_ig_gl_is_eap_ig_with_gauss_legendre_points_and_weights(setup):
    """Gauss-Legendre's one point is alpha = 1/2 with weight 1; MIB's two points are 1/2 and 1 with weights 1/2, and
    EAP is the point 1 alone. So eap-ig-gl(1) = 2 * eap-ig(2) - eap, three separately computed runs."""
    model, graph, batch, means = setup
    one = attribute("eap-ig-gl", model, graph, batch, "mean", means, ig_steps=1)
    two_right = attribute("eap-ig", model, graph, batch, "mean", means, ig_steps=2)  # points 1/2 and 1
    eap_ = attribute("eap", model, graph, batch, "mean", means)  # the point 1
    # right Riemann with 2 points = (g(1/2) + g(1)) / 2, so g(1/2) = 2 * two_right - eap: Gauss-Legendre's 1 point
    torch.testing.assert_close(one.effects, 2 * two_right.effects - eap_.effects, rtol=1e-4, atol=1e-6)
