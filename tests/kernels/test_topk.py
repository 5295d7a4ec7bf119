"""The Triton TopK / AbsTopK activation against its reference: the same entries kept, the same gradients."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.kernels import topk_activation
from glassformer.kernels.testing import TOLERANCE, assert_rel_close


def run(x, k, use_abs, g, impl):
    x = x.detach().clone().requires_grad_()
    y = topk_activation(x, k, use_abs=use_abs, impl=impl)
    y.backward(g)
    return y.detach(), x.grad


def check_parity(x, k, use_abs):
    g = torch.randn_like(x)
    y, dx = run(x, k, use_abs, g, "triton")
    y_ref, dx_ref = run(x, k, use_abs, g, "reference")
    # Selection is exact: the same entries survive, with exactly their values and gradients.
    assert torch.equal(y != 0, y_ref != 0)
    assert_rel_close(y, y_ref, 0.0, "y")
    assert_rel_close(dx, dx_ref, 0.0, "dx")


@pytest.mark.parametrize("use_abs", [False, True], ids=["topk", "abs_topk"])
@pytest.mark.parametrize(("shape", "k"), [((63, 123), 1), ((63, 123), 17), ((5, 63), 63), ((2, 3, 33), 4)],
                         ids=["k=1", "awkward", "k=width", "3d"])
def test_topk_activation_matches_reference(shape, k, use_abs, device):
    check_parity(torch.randn(shape, device=device), k, use_abs)


def test_topk_activation_breaks_ties_to_the_lower_index_like_the_reference(device):
    # Few distinct values: nearly every threshold is tied; zeros and negative zeros included.
    x = torch.randint(-2, 3, (40, 37), device=device).float()
    x[0, :5] = -0.0
    for k in (1, 5, 20, 37):
        for use_abs in (False, True):
            check_parity(x, k, use_abs)


def test_topk_activation_orders_negative_values_and_infinities(device):
    x = torch.tensor([[-1.0, -3.0, -2.0, -float("inf"), -0.5]], device=device)
    y = topk_activation(x, 2, impl="triton")
    assert y.tolist() == [[-1.0, 0.0, 0.0, 0.0, -0.5]]
    y = topk_activation(x, 1, use_abs=True, impl="triton")
    assert y.tolist() == [[0.0, 0.0, 0.0, -float("inf"), 0.0]]


def test_topk_activation_rows_wider_than_registers_use_the_radix_path(device):
    from glassformer.kernels.topk.triton import REGISTER_WIDTH

    # BatchTopK selects over a whole batch as one row; ties across chunk boundaries test the running rank.
    x = torch.randint(-3, 4, (2, REGISTER_WIDTH + 900), device=device).float()
    for k, use_abs in ((1, False), (5000, True), (REGISTER_WIDTH + 900, False)):
        check_parity(x, k, use_abs)
    check_parity(torch.randn(1, REGISTER_WIDTH + 1, device=device), 37, False)


@settings(max_examples=8, deadline=None)
@given(rows=st.integers(1, 20), width=st.integers(1, 70), use_abs=st.booleans(), data=st.data())
def test_topk_activation_keeps_exactly_k_per_row(rows, width, use_abs, data, device):
    k = data.draw(st.integers(1, width))
    x = torch.randn(rows, width, device=device)
    check_parity(x, k, use_abs)
    assert ((topk_activation(x, k, use_abs, impl="triton") != 0).sum(-1) == k).all()


@pytest.mark.gpu
def test_topk_activation_matches_reference_in_bfloat16_at_transcoder_width():
    x = torch.randn(512, 16384, device="cuda", dtype=torch.bfloat16)
    g = torch.randn_like(x)
    y, dx = run(x, 32, True, g, "triton")
    y_ref, dx_ref = run(x, 32, True, g, "reference")
    assert torch.equal(y, y_ref) and torch.equal(dx, dx_ref)
    assert y.dtype == torch.bfloat16
    assert_rel_close(y, y_ref, TOLERANCE[torch.bfloat16], "y")
