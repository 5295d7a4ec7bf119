"""Triton path of the magnitude projection: thresholds by radix selection (``glassformer.kernels._radix``).

Two selections, each four histogram passes and one apply pass over the matrix: each row's ``min_per_row``
largest |w| (one segment per row), then the remaining slots over the whole matrix (one segment, the reserved
entries excluded and kept), which also zeroes the dropped entries in place. No sort, no (R*C) index buffer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.kernels._dispatch import launch
from glassformer.kernels._radix import radix_select


@launch
def magnitude_prune_triton_(W: Tensor, keep: int, min_per_row: int = 0) -> Tensor:
    """The Triton path of :func:`glassformer.kernels.magnitude_prune_` (inputs already validated).

    Example:
        >>> import torch  # doctest: +SKIP
        >>> magnitude_prune_triton_(torch.tensor([[1.0, -3.0]], device="cuda"), 1)  # doctest: +SKIP
        tensor([[False,  True]], device='cuda:0')
    """
    R, C = W.shape
    work = W if W.is_contiguous() else W.contiguous()
    reserved = radix_select(work, min_per_row, use_abs=True) if min_per_row > 0 else None  # (R, C) uint8
    rest = keep - R * min_per_row
    if rest > 0:
        flat = work.view(1, R * C)
        excl = None if reserved is None else reserved.view(1, R * C)
        kept = radix_select(flat, rest, use_abs=True, excl=excl, out=flat).view(R, C)
    else:
        kept = reserved if reserved is not None else torch.zeros((R, C), dtype=torch.uint8, device=W.device)
        work.masked_fill_(kept == 0, 0)
    if work is not W:
        W.copy_(work)
    return kept.view(torch.bool)
