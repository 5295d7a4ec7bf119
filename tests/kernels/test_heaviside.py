"""The Triton JumpReLU and Heaviside step against their references, straight-through gradients included."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.kernels import heaviside_step, jumprelu
from glassformer.kernels.testing import TOLERANCE, assert_rel_close

OPS = {"jumprelu": jumprelu, "heaviside_step": heaviside_step}


def run(op, x, t, g, bandwidth, impl):
    x = x.detach().clone().requires_grad_()
    t = t.detach().clone().requires_grad_()
    y = OPS[op](x, t, bandwidth, impl=impl)
    y.backward(g)
    dx = x.grad if x.grad is not None else torch.zeros_like(x)
    return y.detach(), dx, t.grad


def check_parity(op, shape, bandwidth, device, dtype=torch.float32):
    M = shape[-1]
    t = torch.rand(M, device=device) * 0.5
    # Half the entries within half a bandwidth of the threshold, so the straight-through window is exercised.
    x = t + (torch.rand(shape, device=device) - 0.5) * bandwidth
    near = torch.rand(shape, device=device) < 0.5
    near.view(-1)[0] = True
    x = torch.where(near, x, torch.randn(shape, device=device))
    x, t = x.to(dtype), t.to(dtype)
    g = torch.randn(shape, device=device, dtype=dtype)
    got = run(op, x, t, g, bandwidth, "triton")
    want = run(op, x, t, g, bandwidth, "reference")
    assert torch.equal(got[0], want[0]), "forward"
    assert torch.equal(got[1], want[1]), "dx"
    assert want[2].abs().sum() > 0, "the window caught no entry: the threshold gradient went untested"
    assert_rel_close(got[2], want[2], TOLERANCE[dtype], "d_threshold")


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("shape", [(63, 123), (2, 5, 33), (1, 1)], ids=["awkward", "3d", "single"])
def test_heaviside_ops_match_reference(op, shape, device):
    check_parity(op, shape, 1e-2, device)


@settings(max_examples=6, deadline=None)
@given(rows=st.integers(1, 40), M=st.integers(1, 140), op=st.sampled_from(list(OPS)),
       bandwidth=st.sampled_from([1e-3, 0.1]))
def test_heaviside_ops_match_reference_on_small_shapes(rows, M, op, bandwidth, device):
    check_parity(op, (rows, M), bandwidth, device)


def test_jumprelu_threshold_only_gradient(device):
    x = torch.tensor([[1.0004, 3.0]], device=device)
    t = torch.tensor([1.0, 1.0], device=device, requires_grad=True)
    jumprelu(x, t, 1e-3, impl="triton").sum().backward()
    assert_rel_close(t.grad, torch.tensor([-1.0 / 1e-3, 0.0], device=device), TOLERANCE[torch.float32], "dt")


@pytest.mark.gpu
@pytest.mark.parametrize("op", list(OPS))
def test_heaviside_ops_match_reference_in_bfloat16(op):
    check_parity(op, (4096, 2048), 0.05, "cuda", dtype=torch.bfloat16)
