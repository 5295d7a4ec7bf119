"""The references are the specification: checked against hand-worked values, brute force and gradcheck."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.kernels import (
    cos_margin_penalty,
    heaviside_step,
    jumprelu,
    magnitude_prune_,
    max_abs_cos,
    sparse_decode,
    topk_activation,
)
from glassformer.kernels.decode.reference import sparse_decode_grads_reference


def test_sparse_decode_reference_matches_dense_codes_times_W():
    idx = torch.tensor([[0, 3], [2, 2], [1, 0]])
    vals = torch.tensor([[1.0, -2.0], [0.5, 0.25], [3.0, 1.0]])
    W = torch.randn(4, 5)
    codes = torch.zeros(3, 4).scatter_add_(1, idx, vals)  # (N, M), repeated indices add up
    torch.testing.assert_close(sparse_decode(idx, vals, W, impl="reference"), codes @ W)


def test_sparse_decode_reference_gradients_match_the_written_out_formulas():
    idx = torch.randint(0, 7, (5, 3))
    vals = torch.randn(5, 3, requires_grad=True)
    W = torch.randn(7, 4, requires_grad=True)
    dY = torch.randn(5, 4)
    sparse_decode(idx, vals, W, impl="reference").backward(dY)
    dvals, dW = sparse_decode_grads_reference(idx, vals.detach(), W.detach(), dY)
    torch.testing.assert_close(vals.grad, (dY @ W.detach().T).gather(1, idx))
    torch.testing.assert_close(vals.grad, dvals)
    torch.testing.assert_close(W.grad, dW)


def test_sparse_decode_reference_passes_gradcheck_in_float64():
    idx = torch.randint(0, 6, (4, 3))
    vals = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    W = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, w: sparse_decode(idx, v, w, impl="reference"), (vals, W))


@pytest.mark.parametrize("bad", [-1, 6])
def test_sparse_decode_rejects_an_index_outside_the_rows_of_W(bad):
    idx = torch.tensor([[0, bad]])
    with pytest.raises(ValueError, match=f"idx contains {bad}"):
        sparse_decode(idx, torch.ones(1, 2), torch.randn(6, 3))


def test_unknown_impl_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="impl='fast'"):
        topk_activation(torch.randn(2, 3), 1, impl="fast")


def test_topk_activation_reference_keeps_k_per_row_and_breaks_ties_to_the_lower_index():
    x = torch.tensor([[1.0, 3.0, 3.0, 3.0, -5.0]])
    assert topk_activation(x, 2).tolist() == [[0.0, 3.0, 3.0, 0.0, 0.0]]
    assert topk_activation(x, 2, use_abs=True).tolist() == [[0.0, 3.0, 0.0, 0.0, -5.0]]


@pytest.mark.parametrize("k", [-1, 6])
def test_topk_activation_rejects_k_outside_zero_to_width(k):
    with pytest.raises(ValueError, match=rf"k={k} is not allowed: expected an integer in \[0, 5\]"):
        topk_activation(torch.randn(2, 5), k)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 5), width=st.integers(1, 12), data=st.data())
def test_topk_activation_reference_keeps_exactly_the_largest(rows, width, data):
    k = data.draw(st.integers(1, width))
    use_abs = data.draw(st.booleans())
    x = torch.randn(rows, width)
    y = topk_activation(x, k, use_abs=use_abs)
    kept = y != 0
    assert (kept.sum(-1) == k).all()
    key = x.abs() if use_abs else x
    # Every kept key is >= every dropped key.
    lowest_kept = torch.where(kept, key, torch.inf).min(-1).values
    highest_dropped = torch.where(kept, -torch.inf, key).max(-1).values
    assert (lowest_kept >= highest_dropped).all()


def test_topk_activation_reference_passes_gradcheck_in_float64():
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: topk_activation(t, 3, use_abs=True), (x,))


def brute_force_prune_mask(W, keep, min_per_row):
    """The rule spelled out entry by entry, independently of the sort-based reference."""
    R, C = W.shape
    mag = W.abs().tolist()
    kept = set()
    for r in range(R):
        cols = sorted(range(C), key=lambda c: (-mag[r][c], c))[:min_per_row]
        kept.update((r, c) for c in cols)
    others = sorted((rc for rc in itertools.product(range(R), range(C)) if rc not in kept),
                    key=lambda rc: (-mag[rc[0]][rc[1]], rc[0] * C + rc[1]))
    kept.update(others[: keep - R * min_per_row])
    mask = torch.zeros(R, C, dtype=torch.bool)
    for r, c in kept:
        mask[r, c] = True
    return mask


@settings(max_examples=30, deadline=None)
@given(R=st.integers(1, 5), C=st.integers(1, 6), data=st.data())
def test_magnitude_prune_reference_follows_the_rule_with_ties(R, C, data):
    min_per_row = data.draw(st.integers(0, C))
    keep = data.draw(st.integers(R * min_per_row, R * C))
    # Few distinct magnitudes, so ties (including zeros) are common.
    W = torch.randint(-2, 3, (R, C)).float()
    expected = brute_force_prune_mask(W, keep, min_per_row)
    before = W.clone()
    mask = magnitude_prune_(W, keep, min_per_row, impl="reference")
    assert torch.equal(mask, expected)
    assert int(mask.sum()) == keep
    assert (mask.sum(1) >= min_per_row).all()
    assert torch.equal(W, torch.where(mask, before, torch.zeros(())))


@pytest.mark.parametrize(("keep", "min_per_row", "name"), [(1, 1, "keep=1"), (13, 0, "keep=13"), (4, 5, "min_per_row=5")])
def test_magnitude_prune_rejects_impossible_targets(keep, min_per_row, name):
    with pytest.raises(ValueError, match=name):
        magnitude_prune_(torch.randn(3, 4), keep, min_per_row)


def test_cos_margin_penalty_reference_matches_a_loop_over_pairs():
    W = torch.randn(6, 4)
    U = W / W.norm(dim=1, keepdim=True)
    total = sum(max(abs(float(U[i] @ U[j])) - 0.3, 0.0) ** 2 for i in range(6) for j in range(i + 1, 6))
    torch.testing.assert_close(cos_margin_penalty(W, 0.3), torch.tensor(total / 15))


def test_cos_margin_penalty_reference_passes_gradcheck_in_float64():
    W = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: cos_margin_penalty(w, 0.2).double(), (W,))


def test_max_abs_cos_ignores_the_diagonal_and_matches_brute_force():
    W = torch.randn(9, 4)
    U = W / W.norm(dim=1, keepdim=True)
    cos = (U @ U.T).abs() - 2 * torch.eye(9)
    torch.testing.assert_close(max_abs_cos(W, chunk=4), cos.max())


def test_jumprelu_reference_gradients_are_the_straight_through_estimates():
    x = torch.tensor([[0.5, 1.0002, 2.0], [0.999, -1.0, 3.0]], requires_grad=True)
    t = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    g = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    jumprelu(x, t, bandwidth=1e-3).backward(g)
    assert x.grad.tolist() == [[0.0, 2.0, 3.0], [0.0, 0.0, 6.0]]
    # |x - t| < bandwidth / 2 only at (0, 1): the kernel there is 1/bandwidth.
    torch.testing.assert_close(t.grad, torch.tensor([0.0, -1.0 / 1e-3 * 2.0, 0.0]))


def test_heaviside_step_reference_has_no_x_gradient_and_a_windowed_threshold_gradient():
    x = torch.tensor([[0.9997, 2.0]], requires_grad=True)
    t = torch.tensor([1.0, 1.0], requires_grad=True)
    y = heaviside_step(x, t, bandwidth=1e-3)
    assert y.tolist() == [[0.0, 1.0]]
    (y * torch.tensor([[3.0, 5.0]])).sum().backward()
    assert x.grad is None or not x.grad.any()
    torch.testing.assert_close(t.grad, torch.tensor([-3.0 / 1e-3, 0.0]))


def test_jumprelu_reference_x_gradient_passes_gradcheck_in_float64():
    x = torch.randn(4, 6, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64) * 0.5
    x = torch.where((x - t).abs() < 1e-2, x + 0.1, x).requires_grad_()  # keep finite differences off the jump
    assert torch.autograd.gradcheck(lambda a: jumprelu(a, t), (x,))
