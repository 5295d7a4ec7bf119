"""bf16 parity of every Triton kernel against its reference at the benchmark's shapes, on the GPU.

The other kernel test files check bf16 at moderate shapes; these run each op at the shape
``benchmarks/kernels.py`` times it at (N=8192 tokens, D=512, M=16384 latents, k=32; a 4096 x 4096 matrix for the
projection), so that the figures of the GPU check come from kernels shown right at the same size. The
|cos| penalty also has its memory checked there: it must not grow like the M x M Gram matrix.
(``max_abs_cos`` has no Triton kernel, only its reference, so it has nothing to be compared with here.)
"""

import pytest
import torch

from glassformer.kernels import (
    cos_margin_penalty,
    heaviside_step,
    jumprelu,
    magnitude_prune_,
    sparse_decode,
    topk_activation,
)
from glassformer.kernels.testing import TOLERANCE, assert_rel_close

pytestmark = pytest.mark.gpu

N, D, M, K = 8192, 512, 16384, 32
BF16 = torch.bfloat16


def grads(fn, inputs, g):
    """The output of ``fn`` and the gradient of every floating input, on fresh copies."""
    fresh = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*fresh)
    out.backward(g)
    return [out.detach()] + [t.grad if t.grad is not None else torch.zeros_like(t) for t in fresh
                              if t.is_floating_point()]


def test_sparse_decode_bf16_at_the_benchmark_shape():
    idx = torch.rand(N, M, device="cuda").argsort(1)[:, :K]  # TopK codes: distinct latents per token
    vals = torch.randn(N, K, device="cuda", dtype=BF16)
    W = (torch.randn(M, D, device="cuda") / D**0.5).to(BF16)
    dY = torch.randn(N, D, device="cuda", dtype=BF16)
    got = grads(lambda v, w: sparse_decode(idx, v, w, impl="triton"), (vals, W), dY)
    want = grads(lambda v, w: sparse_decode(idx, v, w, impl="reference"), (vals, W), dY)
    for name, a, b in zip(("y", "d_vals", "d_W"), got, want, strict=True):
        assert a.dtype == b.dtype == BF16, name
        assert_rel_close(a, b, TOLERANCE[BF16], name)


@pytest.mark.parametrize("use_abs", [False, True], ids=["topk", "abs_topk"])
def test_topk_activation_bf16_at_the_benchmark_shape(use_abs):
    x = torch.randn(N, M, device="cuda", dtype=BF16)
    g = torch.randn_like(x)
    got = grads(lambda t: topk_activation(t, K, use_abs=use_abs, impl="triton"), (x,), g)
    want = grads(lambda t: topk_activation(t, K, use_abs=use_abs, impl="reference"), (x,), g)
    # A selection: the same entries survive with exactly their values and gradients.
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert int((got[0] != 0).sum(-1).min()) == K


def test_magnitude_prune_bf16_at_the_benchmark_shape():
    W = torch.randn(4096, 4096, device="cuda").to(BF16)
    keep = int(0.02 * W.numel())
    W_triton, W_ref = W.clone(), W.clone()
    mask = magnitude_prune_(W_triton, keep, 4, impl="triton")
    mask_ref = magnitude_prune_(W_ref, keep, 4, impl="reference")
    assert torch.equal(mask, mask_ref) and torch.equal(W_triton, W_ref)
    assert int(mask.sum()) == keep and int(mask.sum(1).min()) >= 4


def test_cos_margin_penalty_bf16_at_the_benchmark_shape():
    W = torch.randn(M, D, device="cuda").to(BF16)
    g = torch.tensor(1.7, device="cuda")
    got = grads(lambda w: cos_margin_penalty(w, 0.05, impl="triton"), (W,), g)
    want = grads(lambda w: cos_margin_penalty(w, 0.05, impl="reference"), (W,), g)
    assert_rel_close(got[0], want[0], TOLERANCE[BF16], "penalty")
    assert_rel_close(got[1], want[1], TOLERANCE[BF16], "dW")


def test_cos_margin_penalty_memory_does_not_grow_like_the_gram_matrix():
    W = torch.randn(M, D, device="cuda").to(BF16).requires_grad_()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    cos_margin_penalty(W, 0.05, impl="triton").backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    # The gradient (16 MiB), the inverse norms and one float per 64 x 64 tile (256 KiB): far under a
    # sixteenth of the float32 Gram matrix (1 GiB) that the reference builds.
    assert extra < M * M * 4 // 16, f"{extra / 2**20:.0f} MiB"


@pytest.mark.parametrize("op", ["jumprelu", "heaviside_step"])
def test_heaviside_ops_bf16_at_the_benchmark_shape(op):
    fn = {"jumprelu": jumprelu, "heaviside_step": heaviside_step}[op]
    bandwidth = 0.05
    t = torch.rand(M, device="cuda") * 0.5
    near = torch.rand(N, M, device="cuda") < 0.5  # half the entries inside the straight-through window
    x = torch.where(near, t + (torch.rand(N, M, device="cuda") - 0.5) * bandwidth, torch.randn(N, M, device="cuda"))
    x, t = x.to(BF16), t.to(BF16)
    g = torch.randn(N, M, device="cuda", dtype=BF16)
    got = grads(lambda a, b: fn(a, b, bandwidth, impl="triton"), (x, t), g)
    want = grads(lambda a, b: fn(a, b, bandwidth, impl="reference"), (x, t), g)
    assert torch.equal(got[0], want[0]), "forward"
    assert torch.equal(got[1], want[1]), "dx"
    assert want[2].abs().sum() > 0, "the window caught no entry: the threshold gradient went untested"
    assert_rel_close(got[2], want[2], TOLERANCE[BF16], "d_threshold")
