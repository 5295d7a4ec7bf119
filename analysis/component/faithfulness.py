"""Faithfulness measured by running the model with everything outside a circuit ablated (docs/methods.md).

``f(C) = (m(C) - m(empty)) / (m(model) - m(empty))`` with m the mean logit difference over the task's pairs;
``N_p`` the smallest circuit size with ``f >= p``; CPR and CMD the trapezoid areas under ``f`` and ``|1 - f|``
over MIB's grid of circuit sizes (0.1% .. 100% of edges, x as the fraction of edges). Every f here is measured,
never an attribution estimate.

Example:
    >>> areas([{"percent": 50, "f": 0.5}, {"percent": 100, "f": 1.0}])
    {'CPR': 0.375, 'CMD': 0.125}
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor

from glassformer.analysis.component.ablation import Patcher, default_max_tokens
from glassformer.analysis.component.circuits import circuit_mask
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.component.records import pair_chunks
from glassformer.analysis.tasks.base import TaskBatch, logit_diff

GRID_PERCENT = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
"""MIB's circuit sizes, in percent of edges."""
THRESHOLDS = (0.8, 0.9)


def size_for_percent(n_edges: int, percent: float) -> int:
    """Edges in a circuit of ``percent`` % of ``n_edges`` (at least one).

    Example:
        >>> size_for_percent(479, 0.1), size_for_percent(479, 10), size_for_percent(479, 100)
        (1, 48, 479)
    """
    return min(n_edges, max(1, round(percent / 100 * n_edges)))


class Faithfulness:
    """Measures ``m`` and ``f`` of circuits (boolean edge masks) on a task batch, many circuits per forward.

    Example:
        >>> fa = Faithfulness(model, graph, batch, "mean", means)  # doctest: +SKIP
        >>> fa.f(torch.ones(1, graph.n_edges, dtype=torch.bool))  # doctest: +SKIP
        tensor([1.])
    """

    def __init__(self, model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str,
                 means: Tensor | None = None, max_tokens: int | None = None):
        max_tokens = max_tokens or default_max_tokens(model.cfg, graph)
        self.graph, self.max_tokens, self.n_pairs = graph, max_tokens, len(batch)
        self.patchers = [Patcher(model, graph, c, ablation, means) for c in pair_chunks(batch, max_tokens)]
        self.forwards = 0
        E = graph.n_edges
        per_pair = self.per_pair(torch.stack([torch.ones(E, dtype=torch.bool), torch.zeros(E, dtype=torch.bool)]))
        full, empty = per_pair  # (B,) each
        self.m_model, self.m_empty = full.mean().item(), empty.mean().item()
        gap = full - empty  # (B,)
        self.gap = self.m_model - self.m_empty
        stderr = gap.std().item() / math.sqrt(len(gap)) if len(gap) > 1 else float("inf")
        # Without a gap clearly above its noise, f divides noise by noise: the sizes are then flagged.
        self.signal = bool(abs(self.gap) > 2 * stderr and self.gap != 0)

    @torch.no_grad()
    def per_pair(self, masks: Tensor) -> Tensor:
        """(K, n_edges) boolean circuits -> (K, B) logit difference of every pair with the rest ablated."""
        out = []
        for patcher in self.patchers:
            chunk = patcher.batch
            K = max(1, self.max_tokens // chunk.clean.numel())
            rows = []
            for first in range(0, masks.shape[0], K):
                logits = patcher.run(self.graph.weights(masks[first:first + K].float()))  # (K, B, d_vocab)
                rows.append(torch.stack([logit_diff(lg[:, None], chunk) for lg in logits]).float().cpu())
                self.forwards += 1
            out.append(torch.cat(rows))
        return torch.cat(out, dim=1)

    def m(self, masks: Tensor) -> Tensor:
        """(K, n_edges) circuits -> (K,) mean logit difference, measured."""
        return self.per_pair(masks).mean(dim=1)

    def f(self, masks: Tensor) -> Tensor:
        """(K, n_edges) circuits -> (K,) normalised faithfulness (nan when the model equals the empty circuit)."""
        if self.gap == 0:
            return torch.full((masks.shape[0],), float("nan"))
        return (self.m(masks) - self.m_empty) / self.gap


def evaluate_ranking(fa: Faithfulness, ranking: Tensor, *, percents: tuple[float, ...] = GRID_PERCENT,
                     thresholds: tuple[float, ...] = THRESHOLDS, probes: int = 6, rounds: int = 2
                     ) -> dict[str, Any]:
    """The faithfulness curve of the circuits C_k (first k edges of ``ranking``), CPR, CMD and N_p.

    N_p is searched on the curve, then refined by ``rounds`` rounds of ``probes`` circuit sizes between the
    largest size below p and the smallest at or above it (f need not be monotone, so N_p is the first size
    found). ``bracket`` gives the sizes that were known to fail and to pass: width 1 means N_p is exact.

    Example:
        >>> evaluate_ranking(fa, rank("topn", graph, att.scores))["N_0.8"]  # doctest: +SKIP
        {'edges': 12, 'fraction': 0.025, 'bracket': [11, 12]}
    """
    E = fa.graph.n_edges
    known: dict[int, float] = {0: 0.0, E: 1.0}

    def measure(ks: list[int]) -> None:
        ks = sorted(set(k for k in ks if k not in known))
        if ks:
            values = fa.f(circuit_mask(ranking, torch.tensor(ks)))
            known.update(zip(ks, values.tolist(), strict=True))

    sizes = [size_for_percent(E, p) for p in percents]
    measure(sizes)
    curve = [{"percent": p, "edges": k, "f": known[k]} for p, k in zip(percents, sizes, strict=True)]
    out: dict[str, Any] = {"curve": curve, **areas(curve)}
    for p in thresholds:
        key = f"N_{p:g}"
        if math.isnan(known[sizes[0]]):
            out[key] = {"edges": None, "fraction": None, "bracket": None}
            continue
        lo, hi = _bracket(known, p)
        for _ in range(rounds):
            if hi - lo <= 1:
                break
            step = (hi - lo) / (probes + 1)
            measure([k for k in {lo + round(step * i) for i in range(1, probes + 1)} if lo < k < hi])
            lo, hi = _bracket(known, p)
        out[key] = {"edges": hi, "fraction": hi / E, "bracket": [lo, hi]}
    out["signal"] = fa.signal
    return out


def _bracket(known: dict[int, float], p: float) -> tuple[int, int]:
    """(largest size measured below the first size reaching p, that first size)."""
    ks = sorted(known)
    hi = next(k for k in ks if known[k] >= p)
    return max((k for k in ks if k < hi), default=0), hi


def areas(curve: list[dict[str, Any]]) -> dict[str, float]:
    """CPR and CMD: trapezoid areas under f and |1 - f| over the fraction of edges."""
    xs = [c["percent"] / 100 for c in curve]
    fs = [c["f"] for c in curve]
    segments = list(zip(pairwise(xs), pairwise(fs), strict=True))
    cpr = sum((x1 - x0) * (f0 + f1) / 2 for (x0, x1), (f0, f1) in segments)
    cmd = sum((x1 - x0) * (abs(1 - f0) + abs(1 - f1)) / 2 for (x0, x1), (f0, f1) in segments)
    return {"CPR": cpr, "CMD": cmd}
