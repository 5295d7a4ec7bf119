"""Where the kernel parity tests run: on a GPU when there is one, else through the Triton CPU interpreter."""

import pytest
import torch

from glassformer.kernels._dispatch import interpreting, triton_available


@pytest.fixture(scope="session")
def device() -> str:
    """The device the Triton path runs on here; skips when it cannot run at all."""
    if not triton_available():
        pytest.skip("triton is not installed")
    if torch.cuda.is_available():
        return "cuda"
    if not interpreting():
        pytest.skip("no GPU and TRITON_INTERPRET is not set")
    return "cpu"
