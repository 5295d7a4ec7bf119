"""``fit``: prepare the corpus, train with Lightning, write the model directory."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar

from glassformer.archs import ModelConfig, save_model_dir
from glassformer.archs.config import ConfigError
from glassformer.archs.model_dir import software_versions
from glassformer.training.checks import check_writable
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig
from glassformer.training.datamodule import TokenWindowDataModule
from glassformer.training.guards import (
    LAST,
    AtomicCheckpointIO,
    DivergenceGuard,
    GracefulStop,
    TrainingDiverged,
    TrainingInterrupted,
    interrupted_message,
    nonfinite_tensors,
)
from glassformer.training.ladder import CheckpointLadder
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
            from lightning.pytorch.loggers import WandbLogger

            # Offline unless the user configured W&B: online without a reachable server hangs for minutes.
            offline = os.environ.get("WANDB_MODE", "offline") == "offline" and not os.environ.get("WANDB_API_KEY")
            loggers.append(WandbLogger(project=trainer_cfg.wandb_project, save_dir=str(out), offline=offline))
    return loggers


def keep_csv_metrics(out: Path) -> Path | None:
    """Move ``out/logs/metrics.csv`` to ``metrics.until-resume-<i>.csv``; return the new path, if there was one.

    Lightning's CSVLogger deletes an existing metrics.csv when it starts, which would lose a resumed run's
    earlier metrics.

    Example:
        >>> import tempfile; out = Path(tempfile.mkdtemp()); (out / "logs").mkdir()
        >>> _ = (out / "logs" / "metrics.csv").write_text("step,loss"); keep_csv_metrics(out).name
        'metrics.until-resume-1.csv'
    """
    metrics = out / "logs" / "metrics.csv"
    if not metrics.is_file():
        return None
    i = 1
    while (target := metrics.with_name(f"metrics.until-resume-{i}.csv")).exists():
        i += 1
    metrics.rename(target)
    return target


def training_versions() -> dict[str, str]:
    """Versions recorded in training.json (torch as it reports itself, with its build suffix)."""
    return {**software_versions(("glassformer", "lightning", "tokenizers", "datasets", "triton")),
            "torch": torch.__version__}


def final_model(trainer: L.Trainer, module: LanguageModel, model_cfg: ModelConfig) -> torch.nn.Module | None:
    """The trained Transformer with all its weights on rank 0 (None on other ranks under FSDP).

    Under FSDP the module holds only this rank's shards, so the full state dict is gathered (a collective call:
    every rank must make it) into a fresh model; every other strategy keeps whole weights in ``module.model``.

    Example:
        >>> final_model(trainer, module, model_cfg).cfg.d_model  # doctest: +SKIP
        64
    """
    from lightning.pytorch.strategies import FSDPStrategy

    from glassformer.archs import build_model

    if not isinstance(trainer.strategy, FSDPStrategy):
        return module.model
    full = trainer.strategy.lightning_module_state_dict()
    if not trainer.is_global_zero:
        return None
    model = build_model(model_cfg)
    model.load_state_dict({k.removeprefix("model."): v for k, v in full.items() if k.startswith("model.")})
    return model


def _build_trainer(trainer_cfg: TrainerConfig, optim_cfg: OptimConfig, out: Path, callbacks: list[Callback],
                   io: AtomicCheckpointIO) -> L.Trainer:
    """The Lightning Trainer; Lightning's own refusals of precision/accelerator/strategy/devices name the field."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(
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
            num_nodes=trainer_cfg.num_nodes,
            strategy=trainer_cfg.strategy,
            logger=build_loggers(trainer_cfg, out) or False,
            callbacks=callbacks,
            plugins=[io],
            # TokenWindowDataModule gives each rank its own block of every step's windows (see its docstring).
            use_distributed_sampler=False,
            enable_progress_bar=trainer_cfg.progress_bar,
            enable_model_summary=False,
            default_root_dir=out,
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as e:
        settings = ", ".join(f"trainer.{k}={getattr(trainer_cfg, k)!r}"
                             for k in ("precision", "accelerator", "devices", "strategy"))
        raise ConfigError(f"Lightning refused the trainer settings ({settings}): {e}") from e


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
    variant: str | None = None,
) -> Path:
    """Train a model and write its model directory to ``out`` (Lightning checkpoints go to ``out/checkpoints``).

    training.json records ``seed`` (init and data order), ``val_loss`` (the last validation) and a sweep's
    ``variant``; ``trainer.ladder_every`` adds the checkpoint ladder (:mod:`glassformer.training.ladder`).

    Fine-tuning passes a ready ``module`` (a :class:`LanguageModel` with converted weights, or a subclass with
    extra loss terms), the parent's ``tokenizer`` and ``extra_training_info`` to record in training.json.

    ``resume=True`` continues from ``out/checkpoints/last.ckpt`` exactly where it stopped (weights, optimizer,
    schedule, data position, RNG states, dead-latent trackers): the final weights equal an uninterrupted run's.
    Raises :class:`~glassformer.training.guards.TrainingDiverged` on a non-finite loss or gradient (no checkpoint
    or model directory is written for it) and :class:`~glassformer.training.guards.TrainingInterrupted` after
    SIGTERM or Ctrl-C (once ``last.ckpt`` holds the last finished step).

    Example:
        >>> from glassformer.archs import presets
        >>> fit(presets.get("debug"), DataConfig(max_bytes=300_000), OptimConfig(),
        ...     TrainerConfig(max_steps=30), "runs/debug")  # doctest: +SKIP
    """
    from glassformer.training.corpus import prepare_data, unigram_entropy

    out = Path(out)
    ckpt = _check_outputs(out, data_cfg, resume)
    # Only the first process: under DDP / torchrun the others start with RANK (or LOCAL_RANK) set.
    if resume and os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0":
        keep_csv_metrics(out)
    started = time.time()
    io = AtomicCheckpointIO()
    throughput = Throughput(trainer_cfg.batch_size * model_cfg.n_ctx, trainer_cfg.log_every)
    ladder = CheckpointLadder(trainer_cfg.ladder_every, out) if trainer_cfg.ladder_every is not None else None
    callbacks = _callbacks(model_cfg, trainer_cfg, out, ckpt, io, throughput, ladder)
    # Built before the corpus is read: a bad precision or strategy fails in a second, not after tokenising.
    trainer = _build_trainer(trainer_cfg, optim_cfg, out, callbacks, io)
    prepared = prepare_data(data_cfg, model_cfg.d_vocab, tokenizer=tokenizer)
    entropy = unigram_entropy(prepared.train_tokens, _check_vocab(prepared, model_cfg))
    record = run_record(prepared, entropy, data_cfg, optim_cfg, trainer_cfg, variant)
    if ladder is not None:
        ladder.bind(tokenizer_json=prepared.tokenizer.to_str(), record={**record, "ladder_of": variant or out.name})
    L.seed_everything(trainer_cfg.seed, workers=True, verbose=False)
    if module is None:
        module = LanguageModel(model_cfg.to_dict(), optim_dict(optim_cfg), trainer_cfg.max_steps,
                               trainer_cfg.log_every)
    dm = TokenWindowDataModule(
        prepared.train_tokens, prepared.val_tokens, n_ctx=model_cfg.n_ctx, batch_size=trainer_cfg.batch_size,
        seed=trainer_cfg.seed, max_steps=trainer_cfg.max_steps, val_batches=trainer_cfg.val_batches,
        num_workers=trainer_cfg.num_workers,
    )
    _run_fit(trainer, module, dm, ckpt if resume else None, io)
    # Read before validate(), which starts a new set of metrics.
    train_loss = float(trainer.callback_metrics.get("loss/train", float("nan")))
    val = trainer.validate(module, datamodule=dm, verbose=False)
    val_loss = float(val[0]["loss/val"]) if val else float("nan")
    if ladder is not None:
        ladder.finish(trainer, module, val_loss)
    model = final_model(trainer, module, model_cfg)
    if trainer.is_global_zero:
        _refuse_nonfinite(model, trainer, io)
        training = {
            **record, "val_loss": val_loss if math.isfinite(val_loss) else None, "steps": int(trainer.global_step),
            "tokens_seen": int(trainer.global_step) * trainer_cfg.batch_size * model_cfg.n_ctx * trainer.world_size,
            "final": {"loss/train": train_loss, "loss/val": val_loss, "unigram_entropy": entropy},
            "throughput": {"tokens_per_sec": throughput.tokens_per_sec, "train_seconds": throughput.train_seconds},
            "wall_seconds": time.time() - started, **({"ladder": ladder.summary()} if ladder else {}),
            **(extra_training_info or {}),
        }
        save_model_dir(out, model, tokenizer_json=prepared.tokenizer.to_str(), training=training)
    return out


