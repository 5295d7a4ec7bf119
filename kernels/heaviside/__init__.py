"""JumpReLU and the Heaviside step, with straight-through (rectangle-kernel) threshold gradients."""

from __future__ import annotations

from torch import Tensor

from glassformer.kernels._dispatch import check_float, choose_impl, dtype_problem
from glassformer.kernels.heaviside.reference import heaviside_step_reference, jumprelu_reference

__all__ = ["jumprelu", "heaviside_step"]


def _check(x: Tensor, threshold: Tensor, bandwidth: float) -> str | None:
    check_float("x", x)
    check_float("threshold", threshold)
    if x.dim() < 1 or threshold.dim() != 1 or threshold.shape[0] != x.shape[-1]:
        raise ValueError(
            f"threshold must be (M,) with M = x.shape[-1]; got threshold {tuple(threshold.shape)}, x {tuple(x.shape)}"
        )
    if not isinstance(bandwidth, (int, float)) or isinstance(bandwidth, bool) or not bandwidth > 0:
        raise ValueError(f"bandwidth={bandwidth!r} is not allowed: expected a positive float")
    problem = dtype_problem("x", x) or dtype_problem("threshold", threshold)
    if problem is None and x.numel() == 0:
        problem = "an empty x"
    return problem


def jumprelu(x: Tensor, threshold: Tensor, bandwidth: float = 1e-3, impl: str = "auto") -> Tensor:
    """JumpReLU ``x * H(x - threshold)`` (Rajamanoharan et al. 2024), shape and dtype of ``x``.

    Gradients: ``H(x - t) g`` for x; the straight-through ``-(t / bandwidth) K((x - t) / bandwidth) g`` summed
    over rows for the threshold, with ``K(u) = 1[|u| < 1/2]``.

    ``x`` and ``threshold`` may differ in dtype: they are compared in ``torch.promote_types(x.dtype,
    threshold.dtype, float32)``, the output has x's dtype, each gradient its input's. Triton takes float32,
    float16 and bfloat16 (the CPU interpreter included) and refuses float64 by a ValueError. A comparison with
    NaN is false, so NaN in x or t gives 0 (never NaN) and no gradient to x; kept entries keep their bits
    (-0.0 stays -0.0); ``x == t`` is off. Both paths agree bit for bit except the threshold gradient, a sum.

    Args:
        x: (..., M) pre-activations.
        threshold: (M,) per-latent thresholds.
        bandwidth: width of the rectangle kernel, > 0.
        impl: "auto" (Triton for supported CUDA tensors, else the reference), "triton" or "reference".

    Example:
        >>> import torch
        >>> jumprelu(torch.tensor([[0.5, 2.0, -1.0]]), torch.tensor([1.0, 1.0, -2.0]))
        tensor([[ 0.,  2., -1.]])
    """
    problem = _check(x, threshold, bandwidth)
    if choose_impl(impl, "jumprelu", (x, threshold), problem) == "reference":
        return jumprelu_reference(x, threshold, float(bandwidth))
    from glassformer.kernels.heaviside.triton import jumprelu_triton

    return jumprelu_triton(x, threshold, float(bandwidth))


def heaviside_step(x: Tensor, threshold: Tensor, bandwidth: float = 1e-3, impl: str = "auto") -> Tensor:
    """``H(x - threshold)`` as x's dtype, for the L0 penalty of JumpReLU latents.

    No gradient reaches x; the threshold gets ``-(1 / bandwidth) K((x - t) / bandwidth) g`` summed over rows.
    Dtypes, NaN and inf as in :func:`jumprelu`: NaN in x or t gives 0.

    Example:
        >>> import torch
        >>> heaviside_step(torch.tensor([[0.5, 2.0]]), torch.tensor([1.0, 1.0])).sum()
        tensor(1.)
    """
    problem = _check(x, threshold, bandwidth)
    if choose_impl(impl, "heaviside_step", (x, threshold), problem) == "reference":
        return heaviside_step_reference(x, threshold, float(bandwidth))
    from glassformer.kernels.heaviside.triton import heaviside_step_triton

    return heaviside_step_triton(x, threshold, float(bandwidth))
