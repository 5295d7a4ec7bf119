"""Edge scores by exact patching, EAP and EAP-IG (docs/methods.md). Higher means more important, everywhere.

Each method estimates, for every edge e, the drop in the mean logit difference when e alone is ablated:
``effect_e = m(model) - m(model without e)``. Exact patching measures it (one forward per edge, many edges per
forward as replicas of the batch); EAP linearises it, ``effect_e ~ -(a_u(ablated) - a_u(clean)) . dm/d input_v``
with the gradient on the clean run; EAP-IG averages that gradient over ``ig_steps`` points
``alpha = k / ig_steps`` (k = 1..m) on the straight line from the ablated to the clean input embeddings (with
m = 1 it is EAP). The score of an edge is ``|effect_e|``: an edge whose removal raises the metric matters too.

EAP-IG-act integrates along a path through every activation instead: all edges at once carry weight alpha, so
each reader sees every upstream writer at ``alpha * a_u + (1 - alpha) * a_u(ablated)`` (``a_u`` as the
interpolated run computes it), from the empty circuit (alpha = 0) to the model (alpha = 1). An edge's effect is
its integrated gradient ``int_0^1 dm/dw_e dalpha`` (Gauss-Legendre quadrature over ``ig_steps`` points).
Completeness: the effects of *all* edges sum to ``m(model) - m(empty circuit)``, the measured total Faithfulness
uses. Input interpolation (eap-ig, eap-ig-gl, eap) has the weaker identity: the effects of the *input's* edges sum to
``m(model) - m(input's edges ablated)``; the other edges' effects sum to nothing in particular.
:func:`completeness` checks the identity of a run against a measured forward.

EAP-IG-GL is EAP-IG (input interpolation) with Gauss-Legendre points and weights (:func:`quadrature`) instead of
MIB's right Riemann sum: its input identity holds to a few percent at 12 points where MIB's 5 points miss by
20-70%. A complete estimate still ranks edges wrongly: on the ``tiny`` model its N_0.8 was 2-9x exact patching's
with the identity holding to 1-6% (benchmarks/RESULTS.md). So ``auto`` (the default, :func:`resolve_method`) runs
exact patching where the graph has at most ``exact_max_edges`` edges, and above that ``eap-ig-gl+exact``:
EAP-IG-GL ranks every edge, then its top ``rescore_edges`` (``RESCORE_EDGES``) are measured by exact patching and
rank first by their measured effects (:mod:`.rescore`).

Example:
    >>> sorted(METHODS)
    ['acdc', 'eap', 'eap-ig', 'eap-ig-act', 'eap-ig-gl', 'eap-ig-gl+exact', 'exact']
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from glassformer.analysis.component.ablation import Patcher, default_max_tokens
from glassformer.analysis.component.acdc import acdc
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.component.records import Attribution, pair_chunks
from glassformer.analysis.component.rescore import exact_effects, ld_sum, rescore
from glassformer.analysis.tasks.base import TaskBatch

DEFAULT_IG_STEPS = 5
"""MIB's default number of integration steps (eap-ig)."""
ACT_IG_STEPS = 12
"""Integration steps of eap-ig-act: on the trained induction model of the tests its completeness error is 1.2%
(mean ablation), 0.02% (position-mean), 0.04% (corrupt); at 8 steps 4.0% (benchmarks/RESULTS.md)."""
GL_IG_STEPS = 12
"""Integration steps of eap-ig-gl, the default above ``EXACT_MAX_EDGES``: its input identity's error on the
trained models measured is 0.0-6.9% (benchmarks/RESULTS.md)."""
EXACT_MAX_EDGES = 1200
"""``auto`` runs exact patching on graphs with at most this many edges: up to there exact patching costs about a
minute per task and subject on one CPU thread (1108 edges: 62 s; 1519 edges: 148 s; benchmarks/RESULTS.md)."""
RESCORE_EDGES = 200
"""``eap-ig-gl+exact`` measures this many of EAP-IG-GL's top edges exactly. On the tiny model 200 (of 479) was the
smallest of 25/50/100/200 that recovered exact patching's N_0.8 on every capable task (benchmarks/RESULTS.md). Each
measured edge costs a forward of the task's pairs, so the cost grows with the model: on a GPT-2-small-shaped
graph it dominates the run (benchmarks/RESULTS.md)."""
QUADRATURE = "gauss-legendre"
"""How eap-ig-act places its ``ig_steps`` points on [0, 1] (see :func:`quadrature`; eap-ig-gl always uses
Gauss-Legendre)."""
COMPLETENESS_TOLERANCE = 0.05
"""A relative completeness error above this warns: the attribution has not converged."""


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., Attribution]
    description: str


