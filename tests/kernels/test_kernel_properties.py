"""Every Triton op against its reference on drawn dtypes, awkward shapes, k at its edges and special values.

Selection ops (TopK, the magnitude projection, JumpReLU's output) copy or zero entries, so they must agree bit
for bit, -NaN and -0.0 included; arithmetic ones agree on where NaN and inf land and, elsewhere, within the
project's relative-error tolerance. Inputs the kernels cannot compute (float64 anywhere, bfloat16 where the CPU
interpreter gets it wrong) must be refused with an error naming the op, the dtype and what is allowed.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from glassformer.kernels import (
    cos_margin_penalty,
    heaviside_step,
    jumprelu,
    magnitude_prune_,
    sparse_decode,
    topk_activation,
)
from glassformer.kernels._dispatch import dtype_problem, interpreting
from glassformer.kernels.testing import (
    TOLERANCE,
    assert_bits_equal,
    assert_same_specials,
    assert_special_close,
)

# The interpreter's numpy warns on NaN arithmetic, which these tests feed it on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
PROPERTY = settings(max_examples=20, deadline=None, derandomize=True)
# float64 (always refused by Triton) rarer than the dtypes it computes, and away from the ends of the list,
# which hypothesis draws more often than the middle.
DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.float16, torch.float32])
SIZES = st.sampled_from([1, 7, 63])


def _from_bits(bits: int) -> torch.Tensor:
    return torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)


# float32 scalars, written by their bits where a literal could not say which NaN.
SPECIALS = {
    "nan": _from_bits(0x7FC00000),
    "-nan": _from_bits(0xFFC00000),
    "nan_payload": _from_bits(0x7F800001),  # survives only in float32; the narrow casts canonicalise it
    "inf": torch.tensor(math.inf),
    "-inf": torch.tensor(-math.inf),
    "-0.0": torch.tensor(-0.0),
    "0.0": torch.tensor(0.0),
}


@st.composite
def values(draw, shape: tuple[int, ...], dtype: torch.dtype, ties: bool = True):
    """A tensor of ``shape``: normal draws, optionally rounded to a few values (ties), with special values sown."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randn(shape, generator=g)
    if ties and draw(st.booleans()):
        x = (x * 2).round() / 2  # a handful of distinct values: ties everywhere, zeros among them
    for name in draw(st.sets(st.sampled_from(sorted(SPECIALS)), max_size=3)):
        x[torch.rand(shape, generator=g) < 0.15] = SPECIALS[name]
    return x.to(dtype)


def refusal(op: str, tensors: dict[str, torch.Tensor], interpreter_bf16: bool) -> str | None:
    """The documented ValueError for these inputs (as a regex), or None when the Triton path must run."""
    specials = [name for name, t in tensors.items() if not t.isfinite().all()]
    event(f"non-finite in {specials}" if specials else "all finite")
    for name, t in tensors.items():  # the first offending input, in argument order, is the one named
        if t.dtype == torch.float64:
            event("refused: float64")
            return rf"{op}\(impl='triton'\) .*{name}\.dtype=torch\.float64 \(the kernels take float32, float16 or bfloat16\)"
        if interpreter_bf16 and interpreting() and t.dtype == torch.bfloat16:
            event("refused: bfloat16 in the interpreter")
            return (rf"{op}\(impl='triton'\) .*{name}\.dtype=torch\.bfloat16 under the Triton CPU interpreter"
                    r".*takes float32 or float16 there \(bfloat16 runs on a CUDA GPU\)")
    event("compared")
    return None


