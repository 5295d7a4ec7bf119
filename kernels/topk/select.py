"""CPU path of the TopK / AbsTopK activation: a per-row threshold by partial selection, not two full sorts.

Each entry becomes an integer key from its bits (``glassformer.kernels._select``): the magnitude key for AbsTopK,
the signed key for TopK. Both rank exactly as :func:`glassformer.kernels.topk.reference.descending_order` ranks
the float32 values the reference sorts: NaN of either sign and any payload above +inf, NaNs tied, -0.0 tied with
+0.0. A row keeps every key above its k-th largest and, of the keys equal to it, the first in index order until
it has k: the reference's tie rule, in a few linear passes over the row. The output is then formed exactly as the
reference forms it (``torch.where(mask, x, 0)``), so values, bits and gradients are the reference's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.kernels._select import SELECT_DTYPES, magnitude_key, signed_key, top_count_rows
from glassformer.kernels.topk.reference import topk_activation_reference

__all__ = ["topk_mask_select", "topk_activation_select"]


def topk_mask_select(x: Tensor, k: int, use_abs: bool = False) -> Tensor:
    """The mask of :func:`~glassformer.kernels.topk.reference.topk_mask_reference`, found by selection.

    ``x`` is (..., M) with a dtype in ``SELECT_DTYPES`` and ``k`` in [0, M], as the public function checks.

    Example:
        >>> import torch
        >>> topk_mask_select(torch.tensor([[1.0, 3.0, 3.0, -5.0]]), 2)
        tensor([[False,  True,  True, False]])
    """
    M = x.shape[-1]
    if k == 0 or k == M:
        return torch.full(x.shape, k == M, dtype=torch.bool, device=x.device)
    rows = x.detach().reshape(-1, M)  # leading dims flattened: a view when x is contiguous
    key = magnitude_key(rows) if use_abs else signed_key(rows)
    return top_count_rows(key, k).view(x.shape)


def topk_activation_select(x: Tensor, k: int, use_abs: bool = False) -> Tensor:
    """The select path of :func:`glassformer.kernels.topk_activation` (inputs already validated).

    Keeps the reference's entries, bit for bit, dropped ones +0; the gradient flows through the kept entries only,
    as the reference's. A floating dtype outside ``SELECT_DTYPES`` (the float8 types) goes to the reference.

    Example:
        >>> import torch
        >>> topk_activation_select(torch.tensor([[1.0, -4.0, float("nan"), 2.0]]), 2, use_abs=True)
        tensor([[ 0., -4., nan,  0.]])
    """
    if x.dtype not in SELECT_DTYPES:
        return topk_activation_reference(x, k, use_abs)
    # The reference's own expression, so the autograd graph (and hence the gradient) is the same.
    return torch.where(topk_mask_select(x, k, use_abs), x, torch.zeros((), dtype=x.dtype, device=x.device))
