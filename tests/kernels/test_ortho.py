"""The Triton |cos|-margin penalty against its reference: the value and the gradient."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.kernels import cos_margin_penalty
from glassformer.kernels.testing import TOLERANCE, assert_rel_close


def run(W, margin, g, impl):
    W = W.detach().clone().requires_grad_()
    p = cos_margin_penalty(W, margin, impl=impl)
    (p * g).backward()
    return p.detach(), W.grad


def check_parity(W, margin, tol=None):
    tol = TOLERANCE[W.dtype] if tol is None else tol
    g = torch.tensor(1.7, device=W.device)
    p, dW = run(W, margin, g, "triton")
    p_ref, dW_ref = run(W, margin, g, "reference")
    assert p.shape == () and p.dtype == torch.float32
    assert_rel_close(p, p_ref, tol, "penalty")
    assert_rel_close(dW, dW_ref, tol, "dW")


@pytest.mark.parametrize(("M", "D", "margin"), [(63, 33, 0.1), (123, 40, 0.2), (2, 3, 0.0), (130, 5, 0.6)],
                         ids=["awkward", "two_tiles", "one_pair", "low_rank"])
def test_cos_margin_penalty_matches_reference(M, D, margin, device):
    check_parity(torch.randn(M, D, device=device), margin)


def test_cos_margin_penalty_handles_parallel_antiparallel_and_zero_rows(device):
    W = torch.randn(40, 20, device=device)
    W[1] = 3 * W[0]
    W[2] = -W[0]
    W[5] = 0.0
    check_parity(W, 0.3)


def test_cos_margin_penalty_is_zero_below_the_margin(device):
    W = torch.eye(24, 30, device=device) + 0.01 * torch.randn(24, 30, device=device)
    p, dW = run(W, 0.2, torch.tensor(1.0, device=device), "triton")
    assert p.item() == 0.0
    assert not dW.any()


def test_cos_margin_penalty_gradient_vanishes_for_one_dimensional_rows(device):
    # With D = 1 every cosine is exactly +-1 whatever the weights, so the exact gradient is zero and both
    # paths return only rounding noise: a relative comparison would be meaningless, an absolute bound is not.
    W = torch.randn(50, 1, device=device)
    for impl in ("triton", "reference"):
        p, dW = run(W, 0.0, torch.tensor(1.0, device=device), impl)
        assert abs(p.item() - 1.0) < 1e-6
        assert dW.abs().max().item() < 1e-6 / W.abs().min().item()


# Derandomised, with the data drawn from a hypothesis seed: a failing example reproduces exactly. Unseeded data
# once hit a case (M=16, D=26, margin 0.47) where a pair sat just above the margin and relu(|c|-m)^2, being tiny,
# turned float32 rounding into a 4.7e-5 relative error; that case is open work, not hidden by a looser tolerance.
@settings(max_examples=6, deadline=None, derandomize=True)
@given(M=st.integers(2, 80), D=st.integers(2, 40), margin=st.floats(0.0, 0.9), seed=st.integers(0, 2**16))
def test_cos_margin_penalty_matches_reference_on_small_shapes(M, D, margin, seed, device):
    gen = torch.Generator().manual_seed(seed)
    check_parity(torch.randn(M, D, generator=gen).to(device), margin)


@pytest.mark.gpu
def test_cos_margin_penalty_matches_reference_in_bfloat16():
    check_parity(torch.randn(2048, 256, device="cuda").to(torch.bfloat16), 0.05)


@pytest.mark.gpu
def test_cos_margin_penalty_matches_reference_in_float32_on_gpu():
    check_parity(torch.randn(3000, 200, device="cuda"), 0.05)
