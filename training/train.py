"""``fit``: prepare the corpus, train with Lightning, write the model directory."""

from __future__ import annotations

import logging
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar

from glassformer.archs import ModelConfig, save_model_dir
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig
from glassformer.training.datamodule import TokenWindowDataModule
from glassformer.training.module import LanguageModel, optim_dict

log = logging.getLogger("glassformer")


class Throughput(Callback):
    """Logs ``perf/tokens_per_sec`` (training tokens over wall time between logs) and keeps run totals."""

    def __init__(self, tokens_per_step: int, log_every: int):
        self.tokens_per_step, self.log_every = tokens_per_step, log_every
        self.train_seconds = 0.0
        self.steps = 0
        self._t0: float | None = None
        self._window = (0, 0.0)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           idx: int) -> None:
        if self._t0 is None:
            return
        dt = time.perf_counter() - self._t0
        self.train_seconds += dt
        self.steps += 1
        steps, seconds = self._window[0] + 1, self._window[1] + dt
        self._window = (steps, seconds)
        if steps >= self.log_every:
            pl_module.log("perf/tokens_per_sec", steps * self.tokens_per_step / seconds)
            self._window = (0, 0.0)

    @property
    def tokens_per_sec(self) -> float:
        return self.steps * self.tokens_per_step / self.train_seconds if self.train_seconds else 0.0


def build_loggers(trainer_cfg: TrainerConfig, out: Path) -> list[Any]:
    loggers: list[Any] = []
    for kind in trainer_cfg.loggers:
        if kind == "csv":
            from lightning.pytorch.loggers import CSVLogger

            loggers.append(CSVLogger(out, name="logs", version=""))
        elif kind == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(out, name="tensorboard", version=""))
        elif kind == "wandb":
            import os

            from lightning.pytorch.loggers import WandbLogger

            # Offline unless the user configured W&B: online without a reachable server hangs for minutes.
            offline = os.environ.get("WANDB_MODE", "offline") == "offline" and not os.environ.get("WANDB_API_KEY")
            loggers.append(WandbLogger(project=trainer_cfg.wandb_project, save_dir=str(out), offline=offline))
    return loggers


def software_versions() -> dict[str, str]:
    """Versions recorded in training.json."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("glassformer", "lightning", "tokenizers", "datasets", "triton"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def fit(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    optim_cfg: OptimConfig,
    trainer_cfg: TrainerConfig,
    out: str | Path,
    resume: bool = False,
    *,
    module: LanguageModel | None = None,
    tokenizer: Any = None,
    extra_training_info: dict[str, Any] | None = None,
) -> Path:
    """Train a model and write its model directory to ``out`` (Lightning checkpoints go to ``out/checkpoints``).

    Fine-tuning passes a ready ``module`` (a :class:`LanguageModel` holding converted weights, possibly a
    subclass with extra loss terms), the parent's ``tokenizer`` (so the corpus is tokenised as the parent was),
    and ``extra_training_info`` (e.g. ``{"parent": ...}``) to record in training.json.

    Example:
        >>> from glassformer.archs import presets
        >>> fit(presets.get("debug"), DataConfig(max_bytes=300_000), OptimConfig(),
        ...     TrainerConfig(max_steps=30), "runs/debug")  # doctest: +SKIP
    """
    from glassformer.training.corpus import prepare_data, unigram_entropy

    out = Path(out)
    started = time.time()
    prepared = prepare_data(data_cfg, model_cfg.d_vocab, tokenizer=tokenizer)
    n_tok = prepared.tokenizer.get_vocab_size()
    if n_tok > model_cfg.d_vocab:
        raise ValueError(f"the tokenizer has {n_tok} tokens but model.d_vocab={model_cfg.d_vocab}")
    L.seed_everything(trainer_cfg.seed, workers=True, verbose=False)
    if module is None:
        module = LanguageModel(model_cfg.to_dict(), optim_dict(optim_cfg), trainer_cfg.max_steps,
                               trainer_cfg.log_every)
    dm = TokenWindowDataModule(
        prepared.train_tokens, prepared.val_tokens, n_ctx=model_cfg.n_ctx, batch_size=trainer_cfg.batch_size,
        seed=trainer_cfg.seed, max_steps=trainer_cfg.max_steps, val_batches=trainer_cfg.val_batches,
        num_workers=trainer_cfg.num_workers,
    )
    throughput = Throughput(trainer_cfg.batch_size * model_cfg.n_ctx, trainer_cfg.log_every)
    checkpoints = ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=trainer_cfg.checkpoint_every,
                                  save_last=True, save_top_k=-1, filename="step{step}", auto_insert_metric_name=False)
    callbacks: list[Callback] = [throughput, checkpoints]
    if trainer_cfg.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, trainer_cfg.log_every // 2)))
    if getattr(model_cfg, "weight_sparsity", None) is not None:
        from glassformer.training.callbacks import WeightSparsityCallback

        callbacks.append(WeightSparsityCallback())
    trainer = L.Trainer(
        max_steps=trainer_cfg.max_steps,
        max_epochs=-1,
        val_check_interval=trainer_cfg.val_every,
        check_val_every_n_epoch=None,
        limit_val_batches=trainer_cfg.val_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=trainer_cfg.log_every,
        gradient_clip_val=optim_cfg.grad_clip,
        precision=trainer_cfg.precision,
        accelerator=trainer_cfg.accelerator,
        devices=trainer_cfg.devices,
        strategy=trainer_cfg.strategy,
        logger=build_loggers(trainer_cfg, out) or False,
        callbacks=callbacks,
        enable_progress_bar=trainer_cfg.progress_bar,
        enable_model_summary=False,
        default_root_dir=out,
    )
    ckpt = out / "checkpoints" / "last.ckpt"
    if resume and not ckpt.exists():
        raise FileNotFoundError(f"--resume was given but {ckpt} does not exist; start without --resume")
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if resume else None)
    val = trainer.validate(module, datamodule=dm, verbose=False)
    val_loss = float(val[0]["loss/val"]) if val else float("nan")
    train_loss = float(trainer.callback_metrics.get("loss/train", float("nan")))
    if trainer.is_global_zero:
        entropy = unigram_entropy(prepared.train_tokens, prepared.tokenizer.get_vocab_size())
        training = {
            "corpus": {"fingerprint": prepared.fingerprint, **prepared.info},
            "tokens_seen": int(trainer.global_step) * trainer_cfg.batch_size * model_cfg.n_ctx * trainer.world_size,
            "steps": int(trainer.global_step),
            "final": {"loss/train": train_loss, "loss/val": val_loss, "unigram_entropy": entropy},
            "throughput": {"tokens_per_sec": throughput.tokens_per_sec, "train_seconds": throughput.train_seconds},
            "wall_seconds": time.time() - started,
            "config": {"data": asdict(data_cfg), "optim": optim_dict(optim_cfg), "trainer": asdict(trainer_cfg)},
            "versions": software_versions(),
            "command": sys.argv,
            **(extra_training_info or {}),
        }
        save_model_dir(out, module.model, tokenizer_json=prepared.tokenizer.to_str(), training=training)
    return out
