"""Kernel benchmark: each op's Triton kernels against its references and its dense equivalent, in one run.

For every op, on the same inputs: the reference in eager mode, the reference under ``torch.compile``, the
Triton kernels, and (where one exists) the dense equivalent, timed for the forward, the backward and both, with
the peak memory of forward+backward. Two anchors are measured in the same run: a device-to-device copy of the
op's compulsory bytes (the bandwidth bound) and a large bf16 GEMM (the compute rate). Each time is printed
with its ratio to the copy of the same bytes and to the op's flops at the GEMM's rate, so results from
different GPUs compare. An op whose parity check fails (any variant against the eager reference, outputs and
every gradient, with ``glassformer.kernels.testing``) is reported as refused and not timed.

    python benchmarks/kernels.py              # full shapes: N=8192 tokens, D=512, M=16384 latents, k=32
    python benchmarks/kernels.py --quick      # small shapes, a smoke run
    python benchmarks/kernels.py --markdown   # a table for benchmarks/RESULTS.md

Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from glassformer.kernels import cos_margin_penalty, jumprelu, magnitude_prune_, sparse_decode, topk_activation
from glassformer.kernels.decode.reference import sparse_decode_reference
from glassformer.kernels.heaviside.reference import jumprelu_reference
from glassformer.kernels.ortho.reference import cos_margin_penalty_reference
from glassformer.kernels.prune.reference import magnitude_prune_reference_
from glassformer.kernels.testing import TOLERANCE, rel_error
from glassformer.kernels.topk.reference import topk_activation_reference

OPS = ("sparse_decode", "topk_activation", "magnitude_prune_", "cos_margin_penalty", "jumprelu", "transcoder_step")
MODES = ("fwd", "bwd", "both")


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


@dataclass
class Result:
    op: str
    shape: str
    variant: str
    ms: dict[str, float] = field(default_factory=dict)
    peak_mib: float | None = None
    refused: str | None = None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke run)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table for RESULTS.md")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), help="ops to run (default: all)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile reference variant")
    return parser.parse_args(argv)


# --- evaluation and parity -------------------------------------------------------------------------------


def evaluate(fn: Callable[..., Tensor], inputs: tuple[Tensor, ...], grad_out: Tensor | None) -> list[Tensor]:
    """The output and the gradient of every differentiable input, on fresh copies of the inputs."""
    fresh = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in inputs)
    out = fn(*fresh)
    results = [out.detach()]
    if grad_out is not None:
        wrt = [t for t in fresh if t.requires_grad]
        results += list(torch.autograd.grad(out, wrt, grad_out))
    return results


def parity_failures(case: Case, inputs: tuple[Tensor, ...], grad_out: Tensor | None) -> list[str]:
    """Every variant against the eager reference: outputs and gradients within the dtype's tolerance."""
    dtype = next(t.dtype for t in inputs if t.is_floating_point())
    tol = 0.0 if case.exact else case.tolerance if case.tolerance is not None else TOLERANCE[dtype]
    want = evaluate(case.variants["reference"], inputs, grad_out)
    failures = []
    for name, fn in case.variants.items():
        if name == "reference":
            continue
        try:
            got = evaluate(fn, inputs, grad_out)
        except Exception as e:  # a variant that crashes fails parity too
            failures.append(f"{name}: raised {type(e).__name__}: {e}")
            continue
        if len(got) != len(want):
            failures.append(f"{name}: {len(got)} tensors (output and gradients), the reference has {len(want)}")
            continue
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            if a.shape != b.shape:
                failures.append(f"{name} tensor {i}: shape {tuple(a.shape)}, reference {tuple(b.shape)}")
                continue
            err = rel_error(a, b)
            if not err <= tol:
                failures.append(f"{name} tensor {i}: rel. error {err:.2e} > {tol:.1e}")
    return failures


