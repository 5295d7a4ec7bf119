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


def _bits(t: Tensor) -> Tensor:
    """The raw bits of a floating tensor as integers of its width, on the CPU."""
    width = {8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()]
    return t.detach().cpu().contiguous().view(width)


def assert_bits_equal(actual: Tensor, expected: Tensor, name: str = "tensor") -> None:
    """Fail unless both have the same dtype, shape and bits: NaN sign and payload, and -0.0, included.

    For what selection ops return: entries copied or zeroed, never computed.

    Example:
        >>> import torch
        >>> assert_bits_equal(torch.tensor([-0.0, float("nan")]), torch.tensor([-0.0, float("nan")]))
    """
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        raise AssertionError(f"{name}: {actual.dtype} {tuple(actual.shape)} vs {expected.dtype} {tuple(expected.shape)}")
    differ = _bits(actual) != _bits(expected)
    if differ.any():
        where = differ.nonzero()[0].tolist()
        raise AssertionError(f"{name}: {int(differ.sum())} entries differ in their bits, first at {where}: "
                             f"{actual.detach().cpu()[tuple(where)]} vs {expected.detach().cpu()[tuple(where)]}")


def assert_same_specials(actual: Tensor, expected: Tensor, name: str = "tensor") -> None:
    """NaN at the same places and the same infinities (sign included) at the same places; the sign of a NaN
    is not compared, as arithmetic does not specify it.

    Example:
        >>> import torch
        >>> assert_same_specials(torch.tensor([float("nan"), 1.0]), torch.tensor([-float("nan"), 2.0]))
    """
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        raise AssertionError(f"{name}: {actual.dtype} {tuple(actual.shape)} vs {expected.dtype} {tuple(expected.shape)}")
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    for what, mask_a, mask_e in (("NaN", a.isnan(), e.isnan()), ("+inf", a == float("inf"), e == float("inf")),
                                 ("-inf", a == -float("inf"), e == -float("inf"))):
        if not torch.equal(mask_a, mask_e):
            where = (mask_a != mask_e).nonzero()[0].tolist()
            raise AssertionError(f"{name}: {what} at different places, first at {where}: "
                                 f"{a[tuple(where)].item()} vs {e[tuple(where)].item()}")


def assert_special_close(actual: Tensor, expected: Tensor, tol: float, name: str = "tensor") -> None:
    """:func:`assert_same_specials`, and the finite rest within ``rel_error <= tol``.

    Example:
        >>> import torch
        >>> nan, inf = float("nan"), float("inf")
        >>> assert_special_close(torch.tensor([nan, -inf, 1.0]), torch.tensor([-nan, -inf, 1.0 + 1e-7]), 1e-6)
    """
    assert_same_specials(actual, expected, name)
    finite = expected.detach().isfinite()
    zero = torch.zeros((), dtype=expected.dtype, device=expected.device)
    assert_rel_close(torch.where(finite, actual.detach(), zero), torch.where(finite, expected.detach(), zero), tol,
                     name)
