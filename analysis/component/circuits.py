"""Circuits from edge scores: rankings whose first k edges are the circuit C_k.

``topn``: edges in order of score. ``greedy``: grown from the logits: the next edge is the best-scoring edge into
a node already in the circuit, so every chosen edge has a path to the logits (a top-n circuit can spend edges on
nodes whose output nothing in the circuit reads).

Example:
    >>> from glassformer.analysis.component.graph import ComponentGraph
    >>> g = ComponentGraph(1, 1, attn_only=True)   # edges: input->a0.h0<q|k|v>, input->logits, a0.h0->logits
    >>> scores = torch.tensor([5.0, 0.0, 0.0, 1.0, 2.0])
    >>> rank("topn", g, scores).tolist(), rank("greedy", g, scores).tolist()
    ([0, 4, 3, 1, 2], [4, 0, 3, 1, 2])
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import torch
from torch import Tensor

from glassformer.analysis.component.graph import ComponentGraph


def rank_topn(graph: ComponentGraph, scores: Tensor) -> Tensor:
    """Edge indices by descending score (ties by index)."""
    return torch.sort(scores.float(), descending=True, stable=True).indices


def rank_greedy(graph: ComponentGraph, scores: Tensor) -> Tensor:
    """Edge indices in the order greedy growth from the logits adds them (ties by index)."""
    values = scores.float().tolist()
    by_reader_node: dict[str, list[int]] = {}
    for e, r in enumerate(graph.edge_reader.tolist()):
        by_reader_node.setdefault(graph.readers[r].node.name, []).append(e)
    heap = [(-values[e], e) for e in by_reader_node[graph.logits.name]]
    heapq.heapify(heap)
    reached = {graph.logits.name}
    order: list[int] = []
    writers = graph.edge_writer.tolist()
    while heap:
        _, e = heapq.heappop(heap)
        order.append(e)
        node = graph.writers[writers[e]].name
        if node not in reached:
            reached.add(node)
            for e2 in by_reader_node.get(node, []):
                heapq.heappush(heap, (-values[e2], e2))
    # Every writer feeds the logits directly, so growth reaches every node and ranks every edge.
    assert len(order) == graph.n_edges
    return torch.tensor(order, dtype=torch.long)


SELECTIONS: dict[str, Callable[[ComponentGraph, Tensor], Tensor]] = {"topn": rank_topn, "greedy": rank_greedy}


def rank(selection: str, graph: ComponentGraph, scores: Tensor) -> Tensor:
    """The ranking of ``selection`` (a key of :data:`SELECTIONS`): C_k is its first k edges."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection={selection!r} is not allowed: expected one of {', '.join(SELECTIONS)}")
    if scores.shape != (graph.n_edges,):
        raise ValueError(f"scores of shape {tuple(scores.shape)} do not fit the graph: expected ({graph.n_edges},)")
    return SELECTIONS[selection](graph, scores)


def circuit_mask(ranking: Tensor, k: int | Tensor) -> Tensor:
    """Boolean (n_edges,) mask of the first ``k`` edges of ``ranking`` (or (K, n_edges) for a tensor of ks).

    Example:
        >>> circuit_mask(torch.tensor([2, 0, 1]), 2).tolist()
        [True, False, True]
    """
    ks = torch.as_tensor(k).reshape(-1)
    position = torch.empty_like(ranking)
    position[ranking] = torch.arange(len(ranking))
    mask = position[None, :] < ks[:, None]  # (K, n_edges)
    return mask[0] if isinstance(k, int) else mask
