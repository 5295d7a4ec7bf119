"""The record every attribution method returns, and the batching of pairs the methods and faithfulness share.

A leaf of the component level: the methods (:mod:`.attribution`, :mod:`.acdc`) and the node level build on it, so
the registry of methods can import every method without a cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor

from glassformer.analysis.tasks.base import TaskBatch


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
    ig_steps: int | None = None
    """Integration steps (None for exact patching)."""
    details: dict | None = None
    """What else a method records about its run (e.g. how many edges ``eap-ig-gl+exact`` measured)."""

    @property
    def scores(self) -> Tensor:
        """(n_edges,) importance: ``|effect|``."""
        return self.effects.abs()


def pair_chunks(batch: TaskBatch, max_tokens: int, replicas: int = 1) -> Iterator[TaskBatch]:
    """Consecutive sub-batches small enough that ``replicas`` copies fit in ``max_tokens`` tokens."""
    B, T = batch.clean.shape
    size = max(1, min(B, max_tokens // max(1, T * replicas)))
    for start in range(0, B, size):
        yield batch.subset(slice(start, start + size))
