"""The select path of the magnitude projection against the sorting reference: the same mask, bit for bit."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glassformer import kernels
from glassformer.kernels import magnitude_prune_
from glassformer.kernels.prune.reference import magnitude_mask_reference

NAN = float("nan")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Value pools: a tiny set (ties everywhere, both zeros), mostly zeros (a matrix already pruned), and a wide one.
TINY = [0.0, -0.0, 0.5, -0.5, 1.0, -1.0]
MOSTLY_ZERO = [0.0] * 6 + [-0.0] * 3 + [0.25, -2.0, 3.0]
SPECIAL = [NAN, -NAN, float("inf"), -float("inf")]
# NaNs with other payloads (either sign), as raw bits: all must tie with the NaN above, as in torch.sort.
NAN_BITS = {
    torch.float32: [0x7F800001, 0x7FFFFFFF, 0xFF800001 - 2**32],
    torch.float16: [0x7C01, 0x7FFF, 0xFC01 - 2**16],
    torch.bfloat16: [0x7F81, 0x7FFF, 0xFF81 - 2**16],
}


def check_same_as_reference(W, keep, min_per_row):
    W_select, W_ref = W.clone(), W.clone()
    mask = magnitude_prune_(W_select, keep, min_per_row, impl="select")
    mask_ref = magnitude_prune_(W_ref, keep, min_per_row, impl="reference")
    assert mask.dtype == torch.bool and mask.shape == W.shape
    assert torch.equal(mask, mask_ref)
    # Bits, not values: NaN != NaN and -0.0 == 0.0 would hide a difference from torch.equal.
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[W.element_size()]
    assert torch.equal(W_select.view(bits), W_ref.view(bits))
    assert int(mask.sum()) == keep
    assert (mask.sum(1) >= min_per_row).all()


@st.composite
def matrices(draw):
    shape = draw(st.sampled_from(["any", "bias", "column"]))
    R = 1 if shape == "bias" else draw(st.integers(1, 9))
    C = 1 if shape == "column" else draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(DTYPES))
    pool = draw(st.sampled_from(["tiny", "mostly_zero", "normal"]))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    if pool == "normal":
        W = torch.randn(R, C, generator=gen)
    else:
        values = torch.tensor(TINY if pool == "tiny" else MOSTLY_ZERO)
        W = values[torch.randint(len(values), (R, C), generator=gen)]
    if draw(st.booleans()):
        # Sprinkle NaN of both signs and the infinities over a random quarter of the entries.
        where = torch.rand(R, C, generator=gen) < 0.25
        special = torch.tensor(SPECIAL)[torch.randint(len(SPECIAL), (R, C), generator=gen)]
        W = torch.where(where, special, W)
    W = W.to(dtype)
    if draw(st.booleans()):
        bits = W.view(torch.int32 if dtype == torch.float32 else torch.int16)
        payloads = torch.tensor(NAN_BITS[dtype], dtype=bits.dtype)
        where = torch.rand(R, C, generator=gen) < 0.2
        bits[where] = payloads[torch.randint(len(payloads), (int(where.sum()),), generator=gen)]
    min_per_row = draw(st.sampled_from([0, 1, 4, C, draw(st.integers(0, C))]))
    min_per_row = min(min_per_row, C)
    keep = draw(st.sampled_from([R * min_per_row, R * C, draw(st.integers(R * min_per_row, R * C))]))
    return W, keep, min_per_row


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=matrices())
def test_select_equals_the_reference_on_drawn_matrices(case):
    check_same_as_reference(*case)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64])
def test_select_ranks_nan_above_inf_and_ties_both_zeros(dtype):
    # One row: -NaN and NaN tie above -inf, and -0.0 ties with +0.0, so the lower index wins each tie.
    W = torch.tensor([[0.0, -NAN, -0.0, -float("inf"), NAN, 0.0]], dtype=dtype)
    for keep, expected in [(1, [1]), (2, [1, 4]), (3, [1, 3, 4]), (4, [0, 1, 3, 4]), (5, [0, 1, 2, 3, 4])]:
        mask = magnitude_prune_(W.clone(), keep, impl="select")
        assert mask.nonzero()[:, 1].tolist() == expected, keep
    check_same_as_reference(W, 3, 0)


def test_select_writes_through_a_non_contiguous_view():
    base = torch.randint(-3, 4, (9, 14)).float()
    W = base.T  # (14, 9), not contiguous: flat order is W's row-major order, not base's memory order
    expected = W.clone()
    mask = magnitude_prune_(W, 20, 1, impl="select")
    mask_ref = magnitude_prune_(expected, 20, 1, impl="reference")
    assert torch.equal(mask, mask_ref)
    assert torch.equal(base.T, expected)


def test_auto_on_cpu_uses_select_and_reference_stays_the_reference(monkeypatch):
    import glassformer.kernels.prune as prune

    called = []
    monkeypatch.setattr(prune, "magnitude_prune_select_", lambda *a: called.append("select"))
    monkeypatch.setattr(prune, "magnitude_prune_reference_", lambda *a: called.append("reference"))
    for impl in ("auto", "select", "reference"):
        kernels.magnitude_prune_(torch.randn(3, 4), 5, impl=impl)
    assert called == ["select", "select", "reference"]


def test_an_unknown_impl_names_select_among_the_allowed():
    with pytest.raises(ValueError, match=r"impl='sort' is not allowed: expected one of 'auto', 'triton', "
                                         r"'reference', 'select'$"):
        kernels.magnitude_prune_(torch.randn(3, 4), 5, impl="sort")


def test_select_mask_equals_the_reference_mask_function_on_a_projection_shape():
    # A bias-like row and an MLP-like matrix at a 6% kept fraction with the paper's 4 per neuron.
    gen = torch.Generator().manual_seed(0)
    for R, C, m in [(1, 1024, 0), (256, 1024, 4), (1024, 256, 4)]:
        W = torch.randn(R, C, generator=gen)
        keep = max(R * m, int(0.0625 * R * C))
        mask = magnitude_prune_(W.clone(), keep, m, impl="select")
        assert torch.equal(mask, magnitude_mask_reference(W, keep, m))
