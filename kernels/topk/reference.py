"""The specification of the row-wise TopK / AbsTopK activation, in plain PyTorch."""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.kernels._dispatch import upcast


def topk_mask_reference(x: Tensor, k: int, use_abs: bool = False) -> Tensor:
    """Boolean mask of the ``k`` largest entries of each row (by |x| when ``use_abs``), ties to the lower index.

    Example:
        >>> import torch
        >>> topk_mask_reference(torch.tensor([[1.0, 3.0, 3.0, -5.0]]), 2)
        tensor([[False,  True,  True, False]])
    """
    key = upcast(x.detach())
    if use_abs:
        key = key.abs()
    # A stable descending sort keeps equal keys in index order, so ties go to the lower index exactly.
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices[..., :k]  # (..., k)
    mask = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    return mask.scatter_(-1, order, True)


def topk_activation_reference(x: Tensor, k: int, use_abs: bool = False) -> Tensor:
    """Keep the ``k`` largest entries of each row, zero the rest; gradient flows through kept entries only.

    Example:
        >>> import torch
        >>> topk_activation_reference(torch.tensor([[1.0, -4.0, 2.0]]), 1, use_abs=True)
        tensor([[ 0., -4.,  0.]])
    """
    # where, not multiply: dropped negatives become +0, as in the kernel.
    return torch.where(topk_mask_reference(x, k, use_abs), x, torch.zeros((), dtype=x.dtype, device=x.device))
