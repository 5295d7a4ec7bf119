"""Triton kernels for the row-wise TopK / AbsTopK activation.

Rows up to ``REGISTER_WIDTH`` wide: each program holds whole rows in registers and finds the k-th largest key by
building it bit by bit from the top (32 counting passes, no sort). Keys are the float bits remapped so unsigned
integer order is float order (by value), or the bits without the sign (by magnitude). Ties at the threshold go
to the lower index through a running count, so exactly k entries survive. Wider rows (BatchTopK selects over a
whole batch as one row) go through the chunked radix selection of ``glassformer.kernels._radix``. The kept
mask is stored for the backward.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from glassformer.kernels._dispatch import launch
from glassformer.kernels._radix import _radix_key, radix_select

# Widest row held in registers; measured by compiling for sm_90: 8192 fits 16 warps without spills, 16384
# spills even at 32 warps.
REGISTER_WIDTH = 8192


@triton.jit
def _topk_activation_fwd_kernel(
    x_ptr, y_ptr, mask_ptr, R, M, k,
    USE_ABS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_M)
    ok = (rows < R)[:, None] & (cols < M)[None, :]
    offs = rows.to(tl.int64)[:, None] * M + cols[None, :]
    x = tl.load(x_ptr + offs, mask=ok, other=0.0)  # (BLOCK_R, BLOCK_M)
    # Padding gets key 0; every candidate below has a bit set, so padding is never counted.
    key = tl.where(ok, _radix_key(x, USE_ABS), 0)
    threshold = tl.zeros((BLOCK_R,), dtype=tl.uint32)
    for i in tl.static_range(32):
        candidate = threshold | (1 << (31 - i))
        count = tl.sum((key >= candidate[:, None]).to(tl.int32), axis=1)  # (BLOCK_R,)
        threshold = tl.where(count >= k, candidate, threshold)
    # threshold is now the k-th largest key of each row.
    above = key > threshold[:, None]
    at = (key == threshold[:, None]) & ok
    quota = k - tl.sum(above.to(tl.int32), axis=1)  # (BLOCK_R,)
    rank = tl.cumsum(at.to(tl.int32), axis=1)
    keep = above | (at & (rank <= quota[:, None]))
    tl.store(y_ptr + offs, tl.where(keep, x, 0.0).to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(mask_ptr + offs, keep.to(tl.uint8), mask=ok)


@triton.jit
def _topk_activation_bwd_kernel(g_ptr, mask_ptr, dx_ptr, numel, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    g = tl.load(g_ptr + offs, mask=ok, other=0.0)
    keep = tl.load(mask_ptr + offs, mask=ok, other=0) != 0
    tl.store(dx_ptr + offs, tl.where(keep, g, 0.0).to(dx_ptr.dtype.element_ty), mask=ok)


def topk_forward(x: Tensor, k: int, use_abs: bool) -> tuple[Tensor, Tensor]:
    """``(y, kept)`` for contiguous ``x`` (..., M); ``kept`` is a bool mask of x's shape."""
    M = x.shape[-1]
    R = x.numel() // M
    y = torch.empty_like(x)
    if M > REGISTER_WIDTH:
        kept = radix_select(x.view(R, M), k, use_abs, out=y.view(R, M))
        return y, kept.view(x.shape).view(torch.bool)
    kept = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    BLOCK_M = triton.next_power_of_2(M)
    # About 4096 elements per program, whole rows; 16 warps hold the widest rows without spilling.
    BLOCK_R = max(1, min(16, 4096 // BLOCK_M))
    num_warps = max(4, min(16, BLOCK_M // 512))
    grid = (triton.cdiv(R, BLOCK_R),)
    _topk_activation_fwd_kernel[grid](
        x, y, kept, R, M, k, USE_ABS=use_abs, BLOCK_R=BLOCK_R, BLOCK_M=BLOCK_M, num_warps=num_warps
    )
    return y, kept.view(torch.bool)


def topk_backward(g: Tensor, kept: Tensor) -> Tensor:
    """``dx = g`` where kept, else 0."""
    dx = torch.empty_like(g)
    BLOCK = 4096
    _topk_activation_bwd_kernel[(triton.cdiv(g.numel(), BLOCK),)](g, kept.view(torch.uint8), dx, g.numel(),
                                                                  BLOCK=BLOCK)
    return dx


class TopKActivationFunction(torch.autograd.Function):
    """Autograd wiring: the forward saves the kept mask (1 byte per entry), the backward applies it."""

    @staticmethod
    def forward(ctx, x: Tensor, k: int, use_abs: bool) -> Tensor:
        y, kept = topk_forward(x.contiguous(), k, use_abs)
        ctx.save_for_backward(kept)
        ctx.mark_non_differentiable(kept)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        (kept,) = ctx.saved_tensors
        return topk_backward(g.contiguous(), kept), None, None


@launch
def topk_activation_triton(x: Tensor, k: int, use_abs: bool = False) -> Tensor:
    """The Triton path of :func:`glassformer.kernels.topk_activation` (inputs already validated).

    Example:
        >>> import torch  # doctest: +SKIP
        >>> topk_activation_triton(torch.tensor([[1.0, 3.0, 2.0]], device="cuda"), 1)  # doctest: +SKIP
        tensor([[0., 3., 0.]], device='cuda:0')
    """
    return TopKActivationFunction.apply(x, k, use_abs)
