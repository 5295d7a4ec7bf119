"""The shape of the code base: dependencies point one way, every module imports on its own, functions stay short.

docs/architecture.md states these rules; these tests keep them true.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "archs", "training", "analysis")
MAX_FUNCTION_LINES = 80


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return "glassformer." + ".".join(parts)


def glassformer_imports(path: Path) -> set[str]:
    """Every ``glassformer.*`` module ``path`` imports, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("glassformer")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("glassformer"):
            found.add(node.module)
    return found


# (package or sub-package, what it must never import)
FORBIDDEN = [
    ("kernels", ("glassformer.archs", "glassformer.training", "glassformer.analysis")),
    ("archs", ("glassformer.training", "glassformer.analysis")),
    ("analysis", ("glassformer.training",)),
]


@pytest.mark.parametrize(("package", "forbidden"), FORBIDDEN)
def test_lower_layers_never_import_higher_ones(package, forbidden):
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in python_files(package) for m in glassformer_imports(p)
           if m.startswith(forbidden)]
    assert not bad, bad


def test_only_the_orchestration_and_the_command_line_in_training_import_the_analysis():
    above = (ROOT / "training" / "orchestrate", ROOT / "training" / "cli")
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in python_files("training") if not p.is_relative_to(above[0])
           and not p.is_relative_to(above[1]) for m in glassformer_imports(p) if m.startswith("glassformer.analysis")]
    assert not bad, bad


IMPORT_EACH = """
import importlib, os, sys
# Third-party packages are loaded once; each glassformer module is then imported in a child of this process that
# has loaded no glassformer module at all, so an import cycle shows up as that child's ImportError.
import numpy, torch, tokenizers, yaml, safetensors, tqdm, jsonargparse, lightning, datasets  # noqa: F401
import matplotlib  # noqa: F401
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as e:
            print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
print(" ".join(failed))
"""


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    names = [module_name(p) for pkg in PACKAGES for p in python_files(pkg) if p.name != "__main__.py"]
    assert len(names) > 60
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH, *names], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "", proc.stderr[-3000:]


def test_no_function_in_analysis_or_training_is_longer_than_80_lines():
    long = []
    for pkg in ("analysis", "training"):
        for path in python_files(pkg):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