def exact(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None = None,
          *, max_tokens: int | None = None, **_: Any) -> Attribution:
    """Exact patching: ablate each edge alone and measure the metric (the ground truth on small graphs).

    Example:
        >>> att = exact(model, graph, batch, "mean", means)  # doctest: +SKIP
        >>> att.scores.shape == (graph.n_edges,)  # doctest: +SKIP
        True
    """
    start = time.perf_counter()
    effects, forwards = exact_effects(model, graph, batch, ablation, means, torch.arange(graph.n_edges), max_tokens)
    return Attribution("exact", effects.float(), time.perf_counter() - start, forwards, None)


def _gradient_scores(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None,
                     alphas: list[float], max_tokens: int | None,
                     weights: list[float] | None = None) -> tuple[Tensor, int]:
    """sum over pairs of -(a_u(ablated) - a_u(clean)) . (weighted, by default uniform) mean over alphas of
    dm/d input_v, as (n_edges,)."""
    weights = [1.0 / len(alphas)] * len(alphas) if weights is None else weights
    E = graph.n_edges
    max_tokens = max_tokens or default_max_tokens(model.cfg, graph)
    S = torch.zeros(len(graph.writers), len(graph.readers), dtype=torch.float64)
    forwards = 0
    for chunk in pair_chunks(batch, max_tokens):
        patcher = Patcher(model, graph, chunk, ablation, means)
        delta = patcher.delta()  # (n_writers, B, T, d_model)
        base = graph.weights(torch.ones(E))
        K = max(1, max_tokens // chunk.clean.numel())
        for first in range(0, len(alphas), K):
            steps = alphas[first:first + K]
            wts = torch.tensor(weights[first:first + K], dtype=torch.float32)
            w = base.repeat(len(steps), 1, 1)  # (K, n_writers, n_readers)
            w[:, 0, :] = torch.tensor(steps)[:, None]  # the input's edges carry alpha of the clean embedding
            logits, inputs = patcher.run(w, grad=True)
            grads = torch.autograd.grad(ld_sum(logits, chunk).sum(), [t for _, t in inputs])
            forwards += 1
            flat = delta.flatten(1)  # (n_writers, B * T * d_model)
            for (readers, _), g in zip(inputs, grads, strict=True):  # g (K, B, T, R, d_model)
                n_up = int(graph.n_upstream[readers.start])
                g = (g.detach() * wts.to(g.device)[:, None, None, None, None]).sum(dim=0)
                g = g.transpose(1, 2).flatten(start_dim=2)  # (B, R, T * d_model)
                g = g.transpose(0, 1).reshape(g.shape[1], -1)  # (R, B * T * d_model)
                S[:n_up, readers] -= (flat[:n_up] @ g.T).double().cpu()
    return graph.scores_to_edges(S), forwards


def eap(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None = None,
        *, max_tokens: int | None = None, **_: Any) -> Attribution:
    """Edge attribution patching (Syed et al. 2023): one forward and backward on the clean run.

    Example:
        >>> eap(model, graph, batch, "zero").effects.shape == (graph.n_edges,)  # doctest: +SKIP
        True
    """
    start = time.perf_counter()
    S, forwards = _gradient_scores(model, graph, batch, ablation, means, [1.0], max_tokens)
    return Attribution("eap", (S / len(batch)).float(), time.perf_counter() - start, forwards, 1)


def eap_ig(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None = None,
           *, ig_steps: int = DEFAULT_IG_STEPS, max_tokens: int | None = None, rule: str = "right",
           **_: Any) -> Attribution:
    """EAP with integrated gradients (Hanna et al. 2024) over ``ig_steps`` points from ablated to clean input:
    ``rule`` "right" (MIB's points k / ig_steps, equal weights) or a :func:`quadrature` rule.

    Example:
        >>> eap_ig(model, graph, batch, "mean", means, ig_steps=5).method  # doctest: +SKIP
        'eap-ig'
    """
    _check_steps(ig_steps)
    start = time.perf_counter()
    if rule == "right":
        alphas, weights = [k / ig_steps for k in range(1, ig_steps + 1)], None
    else:
        a, w = quadrature(ig_steps, rule)
        alphas, weights = a.tolist(), w.tolist()
    S, forwards = _gradient_scores(model, graph, batch, ablation, means, alphas, max_tokens, weights)
    name = "eap-ig" if rule == "right" else "eap-ig-gl"
    return Attribution(name, (S / len(batch)).float(), time.perf_counter() - start, forwards, ig_steps)


def eap_ig_gl(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None = None,
              *, ig_steps: int = GL_IG_STEPS, max_tokens: int | None = None, **_: Any) -> Attribution:
    """EAP-IG (input interpolation) with Gauss-Legendre points and weights instead of MIB's right Riemann sum:
    converged in far fewer steps (benchmarks/RESULTS.md).

    Example:
        >>> eap_ig_gl(model, graph, batch, "mean", means).method  # doctest: +SKIP
        'eap-ig-gl'
    """
    return eap_ig(model, graph, batch, ablation, means, ig_steps=ig_steps, max_tokens=max_tokens,
                  rule="gauss-legendre")


def eap_ig_gl_exact(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str,
                    means: Tensor | None = None, *, ig_steps: int = GL_IG_STEPS, rescore_edges: int = RESCORE_EDGES,
                    max_tokens: int | None = None, **_: Any) -> Attribution:
    """EAP-IG-GL over every edge, then exact patching of its top ``rescore_edges`` (:mod:`.rescore`): the default
    above the exact-patching budget. The record's
    ``details`` say how many edges were measured and how long each stage took.

    Example:
        >>> eap_ig_gl_exact(model, graph, batch, "mean", means, rescore_edges=400).details["rescored_edges"]  # doctest: +SKIP
        400
    """
    if not isinstance(rescore_edges, int) or isinstance(rescore_edges, bool) or rescore_edges < 1:
        raise ValueError(f"rescore_edges={rescore_edges!r} is not allowed: expected a positive integer")
    start = time.perf_counter()
    estimate = eap_ig_gl(model, graph, batch, ablation, means, ig_steps=ig_steps, max_tokens=max_tokens)
    chosen = estimate.scores.argsort(descending=True)[:rescore_edges]
    measured, forwards = exact_effects(model, graph, batch, ablation, means, chosen, max_tokens)
    effects = rescore(estimate, measured, chosen)
    details = {"rescored_edges": len(chosen), "estimate_seconds": estimate.seconds,
               # The estimate's input identity, for completeness(): rescoring replaces effects, so only the
               # estimate that chose the measured edges has one.
               "estimate_input_sum": estimate.effects[graph.edge_writer == 0].double().sum().item(),
               "exact_seconds": time.perf_counter() - start - estimate.seconds}
    return Attribution("eap-ig-gl+exact", effects, time.perf_counter() - start, estimate.forwards + forwards,
                       ig_steps, details)


def _check_steps(ig_steps: Any) -> None:
    if not isinstance(ig_steps, int) or isinstance(ig_steps, bool) or ig_steps < 1:
        raise ValueError(f"ig_steps={ig_steps!r} is not allowed: expected a positive integer")


def quadrature(n: int, rule: str | None = None) -> tuple[Tensor, Tensor]:
    """``n`` points in (0, 1) and their weights (summing to 1) to integrate a smooth function over [0, 1]:
    Gauss-Legendre (exact for polynomials of degree 2n - 1) or the midpoint rule. No point is 0 or 1, where the
    edges' corrections (and so their gradients) vanish.

    Example:
        >>> a, w = quadrature(2)
        >>> round(float((w * a ** 3).sum()), 6), round(float(w.sum()), 6)
        (0.25, 1.0)
    """
    rule = rule or QUADRATURE
    if rule not in ("midpoint", "gauss-legendre"):
        raise ValueError(f"rule={rule!r} is not allowed: expected midpoint or gauss-legendre")
    if rule == "midpoint":
        return (torch.arange(n, dtype=torch.float64) + 0.5) / n, torch.full((n,), 1.0 / n, dtype=torch.float64)
    x, w = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy((x + 1) / 2), torch.from_numpy(w / 2)


def eap_ig_act(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None = None,
               *, ig_steps: int = ACT_IG_STEPS, max_tokens: int | None = None, **_: Any) -> Attribution:
    """EAP-IG through every activation: the gradient of the metric with respect to each edge's weight,
    integrated (:func:`quadrature`, ``ig_steps`` points) while all edges go together from ablated to kept. The effects
    of all edges sum to ``m(model) - m(empty circuit)`` as the steps grow.

    Example:
        >>> att = eap_ig_act(model, graph, batch, "mean", means, ig_steps=12)  # doctest: +SKIP
        >>> att.effects.sum()  # close to Faithfulness(...).gap  # doctest: +SKIP
    """
    _check_steps(ig_steps)
    start, forwards = time.perf_counter(), 0
    max_tokens = max_tokens or default_max_tokens(model.cfg, graph)
    alphas, weights = quadrature(ig_steps)
    S = torch.zeros(len(graph.writers), len(graph.readers), dtype=torch.float64)
    for chunk in pair_chunks(batch, max_tokens):
        patcher = Patcher(model, graph, chunk, ablation, means)
        K = max(1, max_tokens // chunk.clean.numel())
        for first in range(0, len(alphas), K):
            steps, wts = alphas[first:first + K], weights[first:first + K]
            # Entries that are not edges are never read (each reader reads a prefix of writers).
            w = steps.float()[:, None, None].expand(len(steps), len(graph.writers), len(graph.readers)).clone()
            w.requires_grad_(True)
            logits, _ = patcher.run(w, grad=True)
            (g,) = torch.autograd.grad(ld_sum(logits, chunk).sum(), [w])
            S += (g.double() * wts[:, None, None].to(g.device)).sum(dim=0).cpu()
            forwards += 1
    effects = graph.scores_to_edges(S) / len(batch)
    return Attribution("eap-ig-act", effects.float(), time.perf_counter() - start, forwards, ig_steps)


METHODS: dict[str, Method] = {
    m.name: m for m in (
        Method("exact", exact, "exact activation patching: one forward per edge"),
        Method("eap", eap, "edge attribution patching: gradient on the clean run"),
        Method("eap-ig", eap_ig, "EAP with the gradient integrated from the ablated to the clean input"),
        Method("eap-ig-gl", eap_ig_gl, "EAP-IG from the ablated to the clean input, Gauss-Legendre quadrature"),
        Method("eap-ig-act", eap_ig_act, "EAP-IG along every activation at once, from the empty circuit to the "
               "model"),
        Method("acdc", acdc, "ACDC: edges pruned one by one, logits first, while KL to the model rises <= tau"),
        Method("eap-ig-gl+exact", eap_ig_gl_exact, "EAP-IG-GL over every edge, then exact patching of its top "
               "rescore_edges edges (they rank first, by their measured effects)"),
    )
}
AUTO = "auto"
"""The default method name: :func:`resolve_method` turns it into exact or eap-ig-gl by the graph's size."""


def resolve_method(method: str, graph: ComponentGraph, ig_steps: int | None = None,
                   exact_max_edges: int = EXACT_MAX_EDGES) -> tuple[str, int | None]:
    """The method and integration steps a run uses: ``auto`` is exact patching up to ``exact_max_edges`` edges and
    eap-ig-gl+exact above; ``ig_steps`` None is the method's default (None for exact).

    Example:
        >>> resolve_method("auto", ComponentGraph(4, 4)), resolve_method("auto", ComponentGraph(12, 12))
        (('exact', None), ('eap-ig-gl+exact', 12))
        >>> resolve_method("eap-ig", ComponentGraph(2, 2))
        ('eap-ig', 5)
    """
    if method == AUTO:
        method = "exact" if graph.n_edges <= exact_max_edges else "eap-ig-gl+exact"
    return method, method_steps(method, ig_steps)


def method_steps(method: str, ig_steps: int | None = None) -> int | None:
    """The integration steps ``method`` (not auto) runs with: ``ig_steps``, or its default when None; None for exact
    patching, 1 for EAP.

    Example:
        >>> method_steps("eap-ig"), method_steps("eap-ig-gl"), method_steps("exact", 7), method_steps("eap-ig", 20)
        (5, 12, None, 20)
    """
    check_method(method)
    if method in ("exact", "acdc"):
        return None
    if method == "eap":
        return 1
    default = {"eap-ig-act": ACT_IG_STEPS, "eap-ig-gl": GL_IG_STEPS,
               "eap-ig-gl+exact": GL_IG_STEPS}.get(method, DEFAULT_IG_STEPS)
    return default if ig_steps is None else ig_steps


def completeness(att: Attribution, fa: Any) -> dict[str, Any]:
    """The run's completeness identity checked against a measured forward (``fa`` a
    :class:`~glassformer.analysis.component.faithfulness.Faithfulness` of the same batch): ``attributed`` (the sum
    of the effects the identity covers), ``measured`` (the metric drop it should equal), ``relative_error``
    (``|attributed - measured| / |measured|``) and ``identity`` (which sum, in words). Exact patching and ACDC have
    no identity (exact removes each edge alone, so effects need not add up; ACDC's effects are KL increases, not
    logit differences): all three numbers are None. ``eap-ig-gl+exact`` is checked on the EAP-IG-GL estimate that
    chose the edges it measured (its input identity, before rescoring).

    Example:
        >>> completeness(eap_ig_act(model, graph, batch, "mean", means), fa)["relative_error"] < 0.05  # doctest: +SKIP
        True
    """
    graph = fa.graph
    rescored = att.method == "eap-ig-gl+exact" and "estimate_input_sum" in (att.details or {})
    if att.method in ("exact", "acdc") or (att.method == "eap-ig-gl+exact" and not rescored):
        return {"identity": None, "attributed": None, "measured": None, "relative_error": None}
    if att.method == "eap-ig-act":
        attributed, measured = att.effects.double().sum().item(), fa.m_model - fa.m_empty
        identity = "sum over all edges = m(model) - m(empty circuit)"
    else:
        inputs = graph.edge_writer == 0
        attributed = att.details["estimate_input_sum"] if rescored else att.effects[inputs].double().sum().item()
        measured = fa.m_model - fa.per_pair((~inputs)[None]).mean().item()
        identity = "sum over the input's edges = m(model) - m(input's edges ablated)"
        if rescored:
            identity = f"EAP-IG-GL estimate before rescoring: {identity}"
    error = abs(attributed - measured) / abs(measured) if measured != 0 else float("inf")
    return {"identity": identity, "attributed": attributed, "measured": measured, "relative_error": error}


def check_completeness(record: dict[str, Any], where: str, tolerance: float = COMPLETENESS_TOLERANCE) -> None:
    """Warn (``warnings.warn``) when a :func:`completeness` record's relative error is above ``tolerance``.

    Example:
        >>> check_completeness({"relative_error": 0.01, "attributed": 1.0, "measured": 1.01}, "task x")
    """
    error = record.get("relative_error")
    if error is not None and error > tolerance:
        warnings.warn(f"attribution is not complete on {where}: the effects sum to {record['attributed']:.4g} but "
                      f"the measured total is {record['measured']:.4g} (relative error {error:.1%} > "
                      f"{tolerance:.0%}); use more ig_steps or method='exact'", stacklevel=2)


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not allowed: expected one of {', '.join(METHODS)}")


def attribute(method: str, model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str,
              means: Tensor | None = None, **kwargs: Any) -> Attribution:
    """Edge scores by the method named ``method`` (a key of :data:`METHODS`).

    Example:
        >>> attribute("eap-ig", model, graph, batch, "mean", means).scores.min() >= 0  # doctest: +SKIP
        tensor(True)
    """
    check_method(method)
    return METHODS[method].fn(model, graph, batch, ablation, means, **kwargs)
