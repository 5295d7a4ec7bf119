"""Triton kernels for the TopK sparse decode: forward, values gradient, and an atomic-free weight gradient.

The weight gradient ``dW[m] = sum over (n, j) with idx[n, j] = m of vals[n, j] dY[n]`` is a scatter. Atomics
would make it depend on thread timing; instead the (latent, token) pairs are sorted by latent (a stable sort, so
the order is unique) and each program reduces one latent's contiguous run in a fixed order: bit-identical
results across runs, and no (N, M) buffer anywhere.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from glassformer.kernels._dispatch import launch


@triton.jit
def _sparse_decode_fwd_kernel(
    idx_ptr, vals_ptr, w_ptr, y_ptr, N, K, D,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < N
    tile_ok = row_ok[:, None] & (cols < D)[None, :]
    rows64 = rows.to(tl.int64)
    acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for j in range(0, K):
        latent = tl.load(idx_ptr + rows64 * K + j, mask=row_ok, other=0).to(tl.int64)  # (BLOCK_N,)
        v = tl.load(vals_ptr + rows64 * K + j, mask=row_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + latent[:, None] * D + cols[None, :], mask=tile_ok, other=0.0).to(tl.float32)
        acc += v[:, None] * w  # (BLOCK_N, BLOCK_D)
    tl.store(y_ptr + rows64[:, None] * D + cols[None, :], acc.to(y_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def _sparse_decode_bwd_vals_kernel(
    idx_ptr, w_ptr, dy_ptr, dvals_ptr, N, K, D,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # dvals[n, j] = dY[n] . W[idx[n, j]]: each dY tile is loaded once and dotted with the k gathered rows.
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        tile_ok = row_ok[:, None] & (cols < D)[None, :]
        dy = tl.load(dy_ptr + rows64[:, None] * D + cols[None, :], mask=tile_ok, other=0.0).to(tl.float32)
        for j in range(0, K):
            latent = tl.load(idx_ptr + rows64 * K + j, mask=row_ok, other=0).to(tl.int64)
            w = tl.load(w_ptr + latent[:, None] * D + cols[None, :], mask=tile_ok, other=0.0).to(tl.float32)
            part = tl.sum(w * dy, axis=1)  # (BLOCK_N,)
            acc += tl.where(ks[None, :] == j, part[:, None], 0.0)
    out_ok = row_ok[:, None] & (ks < K)[None, :]
    tl.store(dvals_ptr + rows64[:, None] * K + ks[None, :], acc.to(dvals_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def _sparse_decode_bwd_weight_kernel(
    offsets_ptr, token_ptr, sorted_vals_ptr, dy_ptr, dw_ptr, D,
    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One latent per program: its pairs are the run offsets[m]:offsets[m+1] of the latent-sorted pairs.
    latent = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    start = tl.load(offsets_ptr + latent)
    end = tl.load(offsets_ptr + latent + 1)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for p0 in range(start, end, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        p_ok = ps < end
        token = tl.load(token_ptr + ps, mask=p_ok, other=0).to(tl.int64)  # (BLOCK_P,)
        v = tl.load(sorted_vals_ptr + ps, mask=p_ok, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + token[:, None] * D + cols[None, :], mask=p_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.sum(v[:, None] * dy.to(tl.float32), axis=0)  # (BLOCK_D,)
    tl.store(dw_ptr + latent.to(tl.int64) * D + cols, acc.to(dw_ptr.dtype.element_ty), mask=col_ok)


def _block_d(D: int) -> int:
    return min(128, triton.next_power_of_2(D))


def sparse_decode_forward(idx: Tensor, vals: Tensor, W: Tensor) -> Tensor:
    """``y`` (N, D) from contiguous ``idx`` (N, k), ``vals`` (N, k), ``W`` (M, D)."""
    N, K = idx.shape
    D = W.shape[1]
    y = torch.empty((N, D), dtype=torch.result_type(vals, W), device=W.device)  # (N, D)
    # 16 rows x 128 columns: 96 registers a thread on sm_90 (32 rows took 224, halving occupancy).
    BLOCK_N, BLOCK_D = 16, _block_d(D)
    grid = (triton.cdiv(N, BLOCK_N), triton.cdiv(D, BLOCK_D))
    _sparse_decode_fwd_kernel[grid](idx, vals, W, y, N, K, D, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D)
    return y


def sparse_decode_values_grad(idx: Tensor, W: Tensor, dY: Tensor, dtype: torch.dtype) -> Tensor:
    """``dvals`` (N, k) = ``dY[n] . W[idx[n, j]]``, computed without the dense ``dY @ W.T``."""
    N, K = idx.shape
    D = W.shape[1]
    dvals = torch.empty((N, K), dtype=dtype, device=W.device)  # (N, k)
    if K == 0:  # nothing to compute, and the kernel's k block would be empty
        return dvals
    BLOCK_N, BLOCK_D = 16, _block_d(D)
    grid = (triton.cdiv(N, BLOCK_N),)
    _sparse_decode_bwd_vals_kernel[grid](
        idx, W, dY, dvals, N, K, D, BLOCK_N=BLOCK_N, BLOCK_K=triton.next_power_of_2(K), BLOCK_D=BLOCK_D
    )
    return dvals


def sparse_decode_weight_grad(idx: Tensor, vals: Tensor, dY: Tensor, M: int, dtype: torch.dtype) -> Tensor:
    """``dW`` (M, D) by a counting sort of the pairs by latent: deterministic, no atomics."""
    N, K = idx.shape
    D = dY.shape[1]
    if K == 0:  # no pairs: every latent's sum is empty
        return torch.zeros((M, D), dtype=dtype, device=dY.device)
    flat = idx.reshape(-1)  # (N*k,)
    # A stable sort has one possible output, so the reduction order (and the bits) never change.
    order = torch.argsort(flat, stable=True)  # (N*k,)
    offsets = torch.zeros(M + 1, dtype=torch.int64, device=idx.device)  # (M + 1,)
    torch.cumsum(torch.bincount(flat, minlength=M), 0, out=offsets[1:])
    token = (order // K).to(torch.int32)  # (N*k,)
    sorted_vals = vals.reshape(-1)[order]  # (N*k,)
    dW = torch.empty((M, D), dtype=dtype, device=dY.device)  # (M, D)
    BLOCK_D = _block_d(D)
    grid = (M, triton.cdiv(D, BLOCK_D))
    _sparse_decode_bwd_weight_kernel[grid](offsets, token, sorted_vals, dY, dW, D, BLOCK_P=16, BLOCK_D=BLOCK_D)
    return dW


class SparseDecodeFunction(torch.autograd.Function):
    """Autograd wiring of the Triton decode: saves only ``idx``, ``vals`` and ``W`` (O(N k) beyond the inputs)."""

    @staticmethod
    def forward(ctx, idx: Tensor, vals: Tensor, W: Tensor) -> Tensor:
        idx, vals, W = idx.contiguous(), vals.contiguous(), W.contiguous()
        ctx.save_for_backward(idx, vals, W)
        return sparse_decode_forward(idx, vals, W)

    @staticmethod
    def backward(ctx, dY: Tensor):
        idx, vals, W = ctx.saved_tensors
        dY = dY.contiguous()
        dvals = sparse_decode_values_grad(idx, W, dY, vals.dtype) if ctx.needs_input_grad[1] else None
        dW = sparse_decode_weight_grad(idx, vals, dY, W.shape[0], W.dtype) if ctx.needs_input_grad[2] else None
        return None, dvals, dW


@launch
def sparse_decode_triton(idx: Tensor, vals: Tensor, W: Tensor) -> Tensor:
    """The Triton path of :func:`glassformer.kernels.sparse_decode` (inputs already validated).

    Example:
        >>> import torch  # doctest: +SKIP
        >>> sparse_decode_triton(torch.tensor([[1]], device="cuda"), torch.ones(1, 1, device="cuda"),
        ...                      torch.eye(2, device="cuda"))  # doctest: +SKIP
        tensor([[0., 1.]], device='cuda:0')
    """
    return SparseDecodeFunction.apply(idx, vals, W)
