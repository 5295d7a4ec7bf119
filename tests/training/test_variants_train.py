"""Every shipped YAML, shrunk to the `debug` shape, trains 30 steps through the real `fit` path and lowers the loss."""

import dataclasses
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from test_cli import CONFIGS, ROOT, parse_train

from glassformer.archs import build_model
from glassformer.training.config import DataConfig, TrainerConfig
from glassformer.training.corpus import prepare_data
from glassformer.training.train import fit
from glassformer.training.windows import FixedWindows

DEBUG_SHAPE = dict(d_vocab=512, n_ctx=64, d_model=64, n_layers=2, n_heads=4, d_head=None)
DATA = DataConfig(max_bytes=300_000)
STEPS, BATCH = 30, 16


def val_loss(model: torch.nn.Module, windows: FixedWindows) -> float:
    batch = torch.stack([windows[i] for i in range(len(windows))])
    with torch.no_grad():
        logits = model.eval()(batch[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).item()


@pytest.mark.parametrize("name", CONFIGS)
def test_variant_trains_30_debug_steps_and_lowers_the_loss(name, tmp_path):
    cfg = parse_train("--config", str(ROOT / "configs" / name))
    # Keep the variant's own MLP-width ratio (a TopK MLP is wider than the dense one) while shrinking d_model.
    d_mlp = cfg.model.mlp_width * DEBUG_SHAPE["d_model"] // cfg.model.d_model
    model_cfg = dataclasses.replace(cfg.model, **DEBUG_SHAPE, d_mlp=d_mlp)
    trainer_cfg = TrainerConfig(max_steps=STEPS, batch_size=BATCH, val_every=STEPS, val_batches=2, log_every=5,
                                checkpoint_every=STEPS, progress_bar=False, seed=0)
    optim_cfg = dataclasses.replace(cfg.optim, warmup_steps=5)

    prepared = prepare_data(DATA, model_cfg.d_vocab)
    windows = FixedWindows(prepared.val_tokens, model_cfg.n_ctx, 2 * BATCH)
    L.seed_everything(0, verbose=False)
    before = val_loss(build_model(model_cfg), windows)  # fit seeds the same way, so this is its initial model

    out = fit(model_cfg, DATA, optim_cfg, trainer_cfg, tmp_path / "run")
    training = json.loads((Path(out) / "training.json").read_text())
    after = training["final"]["loss/val"]
    assert math.isfinite(after)
    assert after < before - 0.3, f"{name}: validation loss {before:.3f} -> {after:.3f} after {STEPS} steps"
    assert training["steps"] == STEPS
