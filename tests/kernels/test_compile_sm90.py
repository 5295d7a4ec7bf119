"""Every kernel compiles for an H100 (sm_90) at the launch configurations the host code uses, without register
spills: checkable on a machine with no GPU, through Triton's bundled ptxas. Slow (a minute): ``make test-slow``.
"""

import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = r'''
import re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from glassformer.kernels import _radix as rx
from glassformer.kernels.decode import triton as dec
from glassformer.kernels.heaviside import triton as hv
from glassformer.kernels.ortho import triton as ot
from glassformer.kernels.topk import triton as tk

ptxas = triton.__path__[0] + "/backends/nvidia/bin/ptxas"
failures = []

def build(fn, types, constexprs, num_warps=4):
    sig = {name: "constexpr" if name in constexprs else types[name] for name in fn.arg_names}
    kernel = triton.compile(ASTSource(fn, sig, constexprs=constexprs), target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": num_warps})
    with tempfile.TemporaryDirectory() as tmp:
        open(tmp + "/k.ptx", "w").write(kernel.asm["ptx"])
        log = subprocess.run([ptxas, "-arch=sm_90a", "-v", tmp + "/k.ptx", "-o", tmp + "/k.cubin"],
                             capture_output=True, text=True).stderr
    spills = [int(s) for s in re.findall(r"(\d+) bytes spill stores", log)]
    if not spills or max(spills) > 0:
        failures.append(f"{fn.__name__} {constexprs} warps={num_warps}: spill stores {spills}")

for dt in ("fp32", "bf16"):
    half = dt != "fp32"
    build(dec._sparse_decode_fwd_kernel, dict(idx_ptr="*i64", vals_ptr=f"*{dt}", w_ptr=f"*{dt}", y_ptr=f"*{dt}",
          N="i32", K="i32", D="i32"), dict(BLOCK_N=16, BLOCK_D=128))
    build(dec._sparse_decode_bwd_vals_kernel, dict(idx_ptr="*i64", w_ptr=f"*{dt}", dy_ptr=f"*{dt}",
          dvals_ptr=f"*{dt}", N="i32", K="i32", D="i32"), dict(BLOCK_N=16, BLOCK_K=32, BLOCK_D=128))
    build(dec._sparse_decode_bwd_weight_kernel, dict(offsets_ptr="*i64", token_ptr="*i32",
          sorted_vals_ptr=f"*{dt}", dy_ptr=f"*{dt}", dw_ptr=f"*{dt}", D="i32"), dict(BLOCK_P=16, BLOCK_D=128))
    for block_r, block_m, warps in ((1, 8192, 16), (1, 4096, 8), (4, 1024, 4), (16, 128, 4)):
        build(tk._topk_activation_fwd_kernel, dict(x_ptr=f"*{dt}", y_ptr=f"*{dt}", mask_ptr="*u8", R="i32",
              M="i32", k="i32"), dict(USE_ABS=half, BLOCK_R=block_r, BLOCK_M=block_m), warps)
    build(tk._topk_activation_bwd_kernel, dict(g_ptr=f"*{dt}", mask_ptr="*u8", dx_ptr=f"*{dt}", numel="i32"),
          dict(BLOCK=4096))
    for use_abs in (True, False):
        for shift, excl in ((24, False), (16, True)):
            build(rx._radix_hist_kernel, dict(x_ptr=f"*{dt}", excl_ptr="*u8", prefix_ptr="*i64", hist_ptr="*i32",
                  L="i32", n_chunks="i32"), dict(SHIFT=shift, USE_ABS=use_abs, HAS_EXCL=excl, BLOCK=2048))
        build(rx._radix_apply_kernel, dict(x_ptr=f"*{dt}", excl_ptr="*u8", thresh_ptr="*i64", quota_ptr="*i64",
              rank_base_ptr="*i32", mask_ptr="*u8", out_ptr=f"*{dt}", L="i32", n_chunks="i32"),
              dict(USE_ABS=use_abs, HAS_EXCL=True, WRITE_OUT=True, BLOCK=2048))
    gram, grad, block_d = ("ieee", "tf32", 64) if half else ("tf32x3", "tf32x3", 32)
    build(ot._cos_margin_fwd_kernel, dict(w_ptr=f"*{dt}", rinv_ptr="*fp32", partial_ptr="*fp32", M="i32",
          D="i32", margin="fp32"), dict(PRECISION=gram, BLOCK_M=64, BLOCK_D=block_d), 8)
    build(ot._cos_margin_bwd_kernel, dict(w_ptr=f"*{dt}", rinv_ptr="*fp32", scale_ptr="*fp32", dw_ptr=f"*{dt}",
          M="i32", D="i32", margin="fp32"), dict(PRECISION=gram, GRAD_PRECISION=grad, BLOCK_M=64, BLOCK_N=32,
          BLOCK_D=block_d, BLOCK_DO=128), 8)
    build(hv._heaviside_fwd_kernel, dict(x_ptr=f"*{dt}", t_ptr="*fp32", y_ptr=f"*{dt}", R="i32", M="i32"),
          dict(JUMP=True, BLOCK_R=32, BLOCK_M=128))
    build(hv._heaviside_bwd_kernel, dict(x_ptr=f"*{dt}", t_ptr="*fp32", g_ptr=f"*{dt}", dx_ptr=f"*{dt}",
          dt_partial_ptr="*fp32", R="i32", M="i32", inv_bandwidth="fp32"),
          dict(JUMP=True, NEED_DX=True, NEED_DT=True, BLOCK_R=32, BLOCK_M=128))
print("\n".join(failures) or "ok")
'''


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90_without_spills():
    triton = pytest.importorskip("triton")
    if not (pathlib.Path(triton.__path__[0]) / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this triton wheel carries no ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, do not interpret
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok", out.stdout
