"""Triton kernels for JumpReLU and the Heaviside step with straight-through threshold gradients.

Both are elementwise over (rows, M) tiles. The threshold gradient is a sum over rows: each row block writes
its partial (one row of a small buffer) and the partials are summed in a fixed order, so no atomics and
the same bits on every run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from glassformer.kernels._dispatch import launch


@triton.jit
def _heaviside_fwd_kernel(
    x_ptr, t_ptr, y_ptr, R, M,
    JUMP: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    ok = (rows < R)[:, None] & (cols < M)[None, :]
    offs = rows.to(tl.int64)[:, None] * M + cols[None, :]
    x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)  # (BLOCK_R, BLOCK_M)
    t = tl.load(t_ptr + cols, mask=cols < M, other=0.0).to(tl.float32)  # (BLOCK_M,)
    on = x > t[None, :]
    if JUMP:
        y = tl.where(on, x, 0.0)
    else:
        y = on.to(tl.float32)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _heaviside_bwd_kernel(
    x_ptr, t_ptr, g_ptr, dx_ptr, dt_partial_ptr, R, M, inv_bandwidth,
    JUMP: tl.constexpr, NEED_DX: tl.constexpr, NEED_DT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    ok = (rows < R)[:, None] & (cols < M)[None, :]
    offs = rows.to(tl.int64)[:, None] * M + cols[None, :]
    x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + cols, mask=cols < M, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    if NEED_DX:
        tl.store(dx_ptr + offs, tl.where(x > t[None, :], g, 0.0).to(dx_ptr.dtype.element_ty), mask=ok)
    if NEED_DT:
        # Rectangle kernel K(u) = 1[|u| < 1/2], u = (x - t) / bandwidth; padding rows carry g = 0.
        inside = tl.abs((x - t[None, :]) * inv_bandwidth) < 0.5
        window = tl.where(inside & ok, g * inv_bandwidth, 0.0)
        if JUMP:
            window = window * t[None, :]
        partial = -tl.sum(window, axis=0)  # (BLOCK_M,)
        tl.store(dt_partial_ptr + tl.program_id(0).to(tl.int64) * M + cols, partial, mask=cols < M)


def _grid(R: int, M: int) -> tuple[tuple[int, int], int, int]:
    BLOCK_R, BLOCK_M = 32, min(128, triton.next_power_of_2(M))
    return (triton.cdiv(R, BLOCK_R), triton.cdiv(M, BLOCK_M)), BLOCK_R, BLOCK_M


def heaviside_forward(x: Tensor, threshold: Tensor, jump: bool) -> Tensor:
    M = threshold.shape[0]
    R = x.numel() // M
    y = torch.empty_like(x)
    grid, BLOCK_R, BLOCK_M = _grid(R, M)
    _heaviside_fwd_kernel[grid](x, threshold, y, R, M, JUMP=jump, BLOCK_R=BLOCK_R, BLOCK_M=BLOCK_M)
    return y


def heaviside_backward(x: Tensor, threshold: Tensor, g: Tensor, bandwidth: float, jump: bool,
                       need_dx: bool, need_dt: bool) -> tuple[Tensor | None, Tensor | None]:
    M = threshold.shape[0]
    R = x.numel() // M
    grid, BLOCK_R, BLOCK_M = _grid(R, M)
    dx = torch.empty_like(x) if need_dx else None
    partial = torch.empty((grid[0], M), dtype=torch.float32, device=x.device) if need_dt else None  # (row blocks, M)
    _heaviside_bwd_kernel[grid](
        x, threshold, g, dx if need_dx else x, partial if need_dt else x, R, M, 1.0 / bandwidth,
        JUMP=jump, NEED_DX=need_dx, NEED_DT=need_dt, BLOCK_R=BLOCK_R, BLOCK_M=BLOCK_M,
    )
    dt = partial.sum(0).to(threshold.dtype) if need_dt else None
    return dx, dt


class JumpReLUFunction(torch.autograd.Function):
    """Autograd wiring of the Triton JumpReLU: saves x and the threshold."""

    @staticmethod
    def forward(ctx, x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        x, threshold = x.contiguous(), threshold.contiguous()
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return heaviside_forward(x, threshold, jump=True)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, threshold = ctx.saved_tensors
        dx, dt = heaviside_backward(x, threshold, g.contiguous(), ctx.bandwidth, True,
                                    ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return dx, dt, None


class HeavisideStepFunction(torch.autograd.Function):
    """Autograd wiring of the Triton Heaviside step: no gradient to x, the windowed one to the threshold."""

    @staticmethod
    def forward(ctx, x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        x, threshold = x.contiguous(), threshold.contiguous()
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return heaviside_forward(x, threshold, jump=False)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, threshold = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None, None
        _, dt = heaviside_backward(x, threshold, g.contiguous(), ctx.bandwidth, False, False, True)
        return None, dt, None


@launch
def jumprelu_triton(x: Tensor, threshold: Tensor, bandwidth: float = 1e-3) -> Tensor:
    """The Triton path of :func:`glassformer.kernels.jumprelu` (inputs already validated).

    Example:
        >>> import torch  # doctest: +SKIP
        >>> jumprelu_triton(torch.tensor([[0.5, 2.0]], device="cuda"), torch.ones(2, device="cuda"))  # doctest: +SKIP
        tensor([[0., 2.]], device='cuda:0')
    """
    return JumpReLUFunction.apply(x, threshold, bandwidth)


@launch
def heaviside_step_triton(x: Tensor, threshold: Tensor, bandwidth: float = 1e-3) -> Tensor:
    """The Triton path of :func:`glassformer.kernels.heaviside_step` (inputs already validated).

    Example:
        >>> import torch  # doctest: +SKIP
        >>> heaviside_step_triton(torch.tensor([[0.5, 2.0]], device="cuda"), torch.ones(2, device="cuda"))  # doctest: +SKIP
        tensor([[0., 1.]], device='cuda:0')
    """
    return HeavisideStepFunction.apply(x, threshold, bandwidth)
