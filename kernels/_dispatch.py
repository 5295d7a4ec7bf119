"""Choosing between the Triton kernels and the PyTorch references, per call.

The choice is an argument (carried by the model config), never an environment variable read at import: the one
variable consulted, ``TRITON_INTERPRET``, is read at call time and only to explain why ``impl="triton"`` cannot
run on CPU tensors.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

IMPLS = ("auto", "triton", "reference")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# Looked up once, without importing triton (so importing glassformer.kernels stays cheap and works without it).
_TRITON_FOUND = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported."""
    return _TRITON_FOUND


def interpreting() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (the variable must be set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_impl(impl: object) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not allowed: expected one of 'auto', 'triton', 'reference'")


def choose_impl(impl: str, op: str, tensors: tuple[Tensor, ...], unsupported: str | None) -> str:
    """Resolve ``impl`` to ``"triton"`` or ``"reference"``.

    ``unsupported`` is None when the Triton kernels handle these shapes and dtypes, else the reason they do not.
    "auto" takes Triton only for CUDA tensors it supports; "triton" insists and says why it cannot.

    Example:
        >>> import torch
        >>> choose_impl("auto", "op", (torch.zeros(2),), None)
        'reference'
    """
    check_impl(impl)
    if impl == "reference":
        return "reference"
    on_cuda = all(t.is_cuda for t in tensors)
    if impl == "auto":
        return "triton" if on_cuda and unsupported is None and triton_available() else "reference"
    if not triton_available():
        raise RuntimeError(f"{op}(impl='triton') needs the triton package, which is not installed")
    if unsupported is not None:
        raise ValueError(f"{op}(impl='triton') does not support these inputs: {unsupported}")
    if not on_cuda and not interpreting():
        raise RuntimeError(
            f"{op}(impl='triton') got CPU tensors: Triton needs CUDA tensors, or TRITON_INTERPRET=1 set before "
            "triton is first imported (the CPU interpreter, for tests)"
        )
    return "triton"


def dtype_problem(name: str, t: Tensor, interpreter_bf16: str | None = None) -> str | None:
    """The reason the Triton kernels cannot take ``t``'s dtype, or None.

    ``interpreter_bf16`` is None for ops whose kernels the CPU interpreter runs correctly in bfloat16, else why
    it cannot: the interpreter holds bfloat16 as raw uint16, so for one its ``tl.dot`` multiplies the integers
    (casts to and from float32 are emulated and work, though float32 -> bfloat16 truncates where a GPU rounds to
    nearest even). Such ops refuse bfloat16 only while interpreting; on a GPU they take it.

    Example:
        >>> import torch
        >>> dtype_problem("x", torch.zeros(1, dtype=torch.float64))
        'x.dtype=torch.float64 (the kernels take float32, float16 or bfloat16)'
    """
    if t.dtype not in TRITON_DTYPES:
        return f"{name}.dtype={t.dtype} (the kernels take float32, float16 or bfloat16)"
    if interpreter_bf16 is not None and t.dtype == torch.bfloat16 and interpreting():
        return (
            f"{name}.dtype=torch.bfloat16 under the Triton CPU interpreter (TRITON_INTERPRET=1), where "
            f"{interpreter_bf16}; it takes float32 or float16 there (bfloat16 runs on a CUDA GPU)"
        )
    return None


def check_float(name: str, t: object) -> None:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        got = t.dtype if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a floating-point tensor, got {got}")


def check_int(name: str, value: object, low: int, high: int) -> None:
    """``value`` must be an int in [low, high]."""
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if not ok:
        raise ValueError(f"{name}={value!r} is not allowed: expected an integer in [{low}, {high}]")


def launch(fn):
    """Keep torch.compile from tracing into a Triton launch (it cannot), so compiled models still run."""
    return torch.compiler.disable(fn, recursive=True)


def upcast(t: Tensor) -> Tensor:
    """``t`` in at least float32: the references' maths precision (float64 stays float64, for gradcheck)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))
