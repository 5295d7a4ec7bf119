"""Radix selection in Triton: the k largest entries of each segment, found a byte at a time, never sorted.

Used by the magnitude projection (by |w|, per row and over a whole matrix) and by TopK rows too wide to hold
in registers. Keys are the float bits remapped so that unsigned order is float order (by value), or the bits
without the sign (by magnitude). Each pass histograms the next byte of the keys whose higher bytes equal the
ones already chosen; a 256-bin suffix count picks the byte. Four passes pin the exact k-th largest key. The
per-chunk histograms of the last pass count each chunk's entries equal to it, so "ties go to the lower index"
becomes an exclusive prefix sum over chunks plus a running count inside each chunk.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BINS = 256
SHIFTS = (24, 16, 8, 0)  # a byte at a time, from the top


@triton.jit
def _radix_key(x, USE_ABS: tl.constexpr):
    """uint32 keys whose unsigned order is the order of x (or of |x|); -0.0 and +0.0 get the same key.

    Every NaN, whatever its sign and payload, gets the one largest key, above +inf: NaN ranks as the largest
    value, as torch.sort ranks it, and NaNs tie with each other (so the lower index wins).
    """
    x = x.to(tl.float32)
    x = tl.where(x == 0.0, 0.0, x)
    bits = x.to(tl.uint32, bitcast=True)
    if USE_ABS:
        key = bits & 0x7FFFFFFF
    else:
        # Negative floats order backwards in their bits: flip them all; positives just gain the top bit.
        key = tl.where((bits >> 31) != 0, bits ^ 0xFFFFFFFF, bits | 0x80000000)
    # No finite or infinite float maps to 0xFFFFFFFF (that is the bits of a NaN), so the key is NaN's alone.
    return tl.where(x != x, 0xFFFFFFFF, key)


@triton.jit
def _radix_hist_kernel(
    x_ptr, excl_ptr, prefix_ptr, hist_ptr, L, n_chunks,
    SHIFT: tl.constexpr, USE_ABS: tl.constexpr, HAS_EXCL: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    seg = pid // n_chunks
    offs = (pid % n_chunks) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < L
    ptrs = seg.to(tl.int64) * L + offs
    key = _radix_key(tl.load(x_ptr + ptrs, mask=ok, other=0.0), USE_ABS).to(tl.int64)
    sel = ok
    if SHIFT < 24:
        # Only keys whose higher bytes equal the ones already chosen compete in this pass.
        prefix = tl.load(prefix_ptr + seg)
        sel = sel & ((key >> (SHIFT + 8)) == (prefix >> (SHIFT + 8)))
    if HAS_EXCL:
        sel = sel & (tl.load(excl_ptr + ptrs, mask=ok, other=1) == 0)
    hist = tl.histogram(((key >> SHIFT) & 0xFF).to(tl.int32), 256, mask=sel)  # (256,)
    tl.store(hist_ptr + pid.to(tl.int64) * 256 + tl.arange(0, 256), hist)


@triton.jit
def _radix_apply_kernel(
    x_ptr, excl_ptr, thresh_ptr, quota_ptr, rank_base_ptr, mask_ptr, out_ptr, L, n_chunks,
    USE_ABS: tl.constexpr, HAS_EXCL: tl.constexpr, WRITE_OUT: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    seg = pid // n_chunks
    offs = (pid % n_chunks) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < L
    ptrs = seg.to(tl.int64) * L + offs
    x = tl.load(x_ptr + ptrs, mask=ok, other=0.0)
    key = _radix_key(x, USE_ABS).to(tl.int64)
    thresh = tl.load(thresh_ptr + seg)
    quota = tl.load(quota_ptr + seg)
    competing = ok
    if HAS_EXCL:
        excl = tl.load(excl_ptr + ptrs, mask=ok, other=0) != 0
        competing = competing & (excl == 0)
    at = competing & (key == thresh)
    # Rank among the segment's entries equal to the threshold, in index order: earlier chunks, then this one.
    rank = tl.load(rank_base_ptr + pid) + tl.cumsum(at.to(tl.int32), axis=0)
    keep = (competing & (key > thresh)) | (at & (rank <= quota))
    if HAS_EXCL:
        keep = keep | excl
    tl.store(mask_ptr + ptrs, keep.to(tl.uint8), mask=ok)
    if WRITE_OUT:
        tl.store(out_ptr + ptrs, tl.where(keep, x, 0.0).to(out_ptr.dtype.element_ty), mask=ok)


def radix_select(x: Tensor, k: int, use_abs: bool, excl: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """Keep mask (uint8, shape of ``x``) of the ``k`` largest entries of each row of the contiguous ``x`` (S, L).

    By value, or by magnitude with ``use_abs``; ties go to the lower index. Entries flagged in ``excl`` (uint8)
    do not compete and are kept on top of the k. With ``out`` (which may be ``x`` itself, for in place), the
    kept entries of x are written there and the others zeroed. ``k`` must not exceed a row's competing entries.

    Example:
        >>> import torch  # doctest: +SKIP
        >>> radix_select(torch.tensor([[1.0, -5.0, 3.0]], device="cuda"), 1, use_abs=True)  # doctest: +SKIP
        tensor([[0, 1, 0]], device='cuda:0', dtype=torch.uint8)
    """
    S, L = x.shape
    BLOCK = min(2048, triton.next_power_of_2(L))
    n_chunks = triton.cdiv(L, BLOCK)
    grid = (S * n_chunks,)
    dev = x.device
    need = torch.full((S,), k, dtype=torch.int64, device=dev)  # still to choose among the prefix's keys
    prefix = torch.zeros(S, dtype=torch.int64, device=dev)  # threshold bytes chosen so far
    hist = torch.empty((S * n_chunks, BINS), dtype=torch.int32, device=dev)  # per-chunk partial histograms
    excl_arg = excl if excl is not None else x
    rows = torch.arange(S, device=dev)
    for shift in SHIFTS:
        _radix_hist_kernel[grid](x, excl_arg, prefix, hist, L, n_chunks, SHIFT=shift, USE_ABS=use_abs,
                                 HAS_EXCL=excl is not None, BLOCK=BLOCK)
        seg_hist = hist.view(S, n_chunks, BINS).sum(1)  # (S, 256), int64
        at_least = seg_hist.flip(1).cumsum(1).flip(1)  # (S, 256): keys with this byte or a larger one
        # The chosen byte is the largest whose suffix count still covers what is needed.
        byte = (at_least >= need[:, None]).sum(1) - 1  # (S,)
        need -= at_least[rows, byte] - seg_hist[rows, byte]
        prefix |= byte << shift
    # After the last pass each chunk's bin of the threshold byte counts its entries equal to the threshold.
    at_per_chunk = hist.view(S, n_chunks, BINS)[rows, :, byte]  # (S, n_chunks)
    rank_base = (at_per_chunk.cumsum(1) - at_per_chunk).to(torch.int32).reshape(-1)  # exclusive prefix sums
    mask = torch.empty((S, L), dtype=torch.uint8, device=dev)
    _radix_apply_kernel[grid](
        x, excl_arg, prefix, need, rank_base, mask, out if out is not None else x, L, n_chunks,
        USE_ABS=use_abs, HAS_EXCL=excl is not None, WRITE_OUT=out is not None, BLOCK=BLOCK,
    )
    return mask
