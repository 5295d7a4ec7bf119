"""Weight-sparsity projection: keep a matrix's largest-magnitude entries, found by selection."""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.kernels._dispatch import IMPLS, check_float, check_int, choose_impl, dtype_problem
from glassformer.kernels.prune.reference import magnitude_prune_reference_
from glassformer.kernels.prune.select import magnitude_prune_select_

__all__ = ["PRUNE_IMPLS", "magnitude_prune_"]

PRUNE_IMPLS = (*IMPLS, "select")
"""The impls this op takes: the shared ones, and "select" (the linear-time selection in torch ops)."""


def magnitude_prune_(W: Tensor, keep: int, min_per_row: int = 0, impl: str = "auto") -> Tensor:
    """Zero all but ``keep`` entries of ``W`` in place and return the kept mask (R, C) as bool.

    The rule, which makes both guarantees exact: first reserve each row's ``min_per_row`` largest |w|, then fill
    the remaining ``keep - R * min_per_row`` slots with the largest |w| among the other entries; ties go to the
    lower flat index. The Triton path finds the thresholds by radix selection over the |w| bits, the select
    path (``glassformer.kernels.prune.select``) by unsorted ``torch.topk`` over the same bits; neither sorts.
    A NaN weight (either sign) counts as the largest magnitude, as torch.sort ranks NaN, so it is kept and stays
    visible; NaNs tie with each other, as do -0.0 and +0.0. Kept entries keep their bits. All paths agree
    exactly in float32, float16 and bfloat16 (the Triton CPU interpreter included; select in float64 too).

    Args:
        W: (R, C) floating matrix, modified in place (under no_grad). Triton: float32, float16 or bfloat16.
        keep: total entries kept, in [R * min_per_row, R * C]; 0 (with ``min_per_row=0``) zeroes all of W.
        min_per_row: entries every row keeps (Gao et al. 2025 keep at least 4 per neuron), in [0, C].
        impl: "auto" (Triton for supported CUDA tensors, select for CPU tensors, else the reference),
            "triton", "reference" (the sort that specifies the rule) or "select" (plain torch ops, tested on CPU; a
            dtype it has no bit layout for, such as float8, goes to the reference).

    Example:
        >>> import torch
        >>> W = torch.tensor([[5.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
        >>> magnitude_prune_(W, 3, min_per_row=1)
        tensor([[ True,  True, False],
                [False, False,  True]])
        >>> W
        tensor([[ 5.0000, -1.0000,  0.0000],
                [ 0.0000,  0.0000,  0.3000]])
    """
    if impl not in PRUNE_IMPLS:
        allowed = ", ".join(repr(i) for i in PRUNE_IMPLS)
        raise ValueError(f"impl={impl!r} is not allowed: expected one of {allowed}")
    check_float("W", W)
    if W.dim() != 2:
        raise ValueError(f"W must be a matrix (R, C), got shape {tuple(W.shape)}")
    R, C = W.shape
    check_int("min_per_row", min_per_row, 0, C)
    check_int("keep", keep, R * min_per_row, R * C)
    problem = dtype_problem("W", W)
    if problem is None and W.numel() == 0:
        problem = "an empty W"
    if problem is None and W.numel() >= 2**31:
        problem = f"W has {W.numel()} entries, beyond 32-bit indexing"
    with torch.no_grad():
        if impl == "select":
            return magnitude_prune_select_(W, keep, min_per_row)
        if choose_impl(impl, "magnitude_prune_", (W,), problem) == "reference":
            # The sort costs about half a small model's CPU training step (benchmarks/projection_share.py).
            if impl == "auto" and W.device.type == "cpu":
                return magnitude_prune_select_(W, keep, min_per_row)
            return magnitude_prune_reference_(W, keep, min_per_row)
        from glassformer.kernels.prune.triton import magnitude_prune_triton_

        return magnitude_prune_triton_(W, keep, min_per_row)
