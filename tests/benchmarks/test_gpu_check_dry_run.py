"""``bash benchmarks/gpu_check.sh --dry-run``: every step of the GPU check runs on the CPU and writes its figures.

The dry run is the same script the GPU machine runs, at toy sizes: a tiny corpus prepared from local files, the
Triton interpreter, the ``debug`` preset, a few steps. It refuses to import the packages the GPU image lacks
(datasets, wandb, jsonargparse) once the corpus is prepared, and reaches glassformer through the script's own
mapping rather than an installed copy, so a script that works here works there.
"""

import io
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from glassformer.archs import load_model_dir

ROOT = Path(__file__).resolve().parents[2]
OPS = ("sparse_decode", "topk_activation", "magnitude_prune_", "cos_margin_penalty", "jumprelu", "transcoder_step")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_out")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    return proc, out


def test_dry_run_succeeds_and_returns_few_files(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert {"gpu_check.log", "summary.md", "figures.json", "models.tar.gz.part-0"} <= set(names)
    assert len(names) <= 8  # the device returns at most 8 files
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())


def test_dry_run_figures_hold_every_step(dry_run):
    _, out = dry_run
    fig = json.loads((out / "figures.json").read_text())
    assert fig["mode"] == "dry-run"
    assert [s["step"] for s in fig["steps"]] == ["prepare", "tests", "kernels", "speed", "train"]
    assert all(s["exit"] == 0 for s in fig["steps"]), fig["steps"]
    assert fig["pytest"]["tests"] > 0 and fig["pytest"]["failures"] == fig["pytest"]["errors"] == 0
    timed = {(r["op"], r["variant"]): r for r in fig["kernels"]["rows"]}
    for op in OPS:
        row = timed[(op, "triton")]
        assert row["refused"] is None and row["ms"]["fwd"] > 0 and row["x_floor"] > 0, row
    assert timed[("sparse_decode", "triton")]["vs_dense"] > 0
    assert len(fig["targets"]) == 5
    variants = {v["variant"]: v for v in fig["throughput"]["variants"]}
    assert set(variants) == {"dense", "transcoder", "weight_sparse"}
    for v in variants.values():
        assert v["lightning"]["tokens_per_sec"] > 0 and 0 < v["lightning"]["mfu"] < 1
    runs = fig["training"]["runs"]
    assert set(runs) == {"dense", "weight_sparse"}
    for r in runs.values():
        assert r["steps"] == 10 and math.isfinite(r["final"]["loss/val"])
    summary = (out / "summary.md").read_text()
    assert "## Targets" in summary and "| sparse_decode |" in summary and "| weight_sparse |" in summary


def test_dry_run_training_never_imports_what_the_gpu_image_lacks(dry_run):
    _, out = dry_run
    training = json.loads((out / "figures.json").read_text())["training"]
    assert training["imported_absent_packages"] == []
    # glassformer came from the script's temporary mapping, as it must on the GPU machine (nothing installed).
    assert training["glassformer_from"].endswith(os.path.join("shim", "glassformer"))


def test_dry_run_returns_model_directories_that_load(dry_run):
    _, out = dry_run
    blob = b"".join(p.read_bytes() for p in sorted(out.glob("models.tar.gz.part-*")))
    dest = out.parent / "unpacked"
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        names = tar.getnames()
        tar.extractall(dest, filter="data")
    assert not any("checkpoints" in n for n in names)  # optimizer state stays behind: files are size-limited
    dense, sparse = load_model_dir(dest / "dense"), load_model_dir(dest / "weight_sparse")
    assert dense.cfg.weight_sparsity is None and sparse.cfg.weight_sparsity is not None
    # The weight-sparse run really projected: its matrices keep a quarter of their entries, the dense ones all.
    W_sparse, W_dense = sparse.blocks[0].mlp.W_in.weight, dense.blocks[0].mlp.W_in.weight
    assert (W_sparse != 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert (W_dense != 0).float().mean().item() == 1.0
    assert torch.isfinite(W_sparse).all()
