"""Orthogonality penalty on |cos| above a margin, tiled over the Gram matrix's upper triangle."""

from __future__ import annotations

from torch import Tensor

from glassformer.kernels._dispatch import check_float, choose_impl, dtype_problem
from glassformer.kernels.ortho.reference import cos_margin_penalty_reference, max_abs_cos

__all__ = ["cos_margin_penalty", "max_abs_cos"]


def cos_margin_penalty(W: Tensor, margin: float, impl: str = "auto") -> Tensor:
    """Mean over row pairs i<j of ``relu(|cos(w_i, w_j)| - margin)**2``, a float32 scalar (0 when M < 2).

    The Triton path never materialises the M x M Gram matrix: it reduces tiles of the upper triangle to
    per-tile partials and recomputes the tiles in the backward. A NaN or inf in W makes the penalty NaN on both
    paths (a row's norm overflowing float32, |w| beyond about 1e19, is outside this contract); an all-zero row
    (-0.0 included) has cosine 0 with every row.

    Args:
        W: (M, D) rows to keep near-orthogonal; differentiable. Triton takes float32, float16 or bfloat16
            (bfloat16 only on a GPU: the CPU interpreter's tl.dot cannot multiply it) and M >= 2, D >= 1;
            anything else is a ValueError naming it.
        margin: |cos| allowed for free, in [0, 1).
        impl: "auto" (Triton for supported CUDA tensors, else the reference), "triton" or "reference".

    Example:
        >>> import torch
        >>> cos_margin_penalty(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 0.1)
        tensor(0.)
    """
    check_float("W", W)
    if W.dim() != 2:
        raise ValueError(f"W must be (M, D), got shape {tuple(W.shape)}")
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not 0.0 <= margin < 1.0:
        raise ValueError(f"margin={margin!r} is not allowed: expected a float in [0, 1)")
    problem = dtype_problem("W", W, "tl.dot multiplies bfloat16's raw 16-bit integers")
    if problem is None and (W.shape[0] < 2 or W.shape[1] == 0):
        problem = f"W of shape {tuple(W.shape)} has no pairs"
    if choose_impl(impl, "cos_margin_penalty", (W,), problem) == "reference":
        return cos_margin_penalty_reference(W, float(margin))
    from glassformer.kernels.ortho.triton import cos_margin_penalty_triton

    return cos_margin_penalty_triton(W, float(margin))
