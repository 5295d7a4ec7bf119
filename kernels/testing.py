"""The one error measure every kernel parity test uses."""

from __future__ import annotations

import torch
from torch import Tensor

# Relative error allowed between a kernel and its reference, by the dtype of the inputs. float32: a few
# roundings accumulated over a reduction. bfloat16/float16 (GPU only): one rounding of the output in the
# narrow type, about 2**-8 for bfloat16.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def rel_error(actual: Tensor, expected: Tensor) -> float:
    """``||actual - expected|| / max(||expected||, tiny)`` in float64 over all elements (Frobenius norms).

    One number per tensor keeps tolerances comparable across ops and shapes; a tensor of zeros compares by
    its absolute norm.

    Example:
        >>> import torch
        >>> rel_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]))
        0.0
    """
    if actual.shape != expected.shape:
        raise ValueError(f"shape mismatch: actual {tuple(actual.shape)} vs expected {tuple(expected.shape)}")
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    if not torch.isfinite(a).all():
        return float("inf")
    denom = max(torch.linalg.vector_norm(e).item(), 1e-30)
    return torch.linalg.vector_norm(a - e).item() / denom


def assert_rel_close(actual: Tensor, expected: Tensor, tol: float, name: str = "tensor") -> None:
    """Fail with the measured error when ``rel_error(actual, expected) > tol``.

    Example:
        >>> import torch
        >>> assert_rel_close(torch.ones(3), torch.ones(3), 1e-6, "y")
    """
    err = rel_error(actual, expected)
    if not err <= tol:
        raise AssertionError(f"{name}: relative error {err:.3e} exceeds {tol:.1e}")
