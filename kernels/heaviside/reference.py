"""The specification of JumpReLU and the Heaviside step with straight-through threshold gradients.

Rajamanoharan et al. (2024): ``H(x - t)`` has zero gradient in t almost everywhere, so the threshold learns
through a rectangle-kernel estimate ``-(1/bandwidth) K((x - t) / bandwidth)``, ``K(u) = 1[|u| < 1/2]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.kernels._dispatch import upcast


def _window(x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``K((x - t) / bandwidth) / bandwidth`` in at least float32."""
    # Multiplying by 1/bandwidth (not dividing) is what the kernel does, so window edges agree bit for bit.
    inv = 1.0 / bandwidth
    u = (upcast(x) - upcast(threshold)) * inv
    return (u.abs() < 0.5).to(u.dtype) * inv


def _sum_to_threshold(g: Tensor, threshold: Tensor) -> Tensor:
    return g.reshape(-1, threshold.shape[0]).sum(0).to(threshold.dtype)  # (M,)


class JumpReLUReferenceFunction(torch.autograd.Function):
    """``x * H(x - t)``; grad x ``H g``; grad t ``-(t/bandwidth) K((x-t)/bandwidth) g`` summed over rows."""

    @staticmethod
    def forward(ctx, x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return torch.where(upcast(x) > upcast(threshold), x, torch.zeros((), dtype=x.dtype, device=x.device))

    @staticmethod
    def backward(ctx, g: Tensor):
        x, threshold = ctx.saved_tensors
        g32 = upcast(g)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = torch.where(upcast(x) > upcast(threshold), g, torch.zeros((), dtype=g.dtype, device=g.device))
            dx = dx.to(x.dtype)
        dt = None
        if ctx.needs_input_grad[1]:
            dt = _sum_to_threshold(-upcast(threshold) * _window(x, threshold, ctx.bandwidth) * g32, threshold)
        return dx, dt, None


class HeavisideStepReferenceFunction(torch.autograd.Function):
    """``H(x - t)`` as x's dtype; no grad in x; grad t ``-(1/bandwidth) K((x-t)/bandwidth) g`` summed over rows."""

    @staticmethod
    def forward(ctx, x: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth
        return (upcast(x) > upcast(threshold)).to(x.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, threshold = ctx.saved_tensors
        dt = None
        if ctx.needs_input_grad[1]:
            dt = _sum_to_threshold(-_window(x, threshold, ctx.bandwidth) * upcast(g), threshold)
        return None, dt, None


def jumprelu_reference(x: Tensor, threshold: Tensor, bandwidth: float = 1e-3) -> Tensor:
    """JumpReLU with the straight-through threshold gradient.

    Example:
        >>> import torch
        >>> jumprelu_reference(torch.tensor([[0.5, 2.0]]), torch.tensor([1.0, 1.0]))
        tensor([[0., 2.]])
    """
    return JumpReLUReferenceFunction.apply(x, threshold, bandwidth)


def heaviside_step_reference(x: Tensor, threshold: Tensor, bandwidth: float = 1e-3) -> Tensor:
    """``H(x - threshold)`` with the straight-through threshold gradient (for the L0 penalty).

    Example:
        >>> import torch
        >>> heaviside_step_reference(torch.tensor([[0.5, 2.0]]), torch.tensor([1.0, 1.0]))
        tensor([[0., 1.]])
    """
    return HeavisideStepReferenceFunction.apply(x, threshold, bandwidth)
