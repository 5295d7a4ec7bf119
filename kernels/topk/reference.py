"""The specification of the row-wise TopK / AbsTopK activation, in plain PyTorch."""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.kernels._dispatch import upcast


def descending_order(key: Tensor) -> Tensor:
    """Indices that sort the last dimension of ``key`` largest first, equal keys in index order.

    The ranking every selection op shares, stated so that it holds on every device: NaN (either sign, any
    payload) ranks above +inf, as torch.sort ranks it; NaNs tie with each other; -0.0 ties with +0.0.

    Example:
        >>> import torch
        >>> descending_order(torch.tensor([1.0, -float("nan"), float("inf"), -0.0, 0.0]))
        tensor([1, 2, 0, 3, 4])
    """
    key = torch.where(key == 0, 0.0, key)  # -0.0 -> +0.0, so sign bits never order zeros
    nan = key.isnan()
    # Stable sorts compose: by value (NaN set aside as +inf), then NaN in front, keeping that order within each.
    order = torch.sort(key.masked_fill(nan, float("inf")), dim=-1, descending=True, stable=True).indices
    nan_first = torch.sort(nan.gather(-1, order).to(torch.uint8), dim=-1, descending=True, stable=True).indices
    return order.gather(-1, nan_first)


def topk_mask_reference(x: Tensor, k: int, use_abs: bool = False) -> Tensor:
    """Boolean mask of the ``k`` largest entries of each row (by |x| when ``use_abs``), ties to the lower index.

    Ranked by :func:`descending_order` (NaN largest); ``k = 0`` keeps nothing.

    Example:
        >>> import torch
        >>> topk_mask_reference(torch.tensor([[1.0, 3.0, 3.0, -5.0]]), 2)
        tensor([[False,  True,  True, False]])
    """
    key = upcast(x.detach())
    if use_abs:
        key = key.abs()
    order = descending_order(key)[..., :k]  # (..., k)
    mask = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    return mask.scatter_(-1, order, True)


def topk_activation_reference(x: Tensor, k: int, use_abs: bool = False) -> Tensor:
    """Keep the ``k`` largest entries of each row, zero the rest; gradient flows through kept entries only.

    Example:
        >>> import torch
        >>> topk_activation_reference(torch.tensor([[1.0, -4.0, 2.0]]), 1, use_abs=True)
        tensor([[ 0., -4.,  0.]])
    """
    # where, not multiply: dropped negatives (and dropped NaN/inf) become +0, as in the kernel.
    return torch.where(topk_mask_reference(x, k, use_abs), x, torch.zeros((), dtype=x.dtype, device=x.device))
