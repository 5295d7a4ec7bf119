"""Row-wise TopK / AbsTopK activation with the mask fused for the backward."""

from __future__ import annotations

from torch import Tensor

from glassformer.kernels._dispatch import IMPLS, check_float, check_int, choose_impl, dtype_problem
from glassformer.kernels.topk.reference import topk_activation_reference
from glassformer.kernels.topk.select import topk_activation_select

__all__ = ["TOPK_IMPLS", "topk_activation"]

TOPK_IMPLS = (*IMPLS, "select")
"""The impls this op takes: the shared ones, and "select" (the linear-time selection in torch ops)."""


def topk_activation(x: Tensor, k: int, use_abs: bool = False, impl: str = "auto") -> Tensor:
    """Keep the ``k`` largest entries of each row of ``x`` (by |x| when ``use_abs``: AbsTopK), zero the rest.

    Ties go to the lower index, so exactly ``k`` entries per row survive; ``k = 0`` keeps none (all zeros).
    NaN ranks above +inf (as torch.sort ranks it), whatever its sign or payload, and NaNs tie with each other;
    -0.0 ties with +0.0. Kept entries keep their bits (a kept -NaN or -0.0 stays one), dropped ones become +0.
    The gradient flows only through the kept entries. All paths follow this exactly, in float32, float16 and
    bfloat16 (the Triton CPU interpreter included: it only compares and copies them; select in float64 too).
    The select path (``glassformer.kernels.topk.select``) finds each row's threshold by unsorted ``torch.topk``
    over integer keys made from the bits; the reference sorts each row twice.

    Args:
        x: (..., M) floating tensor (Triton: float32, float16 or bfloat16).
        k: entries kept per row, in [0, M].
        use_abs: rank by magnitude (Gao et al. 2025's AbsTopK) instead of by value.
        impl: "auto" (Triton for supported CUDA tensors, select for CPU tensors, else the reference), "triton",
            "reference" (the sort that specifies the rule) or "select" (plain torch ops, tested on CPU; a dtype it
            has no bit layout for, such as float8, goes to the reference).

    Example:
        >>> import torch
        >>> topk_activation(torch.tensor([[1.0, -3.0, 2.0]]), 2)
        tensor([[1., 0., 2.]])
    """
    if impl not in TOPK_IMPLS:
        allowed = ", ".join(repr(i) for i in TOPK_IMPLS)
        raise ValueError(f"impl={impl!r} is not allowed: expected one of {allowed}")
    check_float("x", x)
    if x.dim() < 1:
        raise ValueError(f"x must have a last dimension to select over, got shape {tuple(x.shape)}")
    M = x.shape[-1]
    check_int("k", k, 0, M)
    problem = dtype_problem("x", x)
    if problem is None and x.numel() == 0:
        problem = "an empty x"
    if problem is None and x.numel() >= 2**31:
        problem = f"x has {x.numel()} entries, beyond 32-bit indexing"
    if impl == "select":
        return topk_activation_select(x, k, use_abs)
    if choose_impl(impl, "topk_activation", (x,), problem) == "reference":
        # The reference's two sorts per row made a CPU training step of the paper's weight-sparse model (AbsTopK
        # at every site) 1.77x as long as with selection (benchmarks/topk_select.py).
        if impl == "auto" and x.device.type == "cpu":
            return topk_activation_select(x, k, use_abs)
        return topk_activation_reference(x, k, use_abs)
    from glassformer.kernels.topk.triton import topk_activation_triton

    return topk_activation_triton(x, k, use_abs)
