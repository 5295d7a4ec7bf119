"""Choosing an implementation: argument checks, fallbacks, torch.compile, and life without triton."""

import subprocess
import sys

import pytest
import torch

from glassformer import kernels
from glassformer.kernels._dispatch import choose_impl

CALLS = {
    "sparse_decode": lambda impl: kernels.sparse_decode(torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1),
                                                        torch.randn(3, 4), impl=impl),
    "topk_activation": lambda impl: kernels.topk_activation(torch.randn(2, 5), 2, impl=impl),
    "magnitude_prune_": lambda impl: kernels.magnitude_prune_(torch.randn(3, 4), 5, impl=impl),
    "cos_margin_penalty": lambda impl: kernels.cos_margin_penalty(torch.randn(4, 3), 0.1, impl=impl),
    "jumprelu": lambda impl: kernels.jumprelu(torch.randn(2, 3), torch.zeros(3), impl=impl),
    "heaviside_step": lambda impl: kernels.heaviside_step(torch.randn(2, 3), torch.zeros(3), impl=impl),
}


@pytest.mark.parametrize("op", list(CALLS))
def test_every_op_rejects_an_unknown_impl(op):
    with pytest.raises(ValueError, match=r"impl='cuda' is not allowed: expected one of 'auto', 'triton', 'reference'"):
        CALLS[op]("cuda")


@pytest.mark.parametrize("op", list(CALLS))
def test_auto_on_cpu_tensors_is_the_reference(op, monkeypatch):
    import glassformer.kernels._dispatch as dispatch

    # "auto" must resolve to the reference on CPU tensors even where the interpreter could run Triton.
    chosen = []
    real = dispatch.choose_impl
    monkeypatch.setattr(dispatch, "choose_impl", lambda *a: chosen.append(real(*a)) or chosen[-1])
    for module in ("decode", "topk", "prune", "ortho", "heaviside"):
        monkeypatch.setattr(f"glassformer.kernels.{module}.choose_impl", dispatch.choose_impl)
    CALLS[op]("auto")
    assert chosen == ["reference"]


def test_choose_impl_resolves_auto_and_explains_refusals(monkeypatch):
    cpu = (torch.zeros(2),)
    assert choose_impl("auto", "op", cpu, None) == "reference"
    assert choose_impl("reference", "op", cpu, None) == "reference"
    with pytest.raises(ValueError, match="does not support these inputs: too wide"):
        choose_impl("triton", "op", cpu, "too wide")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        choose_impl("triton", "op", cpu, None)


def test_bad_arguments_name_the_argument_and_the_allowed_values():
    with pytest.raises(ValueError, match=r"margin=1\.5 is not allowed"):
        kernels.cos_margin_penalty(torch.randn(3, 2), 1.5)
    with pytest.raises(ValueError, match=r"bandwidth=0 is not allowed"):
        kernels.jumprelu(torch.randn(2, 3), torch.zeros(3), bandwidth=0)
    with pytest.raises(ValueError, match=r"threshold must be \(M,\)"):
        kernels.heaviside_step(torch.randn(2, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="idx must be an integer tensor"):
        kernels.sparse_decode(torch.zeros(2, 1), torch.ones(2, 1), torch.randn(3, 4))
    with pytest.raises(ValueError, match="W must be a floating-point tensor"):
        kernels.magnitude_prune_(torch.ones(3, 4, dtype=torch.long), 2)


def test_triton_path_runs_inside_torch_compile(device):
    # Triton launches cannot be traced; the public functions step out of the graph instead of failing.
    @torch.compile(backend="eager", fullgraph=False)
    def f(x, t):
        return kernels.jumprelu(x * 2, t, impl="triton").sum()

    x = torch.randn(4, 8, device=device, requires_grad=True)
    t = torch.zeros(8, device=device)
    f(x, t).backward()
    expected = torch.where(2 * x.detach() > 0, 2.0, 0.0)
    assert torch.equal(x.grad, expected)


def test_package_imports_and_runs_without_triton_and_without_the_training_stack():
    code = """
import sys
sys.modules["triton"] = None  # an import of triton now fails, as on a machine without it
import torch
import glassformer.kernels as K
assert not K.sparse_decode.__module__.startswith("triton")
y = K.topk_activation(torch.tensor([[1.0, 3.0, 2.0]]), 1)
assert y.tolist() == [[0.0, 3.0, 0.0]], y
try:
    K.topk_activation(torch.tensor([[1.0, 3.0]]), 1, impl="triton")
except RuntimeError as e:
    assert "needs the triton package" in str(e), e
else:
    raise AssertionError("impl='triton' without triton must fail")
loaded = [m for m in sys.modules if m.startswith(("glassformer.training", "glassformer.analysis", "lightning"))]
assert not loaded, loaded
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
