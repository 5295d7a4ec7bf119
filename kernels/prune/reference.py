"""The specification of the magnitude projection (weight sparsity), in plain PyTorch."""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.kernels._dispatch import upcast
from glassformer.kernels.topk.reference import descending_order


def magnitude_mask_reference(W: Tensor, keep: int, min_per_row: int = 0) -> Tensor:
    """The kept mask: each row's ``min_per_row`` largest |w| first, then the largest |w| of the rest.

    Ties go to the lower flat index, so exactly ``keep`` entries are kept. Ranked by
    :func:`glassformer.kernels.topk.reference.descending_order`: a NaN weight counts as the largest magnitude.

    Example:
        >>> import torch
        >>> magnitude_mask_reference(torch.tensor([[9.0, 8.0], [1.0, 0.5]]), 2, min_per_row=1)
        tensor([[ True, False],
                [ True, False]])
    """
    R, C = W.shape
    mag = upcast(W.detach()).abs()  # (R, C)
    kept = torch.zeros((R, C), dtype=torch.bool, device=W.device)
    if min_per_row > 0:
        cols = descending_order(mag)[:, :min_per_row]  # (R, min_per_row)
        kept.scatter_(1, cols, True)
    rest = keep - R * min_per_row
    if rest > 0:
        # Reserved entries sort below every real magnitude (>= 0, or NaN, which ranks above all).
        key = torch.where(kept, torch.full_like(mag, -1.0), mag).reshape(-1)  # (R*C,)
        flat = descending_order(key)[:rest]
        kept.view(-1)[flat] = True
    return kept


def magnitude_prune_reference_(W: Tensor, keep: int, min_per_row: int = 0) -> Tensor:
    """Zero all but the kept entries of ``W`` in place; return the kept mask.

    Example:
        >>> import torch
        >>> W = torch.tensor([[3.0, -4.0, 1.0]])
        >>> magnitude_prune_reference_(W, 1)
        tensor([[False,  True, False]])
        >>> W
        tensor([[ 0., -4.,  0.]])
    """
    kept = magnitude_mask_reference(W, keep, min_per_row)
    with torch.no_grad():
        W.masked_fill_(~kept, 0)
    return kept
