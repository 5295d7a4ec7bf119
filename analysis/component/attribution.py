"""Edge scores by exact patching, EAP and EAP-IG (docs/methods.md). Higher means more important, everywhere.

Each method estimates, for every edge e, the drop in the mean logit difference when e alone is ablated:
``effect_e = m(model) - m(model without e)``. Exact patching measures it (one forward per edge, many edges per
forward as replicas of the batch); EAP linearises it, ``effect_e ~ -(a_u(ablated) - a_u(clean)) . dm/d input_v``
with the gradient on the clean run; EAP-IG averages that gradient over ``ig_steps`` points
``alpha = k / ig_steps`` (k = 1..m) on the straight line from the ablated to the clean input embeddings (with
m = 1 it is EAP). The score of an edge is ``|effect_e|``: an edge whose removal raises the metric matters too.

Example:
    >>> sorted(METHODS)
    ['acdc', 'eap', 'eap-ig', 'exact']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from glassformer.analysis.component.ablation import Patcher, default_max_tokens
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.tasks.base import TaskBatch, logit_diff

DEFAULT_IG_STEPS = 5
"""MIB's default number of integration steps."""


@dataclass
class Attribution:
    """Edge (or, from ``node_attribution``, node) scores of one method on one task batch."""

    method: str
    effects: Tensor
    """(n_edges,) or (n_nodes,): drop in mean logit difference when the edge or node alone is ablated (measured or
    estimated)."""
    seconds: float
    forwards: int
    """Model forwards run (one per batch of replicas)."""

    @property
    def scores(self) -> Tensor:
        """(n_edges,) importance: ``|effect|``."""
        return self.effects.abs()


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., Attribution]
    description: str


def pair_chunks(batch: TaskBatch, max_tokens: int, replicas: int = 1) -> Iterator[TaskBatch]:
    """Consecutive sub-batches small enough that ``replicas`` copies fit in ``max_tokens`` tokens."""
    B, T = batch.clean.shape
    size = max(1, min(B, max_tokens // max(1, T * replicas)))
    for start in range(0, B, size):
        idx = slice(start, start + size)
        yield replace(batch, clean=batch.clean[idx], corrupt=batch.corrupt[idx], last=batch.last[idx],
                      correct=batch.correct[idx], alternative=batch.alternative[idx],
                      pairs=batch.pairs[idx])


def _ld_sum(logits: Tensor, batch: TaskBatch) -> Tensor:
    """(K, B, d_vocab) last-position logits -> (K,) sum over pairs of the logit difference."""
    return torch.stack([logit_diff(lg[:, None], batch).sum() for lg in logits])


def exact(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None = None,
          *, max_tokens: int | None = None, **_: Any) -> Attribution:
    """Exact patching: ablate each edge alone and measure the metric (the ground truth on small graphs).

    Example:
        >>> att = exact(model, graph, batch, "mean", means)  # doctest: +SKIP
        >>> att.scores.shape == (graph.n_edges,)  # doctest: +SKIP
        True
    """
    start, forwards = time.perf_counter(), 0
    max_tokens = max_tokens or default_max_tokens(model.cfg, graph)
    E = graph.n_edges
    total = torch.zeros(E, dtype=torch.float64)
    base = graph.weights(torch.ones(E))
    for chunk in pair_chunks(batch, max_tokens):
        patcher = Patcher(model, graph, chunk, ablation, means)
        K = max(1, max_tokens // chunk.clean.numel())
        with torch.no_grad():
            clean = _ld_sum(patcher.run(base[None]), chunk).item()
            forwards += 1
            for first in range(0, E, K):
                edges = torch.arange(first, min(first + K, E))
                w = base.repeat(len(edges), 1, 1)  # (K, n_writers, n_readers)
                w[torch.arange(len(edges)), graph.edge_writer[edges], graph.edge_reader[edges]] = 0.0
                total[edges] += clean - _ld_sum(patcher.run(w), chunk).double().cpu()
                forwards += 1
    return Attribution("exact", (total / len(batch)).float(), time.perf_counter() - start, forwards)


def _gradient_scores(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None,
                     alphas: list[float], max_tokens: int | None) -> tuple[Tensor, int]:
    """sum over pairs of -(a_u(ablated) - a_u(clean)) . mean over alphas of dm/d input_v, as (n_edges,)."""
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
            w = base.repeat(len(steps), 1, 1)  # (K, n_writers, n_readers)
            w[:, 0, :] = torch.tensor(steps)[:, None]  # the input's edges carry alpha of the clean embedding
            logits, inputs = patcher.run(w, grad=True)
            grads = torch.autograd.grad(_ld_sum(logits, chunk).sum(), [t for _, t in inputs])
            forwards += 1
            flat = delta.flatten(1)  # (n_writers, B * T * d_model)
            for (readers, _), g in zip(inputs, grads, strict=True):  # g (K, B, T, R, d_model)
                n_up = int(graph.n_upstream[readers.start])
                g = g.detach().sum(dim=0).transpose(1, 2).flatten(start_dim=2)  # (B, R, T * d_model)
                g = g.transpose(0, 1).reshape(g.shape[1], -1)  # (R, B * T * d_model)
                S[:n_up, readers] -= (flat[:n_up] @ g.T).double().cpu()
    S /= len(alphas)
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
    return Attribution("eap", (S / len(batch)).float(), time.perf_counter() - start, forwards)


def eap_ig(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None = None,
           *, ig_steps: int = DEFAULT_IG_STEPS, max_tokens: int | None = None, **_: Any) -> Attribution:
    """EAP with integrated gradients (Hanna et al. 2024) over ``ig_steps`` points from ablated to clean input.

    Example:
        >>> eap_ig(model, graph, batch, "mean", means, ig_steps=5).method  # doctest: +SKIP
        'eap-ig'
    """
    if not isinstance(ig_steps, int) or isinstance(ig_steps, bool) or ig_steps < 1:
        raise ValueError(f"ig_steps={ig_steps!r} is not allowed: expected a positive integer")
    start = time.perf_counter()
    alphas = [k / ig_steps for k in range(1, ig_steps + 1)]
    S, forwards = _gradient_scores(model, graph, batch, ablation, means, alphas, max_tokens)
    return Attribution("eap-ig", (S / len(batch)).float(), time.perf_counter() - start, forwards)


def _acdc(*args: Any, **kwargs: Any) -> Attribution:
    # Imported when called: acdc builds on this module's Attribution.
    from glassformer.analysis.component.acdc import acdc
    return acdc(*args, **kwargs)


METHODS: dict[str, Method] = {
    m.name: m for m in (
        Method("exact", exact, "exact activation patching: one forward per edge"),
        Method("eap", eap, "edge attribution patching: gradient on the clean run"),
        Method("eap-ig", eap_ig, "EAP with the gradient integrated from the ablated to the clean input"),
        Method("acdc", _acdc, "ACDC: edges pruned one by one, logits first, while KL to the model rises <= tau"),
    )
}


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
