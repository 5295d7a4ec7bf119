"""ACDC (Conmy et al. 2023): prune the component graph edge by edge against a threshold on the KL divergence.

Nodes are visited in reverse topological order, from the logits back to the first layer (within a layer the MLP
before the heads, each head's q, k and v inputs in turn). For every incoming edge of the current node, latest writer
first, the edge's removal is tested against the graph as it stands (every edge removed so far stays removed):

    remove e  if  KL(full || current - e) - KL(full || current) <= threshold

with KL the divergence of the last-position next-token distribution of the pruned graph from the full model's,
averaged over the task's pairs (nats). KL rather than the logit difference: it needs no answer tokens, is zero for
the full graph, and cannot rise by cancelling effects the way a signed metric can. ``<=`` so that threshold 0
removes exactly the edges whose removal does not raise the divergence at all, and keeps every edge that matters.

Exactness of batching: a forward evaluates several candidates as replicas, candidate j with candidates 1..j removed
(the guess that all before it are removed). The results are used up to and including the first candidate that is
kept; the rest are discarded and tested again from the new state, so the decisions are those of one forward per
edge, in order.

Example:
    >>> att = acdc(model, graph, batch, "mean", means, acdc_threshold=0.01)  # doctest: +SKIP
    >>> att.n_kept, int(att.kept.sum())  # doctest: +SKIP
    (37, 37)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from glassformer.analysis.component.ablation import Patcher, default_max_tokens
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.component.records import Attribution, pair_chunks
from glassformer.analysis.tasks.base import TaskBatch

DEFAULT_ACDC_THRESHOLD = 0.01
"""KL increase (nats, mean over pairs) below which ACDC removes an edge."""
MAX_CANDIDATES = 32
"""Most candidate removals evaluated in one forward (as replicas of the batch)."""


@dataclass
class ACDCAttribution(Attribution):
    """ACDC's result as edge effects: a removed edge's effect is the KL increase its removal caused (at least 0, at
    most the threshold); a kept edge's is the increase its removal would have caused (above the threshold), so
    every kept edge ranks above every removed one."""

    kept: Tensor | None = None
    """(n_edges,) bool: the circuit ACDC found."""
    threshold: float = DEFAULT_ACDC_THRESHOLD

    @property
    def n_kept(self) -> int:
        """Edges ACDC kept."""
        return int(self.kept.sum())


def check_threshold(threshold: Any) -> float:
    """``threshold`` as a float, or ValueError naming the setting.

    Example:
        >>> check_threshold(0)
        0.0
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or threshold < 0:
        raise ValueError(f"acdc_threshold={threshold!r} is not allowed: expected a finite number >= 0 "
                         f"(a KL increase in nats)")
    return float(threshold)


def visit_order(graph: ComponentGraph) -> list[int]:
    """Every edge once, in ACDC's order: readers from the logits back to layer 0, each reader's edges latest writer
    first.

    Example:
        >>> g = ComponentGraph(1, 1, attn_only=True)
        >>> [g.edge_names()[e] for e in visit_order(g)]
        ['a0.h0->logits', 'input->logits', 'input->a0.h0<q>', 'input->a0.h0<k>', 'input->a0.h0<v>']
    """
    readers = [graph.logits_reader]
    for layer in reversed(range(graph.n_layers)):
        if not graph.attn_only:
            readers.append(graph.mlp_reader(layer))
        for head in reversed(range(graph.n_heads)):
            readers += [graph.head_reader(layer, head, c) for c in "qkv"]
    order = []
    for r in readers:
        order += reversed((graph.edge_reader == r).nonzero().flatten().tolist())
    return order


class _KL:
    """Mean over pairs of KL(full model || patched graph) at the last position, many edge settings per call."""

    def __init__(self, model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None,
                 max_tokens: int):
        self.graph, self.n_pairs, self.forwards = graph, len(batch), 0
        self.patchers = [Patcher(model, graph, c, ablation, means) for c in pair_chunks(batch, max_tokens)]
        full = graph.weights(torch.ones(graph.n_edges))[None]
        self.reference = []
        with torch.no_grad():
            for p in self.patchers:
                self.reference.append(p.run(full)[0].double().log_softmax(-1))  # (B, d_vocab)
                self.forwards += 1

    @torch.no_grad()
    def __call__(self, keep: Tensor) -> Tensor:
        """(K, n_edges) keep-weights -> (K,) float64 mean KL."""
        total = torch.zeros(keep.shape[0], dtype=torch.float64)
        w = self.graph.weights(keep)
        for p, ref in zip(self.patchers, self.reference, strict=True):
            logq = p.run(w).double().log_softmax(-1)  # (K, B, d_vocab)
            total += (ref.exp() * (ref - logq)).sum(dim=(1, 2)).cpu()
            self.forwards += 1
        return total / self.n_pairs


def acdc(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None = None,
         *, acdc_threshold: float = DEFAULT_ACDC_THRESHOLD, max_tokens: int | None = None,
         max_candidates: int = MAX_CANDIDATES, **_: Any) -> ACDCAttribution:
    """ACDC's circuit for ``batch`` at threshold ``acdc_threshold`` (see the module docstring), as edge effects.

    Example:
        >>> att = acdc(model, graph, batch, "zero", acdc_threshold=0.0)  # doctest: +SKIP
        >>> bool(att.scores[att.kept].min() > att.scores[~att.kept].max())  # doctest: +SKIP
        True
    """
    threshold = check_threshold(acdc_threshold)
    if not isinstance(max_candidates, int) or isinstance(max_candidates, bool) or max_candidates < 1:
        raise ValueError(f"max_candidates={max_candidates!r} is not allowed: expected a positive integer")
    start = time.perf_counter()
    max_tokens = max_tokens or default_max_tokens(model.cfg, graph)
    kl = _KL(model, graph, batch, ablation, means, max_tokens)
    longest = max(p.batch.clean.numel() for p in kl.patchers)
    k_max = max(1, min(max_candidates, max_tokens // longest))
    keep = torch.ones(graph.n_edges)
    effects = torch.zeros(graph.n_edges, dtype=torch.float64)
    current = float(kl(keep[None])[0])
    order, i, k = visit_order(graph), 0, k_max
    while i < len(order):
        candidates = order[i:i + k]
        trials = keep.repeat(len(candidates), 1)  # row j: candidates 0..j removed
        for j, e in enumerate(candidates):
            trials[j:, e] = 0.0
        measured = kl(trials).tolist()
        for j, e in enumerate(candidates):
            i += 1
            increase = measured[j] - current
            if increase <= threshold:
                keep[e], effects[e], current = 0.0, max(increase, 0.0), measured[j]
            else:
                effects[e] = increase  # kept: the later guesses assumed it removed, so they are void
                break
        # Long runs of removals take more candidates per forward, a kept edge fewer: the decisions do not change.
        k = min(k_max, 2 * k) if j == len(candidates) - 1 and keep[candidates[-1]] == 0 else max(1, k // 2)
    return ACDCAttribution("acdc", effects.float(), time.perf_counter() - start, kl.forwards,
                           kept=keep.bool(), threshold=threshold)


__all__ = ["acdc", "ACDCAttribution", "visit_order", "check_threshold", "DEFAULT_ACDC_THRESHOLD"]
