"""Load the scripts under benchmarks/ as modules (they are not a package), once per test module."""

import importlib.util
import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module registered under ``glassformer_bench_<name>``."""
    spec = importlib.util.spec_from_file_location(f"glassformer_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    """A loader: ``bench("gpu_check_summary")`` returns that script as a module."""
    loaded = []

    def load(name: str):
        module = load_benchmark(name)
        loaded.append(module.__name__)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
