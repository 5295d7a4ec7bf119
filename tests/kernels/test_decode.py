"""The Triton sparse decode against its reference: output and both gradients, same upstream gradient."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.kernels import sparse_decode
from glassformer.kernels.testing import TOLERANCE, assert_rel_close


def run(idx, vals, W, dY, impl):
    vals = vals.detach().clone().requires_grad_()
    W = W.detach().clone().requires_grad_()
    y = sparse_decode(idx, vals, W, impl=impl)
    y.backward(dY)
    return y.detach(), vals.grad, W.grad


def check_parity(N, M, D, k, device, dtype=torch.float32, repeats=True):
    if repeats:
        idx = torch.randint(0, M, (N, k), device=device)
    else:  # TopK codes: distinct latents per token
        idx = torch.rand(N, M, device=device).argsort(1)[:, :k]
    vals = torch.randn(N, k, device=device, dtype=dtype)
    W = torch.randn(M, D, device=device, dtype=dtype)
    dY = torch.randn(N, D, device=device, dtype=dtype)
    got = run(idx, vals, W, dY, "triton")
    want = run(idx, vals, W, dY, "reference")
    for name, a, b in zip(("y", "d_vals", "d_W"), got, want, strict=True):
        assert a.dtype == b.dtype, name
        assert_rel_close(a, b, TOLERANCE[dtype], name)


@pytest.mark.parametrize(
    ("N", "M", "D", "k"),
    [(63, 123, 33, 1), (63, 123, 40, 8), (17, 63, 20, 63), (123, 5, 130, 3)],
    ids=["k=1", "awkward", "k=width", "D>block"],
)
def test_sparse_decode_matches_reference(N, M, D, k, device):
    check_parity(N, M, D, k, device, repeats=(k != M))


@settings(max_examples=6, deadline=None)
@given(N=st.integers(1, 20), M=st.integers(1, 24), D=st.integers(1, 40), data=st.data())
def test_sparse_decode_matches_reference_on_small_shapes(N, M, D, data, device):
    k = data.draw(st.integers(1, min(M, 6)))
    check_parity(N, M, D, k, device)


def test_sparse_decode_weight_gradient_is_bit_identical_across_runs(device):
    # Most pairs land on a few latents, so each latent's run spans several blocks of the reduction.
    idx = torch.randint(0, 3, (61, 7), device=device)
    vals = torch.randn(61, 7, device=device)
    W = torch.randn(5, 24, device=device)
    dY = torch.randn(61, 24, device=device)
    first = run(idx, vals, W, dY, "triton")[2]
    second = run(idx, vals, W, dY, "triton")[2]
    assert torch.equal(first, second)
    assert_rel_close(first, run(idx, vals, W, dY, "reference")[2], TOLERANCE[torch.float32], "d_W")


def test_sparse_decode_triton_rejects_a_bad_index_before_launching(device):
    W = torch.randn(4, 8, device=device)
    idx = torch.tensor([[0, 4]], device=device)
    with pytest.raises(ValueError, match=r"idx contains 4, outside the allowed range \[0, 4\)"):
        sparse_decode(idx, torch.ones(1, 2, device=device), W, impl="triton")


def test_sparse_decode_gradient_to_only_one_input(device):
    idx = torch.randint(0, 9, (10, 3), device=device)
    vals = torch.randn(10, 3, device=device)
    W = torch.randn(9, 16, device=device, requires_grad=True)
    sparse_decode(idx, vals, W, impl="triton").sum().backward()
    assert vals.grad is None
    expected = torch.zeros(9, 16, device=device).index_add_(0, idx.reshape(-1), vals.reshape(-1, 1).expand(-1, 16))
    assert_rel_close(W.grad, expected, TOLERANCE[torch.float32], "d_W")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sparse_decode_matches_reference_in_half_precision_on_gpu(dtype):
    check_parity(1000, 4096, 256, 32, "cuda", dtype=dtype, repeats=False)


@pytest.mark.gpu
def test_sparse_decode_memory_is_order_n_k_not_n_m():
    N, M, D, k = 8192, 16384, 512, 32
    idx = torch.rand(N, M, device="cuda").argsort(1)[:, :k]
    vals = torch.randn(N, k, device="cuda", requires_grad=True)
    W = torch.randn(M, D, device="cuda", requires_grad=True)
    dY = torch.randn(N, D, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    sparse_decode(idx, vals, W, impl="triton").backward(dY)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    # The output (16 MiB), W's gradient (32 MiB) and the sort's O(N k) buffers: well under a
    # quarter of the one (N, M) float32 code matrix a dense decode would build (512 MiB).
    assert extra < N * M * 4 // 4