def grads_of(fn, inputs: list[torch.Tensor], g: torch.Tensor | None):
    """``(output, grads)`` of ``fn`` at fresh leaf copies of ``inputs``, backpropagating ``g``."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y = fn(*leaves)
    if g is not None:
        y.backward(g)
    return y.detach(), [t.grad for t in leaves]


@PROPERTY
@given(dtype=DTYPES, lead=st.sampled_from([(), (1,), (7,), (2, 3)]), M=SIZES, use_abs=st.booleans(),
       data=st.data())
def test_topk_activation_matches_the_reference_bit_for_bit(dtype, lead, M, use_abs, data, device):
    k = data.draw(st.sampled_from([0, 1, M, M // 2]), label="k")
    x = data.draw(values((*lead, M), dtype), label="x").to(device)
    expected_error = refusal("topk_activation", {"x": x}, interpreter_bf16=False)
    if expected_error:
        with pytest.raises(ValueError, match=expected_error):
            topk_activation(x, k, use_abs, impl="triton")
        return
    g = torch.randn(x.shape).to(dtype).to(device)
    y, (dx,) = grads_of(lambda t: topk_activation(t, k, use_abs, impl="triton"), [x], g)
    y_ref, (dx_ref,) = grads_of(lambda t: topk_activation(t, k, use_abs, impl="reference"), [x], g)
    assert_bits_equal(y, y_ref, "y")
    assert_bits_equal(dx, dx_ref, "dx")


@settings(PROPERTY, max_examples=12)  # a per-row selection over 63 rows is ~300 interpreted programs, ~2 s
@given(dtype=DTYPES, R=SIZES, C=SIZES, data=st.data())
def test_magnitude_prune_matches_the_reference_bit_for_bit(dtype, R, C, data, device):
    min_per_row = data.draw(st.sampled_from([0, 1, C, C // 2]), label="min_per_row")
    keep = data.draw(st.sampled_from([R * min_per_row, R * C, (R * min_per_row + R * C) // 2]), label="keep")
    W = data.draw(values((R, C), dtype), label="W").to(device)
    expected_error = refusal("magnitude_prune_", {"W": W}, interpreter_bf16=False)
    if expected_error:
        with pytest.raises(ValueError, match=expected_error):
            magnitude_prune_(W.clone(), keep, min_per_row, impl="triton")
        return
    W_ref = W.clone()
    kept = magnitude_prune_(W, keep, min_per_row, impl="triton")
    kept_ref = magnitude_prune_(W_ref, keep, min_per_row, impl="reference")
    assert torch.equal(kept, kept_ref)
    assert int(kept.sum()) == keep
    assert_bits_equal(W, W_ref, "W")


@settings(PROPERTY, max_examples=30)
@given(vals_dtype=DTYPES, w_dtype=DTYPES, N=SIZES, M=SIZES, D=SIZES, data=st.data())
def test_sparse_decode_matches_the_reference_with_mixed_dtypes(vals_dtype, w_dtype, N, M, D, data, device):
    k = data.draw(st.sampled_from([0, 1, min(M, 9), M]), label="k")
    if k > 9:
        N = min(N, 7)  # a full-width k = 63 over 63 rows costs the interpreter about 4 s
    idx = torch.randint(0, M, (N, k), generator=torch.Generator().manual_seed(N * M + k)).to(device)
    vals = data.draw(values((N, k), vals_dtype), label="vals").to(device)
    W = data.draw(values((M, D), w_dtype), label="W").to(device)
    expected_error = refusal("sparse_decode", {"vals": vals, "W": W}, interpreter_bf16=False)
    if expected_error:
        with pytest.raises(ValueError, match=expected_error):
            sparse_decode(idx, vals, W, impl="triton")
        return
    out_dtype = torch.result_type(vals, W)
    dY = torch.randn(N, D).to(out_dtype).to(device)
    y, grads = grads_of(lambda v, w: sparse_decode(idx, v, w, impl="triton"), [vals, W], dY)
    y_ref, grads_ref = grads_of(lambda v, w: sparse_decode(idx, v, w, impl="reference"), [vals, W], dY)
    assert y.dtype == y_ref.dtype == out_dtype
    for name, a, b in zip(("y", "d_vals", "d_W"), (y, *grads), (y_ref, *grads_ref), strict=True):
        assert_special_close(a, b, TOLERANCE[b.dtype], name)
    if k == 0:
        assert not y.any() and not grads[1].any()


@PROPERTY
@given(dtype=DTYPES, M=st.sampled_from([1, 2, 7, 63]), D=SIZES, margin=st.sampled_from([0.0, 0.1, 0.37, 0.9]),
       data=st.data())
def test_cos_margin_penalty_matches_the_reference(dtype, M, D, margin, data, device):
    # Continuous draws (no rounding to ties): an integer-valued |cos| can sit exactly on the margin, where a
    # rounding either way decides whether a pair counts at all.
    W = data.draw(values((M, D), dtype, ties=False), label="W")
    if data.draw(st.booleans(), label="repeated and zero rows") and M > 1:
        W[M // 2] = -W[0]  # |cos| = 1 exactly
        W[-1] = -0.0
    W = W.to(device)
    expected_error = refusal("cos_margin_penalty", {"W": W}, interpreter_bf16=True)
    if expected_error is None and M < 2:
        expected_error = r"cos_margin_penalty\(impl='triton'\) .*W of shape \(1, \d+\) has no pairs"
    if expected_error:
        with pytest.raises(ValueError, match=expected_error):
            cos_margin_penalty(W, margin, impl="triton")
        return
    g = torch.tensor(1.0, device=device)
    loss, (dW,) = grads_of(lambda w: cos_margin_penalty(w, margin, impl="triton"), [W], g)
    loss_ref, (dW_ref,) = grads_of(lambda w: cos_margin_penalty(w, margin, impl="reference"), [W], g)
    assert_special_close(loss, loss_ref, TOLERANCE[dtype], "penalty")
    if D == 1:
        # Every pair is colinear, so |cos| is constant and the true gradient is 0: autograd finds 0 exactly,
        # the kernel's closed form leaves float32 rounding of its two cancelling terms. An error relative to
        # 0 measures nothing there; where NaN and inf land still must agree.
        assert_same_specials(dW, dW_ref, "dW")
    else:
        assert_special_close(dW, dW_ref, TOLERANCE[dtype], "dW")


@pytest.mark.parametrize("op", [jumprelu, heaviside_step], ids=["jumprelu", "heaviside_step"])
@PROPERTY
@given(x_dtype=DTYPES, t_dtype=DTYPES, lead=st.sampled_from([(1,), (7,), (2, 3)]), M=SIZES,
       bandwidth=st.sampled_from([1e-3, 0.5, 2.0]), data=st.data())
def test_jumprelu_and_heaviside_match_the_reference(op, x_dtype, t_dtype, lead, M, bandwidth, data, device):
    x = data.draw(values((*lead, M), x_dtype), label="x").to(device)
    # Thresholds from the same few values as x, when rounded: x == t and the window's edges get hit exactly.
    threshold = data.draw(values((M,), t_dtype), label="threshold").to(device)
    expected_error = refusal(op.__name__, {"x": x, "threshold": threshold}, interpreter_bf16=False)
    if expected_error:
        with pytest.raises(ValueError, match=expected_error):
            op(x, threshold, bandwidth, impl="triton")
        return
    g = torch.randn(x.shape).to(x_dtype).to(device)
    y, (dx, dt) = grads_of(lambda a, b: op(a, b, bandwidth, impl="triton"), [x, threshold], g)
    y_ref, (dx_ref, dt_ref) = grads_of(lambda a, b: op(a, b, bandwidth, impl="reference"), [x, threshold], g)
    assert_bits_equal(y, y_ref, "y")
    if op is jumprelu:
        assert_bits_equal(dx, dx_ref, "dx")
    else:
        assert dx is None and dx_ref is None
    assert_special_close(dt, dt_ref, TOLERANCE[t_dtype], "d_threshold")


# Hand-picked cases the properties cover only by chance, each the regression of a reported wrong answer.


def test_topk_ranks_negative_nan_like_positive_nan_above_inf(device):
    nan = SPECIALS["nan"].item()
    x = torch.stack([SPECIALS["-nan"], torch.tensor(5.0), SPECIALS["inf"], SPECIALS["nan_payload"],
                     torch.tensor(nan)]).reshape(1, 5).to(device)
    for k, kept in ((1, [0]), (2, [0, 3]), (3, [0, 3, 4]), (4, [0, 2, 3, 4])):
        for use_abs in (False, True):
            y = topk_activation(x, k, use_abs, impl="triton")
            assert (y != 0).nonzero()[:, 1].tolist() == kept, (k, use_abs)  # NaN != 0: kept NaNs show
            assert_bits_equal(y, topk_activation(x, k, use_abs, impl="reference"), "y")


def test_topk_radix_path_ranks_nan_like_the_register_path(device):
    from glassformer.kernels.topk.triton import REGISTER_WIDTH

    x = torch.randn(2, REGISTER_WIDTH + 100)
    x[0, [5, 3000, REGISTER_WIDTH + 50]] = SPECIALS["-nan"]
    x[1, [7, REGISTER_WIDTH + 99]] = SPECIALS["nan"]
    x = x.to(device)
    for k in (0, 2, 3, 40):
        assert_bits_equal(topk_activation(x, k, impl="triton"), topk_activation(x, k, impl="reference"), "y")


def test_magnitude_prune_ties_nans_of_any_sign_and_payload_by_index_above_inf(device):
    nan, nan_payload, inf = SPECIALS["-nan"].item(), SPECIALS["nan_payload"], math.inf
    row0 = torch.stack([torch.tensor(inf), torch.tensor(1.0), nan_payload, torch.tensor(nan)])
    row1 = torch.tensor([1.0, -0.0, 2.0, -inf])
    W = torch.stack([row0, row1]).to(device)  # float32: the payload survives
    # (keep, min_per_row) -> kept flat indices: NaNs (2, 3) first by index, then the infinities (0, 7).
    for keep, min_per_row, kept in ((1, 0, [2]), (2, 0, [2, 3]), (4, 0, [0, 2, 3, 7]), (2, 1, [2, 7]),
                                    (3, 1, [2, 3, 7])):
        for impl in ("triton", "reference"):
            mask = magnitude_prune_(W.clone(), keep, min_per_row, impl=impl)
            assert mask.reshape(-1).nonzero()[:, 0].tolist() == kept, (keep, min_per_row, impl)


def test_cos_margin_penalty_refuses_bfloat16_in_the_interpreter_naming_op_dtype_and_allowed(device):
    if not interpreting():
        pytest.skip("on a GPU bfloat16 runs; the matching parity test is the gpu-marked one in test_ortho.py")
    W = torch.randn(7, 5, device=device).bfloat16()
    message = re.escape("cos_margin_penalty(impl='triton') does not support these inputs: W.dtype=torch.bfloat16")
    with pytest.raises(ValueError, match=message + ".*takes float32 or float16 there"):
        cos_margin_penalty(W, 0.1, impl="triton")


def test_bfloat16_is_refused_only_while_interpreting(monkeypatch):
    W = torch.zeros(2, 2, dtype=torch.bfloat16)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "under the Triton CPU interpreter" in dtype_problem("W", W, "its tl.dot is wrong")
    assert dtype_problem("W", W) is None  # ops that only compare and copy take it everywhere
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert dtype_problem("W", W, "its tl.dot is wrong") is None


def test_sparse_decode_reference_promotes_float32_with_float64_as_documented():
    idx = torch.tensor([[0, 2], [1, 1]])
    vals = torch.tensor([[1.0, 0.5], [2.0, -1.0]], requires_grad=True)
    W = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = sparse_decode(idx, vals, W)
    assert y.dtype == torch.float64
    expected = torch.stack([W[0] + 0.5 * W[2], W[1]]).detach()  # 2 W[1] - W[1]
    torch.testing.assert_close(y.detach(), expected)
    y.sum().backward()
    assert vals.grad.dtype == torch.float32 and W.grad.dtype == torch.float64


def test_sparse_decode_with_k_zero_is_zeros_on_both_paths(device):
    W = torch.randn(5, 3, device=device, requires_grad=True)
    idx = torch.zeros(4, 0, dtype=torch.long, device=device)
    for impl in ("reference", "triton"):
        vals = torch.zeros(4, 0, device=device, requires_grad=True)
        y = sparse_decode(idx, vals, W, impl=impl)
        assert torch.equal(y, torch.zeros(4, 3, device=device)), impl
        y.backward(torch.ones_like(y))
        assert torch.equal(W.grad, torch.zeros_like(W)) and vals.grad.shape == (4, 0), impl
        W.grad = None
