"""Exact patching of a chosen set of edges, and the method that uses it above the exact-patching budget.

Gradient attribution ranks the many edges of a large graph cheaply, but its estimate of an edge's effect can be
far from the effect measured by removing that edge (interactions, saturation): on the ``tiny`` model its N_0.8
came out 2-9x exact patching's even where its completeness identity held to 6% (benchmarks/RESULTS.md). Where
exact patching of every edge is too dear, ``eap-ig-gl+exact`` measures exactly the ``rescore_edges`` edges
EAP-IG-GL ranks highest: those take their measured effects and rank first, the rest keep their estimates and rank
after them. With ``rescore_edges`` at least the number of edges, it is exact patching.

The method itself is ``eap_ig_gl_exact`` in :mod:`.attribution`, beside the estimate it starts from.

Example:
    >>> effects, forwards = exact_effects(model, graph, batch, "mean", means, torch.tensor([0, 5]))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from glassformer.analysis.component.ablation import Patcher, default_max_tokens
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.component.records import Attribution, pair_chunks
from glassformer.analysis.tasks.base import TaskBatch, logit_diff


def ld_sum(logits: Tensor, batch: TaskBatch) -> Tensor:
    """(K, B, d_vocab) last-position logits of K patched runs -> (K,) the sum over pairs of the logit difference
    (correct answer minus the corrupted prompt's answer): the metric every patching method differentiates or
    differences.

    Example:
        >>> b = TaskBatch("t", torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long),
        ...               torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([2, 1]))
        >>> ld_sum(torch.tensor([[[0.0, 3.0, 1.0], [0.0, 0.0, 2.0]]]), b).tolist()
        [4.0]
    """
    return torch.stack([logit_diff(lg[:, None], batch).sum() for lg in logits])


@torch.no_grad()
def exact_effects(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None,
                  edges: Tensor, max_tokens: int | None = None, *, from_block: bool = True) -> tuple[Tensor, int]:
    """The measured effect ``m(model) - m(model without e)`` of each edge in ``edges`` (indices), each removed
    alone, as ((len(edges),) float64, forwards run). Many edges share a forward as replicas of the batch; edges into
    the same block share one, which starts at that block from the clean run (the blocks before it are clean).
    ``from_block=False`` runs every forward from the input instead (the same numbers, slower: for benchmarks).

    Example:
        >>> effects, forwards = exact_effects(model, graph, batch, "zero", None, torch.arange(10))  # doctest: +SKIP
    """
    max_tokens = max_tokens or default_max_tokens(model.cfg, graph)
    edges = torch.as_tensor(edges, dtype=torch.long).flatten()
    total = torch.zeros(len(edges), dtype=torch.float64)
    base = graph.weights(torch.ones(graph.n_edges))
    stage = reader_stages(graph)[graph.edge_reader[edges]]  # the block each edge's reader is in
    forwards = 0
    for chunk in pair_chunks(batch, max_tokens):
        patcher = Patcher(model, graph, chunk, ablation, means)
        prefix = patcher.clean_prefix() if from_block else None
        K = max(1, max_tokens // chunk.clean.numel())
        clean = ld_sum(patcher.run(base[None]), chunk).item()
        forwards += 1
        for start in stage.unique().tolist():
            members = (stage == start).nonzero().flatten()
            for first in range(0, len(members), K):
                at = members[first:first + K]
                part = edges[at]
                w = base.repeat(len(part), 1, 1)  # (K, n_writers, n_readers)
                w[torch.arange(len(part)), graph.edge_writer[part], graph.edge_reader[part]] = 0.0
                logits = patcher.run(w, start=start, prefix=prefix) if start and from_block else patcher.run(w)
                total[at] += clean - ld_sum(logits, chunk).double().cpu()
                forwards += 1
    return total / len(batch), forwards


def reader_stages(graph: ComponentGraph) -> Tensor:
    """The block each reader belongs to, (n_readers,) long: its layer, and n_layers for the logits.

    Example:
        >>> reader_stages(ComponentGraph(n_layers=1, n_heads=1, attn_only=True)).tolist()
        [0, 0, 0, 1]
    """
    return torch.tensor([graph.n_layers if r.node.layer is None else r.node.layer for r in graph.readers])


def rescore(att: Attribution, measured: Tensor, edges: Tensor) -> Tensor:
    """Effects whose ranking puts ``edges`` first, ordered by their ``measured`` effects, and every other edge after
    them in the order of ``att``'s estimates: the rest are scaled below the smallest measured score.

    Example:
        >>> a = Attribution("eap-ig-gl", torch.tensor([5.0, 4.0, 3.0, 0.1]), 0.0, 1, 12)
        >>> rescore(a, torch.tensor([0.2, 2.0]), torch.tensor([0, 1])).abs().argsort(descending=True).tolist()
        [1, 0, 2, 3]
    """
    effects = att.effects.double().clone()
    chosen = torch.zeros(len(effects), dtype=torch.bool)
    chosen[edges] = True
    floor = measured.abs().min().item() if len(measured) else 0.0
    rest = effects[~chosen]
    top = rest.abs().max().item() if len(rest) else 0.0
    if top > 0:
        # Below every measured score, order kept: the unmeasured tail never jumps ahead of a measured edge.
        effects[~chosen] = rest / top * floor * 0.5
    effects[edges] = measured.double()
    return effects.float()