def run_case(case: Case, timer: Callable[[Callable[[], object]], float],
             peak_memory: Callable[[Callable[[], object]], float] | None) -> list[Result]:
    """Parity first; only if every variant passes, time each variant's forward, backward and both."""
    inputs = case.make()
    out = case.variants["reference"](*inputs)
    grad_out = torch.randn_like(out) if case.differentiable else None
    failures = parity_failures(case, inputs, grad_out)
    if failures:
        return [Result(case.op, case.shape, "all", refused="; ".join(failures))]
    results = []
    wrt = [t for t in inputs if t.requires_grad]
    for name, fn in case.variants.items():
        res = Result(case.op, case.shape, name)
        res.ms["fwd"] = timer(lambda fn=fn: fn(*inputs))
        if case.differentiable:
            kept = fn(*inputs)
            res.ms["bwd"] = timer(lambda kept=kept: torch.autograd.grad(kept, wrt, grad_out, retain_graph=True))
            del kept
            res.ms["both"] = timer(lambda fn=fn: torch.autograd.grad(fn(*inputs), wrt, grad_out))
        if peak_memory is not None:
            if case.differentiable:
                res.peak_mib = peak_memory(lambda fn=fn: torch.autograd.grad(fn(*inputs), wrt, grad_out))
            else:
                res.peak_mib = peak_memory(lambda fn=fn: fn(*inputs))
        results.append(res)
    for name, fn in case.baselines.items():
        res = Result(case.op, case.shape, f"{name} (baseline)", ms={"fwd": timer(lambda fn=fn: fn(*inputs))})
        if peak_memory is not None:
            res.peak_mib = peak_memory(lambda fn=fn: fn(*inputs))
        results.append(res)
    return results


# --- the cases ---------------------------------------------------------------------------------------------


def _compiled(fn: Callable[..., Tensor], enabled: bool) -> dict[str, Callable[..., Tensor]]:
    return {"reference+compile": torch.compile(fn)} if enabled else {}


def cases(quick: bool, compile_reference: bool, device: str = "cuda") -> dict[str, Case]:
    N, D, M, k = (512, 128, 2048, 16) if quick else (8192, 512, 16384, 32)
    half = torch.bfloat16

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

    R, C = (1024, 512) if quick else (4096, 4096)
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

    Mo, Do = (1024, 128) if quick else (16384, 512)

    def ortho_inputs():
        return (torch.randn(Mo, Do, device=device, requires_grad=True),)

    def jump_inputs():
        x = torch.randn(N, M, device=device, dtype=half).requires_grad_()
        t = (torch.rand(M, device=device) * 0.5).requires_grad_()
        return x, t

    out = {
        "sparse_decode": Case(
            "sparse_decode", f"N={N} D={D} M={M} k={k} bf16", decode_inputs,
            {"reference": sparse_decode_reference, **_compiled(sparse_decode_reference, compile_reference),
             "triton": lambda i, v, W: sparse_decode(i, v, W, impl="triton"), "dense": decode_dense},
            # W read twice and dW written; y and dY; idx and vals read twice, dvals written.
            compulsory_bytes=3 * (M * D * 2) + 2 * (N * D * 2) + N * k * 22, flops=6.0 * N * k * D,
        ),
        "topk_activation": Case(
            "topk_activation", f"rows={N} M={M} k={k} fp32", topk_inputs,
            {"reference": lambda x: topk_activation_reference(x, k),
             **_compiled(lambda x: topk_activation_reference(x, k), compile_reference),
             "triton": lambda x: topk_activation(x, k, impl="triton"), "torch.topk": topk_dense},
            compulsory_bytes=4 * N * M * 4, flops=float(N * M), exact=True,
        ),
        "magnitude_prune_": Case(
            "magnitude_prune_", f"{R}x{C} keep 2% min_per_row=4 fp32", prune_inputs,
            {"reference": prune_variant(magnitude_prune_reference_),
             **_compiled(prune_variant(magnitude_prune_reference_), compile_reference),
             "triton": prune_variant(lambda W, n, m: magnitude_prune_(W, n, m, impl="triton"))},
            compulsory_bytes=3 * R * C * 4 + R * C, flops=float(R * C), differentiable=False, exact=True,
            baselines={"flattened torch.topk": prune_flat_topk},
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
            "jumprelu", f"rows={N} M={M} bf16", jump_inputs,
            {"reference": lambda x, t: jumprelu_reference(x, t, 1e-3),
             **_compiled(lambda x, t: jumprelu_reference(x, t, 1e-3), compile_reference),
             "triton": lambda x, t: jumprelu(x, t, 1e-3, impl="triton")},
            compulsory_bytes=4 * N * M * 2, flops=float(3 * N * M),
        ),
    }
    out["transcoder_step"] = transcoder_step_case(quick, compile_reference, device)
    return out


