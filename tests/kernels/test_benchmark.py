"""The CPU-checkable parts of benchmarks/kernels.py: arguments, the parity gate, the table, the GPU check."""

import importlib.util
import pathlib
import sys

import pytest
import torch

PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("glassformer_bench_kernels", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def fake_case(bench, triton_variant):
    def make():
        return (torch.randn(6, 5, requires_grad=True),)

    return bench.Case(
        "double", "6x5", make, {"reference": lambda x: 2 * x, "triton": triton_variant},
        compulsory_bytes=6 * 5 * 4 * 2, flops=30.0,
    )


class CountingTimer:
    def __init__(self):
        self.calls = 0

    def __call__(self, fn):
        self.calls += 1
        fn()
        return 1.0


def test_benchmark_parses_its_flags(bench):
    args = bench.parse_args(["--quick", "--markdown", "--ops", "sparse_decode", "jumprelu"])
    assert args.quick and args.markdown and args.ops == ["sparse_decode", "jumprelu"]
    assert bench.parse_args([]).ops == list(bench.OPS)
    with pytest.raises(SystemExit):
        bench.parse_args(["--ops", "not_an_op"])


def test_benchmark_refuses_to_time_an_op_whose_parity_fails(bench):
    timer = CountingTimer()
    results = bench.run_case(fake_case(bench, lambda x: 2 * x + 1e-3), timer, None)
    assert timer.calls == 0
    assert len(results) == 1 and results[0].refused is not None
    assert "triton tensor 0" in results[0].refused


def test_benchmark_refuses_when_only_a_gradient_is_wrong(bench):
    class WrongGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, g):
            return 3 * g

    timer = CountingTimer()
    results = bench.run_case(fake_case(bench, WrongGradient.apply), timer, None)
    assert timer.calls == 0
    assert "triton tensor 1" in results[0].refused


def test_benchmark_times_every_mode_of_every_variant_when_parity_holds(bench):
    timer = CountingTimer()
    results = bench.run_case(fake_case(bench, lambda x: x + x), timer, None)
    assert [r.variant for r in results] == ["reference", "triton"]
    assert all(set(r.ms) == {"fwd", "bwd", "both"} and r.refused is None for r in results)
    assert timer.calls == 6
    table = bench.format_results([(r, 2.0, 4.0) for r in results], markdown=True)
    assert table.splitlines()[0].startswith("| op | shape | variant |")
    assert "| double | 6x5 | triton | 1.000 | 1.000 | 1.000 | - | 0.50 | 0.25 |" in table


def test_benchmark_cases_cover_every_op_at_the_issue_shapes(bench):
    cases = bench.cases(quick=False, compile_reference=False, device="cpu")
    assert set(cases) == set(bench.OPS)
    assert cases["sparse_decode"].shape.startswith("N=8192 D=512 M=16384 k=32")
    for case in cases.values():
        assert {"reference", "triton"} <= set(case.variants)
    assert "dense" in cases["sparse_decode"].variants


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without a GPU")
def test_benchmark_says_it_needs_a_gpu(bench, capsys):
    assert bench.main(["--quick"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