def _check_vocab(prepared: Any, model_cfg: ModelConfig) -> int:
    """The tokenizer's vocabulary size, refused when the model's embedding is smaller."""
    n_tok = prepared.tokenizer.get_vocab_size()
    if n_tok > model_cfg.d_vocab:
        raise ValueError(f"the tokenizer has {n_tok} tokens but model.d_vocab={model_cfg.d_vocab}")
    return n_tok


def _refuse_nonfinite(model: torch.nn.Module, trainer: L.Trainer, io: AtomicCheckpointIO) -> None:
    bad = nonfinite_tensors(model.state_dict())
    if bad:  # DivergenceGuard makes this unreachable; a model directory must never hold NaN weights regardless
        raise TrainingDiverged(f"the final weights hold non-finite values ({', '.join(bad[:5])}); the model "
                               f"directory was not written", step=int(trainer.global_step), quantity=bad[0],
                               checkpoint=io.last_saved[0] if io.last_saved else None)


def run_record(prepared: Any, unigram_entropy: float, data_cfg: DataConfig, optim_cfg: OptimConfig,
               trainer_cfg: TrainerConfig, variant: str | None) -> dict[str, Any]:
    """What the training.json of every model directory of a run records, its ladder points' included: seed,
    variant (when a sweep gave one), corpus (and its unigram entropy), configs, software versions and the command.

    Example:
        >>> run_record(prepared, 6.4, DataConfig(), OptimConfig(), TrainerConfig(seed=3), None)["seed"]  # doctest: +SKIP
        3
    """
    return {"seed": trainer_cfg.seed, **({"variant": variant} if variant is not None else {}),
            "corpus": {"fingerprint": prepared.fingerprint, **prepared.info},
            "final": {"unigram_entropy": unigram_entropy},
            "config": {"data": asdict(data_cfg), "optim": optim_dict(optim_cfg), "trainer": asdict(trainer_cfg)},
            "versions": training_versions(), "command": sys.argv}