def transcoder_step_case(quick: bool, compile_reference: bool, device: str) -> Case:
    """Forward and backward of the whole ``tiny`` model with TopK transcoders, kernels on versus references.

    The parameters are inputs (through ``torch.func.functional_call``), so parity covers every gradient; the
    loss is the next-token cross-entropy under bf16 autocast, as in ``bf16-mixed`` training. The optimizer
    step, identical in both, is left out.
    """
    import torch.nn.functional as F

    from glassformer.archs import build_model, presets

    batch = 4 if quick else 32
    mlp = {"kind": "transcoder", "activation": "topk", "k": 32}
    torch.manual_seed(0)
    template = build_model(presets.get("tiny", kernels="reference", mlp=mlp)).to(device)
    names = [name for name, _ in template.named_parameters()]
    cfg = template.cfg

    def step(impl: str) -> Callable[..., Tensor]:
        model = build_model(presets.get("tiny", kernels=impl, mlp=mlp)).to(device)

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
        "transcoder_step", f"tiny, topk transcoder k=32, batch {batch}x{cfg.n_ctx}, bf16 autocast", make,
        {"reference": reference, **_compiled(reference, compile_reference), "triton": step("triton")},
        # Parameters read and gradients written, as float32.
        compulsory_bytes=2 * n_params * 4, flops=6.0 * n_params * batch * cfg.n_ctx, tolerance=TOLERANCE[torch.bfloat16],
    )


# --- timing on the GPU -------------------------------------------------------------------------------------


def gpu_timer(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=50)


def gpu_peak_memory(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def copy_anchor_ms(n_bytes: int) -> float:
    """A device-to-device copy moving ``n_bytes`` in total (half read, half written)."""
    src = torch.empty(max(n_bytes // 2, 1), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return gpu_timer(lambda: dst.copy_(src))


def gemm_anchor_tflops(n: int) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = gpu_timer(lambda: a @ b)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def format_results(rows: list[tuple[Result, float, float]], markdown: bool) -> str:
    """One line per (op, variant): ms per mode, peak memory, and ratios to the two anchors."""
    head = ["op", "shape", "variant", "fwd ms", "bwd ms", "both ms", "peak MiB", "x copy", "x gemm"]
    lines = []
    for res, copy_ms, gemm_ms in rows:
        if res.refused is not None:
            lines.append([res.op, res.shape, "REFUSED (parity)", res.refused, "", "", "", "", ""])
            continue
        total = res.ms.get("both", res.ms["fwd"])
        lines.append([res.op, res.shape, res.variant]
                     + [f"{res.ms[m]:.3f}" if m in res.ms else "-" for m in MODES]
                     + [f"{res.peak_mib:.0f}" if res.peak_mib is not None else "-",
                        f"{total / copy_ms:.2f}", f"{total / gemm_ms:.2f}"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *lines])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing was timed.",
              file=sys.stderr)
        return 2
    gemm_tflops = gemm_anchor_tflops(2048 if args.quick else 8192)
    all_cases = cases(args.quick, not args.no_compile)
    rows = []
    for op in args.ops:
        case = all_cases[op]
        copy_ms = copy_anchor_ms(case.compulsory_bytes)
        gemm_ms = case.flops / (gemm_tflops * 1e12) * 1e3
        for res in run_case(case, gpu_timer, gpu_peak_memory):
            rows.append((res, copy_ms, gemm_ms))
    print(f"device: {torch.cuda.get_device_name()}; bf16 GEMM anchor: {gemm_tflops:.0f} TFLOP/s; "
          "x copy = time / copy of the op's compulsory bytes; x gemm = time / op flops at the GEMM rate")
    print(format_results(rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
