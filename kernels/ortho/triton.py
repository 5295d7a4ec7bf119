"""Triton kernels for the |cos|-above-margin penalty: Gram tiles computed and reduced on the fly.

Forward: one program per tile of the Gram matrix's upper triangle; it forms ``cos`` from row dot products and
inverse norms, reduces ``relu(|cos| - margin)**2`` over pairs i<j to one partial, and the partials are summed
in a fixed order. Backward recomputes the tiles: with ``G_ij = dL/dcos_ij`` (symmetric, zero diagonal) and
``r_i = 1/|w_i|``, ``dL/dw_i = r_i sum_j G_ij r_j w_j - r_i^2 (sum_j G_ij cos_ij) w_i``; the second sum is a
row reduction of the same tiles, so nothing of size M x M is ever stored.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from glassformer.kernels._dispatch import launch
from glassformer.kernels.ortho.reference import NORM_EPS


@triton.jit
def _gram_tile(w_ptr, rows_i, rows_j, M, D, PRECISION: tl.constexpr, BLOCK_I: tl.constexpr,
               BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
    """Dot products w_i . w_j for a (BLOCK_I, BLOCK_J) tile, accumulated over D in float32."""
    acc = tl.zeros((BLOCK_I, BLOCK_J), dtype=tl.float32)
    i64 = rows_i.to(tl.int64)
    j64 = rows_j.to(tl.int64)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        col_ok = (cols < D)[None, :]
        a = tl.load(w_ptr + i64[:, None] * D + cols[None, :], mask=(rows_i < M)[:, None] & col_ok, other=0.0)
        b = tl.load(w_ptr + j64[:, None] * D + cols[None, :], mask=(rows_j < M)[:, None] & col_ok, other=0.0)
        acc += tl.dot(a, tl.trans(b), input_precision=PRECISION)
    return acc


@triton.jit
def _relu(x):
    """max(x, 0) that keeps NaN, as torch.relu does (tl.maximum's default would return 0 for NaN)."""
    return tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _cos_margin_fwd_kernel(
    w_ptr, rinv_ptr, partial_ptr, M, D, margin,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bi = tl.program_id(0)
    bj = tl.program_id(1)
    total = tl.zeros((), dtype=tl.float32)
    if bj >= bi:  # the lower triangle holds the same pairs again
        rows_i = bi * BLOCK_M + tl.arange(0, BLOCK_M)
        rows_j = bj * BLOCK_M + tl.arange(0, BLOCK_M)
        dots = _gram_tile(w_ptr, rows_i, rows_j, M, D, PRECISION, BLOCK_M, BLOCK_M, BLOCK_D)
        r_i = tl.load(rinv_ptr + rows_i, mask=rows_i < M, other=0.0)
        r_j = tl.load(rinv_ptr + rows_j, mask=rows_j < M, other=0.0)
        cos = dots * r_i[:, None] * r_j[None, :]
        excess = _relu(tl.abs(cos) - margin)
        pair = (rows_i[:, None] < rows_j[None, :]) & (rows_j < M)[None, :]
        total = tl.sum(tl.sum(tl.where(pair, excess * excess, 0.0), axis=1), axis=0)
    tl.store(partial_ptr + bi * tl.num_programs(1) + bj, total)


@triton.jit
def _cos_margin_bwd_kernel(
    w_ptr, rinv_ptr, scale_ptr, dw_ptr, M, D, margin,
    PRECISION: tl.constexpr, GRAD_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
):
    # Rows i of this program, output columns cols of dW; the Gram tiles against every row block j are recomputed.
    rows_i = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    i_ok = rows_i < M
    col_ok = cols < D
    r_i = tl.load(rinv_ptr + rows_i, mask=i_ok, other=0.0)
    scale = tl.load(scale_ptr)  # upstream gradient / number of pairs
    acc = tl.zeros((BLOCK_M, BLOCK_DO), dtype=tl.float32)
    row_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for j0 in range(0, M, BLOCK_N):
        rows_j = j0 + tl.arange(0, BLOCK_N)
        j_ok = rows_j < M
        dots = _gram_tile(w_ptr, rows_i, rows_j, M, D, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D)
        r_j = tl.load(rinv_ptr + rows_j, mask=j_ok, other=0.0)
        cos = dots * r_i[:, None] * r_j[None, :]
        excess = _relu(tl.abs(cos) - margin)
        grad = tl.where(cos < 0, -2.0 * excess, 2.0 * excess) * scale
        grad = tl.where(j_ok[None, :] & (rows_i[:, None] != rows_j[None, :]), grad, 0.0)  # (BLOCK_M, BLOCK_N)
        row_sum += tl.sum(grad * cos, axis=1)
        w_j = tl.load(w_ptr + rows_j.to(tl.int64)[:, None] * D + cols[None, :],
                      mask=j_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
        acc += tl.dot(grad * r_j[None, :], w_j, input_precision=GRAD_PRECISION)  # (BLOCK_M, BLOCK_DO)
    tile_ok = i_ok[:, None] & col_ok[None, :]
    offs = rows_i.to(tl.int64)[:, None] * D + cols[None, :]
    w_i = tl.load(w_ptr + offs, mask=tile_ok, other=0.0).to(tl.float32)
    dw = r_i[:, None] * acc - (r_i * r_i * row_sum)[:, None] * w_i
    tl.store(dw_ptr + offs, dw.to(dw_ptr.dtype.element_ty), mask=tile_ok)


def _config(W: Tensor) -> dict:
    """Dot precisions and the reduction block over D.

    The interpreter computes exact float32 products ("ieee"). On a GPU, float32 rows use three tf32 passes
    ("tf32x3": near-float32 accuracy, as |cos| is compared with a margin, at tensor-core speed); half rows
    multiply in their own type, and the backward's float32 gradient tile meets their rows (exact in tf32)
    in tf32. Block sizes are the largest that compile for sm_90 without register spills.
    """
    D = W.shape[1]
    if not W.is_cuda:
        gram, grad = "ieee", "ieee"
    elif W.dtype == torch.float32:
        gram, grad = "tf32x3", "tf32x3"
    else:
        gram, grad = "ieee", "tf32"  # "ieee" is ignored for half inputs
    block_d = 32 if W.dtype == torch.float32 else 64
    return dict(PRECISION=gram, GRAD_PRECISION=grad, BLOCK_D=min(block_d, max(16, triton.next_power_of_2(D))))


def _inverse_norms(W: Tensor) -> Tensor:
    return 1.0 / torch.linalg.vector_norm(W.float(), dim=1).clamp_min(NORM_EPS)  # (M,)


def cos_margin_forward(W: Tensor, rinv: Tensor, margin: float) -> Tensor:
    M = W.shape[0]
    BLOCK_M = 64
    n_tiles = triton.cdiv(M, BLOCK_M)
    partial = torch.empty((n_tiles, n_tiles), dtype=torch.float32, device=W.device)  # per-tile sums
    config = _config(W)
    del config["GRAD_PRECISION"]
    _cos_margin_fwd_kernel[(n_tiles, n_tiles)](W, rinv, partial, M, W.shape[1], margin, BLOCK_M=BLOCK_M,
                                              num_warps=8, **config)
    return partial.sum() / (M * (M - 1) / 2)


def cos_margin_backward(W: Tensor, rinv: Tensor, margin: float, g: Tensor) -> Tensor:
    M, D = W.shape
    scale = (g.float() / (M * (M - 1) / 2)).reshape(1)
    dW = torch.empty_like(W)
    BLOCK_M, BLOCK_N = 64, 32
    # Rows of dW in slices of up to 128 columns (wider accumulators spill on sm_90); each slice recomputes
    # the Gram tiles, so the backward costs about (D / 128 + 1) Gram products.
    BLOCK_DO = min(128, max(16, triton.next_power_of_2(D)))
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(D, BLOCK_DO))
    _cos_margin_bwd_kernel[grid](W, rinv, scale, dW, M, D, margin, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
                                 BLOCK_DO=BLOCK_DO, num_warps=8, **_config(W))
    return dW


class CosMarginPenaltyFunction(torch.autograd.Function):
    """Autograd wiring: saves W and its inverse row norms (O(M)); the backward recomputes the Gram tiles."""

    @staticmethod
    def forward(ctx, W: Tensor, margin: float) -> Tensor:
        W = W.contiguous()
        rinv = _inverse_norms(W)
        ctx.save_for_backward(W, rinv)
        ctx.margin = margin
        return cos_margin_forward(W, rinv, margin)

    @staticmethod
    def backward(ctx, g: Tensor):
        W, rinv = ctx.saved_tensors
        return cos_margin_backward(W, rinv, ctx.margin, g), None


@launch
def cos_margin_penalty_triton(W: Tensor, margin: float) -> Tensor:
    """The Triton path of :func:`glassformer.kernels.cos_margin_penalty` (inputs already validated).

    Example:
        >>> import torch  # doctest: +SKIP
        >>> cos_margin_penalty_triton(torch.eye(3, device="cuda"), 0.1)  # doctest: +SKIP
        tensor(0., device='cuda:0')
    """
    return CosMarginPenaltyFunction.apply(W, margin)
