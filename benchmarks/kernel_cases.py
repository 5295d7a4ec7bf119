"""The cases ``benchmarks/kernels.py`` times: each op's inputs, variants, dense alternative and bounds.

Kept apart from the timing harness so each file stays readable; ``kernels.py`` re-exports everything here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from glassformer.kernels import cos_margin_penalty, jumprelu, magnitude_prune_, sparse_decode, topk_activation
from glassformer.kernels.decode.reference import sparse_decode_reference
from glassformer.kernels.heaviside.reference import jumprelu_reference
from glassformer.kernels.ortho.reference import cos_margin_penalty_reference
from glassformer.kernels.prune.reference import magnitude_prune_reference_
from glassformer.kernels.testing import TOLERANCE
from glassformer.kernels.topk.reference import topk_activation_reference

OPS = ("sparse_decode", "topk_activation", "magnitude_prune_", "cos_margin_penalty", "jumprelu", "transcoder_step")


@dataclass
class Case:
    """One op at one shape: inputs, the variants to compare, and the bounds its times are measured against."""

    op: str
    shape: str
    make: Callable[[], tuple[Tensor, ...]]
    """Fresh inputs (the differentiable ones with requires_grad set)."""
    variants: dict[str, Callable[..., Tensor]]
    """Name -> function of the inputs returning one tensor; must include "reference"."""
    compulsory_bytes: int
    """Bytes any implementation must move for forward+backward (inputs read, outputs written once)."""
    flops: float
    """Useful flops of forward+backward (the sparse count for the decode)."""
    differentiable: bool = True
    exact: bool = False
    """Outputs are selections (masks, kept entries): parity demands equality, not a tolerance."""
    baselines: dict[str, Callable[..., object]] = field(default_factory=dict)
    """Timed beside the variants but not parity-checked, because they compute something else on purpose."""
    tolerance: float | None = None
    """Parity tolerance when the inputs' dtype does not set it (a model run under bf16 autocast)."""
    dense: str | None = None
    """The variant or baseline that is the dense alternative to the kernel, if the op has one."""


# --- the cases ---------------------------------------------------------------------------------------------


def _compiled(fn: Callable[..., Tensor], enabled: bool) -> dict[str, Callable[..., Tensor]]:
    return {"reference+compile": torch.compile(fn)} if enabled else {}


