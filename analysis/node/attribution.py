"""Node scores by attribution (the fast alternative to learned masks), and their agreement with a mask.

Every node i is gated ``x_i -> base_i + g_i (x_i - base_i)`` (:class:`GatedModel`; ``base`` the mean or zero).
With m the mean logit difference over the pairs, the effect of node i is estimated as

    effect_i = mean over alpha in {1/s, 2/s, .., 1} of  dm/dg_i  at g = (alpha, .., alpha)

that is, integrated gradients (Sundararajan et al. 2017; EAP-IG's integration, Hanna et al. 2024) along the
straight line in gate space from the fully ablated model (every g = 0) to the model (every g = 1). By
completeness the effects sum to about ``m(model) - m(all ablated)``. With one step (``eap``) it is attribution
patching: the gradient at the model, a linear estimate of ``m(model) - m(model without i)``. The score of a node
is ``|effect|``: higher means more important. Two forwards and backwards per step, whatever the number of nodes.

Example:
    >>> sorted(NODE_SCORES)
    ['eap', 'eap-ig']
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from glassformer.analysis.component.attribution import DEFAULT_IG_STEPS
from glassformer.analysis.component.records import Attribution
from glassformer.analysis.node.graph import GatedModel, frozen_weights
from glassformer.analysis.tasks.base import logit_diff

NODE_SCORES: dict[str, str] = {
    "eap": "attribution patching at node level: d(logit diff)/d(gate) at the model",
    "eap-ig": "integrated gradients over every node's gate, from all ablated to the model",
}
def attribute_nodes(method: str, gated: GatedModel, ig_steps: int = DEFAULT_IG_STEPS,
                    max_tokens: int = 16384) -> Attribution:
    """Node effects by ``method`` (``eap`` or ``eap-ig``) on ``gated``'s batch; model weights get no gradient.

    The :class:`~glassformer.analysis.component.attribution.Attribution` returned holds one effect per node (not per edge):
    the estimated drop in mean logit difference when that node is ablated.

    Example:
        >>> att = attribute_nodes("eap-ig", GatedModel(model, graph, batch, "mean", means))  # doctest: +SKIP
        >>> att.scores.shape == (graph.n_nodes,)  # doctest: +SKIP
        True
    """
    if method not in NODE_SCORES:
        raise ValueError(f"method={method!r} is not allowed for node scores: expected one of {', '.join(NODE_SCORES)}")
    if not isinstance(ig_steps, int) or isinstance(ig_steps, bool) or ig_steps < 1:
        raise ValueError(f"ig_steps={ig_steps!r} is not allowed: expected a positive integer")
    start = time.perf_counter()
    steps = 1 if method == "eap" else ig_steps
    alphas = [k / steps for k in range(1, steps + 1)]
    n, B = gated.graph.n_nodes, len(gated.batch)
    per = max(1, max_tokens // max(1, gated.batch.clean.numel()))
    total = torch.zeros(n, dtype=torch.float64)
    forwards = 0
    with frozen_weights(gated.model), torch.enable_grad():
        for first in range(0, len(alphas), per):
            a = torch.tensor(alphas[first:first + per], device=gated.base.device)
            gates = a[:, None].expand(len(a), n).clone().requires_grad_(True)  # (K, n_nodes)
            logits = gated.logits(gates)  # (K, B, d_vocab)
            m = sum(logit_diff(lg[:, None], gated.batch).float().sum() for lg in logits)
            (grad,) = torch.autograd.grad(m, gates)
            total += grad.sum(dim=0).double().cpu()
            forwards += 1
    effects = (total / (len(alphas) * B)).float()
    return Attribution(method, effects, time.perf_counter() - start, forwards)


def average_ranks(x: Tensor) -> Tensor:
    """Ranks 1..n of ``x`` (n,), ties sharing the mean of their ranks.

    Example:
        >>> average_ranks(torch.tensor([10.0, 30.0, 20.0, 30.0])).tolist()
        [1.0, 3.5, 2.0, 3.5]
    """
    x = x.double().cpu()
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    n, i = len(x), 0
    while i < n:
        j = i
        while j + 1 < n and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Tensor, b: Tensor) -> float | None:
    """Spearman rank correlation (Pearson correlation of average ranks); None when either is constant.

    Example:
        >>> spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 30.0, 20.0]))
        0.5
    """
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"spearman needs two vectors of one length, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return None if denom == 0 else round((ra @ rb).item() / denom, 12)


def agreement(mask_keep: Tensor | None, mask_tau: Tensor, scores: Tensor) -> dict[str, Any]:
    """How far attribution scores agree with a learned mask: Spearman correlation of ``scores`` with ``tau`` over
    every node, and ``overlap``, the fraction of the mask's circuit (``mask_keep``, n_nodes bool) found among the
    same number of top-scoring nodes (None without a circuit).

    Example:
        >>> keep = torch.tensor([True, True, False, False])
        >>> agreement(keep, torch.tensor([1.0, 0.5, -1.0, -1.0]), torch.tensor([3.0, 0.0, 2.0, 0.0]))["overlap"]
        0.5
    """
    out: dict[str, Any] = {"spearman": spearman(mask_tau.float().cpu(), scores.float().cpu()), "overlap": None,
                           "circuit_nodes": None}
    if mask_keep is not None and int(mask_keep.sum()) > 0:
        k = int(mask_keep.sum())
        top = torch.sort(scores.float().cpu(), descending=True, stable=True).indices[:k]
        out["overlap"] = float(mask_keep.cpu()[top].float().mean())
        out["circuit_nodes"] = k
    return out
