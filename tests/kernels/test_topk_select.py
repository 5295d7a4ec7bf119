"""The select path of the TopK / AbsTopK activation against the sorting reference: mask, bits and gradient equal."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glassformer import kernels
from glassformer.kernels import topk_activation
from glassformer.kernels.testing import assert_bits_equal
from glassformer.kernels.topk.reference import topk_mask_reference
from glassformer.kernels.topk.select import topk_mask_select

NAN = float("nan")
INF = float("inf")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# A tiny pool puts ties (both zeros included) at nearly every threshold; "mixed" gives tie-heavy and tie-free rows
# in one tensor, so only some rows take the tie-ranking branch.
TINY = [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.0]
SPECIAL = [NAN, -NAN, INF, -INF]
# NaNs with other payloads (either sign), as raw bits: all must tie with each other, above +inf.
NAN_BITS = {
    torch.float32: [0x7F800001, 0x7FFFFFFF, 0xFF800001 - 2**32, 0xFFC00000 - 2**32],
    torch.float16: [0x7C01, 0x7FFF, 0xFC01 - 2**16, 0xFE00 - 2**16],
    torch.bfloat16: [0x7F81, 0x7FFF, 0xFF81 - 2**16, 0xFFC0 - 2**16],
}
BITS = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def run(x, g, k, use_abs, impl):
    x = x.detach().clone().requires_grad_()
    y = topk_activation(x, k, use_abs=use_abs, impl=impl)
    y.backward(g)
    return y.detach(), x.grad


def check_same_as_reference(x, k, use_abs, g):
    mask = topk_mask_select(x, k, use_abs)
    assert mask.dtype == torch.bool and mask.shape == x.shape
    assert torch.equal(mask, topk_mask_reference(x, k, use_abs))
    y, dx = run(x, g, k, use_abs, "select")
    y_ref, dx_ref = run(x, g, k, use_abs, "reference")
    # Bits, not values: NaN != NaN and -0.0 == 0.0 would hide a difference from torch.equal.
    assert_bits_equal(y, y_ref, "y")
    assert_bits_equal(dx, dx_ref, "dx")
    assert (mask.sum(-1) == k).all()


@st.composite
def cases(draw):
    ndim = draw(st.integers(1, 3))
    M = draw(st.integers(1, 70))
    lead = [draw(st.integers(1, 6)) for _ in range(ndim - 1)]
    dtype = draw(st.sampled_from(DTYPES))
    pool = draw(st.sampled_from(["tiny", "normal", "mixed"]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    shape = (*lead, M)
    tiny = torch.tensor(TINY)[torch.randint(len(TINY), shape, generator=gen)]
    normal = torch.randn(shape, generator=gen)
    if pool == "mixed":
        x = torch.where(torch.rand((*lead, 1), generator=gen) < 0.5, tiny, normal)
    else:
        x = tiny if pool == "tiny" else normal
    if draw(st.booleans()):
        # NaN of both signs and the infinities over a random quarter of the entries.
        where = torch.rand(shape, generator=gen) < 0.25
        x = torch.where(where, torch.tensor(SPECIAL)[torch.randint(len(SPECIAL), shape, generator=gen)], x)
    x = x.to(dtype)
    if draw(st.booleans()):
        bits = x.view(BITS[dtype])
        payloads = torch.tensor(NAN_BITS[dtype], dtype=bits.dtype)
        where = torch.rand(shape, generator=gen) < 0.2
        bits[where] = payloads[torch.randint(len(payloads), (int(where.sum()),), generator=gen)]
    if ndim >= 2 and draw(st.booleans()):
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, rows not contiguous in memory
    k = draw(st.sampled_from([0, 1, M - 1, M, M // 4, draw(st.integers(0, M))]))
    k = min(max(k, 0), M)
    # The upstream gradient with NaN and -0.0 in it, so dropped entries must get exactly +0 whatever arrives.
    g = torch.randn(shape, generator=gen)
    g[torch.rand(shape, generator=gen) < 0.1] = NAN
    g[torch.rand(shape, generator=gen) < 0.1] = -0.0
    g = g.to(dtype)
    return x, k, draw(st.booleans()), g


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_select_equals_the_reference_on_drawn_inputs(case):
    check_same_as_reference(*case)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64])
def test_select_ranks_nan_above_inf_ties_both_zeros_and_keeps_bits(dtype):
    x = torch.tensor([0.0, -NAN, -0.0, -INF, NAN, 0.0, 2.0, -3.0], dtype=dtype)
    # By value: both NaNs, 2, the three zeros in index order, -3, -inf.
    by_value = {1: [1], 3: [1, 4, 6], 4: [0, 1, 4, 6], 5: [0, 1, 2, 4, 6], 7: [0, 1, 2, 4, 5, 6, 7]}
    # By magnitude: both NaNs, -inf, -3, 2, then the zeros in index order.
    by_magnitude = {3: [1, 3, 4], 5: [1, 3, 4, 6, 7], 6: [0, 1, 3, 4, 6, 7], 7: [0, 1, 2, 3, 4, 6, 7]}
    for use_abs, expected in ((False, by_value), (True, by_magnitude)):
        for k, kept in expected.items():
            assert topk_mask_select(x, k, use_abs).nonzero().squeeze(1).tolist() == kept, (use_abs, k)
            # Kept entries keep their bits (-NaN, -0.0, -inf stay negative); dropped ones are +0.
            expected_y = torch.zeros_like(x)
            expected_y[kept] = x[kept]
            assert_bits_equal(topk_activation(x, k, use_abs=use_abs, impl="select"), expected_y, f"y, k={k}")


def test_select_matches_the_reference_at_the_shapes_it_is_used_at():
    gen = torch.Generator().manual_seed(0)
    for shape, k, use_abs in [((256, 192), 48, True), ((256, 512), 32, False), ((4, 8, 96), 24, True)]:
        x = torch.randn(shape, generator=gen)
        check_same_as_reference(x, k, use_abs, torch.randn(shape, generator=gen))
    # BatchTopK selects over a whole batch as one row; the ties there sit far apart.
    x = torch.randint(-3, 4, (1, 5000), generator=gen).float()
    for k, use_abs in ((1, False), (1700, True), (4999, False)):
        check_same_as_reference(x, k, use_abs, torch.randn(x.shape, generator=gen))


def test_select_handles_empty_inputs_and_the_ends_of_k():
    for shape, k in (((0, 5), 2), ((3, 0), 0), ((2, 0, 4), 1)):
        x = torch.zeros(shape)
        assert torch.equal(topk_activation(x, k, impl="select"), topk_activation(x, k, impl="reference"))
    x = torch.tensor([[-0.0, NAN, -1.0]])
    assert_bits_equal(topk_activation(x, 3, impl="select"), x, "k = M keeps x")
    assert_bits_equal(topk_activation(x, 0, impl="select"), torch.zeros(1, 3), "k = 0 gives +0")


def test_auto_on_cpu_uses_select_and_reference_stays_the_reference(monkeypatch):
    import glassformer.kernels.topk as topk

    called = []
    monkeypatch.setattr(topk, "topk_activation_select", lambda *a: called.append("select"))
    monkeypatch.setattr(topk, "topk_activation_reference", lambda *a: called.append("reference"))
    for impl in ("auto", "select", "reference"):
        kernels.topk_activation(torch.randn(3, 4), 2, impl=impl)
    assert called == ["select", "select", "reference"]


def test_an_unknown_impl_names_select_among_the_allowed():
    with pytest.raises(ValueError, match=r"impl='sort' is not allowed: expected one of 'auto', 'triton', "
                                         r"'reference', 'select'$"):
        kernels.topk_activation(torch.randn(3, 4), 2, impl="sort")
