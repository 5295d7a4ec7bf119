"""Kernel benchmark: each op's Triton kernels against its references and its dense equivalent, in one run.

For every op, on the same inputs: the reference in eager mode, the reference under ``torch.compile``, the
Triton kernels, and (where one exists) the dense equivalent, timed for the forward, the backward and both, with
the peak memory of forward+backward. Two anchors are measured in the same run: a device-to-device copy of the
op's compulsory bytes (the bandwidth bound) and a large bf16 GEMM (the compute rate). Each time is printed
with its ratio to the copy of the same bytes (the op's floor: compulsory bytes over the copy bandwidth) and to
the op's flops at the GEMM's rate, so results from different GPUs compare; and with its speed-up over the eager
reference and over the dense alternative, where the op has one. An op whose parity check fails (any variant
against the eager reference, outputs and every gradient, with ``glassformer.kernels.testing``) is reported as
refused and not timed.

    python benchmarks/kernels.py              # full shapes: N=8192 tokens, D=512, M=16384 latents, k=32
    python benchmarks/kernels.py --quick      # small shapes, a smoke run
    python benchmarks/kernels.py --markdown   # a table for benchmarks/RESULTS.md
    python benchmarks/kernels.py --markdown --json kernels.json   # the figures as JSON too
    TRITON_INTERPRET=1 python benchmarks/kernels.py --device cpu  # toy shapes through the Triton interpreter

Needs a CUDA GPU, save for ``--device cpu``: toy shapes in float32 whose times mean nothing, only that the
benchmark runs (the GPU check's dry run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

# The cases live beside this file; run as a script or loaded by path (the tests), it finds them either way.
sys.path.append(os.path.dirname(os.path.abspath(__file__)))

from kernel_cases import OPS, Case, cases, transcoder_step_case  # noqa: E402

from glassformer.kernels.testing import TOLERANCE, rel_error  # noqa: E402

__all__ = ["OPS", "Case", "cases", "transcoder_step_case", "main"]
MODES = ("fwd", "bwd", "both")


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
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: toy shapes through the Triton interpreter (TRITON_INTERPRET=1), a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
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


# --- timing ------------------------------------------------------------------------------------------------


def gpu_timer(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=50)


def cpu_timer(fn: Callable[[], object], reps: int = 1) -> float:
    """Median wall milliseconds of ``reps`` calls (toy runs: a smoke test of the harness, not a figure)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def gpu_peak_memory(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def copy_anchor_ms(n_bytes: int, device: str = "cuda", timer: Callable[..., float] = gpu_timer) -> float:
    """A device-to-device copy moving ``n_bytes`` in total (half read, half written)."""
    src = torch.empty(max(n_bytes // 2, 1), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return timer(lambda: dst.copy_(src))


def gemm_anchor_tflops(n: int, device: str = "cuda", timer: Callable[..., float] = gpu_timer,
                       dtype: torch.dtype = torch.bfloat16) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = timer(lambda: a @ b)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def total_ms(res: Result) -> float:
    """The time a row is compared by: forward+backward where the op has a backward, else the forward."""
    return res.ms.get("both", res.ms.get("fwd", math.nan))


def speedups(rows: list[tuple[Result, float, float]], dense: dict[str, str | None]) -> list[tuple[float, float]]:
    """``(reference time / time, dense alternative's time / time)`` for each row (nan where there is none).

    ``dense`` maps each op to the variant (or baseline) that is its dense alternative, or None.
    """
    times = {(r.op, r.variant.removesuffix(" (baseline)")): total_ms(r) for r, _, _ in rows if r.refused is None}
    out = []
    for res, _, _ in rows:
        mine = total_ms(res) if res.refused is None else math.nan
        ref = times.get((res.op, "reference"), math.nan)
        alt = times.get((res.op, dense.get(res.op) or ""), math.nan)
        out.append((ref / mine, alt / mine))
    return out


def _ratio(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def format_results(rows: list[tuple[Result, float, float]], markdown: bool,
                   dense: dict[str, str | None] | None = None) -> str:
    """One line per (op, variant): ms per mode, peak memory, ratios to the two anchors, speed-ups."""
    head = ["op", "shape", "variant", "fwd ms", "bwd ms", "both ms", "peak MiB", "x copy", "x gemm",
            "vs ref", "vs dense"]
    lines = []
    for (res, copy_ms, gemm_ms), (vs_ref, vs_dense) in zip(rows, speedups(rows, dense or {}), strict=True):
        if res.refused is not None:
            lines.append([res.op, res.shape, "REFUSED (parity)", res.refused] + [""] * 7)
            continue
        total = total_ms(res)
        lines.append([res.op, res.shape, res.variant]
                     + [f"{res.ms[m]:.3f}" if m in res.ms else "-" for m in MODES]
                     + [f"{res.peak_mib:.0f}" if res.peak_mib is not None else "-",
                        f"{total / copy_ms:.2f}", f"{total / gemm_ms:.2f}", _ratio(vs_ref), _ratio(vs_dense)])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *lines])


def figures(rows: list[tuple[Result, float, float]], all_cases: dict[str, Case], device: str,
            gemm_tflops: float) -> dict:
    """Every figure of the run as JSON-able data: anchors, and per row the times, floor and speed-ups."""
    dense = {op: case.dense for op, case in all_cases.items()}
    out_rows = []
    for (res, copy_ms, gemm_ms), (vs_ref, vs_dense) in zip(rows, speedups(rows, dense), strict=True):
        case = all_cases[res.op]
        total = total_ms(res) if res.refused is None else math.nan
        out_rows.append({
            "op": res.op, "shape": res.shape, "variant": res.variant, "refused": res.refused, "ms": res.ms,
            "peak_mib": res.peak_mib, "floor_ms": copy_ms, "compulsory_bytes": case.compulsory_bytes,
            "copy_gb_per_s": case.compulsory_bytes / (copy_ms * 1e-3) / 1e9, "x_floor": total / copy_ms,
            "x_gemm": total / gemm_ms, "vs_reference": vs_ref, "vs_dense": vs_dense, "dense_alternative": case.dense,
        })
    # NaN is not JSON: missing ratios become null.
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in out_rows]
    return {"device": device, "gemm_tflops": gemm_tflops, "rows": clean}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    toy = args.device == "cpu"
    if not toy and not torch.cuda.is_available():
        print("benchmarks/kernels.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing was timed. "
              "(--device cpu runs toy shapes through the Triton interpreter.)", file=sys.stderr)
        return 2
    if toy:
        from glassformer.kernels._dispatch import interpreting

        if not interpreting():
            print("--device cpu needs TRITON_INTERPRET=1 set before the run (the Triton CPU interpreter)",
                  file=sys.stderr)
            return 2
    timer, peak = (cpu_timer, None) if toy else (gpu_timer, gpu_peak_memory)
    gemm_tflops = gemm_anchor_tflops(256 if toy else 2048 if args.quick else 8192, args.device, timer,
                                     torch.float32 if toy else torch.bfloat16)
    all_cases = cases(args.quick, not (args.no_compile or toy), args.device, toy)
    rows = []
    for op in args.ops:
        case = all_cases[op]
        copy_ms = copy_anchor_ms(case.compulsory_bytes, args.device, timer)
        gemm_ms = case.flops / (gemm_tflops * 1e12) * 1e3
        for res in run_case(case, timer, peak):
            rows.append((res, copy_ms, gemm_ms))
    name = torch.cuda.get_device_name() if not toy else "cpu (toy shapes, Triton interpreter)"
    print(f"device: {name}; {'bf16' if not toy else 'fp32'} GEMM anchor: {gemm_tflops:.3g} TFLOP/s; "
          "x copy = time / copy of the op's compulsory bytes (its floor); x gemm = time / op flops at the GEMM "
          "rate; vs ref, vs dense = speed-up over the eager reference and over the dense alternative")
    print(format_results(rows, args.markdown, {op: c.dense for op, c in all_cases.items()}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures(rows, {op: all_cases[op] for op in args.ops}, name, gemm_tflops), f, indent=1)
    return 0 if all(res.refused is None for res, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