def _check_outputs(out: Path, data_cfg: DataConfig, resume: bool) -> Path:
    """Refuse an output or cache path that is a file, and a resume without a checkpoint; returns last.ckpt's path."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={str(out)!r} is a file: expected a folder for the model directory")
    check_writable(out, "out")
    cache = data_cfg.cache_path
    if cache.exists() and not cache.is_dir():
        raise ConfigError(f"data.cache_dir={str(cache)!r} is a file: expected a folder (or unset, for the default)")
    ckpt = out / "checkpoints" / LAST
    if resume and not ckpt.exists():
        steps = sorted(ckpt.parent.glob("step*.ckpt"), key=lambda p: int(p.stem[4:]) if p.stem[4:].isdigit() else -1)
        hint = (f"; the newest periodic checkpoint is {steps[-1]}: copy it to {ckpt} to resume from it" if steps
                else "; start without --resume")
        raise FileNotFoundError(f"--resume was given but {ckpt} does not exist{hint}")
    return ckpt


def _callbacks(model_cfg: ModelConfig, trainer_cfg: TrainerConfig, out: Path, ckpt: Path, io: AtomicCheckpointIO,
               throughput: Throughput, ladder: CheckpointLadder | None) -> list[Callback]:
    checkpoints = ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=trainer_cfg.checkpoint_every,
                                  save_last=True, save_top_k=-1, filename="step{step}", auto_insert_metric_name=False)
    # The ladder before GracefulStop (and Lightning runs checkpoint callbacks last): a point it measures itself is
    # written before any checkpoint of its step.
    callbacks: list[Callback] = [throughput, DivergenceGuard(io), *([ladder] if ladder else []),
                                 GracefulStop(ckpt, io), checkpoints]
    if trainer_cfg.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, trainer_cfg.log_every // 2)))
    if getattr(model_cfg, "weight_sparsity", None) is not None:
        from glassformer.training.callbacks import WeightSparsityCallback

        # Before GracefulStop and the ladder, so that a checkpoint written on a signal, and a ladder point, hold the
        # projected weights.
        callbacks.insert(1, WeightSparsityCallback())
    return callbacks


def _run_fit(trainer: L.Trainer, module: LanguageModel, dm: TokenWindowDataModule, ckpt: Path | None,
             io: AtomicCheckpointIO) -> None:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt is not None else None)
    except SIGTERMException as e:
        # SIGTERM landed where GracefulStop could not raise first (Lightning raises at the end of the step that
        # received it, or during validation); a single process saved in GracefulStop.on_exception.
        step = int(trainer.global_step)
        raise TrainingInterrupted(interrupted_message("SIGTERM", step, io.last_saved),
                                  step=step, signum=int(signal.SIGTERM),
                                  checkpoint=io.last_saved[0] if io.last_saved else None) from e
