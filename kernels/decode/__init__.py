"""TopK sparse decode ``y[n] = sum_j vals[n, j] * W[idx[n, j]]`` (transcoder decoders)."""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.kernels._dispatch import check_float, choose_impl, dtype_problem
from glassformer.kernels.decode.reference import sparse_decode_reference

__all__ = ["sparse_decode"]


def _validate(idx: Tensor, vals: Tensor, W: Tensor) -> None:
    if not isinstance(idx, Tensor) or idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == bool:
        raise ValueError(f"idx must be an integer tensor, got {getattr(idx, 'dtype', type(idx).__name__)}")
    check_float("vals", vals)
    check_float("W", W)
    if idx.dim() != 2 or vals.shape != idx.shape:
        raise ValueError(f"idx and vals must both be (N, k); got idx {tuple(idx.shape)}, vals {tuple(vals.shape)}")
    if W.dim() != 2:
        raise ValueError(f"W must be (M, D), got shape {tuple(W.shape)}")
    if idx.numel():
        # Checked on the host: an out-of-range gather is a crash in the interpreter and garbage on a GPU.
        lo, hi = torch.stack(torch.aminmax(idx)).tolist()  # one device sync for both bounds
        bad = lo if lo < 0 else hi if hi >= W.shape[0] else None
        if bad is not None:
            raise ValueError(f"idx contains {bad}, outside the allowed range [0, {W.shape[0]}) of rows of W")


def _unsupported(idx: Tensor, vals: Tensor, W: Tensor) -> str | None:
    if idx.shape[0] == 0 or W.shape[1] == 0:
        return f"empty shapes idx {tuple(idx.shape)}, W {tuple(W.shape)}"
    return dtype_problem("vals", vals) or dtype_problem("W", W)


def sparse_decode(idx: Tensor, vals: Tensor, W: Tensor, impl: str = "auto") -> Tensor:
    """Decode sparse codes: ``y[n] = sum_j vals[n, j] * W[idx[n, j]]``, shape (N, D).

    Args:
        idx: (N, k) integer latent indices, each in [0, M) (checked: a bad one is a ValueError). ``k = 0`` is
            allowed: every row is an empty sum, so ``y`` is zeros and W's gradient is zeros.
        vals: (N, k) the latents' values; differentiable.
        W: (M, D) decoder rows; differentiable. The Triton weight gradient sorts pairs by latent instead of
            using atomics, so it is bit-identical across runs.
        impl: "auto" (Triton for supported CUDA tensors, else the reference), "triton" or "reference".

    ``vals`` and ``W`` may differ in dtype: the result has ``torch.result_type(vals, W)`` and each gradient its
    input's dtype. The maths is float32 (float64 in the reference when either input is float64). Triton takes
    float32, float16 and bfloat16 and refuses the rest by a ValueError. (The CPU interpreter truncates float32
    to bfloat16 where a GPU rounds to nearest even: at most one bfloat16 ulp, inside the bfloat16 tolerance of
    ``glassformer.kernels.testing``, so it is allowed there.) NaN and inf propagate as IEEE sums do, at the same
    positions in both paths (the sign of a NaN produced by arithmetic is not specified).

    Example:
        >>> import torch
        >>> W = torch.arange(6.0).reshape(3, 2)
        >>> sparse_decode(torch.tensor([[0, 2]]), torch.tensor([[1.0, 0.5]]), W)
        tensor([[2.0000, 3.5000]])
    """
    _validate(idx, vals, W)
    if choose_impl(impl, "sparse_decode", (idx, vals, W), _unsupported(idx, vals, W)) == "reference":
        return sparse_decode_reference(idx, vals, W)
    from glassformer.kernels.decode.triton import sparse_decode_triton

    return sparse_decode_triton(idx, vals, W)
