"""CPU path of the magnitude projection: thresholds by partial selection (unsorted ``torch.topk``), not a sort.

Each weight's magnitude becomes an integer key: its bits with the sign bit cleared. For non-negative IEEE floats
the bit pattern orders exactly as the value does, -0.0 lands on +0.0, and every NaN (either sign, any payload)
lies above +inf; clamping the keys at "+inf plus one" makes all NaNs one key, so they tie with each other. The
keys therefore rank exactly as :func:`glassformer.kernels.topk.reference.descending_order` ranks the float32
magnitudes the reference sorts, NaN included, with no fallback and no float conversion. Each selection is then a
threshold (the k-th largest key), every key strictly above it, and the first of the keys equal to it in index
order until the count is met: the reference's tie rule, with a handful of passes over the matrix instead of two
full sorts. The keys and the per-row selection live in ``glassformer.kernels._select``, shared with the TopK
activation's select path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.kernels._select import SELECT_DTYPES, kth_largest, magnitude_key, top_count_rows
from glassformer.kernels.prune.reference import magnitude_prune_reference_

__all__ = ["SELECT_DTYPES", "magnitude_key", "magnitude_mask_select", "magnitude_prune_select_"]


def _top_count_flat(key: Tensor, count: int) -> Tensor:
    """Mask of the ``count`` largest of a 1-D ``key`` (0 < count <= numel), ties to the lower index."""
    threshold = kth_largest(key, count, dim=0)  # (1,)
    kept = key > threshold
    need = count - int(kept.sum())
    # nonzero lists the tied indices in ascending order: the first `need` of them are the reference's choice.
    first_tied = (key == threshold).nonzero().squeeze(1)[:need]
    kept[first_tied] = True
    return kept


def magnitude_mask_select(W: Tensor, keep: int, min_per_row: int = 0) -> Tensor:
    """The kept mask of :func:`~glassformer.kernels.prune.reference.magnitude_mask_reference`, found by selection.

    ``W`` must have a dtype in :data:`SELECT_DTYPES`; ``keep`` and ``min_per_row`` as the public function checks.

    Example:
        >>> import torch
        >>> magnitude_mask_select(torch.tensor([[9.0, 8.0], [1.0, 0.5]]), 2, min_per_row=1)
        tensor([[ True, False],
                [ True, False]])
    """
    R, C = W.shape
    if keep == R * C:
        return torch.ones((R, C), dtype=torch.bool, device=W.device)
    if keep == 0:
        return torch.zeros((R, C), dtype=torch.bool, device=W.device)
    key = magnitude_key(W).contiguous()  # (R, C); a transposed W's keys keep its strides until copied
    if min_per_row == C:
        reserved = torch.ones((R, C), dtype=torch.bool, device=W.device)
    elif min_per_row > 0:
        reserved = top_count_rows(key, min_per_row)
    else:
        reserved = None
    rest = keep - R * min_per_row
    if rest == 0:
        return reserved
    flat = key.view(-1)  # row-major: flat index order is the reference's
    if reserved is not None:
        # Below every real key (>= 0), as the reference sets reserved magnitudes to -1.
        flat = flat.masked_fill(reserved.view(-1), -1)
    kept = _top_count_flat(flat, rest).view(R, C)
    return kept if reserved is None else kept | reserved


def magnitude_prune_select_(W: Tensor, keep: int, min_per_row: int = 0) -> Tensor:
    """The select path of :func:`glassformer.kernels.magnitude_prune_` (inputs already validated).

    Zeroes the dropped entries of ``W`` in place (kept ones keep their bits) and returns the kept mask, equal
    bit for bit to the reference's. NaN needs no special case (see the module docstring). A floating dtype
    outside :data:`SELECT_DTYPES` (the float8 types) is handed to the reference, so both paths treat it alike.

    Example:
        >>> import torch
        >>> W = torch.tensor([[3.0, -4.0, float("nan")], [2.0, 0.0, -0.0]])
        >>> magnitude_prune_select_(W, 3, min_per_row=1)
        tensor([[False,  True,  True],
                [ True, False, False]])
        >>> W
        tensor([[ 0., -4., nan],
                [ 2.,  0.,  0.]])
    """
    if W.dtype not in SELECT_DTYPES:
        return magnitude_prune_reference_(W, keep, min_per_row)
    kept = magnitude_mask_select(W, keep, min_per_row)
    with torch.no_grad():
        W.masked_fill_(~kept, 0)
    return kept
