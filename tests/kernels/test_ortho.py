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


U32 = 2.0**-24  # float32's unit roundoff
BAND = 1e-3  # pairs less than this above the margin are ill-conditioned (see rounding_bounds)


def rounding_bounds(W, margin, g):
    """First-order bounds on what float32 rounding of the cosines of the pairs at the margin can do to the
    penalty and to dW.

    A float32 cosine of rows of length D is off by at most dc = (2D + 8) u (a length-D dot product and two
    norms, each within D u, plus a few roundings for the division). With e = relu(|c| - margin) and P the mean
    of e^2 over the n pairs, a pair moves P by at most (2 e dc + dc^2) / n and row i of dW = g dP/dw_i by at most
    g 2 dc / (n ||w_i||) (|dc/dw_i| <= 1 / ||w_i||). Only pairs in the band |c| - margin in (-dc, BAND) are
    counted: there the relative error of e^2, 2 dc / e, is beyond any fixed tolerance (a pair just above the
    margin has a tiny e^2 but its full dc). Pairs further above the margin are held to the plain tolerance.
    """
    W64 = W.detach().double().cpu()
    M, D = W64.shape
    n = M * (M - 1) / 2
    dc = (2 * D + 8) * U32
    norms = W64.norm(dim=1).clamp_min(1e-12)
    cos = (W64 / norms[:, None]) @ (W64 / norms[:, None]).T
    off = ~torch.eye(M, dtype=torch.bool)
    above = cos.abs() - margin
    near = (above > -dc) & (above < BAND) & off  # the ill-conditioned pairs, each counted both ways
    excess = torch.relu(cos.abs() - margin)
    p_bound = float(((2 * excess * dc + dc**2) * near).sum() / 2 / n)
    dw_bound = float((g * 2 * dc * near.sum(dim=1) / (n * norms)).norm())
    return p_bound, dw_bound


def check_parity(W, margin, tol=None):
    """Both float32 paths (Triton and the reference) against the float64 reference: within ``tol`` relative error
    plus the rounding bounds above (the reference is held to the same standard as the kernel)."""
    tol = TOLERANCE[W.dtype] if tol is None else tol
    g = torch.tensor(1.7, device=W.device)
    p_true, dW_true = run(W.double(), margin, g.double(), "reference")
    p_bound, dw_bound = rounding_bounds(W, margin, 1.7)
    for impl in ("triton", "reference"):
        p, dW = run(W, margin, g, impl)
        assert p.shape == () and p.dtype == torch.float32
        assert_rel_close(p, p_true, tol + p_bound / max(abs(p_true.item()), 1e-30), f"{impl} penalty")
        assert_rel_close(dW, dW_true, tol + dw_bound / max(dW_true.norm().item(), 1e-30), f"{impl} dW")


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


def test_a_pair_just_above_the_margin_is_within_the_rounding_bound(device):
    # Seed 91 at M=16, D=26, margin 0.47 puts one pair 6e-5 above the margin: P = 3.7e-9, and float32 rounding
    # of that pair's cosine (both paths) is a 1e-5 to 1e-4 relative error of P. The float64 anchor and the
    # rounding bound judge it; a plain relative tolerance of 1e-5 would fail the kernel and the reference alike.
    W = torch.randn(16, 26, generator=torch.Generator().manual_seed(91)).to(device)
    check_parity(W, 0.47)
    p_bound, _ = rounding_bounds(W, 0.47, 1.0)
    p_true = run(W.double(), 0.47, torch.tensor(1.0, dtype=torch.float64, device=device), "reference")[0].item()
    assert 1e-5 < p_bound / p_true < 0.1  # the case exercises the bound (a worst case, so above the error seen)


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


# Derandomised, with the data drawn from a hypothesis seed, so a failing example reproduces exactly.
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
