"""Lightning's DDP on CPU (gloo, 2 processes) trains the same model as one process with the same global batch.

Both runs go through the real console entry point (``python -m glassformer.training.cli train``): Lightning's
DDP strategy relaunches that command for rank 1, exactly as it would for a user. Each rank reads its own half of
every step's windows (TokenWindowDataModule), so 2 x 8 windows are the 16 windows the single process reads.

Tolerance: the only difference is float32 summation order (two half-batch means averaged by the all-reduce
against one mean over 16), about 1e-7 relative per step, which Adam's normalisation carries forward. Over these 10
steps the largest weight difference measured was 2e-6; the bound below is 1e-4. A real mismatch (both ranks
reading the same windows, or a rank reading none) moves weights by about lr = 3e-3 per step.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
WEIGHT_ATOL = 1e-4
VAL_LOSS_RTOL = 1e-5


def train(out: Path, *flags: str) -> None:
    argv = [sys.executable, "-m", "glassformer.training.cli", "train", "--config", str(ROOT / "configs/debug.yaml"),
            "--out", str(out), "--data.max_bytes", "300000", "--trainer.max_steps", "10",
            "--trainer.val_every", "10", "--trainer.val_batches", "2", "--trainer.checkpoint_every", "10",
            "--trainer.progress_bar", "false", "--trainer.accelerator", "cpu", "--optim.warmup_steps", "2", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process_with_the_same_global_batch(tmp_path):
    train(tmp_path / "ddp", "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.batch_size", "8")
    train(tmp_path / "single", "--trainer.devices", "1", "--trainer.batch_size", "16")

    ddp, single = (json.loads((tmp_path / d / "training.json").read_text()) for d in ("ddp", "single"))
    assert ddp["steps"] == single["steps"] == 10
    assert ddp["tokens_seen"] == single["tokens_seen"] == 10 * 16 * 64
    assert ddp["final"]["loss/val"] == pytest.approx(single["final"]["loss/val"], rel=VAL_LOSS_RTOL)

    a, b = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "single" / "model.safetensors")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= WEIGHT_ATOL, f"largest weight difference {worst:.3g}"
    # The runs did train: the weights moved far more than the tolerance.
    from glassformer.archs import build_model, presets

    torch.manual_seed(0)
    init = build_model(presets.get("debug")).state_dict()
    assert max((b[k] - init[k]).abs().max().item() for k in b) > 100 * WEIGHT_ATOL


@pytest.mark.gpu
def test_fsdp_writes_a_model_directory_holding_the_full_gathered_weights(tmp_path):
    """FSDP keeps only shards in the module; the model directory must hold every weight, equal to last.ckpt's.
    (Lightning's FSDP needs a GPU, so this runs under `make test-gpu` only.)"""
    from glassformer.archs import load_model_dir

    out = tmp_path / "fsdp"
    train(out, "--trainer.strategy", "fsdp", "--trainer.devices", "1", "--trainer.accelerator", "gpu",
          "--trainer.batch_size", "16")
    model = load_model_dir(out)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    weights = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name].reshape(value.shape)), name
