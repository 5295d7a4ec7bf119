"""Row thresholds by partial selection over integer keys: what the CPU select paths of TopK and the projection share.

A float becomes an integer key built from its bits, so that the keys order exactly as
:func:`glassformer.kernels.topk.reference.descending_order` orders the floats (or their magnitudes): NaN of either
sign and any payload above +inf, all NaNs one key, -0.0 and +0.0 one key. Converting float16 or bfloat16 to the
float32 the references sort is exact and monotone, so each dtype's own bits give the reference's order without
any conversion. A selection of ``count`` per row is then a threshold (the count-th largest key, from an unsorted
``torch.topk``), every key above it, and the keys equal to it in index order until the count is met.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SELECT_DTYPES", "magnitude_key", "signed_key", "kth_largest", "top_count_rows"]

# dtype -> (integer dtype of the same width, bits of +inf, key dtype). Keys of at most 16 bits widen to int32 so
# the selection runs on a type every torch build selects over, and so a negated key cannot overflow.
_LAYOUT = {
    torch.float64: (torch.int64, 0x7FF0000000000000, torch.int64),
    torch.float32: (torch.int32, 0x7F800000, torch.int32),
    torch.float16: (torch.int16, 0x7C00, torch.int32),
    torch.bfloat16: (torch.int16, 0x7F80, torch.int32),
}
SELECT_DTYPES = tuple(_LAYOUT)
"""The dtypes the select paths rank by their bits; any other floating dtype goes to the reference."""


def magnitude_key(x: Tensor) -> Tensor:
    """Integer keys (shape of ``x``) that order like |x| ranked by ``descending_order``: NaN above +inf, NaNs equal.

    The bits with the sign bit cleared order as non-negative floats do and put -0.0 on +0.0; every NaN lies above
    +inf, and clamping at "+inf plus one" gives all NaN payloads one key. ``x`` must have a dtype in
    :data:`SELECT_DTYPES`.

    Example:
        >>> import torch
        >>> magnitude_key(torch.tensor([[-0.0, 0.0, 1.0, -float("inf"), float("nan"), -float("nan")]])).tolist()
        [[0, 0, 1065353216, 2139095040, 2139095041, 2139095041]]
    """
    bits_dtype, inf_bits, key_dtype = _LAYOUT[x.dtype]
    # Same element size, so view() reinterprets any strides; the mask clears the sign bit of every width.
    bits = x.detach().view(bits_dtype) & torch.iinfo(bits_dtype).max
    return bits.clamp_(max=inf_bits + 1).to(key_dtype)


def signed_key(x: Tensor) -> Tensor:
    """Integer keys (shape of ``x``) that order like x ranked by ``descending_order``: NaN above +inf, NaNs equal.

    A negative float's key is minus its magnitude key, which reverses the order among negatives and puts -0.0 on
    +0.0 (both 0); a NaN keeps its magnitude key whatever its sign, so it stays above +inf. The flip-the-bits
    trick for signed floats would instead put -0.0 one below +0.0 and -NaN below -inf, each needing a fix.
    ``x`` must have a dtype in :data:`SELECT_DTYPES`.

    Example:
        >>> import torch
        >>> signed_key(torch.tensor([-1.0, -0.0, 0.0, -float("inf"), -float("nan"), float("nan")])).tolist()
        [-1065353216, 0, 0, -2139095040, 2139095041, 2139095041]
    """
    bits_dtype, inf_bits, key_dtype = _LAYOUT[x.dtype]
    magnitude = magnitude_key(x)
    # Branch-free: torch.where on the sign mask took about twice these integer passes on CPU (1M int32, measured).
    # flip is -1 (all ones) where the sign bit is set, by arithmetic shift, else 0; a NaN key (+inf plus one)
    # clears it, so a negative NaN keeps its place above +inf.
    flip = (x.detach().view(bits_dtype) >> (torch.iinfo(bits_dtype).bits - 1)).to(key_dtype)
    flip &= (magnitude - (inf_bits + 1)) >> (torch.iinfo(key_dtype).bits - 1)
    return (magnitude ^ flip).sub_(flip)  # two's complement: (m ^ -1) + 1 == -m, (m ^ 0) - 0 == m


def kth_largest(key: Tensor, count: int, dim: int) -> Tensor:
    """The ``count``-th largest key along ``dim`` (kept, size 1; 0 < count <= size), by unsorted topk.

    Example:
        >>> import torch
        >>> kth_largest(torch.tensor([[5, 1, 3, 3]]), 3, dim=1)
        tensor([[3]])
    """
    n = key.shape[dim]
    # Unsorted topk is a partial selection, not a sort, taken from the nearer end; for a small count (4 per row, a
    # few % of a matrix) it was 2-6x faster than torch.kthvalue on CPU, one thread (1024x256 int32 keys, measured).
    if count <= n - count + 1:
        return key.topk(count, dim=dim, sorted=False).values.amin(dim=dim, keepdim=True)
    return key.topk(n - count + 1, dim=dim, largest=False, sorted=False).values.amax(dim=dim, keepdim=True)


def top_count_rows(key: Tensor, count: int) -> Tensor:
    """Mask (R, C) of each row's ``count`` largest keys (0 < count < C), ties to the lower column.

    Example:
        >>> import torch
        >>> top_count_rows(torch.tensor([[2, 7, 2, 2], [1, 2, 3, 4]]), 2)
        tensor([[ True,  True, False, False],
                [False, False,  True,  True]])
    """
    threshold = kth_largest(key, count, dim=1)  # (R, 1)
    kept = key >= threshold
    over = kept.sum(dim=1) != count  # rows with more keys equal to the threshold than slots left for them
    if not bool(over.any()):
        return kept
    # Only those rows pay for ranking their ties; with continuous values there are usually none.
    rows = over.nonzero().squeeze(1)
    sub, sub_threshold = key[rows], threshold[rows]  # (r, C), (r, 1)
    above = sub > sub_threshold
    need = count - above.sum(dim=1, keepdim=True)  # (r, 1), >= 1: slots left for keys equal to the threshold
    tied = sub == sub_threshold
    kept[rows] = above | (tied & (tied.cumsum(dim=1) <= need))
    return kept
