"""The Triton magnitude projection against its reference: the exact same mask, count and per-row minimum."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.kernels import magnitude_prune_


def check_parity(W, keep, min_per_row):
    W_triton, W_ref = W.clone(), W.clone()
    mask = magnitude_prune_(W_triton, keep, min_per_row, impl="triton")
    mask_ref = magnitude_prune_(W_ref, keep, min_per_row, impl="reference")
    assert mask.dtype == torch.bool and mask.shape == W.shape
    assert torch.equal(mask, mask_ref)
    assert torch.equal(W_triton, W_ref)
    assert int(mask.sum()) == keep
    assert (mask.sum(1) >= min_per_row).all()
    assert torch.equal(W_triton, torch.where(mask, W, torch.zeros((), device=W.device)))


@pytest.mark.parametrize(("shape", "fraction", "min_per_row"),
                         [((63, 123), 0.1, 0), ((63, 123), 0.05, 4), ((7, 5000), 0.01, 2), ((40, 3), 0.5, 1)],
                         ids=["no_minimum", "minimum", "long_rows", "narrow_rows"])
def test_magnitude_prune_matches_reference(shape, fraction, min_per_row, device):
    W = torch.randn(shape, device=device)
    keep = max(shape[0] * min_per_row, int(fraction * shape[0] * shape[1]))
    check_parity(W, keep, min_per_row)


@pytest.mark.parametrize(("keep", "min_per_row"), [(0, 0), (35, 0), (14, 2), (35, 5), (25, 3)],
                         ids=["none", "all", "only_minimum", "minimum_is_all", "minimum_and_rest"])
def test_magnitude_prune_handles_the_extremes(keep, min_per_row, device):
    check_parity(torch.randn(7, 5, device=device), keep, min_per_row)


def test_magnitude_prune_breaks_ties_by_flat_index_among_already_pruned_zeros(device):
    # The second projection of a matrix that is mostly zeros: the threshold is 0 and ties are everywhere.
    W = torch.randn(20, 30, device=device)
    magnitude_prune_(W, 60, 1, impl="triton")
    W[3, :] = 0.0
    W[4, :5] = -0.0
    check_parity(W, 90, 2)
    check_parity(W, 40, 2)


@settings(max_examples=8, deadline=None)
@given(R=st.integers(1, 12), C=st.integers(1, 40), levels=st.sampled_from([3, 1000]), data=st.data())
def test_magnitude_prune_keeps_exact_count_and_row_minimum(R, C, levels, data, device):
    min_per_row = data.draw(st.integers(0, min(C, 4)))
    keep = data.draw(st.integers(R * min_per_row, R * C))
    W = (torch.randint(-levels, levels + 1, (R, C), device=device) / levels).float()
    check_parity(W, keep, min_per_row)


def test_magnitude_prune_writes_through_a_non_contiguous_view(device):
    base = torch.randn(9, 14, device=device)
    W = base.T  # (14, 9), not contiguous
    expected = W.clone()
    mask = magnitude_prune_(W, 20, 1, impl="triton")
    mask_ref = magnitude_prune_(expected, 20, 1, impl="reference")
    assert torch.equal(mask, mask_ref)
    assert torch.equal(base.T, expected)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_magnitude_prune_matches_reference_on_a_large_matrix(dtype):
    W = torch.randn(4096, 1024, device="cuda").to(dtype)
    check_parity(W, int(0.02 * W.numel()), 4)