def cases(quick: bool, compile_reference: bool, device: str = "cuda", toy: bool = False) -> dict[str, Case]:
    """Every op's case: full shapes, ``quick`` (small) ones, or ``toy`` ones in float32 for the CPU interpreter.

    Example:
        >>> cases(quick=False, compile_reference=False, device="cpu")["sparse_decode"].shape
        'N=8192 D=512 M=16384 k=32 bf16'
    """
    N, D, M, k = (16, 16, 64, 4) if toy else (512, 128, 2048, 16) if quick else (8192, 512, 16384, 32)
    # The interpreter has no bfloat16 arithmetic: toy runs use float32 throughout.
    half = torch.float32 if toy else torch.bfloat16
    half_name = "fp32" if toy else "bf16"

    def decode_inputs():
        idx = torch.rand(N, M, device=device).argsort(1)[:, :k]  # (N, k) distinct latents per token
        vals = torch.randn(N, k, device=device, dtype=half).requires_grad_()
        W = (torch.randn(M, D, device=device, dtype=half) / math.sqrt(D)).requires_grad_()
        return idx, vals, W

    def decode_dense(idx, vals, W):
        codes = torch.zeros(idx.shape[0], W.shape[0], device=W.device, dtype=vals.dtype)
        return codes.scatter(1, idx, vals) @ W  # (N, M) codes, then a dense matmul

    def topk_inputs():
        return (torch.randn(N, M, device=device, requires_grad=True),)

    def topk_dense(x):
        kept = x.detach().topk(k, dim=-1).indices
        return x * torch.zeros_like(x, dtype=torch.bool).scatter_(-1, kept, True)

    R, C = (8, 256) if toy else (1024, 512) if quick else (4096, 4096)
    keep = int(0.02 * R * C)

    def prune_inputs():
        return (torch.randn(R, C, device=device),)

    # In-place ops: every variant prunes a copy (one clone each, the same cost for all) and returns it.
    def prune_variant(fn):
        def run(W):
            W = W.clone()
            fn(W, keep, 4)
            return W
        return run

    def prune_flat_topk(W):
        # Flattened topk, the bar the issue sets; it has no row minimum, so it is a baseline, not a variant.
        W = W.clone()
        kept = torch.zeros(W.numel(), dtype=torch.bool, device=W.device)
        kept[W.abs().flatten().topk(keep).indices] = True
        return W.masked_fill_(~kept.view_as(W), 0)

    Mo, Do = (64, 16) if toy else (1024, 128) if quick else (16384, 512)

    def ortho_inputs():
        return (torch.randn(Mo, Do, device=device, requires_grad=True),)

    def jump_inputs():
        x = torch.randn(N, M, device=device, dtype=half).requires_grad_()
        t = (torch.rand(M, device=device) * 0.5).requires_grad_()
        return x, t

    out = {
        "sparse_decode": Case(
            "sparse_decode", f"N={N} D={D} M={M} k={k} {half_name}", decode_inputs,
            {"reference": sparse_decode_reference, **_compiled(sparse_decode_reference, compile_reference),
             "triton": lambda i, v, W: sparse_decode(i, v, W, impl="triton"), "dense": decode_dense},
            # W read twice and dW written; y and dY; idx and vals read twice, dvals written.
            compulsory_bytes=3 * (M * D * 2) + 2 * (N * D * 2) + N * k * 22, flops=6.0 * N * k * D, dense="dense",
        ),
        "topk_activation": Case(
            "topk_activation", f"rows={N} M={M} k={k} fp32", topk_inputs,
            {"reference": lambda x: topk_activation_reference(x, k),
             **_compiled(lambda x: topk_activation_reference(x, k), compile_reference),
             "triton": lambda x: topk_activation(x, k, impl="triton"), "torch.topk": topk_dense},
            compulsory_bytes=4 * N * M * 4, flops=float(N * M), exact=True, dense="torch.topk",
        ),
        "magnitude_prune_": Case(
            "magnitude_prune_", f"{R}x{C} keep 2% min_per_row=4 fp32", prune_inputs,
            {"reference": prune_variant(magnitude_prune_reference_),
             **_compiled(prune_variant(magnitude_prune_reference_), compile_reference),
             "triton": prune_variant(lambda W, n, m: magnitude_prune_(W, n, m, impl="triton"))},
            compulsory_bytes=3 * R * C * 4 + R * C, flops=float(R * C), differentiable=False, exact=True,
            baselines={"flattened torch.topk": prune_flat_topk}, dense="flattened torch.topk",
        ),
        "cos_margin_penalty": Case(
            "cos_margin_penalty", f"M={Mo} D={Do} margin=0.05 fp32", ortho_inputs,
            {"reference": lambda W: cos_margin_penalty_reference(W, 0.05),
             **_compiled(lambda W: cos_margin_penalty_reference(W, 0.05), compile_reference),
             "triton": lambda W: cos_margin_penalty(W, 0.05, impl="triton")},
            # Useful flops: the upper-triangle Gram (forward) and G @ W (backward).
            compulsory_bytes=3 * Mo * Do * 4, flops=2.0 * Mo * Mo * Do * 1.5,
        ),
        "jumprelu": Case(
            "jumprelu", f"rows={N} M={M} {half_name}", jump_inputs,
            {"reference": lambda x, t: jumprelu_reference(x, t, 1e-3),
             **_compiled(lambda x, t: jumprelu_reference(x, t, 1e-3), compile_reference),
             "triton": lambda x, t: jumprelu(x, t, 1e-3, impl="triton")},
            compulsory_bytes=4 * N * M * 2, flops=float(3 * N * M),
        ),
    }
    out["transcoder_step"] = transcoder_step_case(quick, compile_reference, device, toy)
    return out


def transcoder_step_case(quick: bool, compile_reference: bool, device: str, toy: bool = False) -> Case:
    """Forward and backward of the whole ``tiny`` model (``debug`` for toy runs) with TopK transcoders, kernels
    on versus references.

    The parameters are inputs (through ``torch.func.functional_call``), so parity covers every gradient; the
    loss is the next-token cross-entropy under bf16 autocast, as in ``bf16-mixed`` training. The optimizer
    step, identical in both, is left out.
    """
    import torch.nn.functional as F

    from glassformer.archs import build_model, presets

    batch = 1 if toy else 4 if quick else 32
    preset = "debug" if toy else "tiny"
    # Toy runs: a short context, so the interpreter launches few kernel instances.
    shape = {"n_ctx": 8, "n_layers": 1} if toy else {}
    mlp = {"kind": "transcoder", "activation": "topk", "k": 32}
    torch.manual_seed(0)
    template = build_model(presets.get(preset, kernels="reference", mlp=mlp, **shape)).to(device)
    names = [name for name, _ in template.named_parameters()]
    cfg = template.cfg

    def step(impl: str) -> Callable[..., Tensor]:
        model = build_model(presets.get(preset, kernels=impl, mlp=mlp, **shape)).to(device)

        def run(tokens: Tensor, *params: Tensor) -> Tensor:
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = torch.func.functional_call(model, dict(zip(names, params, strict=True)), (tokens[:, :-1],))
            return F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())

        return run

    def make():
        tokens = torch.randint(0, cfg.d_vocab, (batch, cfg.n_ctx + 1), device=device)
        return (tokens, *(p.detach().clone().requires_grad_() for p in template.parameters()))

    n_params = sum(p.numel() for p in template.parameters())
    reference = step("reference")
    return Case(
        "transcoder_step", f"{preset}, topk transcoder k=32, batch {batch}x{cfg.n_ctx}, "
        f"{'bf16 autocast' if device == 'cuda' else 'fp32'}", make,
        {"reference": reference, **_compiled(reference, compile_reference), "triton": step("triton")},
        # Parameters read and gradients written, as float32.
        compulsory_bytes=2 * n_params * 4, flops=6.0 * n_params * batch * cfg.n_ctx, tolerance=TOLERANCE[torch.bfloat16],
    )
