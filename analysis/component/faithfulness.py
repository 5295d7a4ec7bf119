"""Faithfulness measured by running the model with everything outside a circuit ablated (docs/methods.md).

``f(C) = (m(C) - m(empty)) / (m(model) - m(empty))`` with m the mean logit difference over the task's pairs;
``N_p`` the smallest circuit size with ``f >= p``; CPR and CMD the trapezoid areas under ``f`` and ``|1 - f|``
over MIB's grid of circuit sizes (0.1% .. 100% of edges, x as the fraction of edges). Every f here is measured,
never an attribution estimate. Every circuit ``C_k`` (the first k edges of a ranking) is pruned of its dangling
edges (:meth:`ComponentGraph.prune`) before it is measured, and its size is the pruned edge count.

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
        self.ld_model, self.ld_empty = full, empty
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


def round_sig(values: Tensor | list[float], digits: int = 5) -> list[float]:
    """Each value rounded to ``digits`` significant digits (how per-pair records are stored).

    Example:
        >>> round_sig([3.14159265, -0.000123456789, 0.0])
        [3.1416, -0.00012346, 0.0]
    """
    return [float(f"{v:.{digits}g}") for v in torch.as_tensor(values).tolist()]


def f_from_pairs(ld: list[float], ld_model: list[float], ld_empty: list[float]) -> float:
    """f of one circuit from per-pair logit differences: ``(mean ld - mean ld_empty) / (mean ld_model - mean
    ld_empty)`` in float64 (nan when the model equals the empty circuit).

    Example:
        >>> f_from_pairs([1.0, 2.0], [2.0, 4.0], [0.0, 0.0])
        0.5
    """
    m, full, empty = (torch.tensor(x, dtype=torch.float64).mean().item() for x in (ld, ld_model, ld_empty))
    return float("nan") if full == empty else (m - empty) / (full - empty)


def evaluate_ranking(fa: Faithfulness, ranking: Tensor, *, percents: tuple[float, ...] = GRID_PERCENT,
                     thresholds: tuple[float, ...] = THRESHOLDS, probes: int = 6, rounds: int = 2
                     ) -> dict[str, Any]:
    """The faithfulness curve of the circuits C_k (first k edges of ``ranking``, pruned of dangling edges), CPR,
    CMD, N_p, and the per-pair record every f was computed from.

    N_p is searched on the curve, then refined by ``rounds`` rounds of ``probes`` circuit sizes between the
    largest size below p and the smallest at or above it (f need not be monotone, so N_p is the first size
    found). Its ``edges`` is the pruned edge count of that circuit, ``k`` the ranking prefix it was cut from;
    ``bracket`` gives the prefixes known to fail and to pass: width 1 means N_p is exact. Each f is computed from
    the per-pair logit differences rounded as stored (``pairs``: INTERFACES.md section 1), so the record
    reproduces the curve and N_p exactly.

    Example:
        >>> evaluate_ranking(fa, rank("topn", graph, att.scores))["N_0.8"]  # doctest: +SKIP
        {'edges': 10, 'k': 12, 'fraction': 0.021, 'bracket': [11, 12]}
    """
    graph, E = fa.graph, fa.graph.n_edges
    ld_model, ld_empty = round_sig(fa.ld_model), round_sig(fa.ld_empty)
    # C_0 and C_E are the empty circuit and the model: f = 0 and 1 by definition, never measured again.
    known: dict[int, float] = {0: 0.0, E: 1.0}
    record: dict[int, tuple[int, list[float]]] = {0: (0, ld_empty), E: (E, ld_model)}

    def measure(ks: list[int]) -> None:
        ks = sorted(set(k for k in ks if k not in known))
        if ks:
            masks = graph.prune(circuit_mask(ranking, torch.tensor(ks)))
            rows = fa.per_pair(masks)  # (K, B)
            for k, mask, row in zip(ks, masks, rows, strict=True):
                ld = round_sig(row)
                known[k], record[k] = f_from_pairs(ld, ld_model, ld_empty), (int(mask.sum()), ld)

    sizes = [size_for_percent(E, p) for p in percents]
    measure(sizes)
    curve = [{"percent": p, "k": k, "edges": record[k][0], "f": known[k]}
             for p, k in zip(percents, sizes, strict=True)]
    out: dict[str, Any] = {"curve": curve, **areas(curve)}
    for p in thresholds:
        key = f"N_{p:g}"
        if math.isnan(known[sizes[0]]):
            out[key] = {"edges": None, "k": None, "fraction": None, "bracket": None}
            continue
        lo, hi = _bracket(known, p)
        for _ in range(rounds):
            if hi - lo <= 1:
                break
            step = (hi - lo) / (probes + 1)
            measure([k for k in {lo + round(step * i) for i in range(1, probes + 1)} if lo < k < hi])
            lo, hi = _bracket(known, p)
        out[key] = {"edges": record[hi][0], "k": hi, "fraction": record[hi][0] / E, "bracket": [lo, hi]}
    out["signal"] = fa.signal
    ks = sorted(record)
    out["pairs"] = {"edges": [record[k][0] for k in ks], "ld": [record[k][1] for k in ks],
                    "ld_model": ld_model, "ld_empty": ld_empty}
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
