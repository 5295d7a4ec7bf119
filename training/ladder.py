"""The checkpoint ladder: complete model directories of one run at regular steps, each with its validation loss.

With ``trainer.ladder_every: S`` a run writes ``<out>/ladder/step-<06d>/`` at every multiple of ``S`` and at its
last step: config.json, model.safetensors, tokenizer.json and a training.json holding ``step``, ``val_loss`` (the
validation loss of those weights, on the run's validation windows), ``seed``, ``variant`` (when a sweep trained it)
and ``ladder_of``. Each is an ordinary model directory (``load_model_dir``, ``glassformer analyze`` and the report
read it); a report matches a constrained model against the baseline's ladder by steps or by loss.

Validation loss at a ladder step: when Lightning validates at that step anyway (``val_every`` divides it) its result
is taken, at no extra cost; otherwise the ladder runs the same validation itself (``val_batches`` forward passes).
Writing: each point is published whole (:func:`glassformer.archs.model_dir.publish_model_dir`), so a stopped run
never holds a half-written point, and resuming neither repeats nor loses one: a point measured by the ladder itself
is on disk before its step's checkpoint; one waiting for Lightning's validation is written after that checkpoint,
and if the run stops in between, the resume (which starts from exactly that step's weights) writes it before
training continues, or from its final validation when no step was left to train (:meth:`CheckpointLadder.finish`). A point that exists is kept (a resume is exact, so it would be the same).

Example:
    >>> ladder_steps(300, 700)
    [300, 600, 700]
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from glassformer.archs.model_dir import publish_model_dir, remove_stale_model_dirs

log = logging.getLogger("glassformer")

LADDER_DIR = "ladder"


def ladder_steps(every: int, max_steps: int) -> list[int]:
    """The steps of a run of ``max_steps`` at which a ladder of ``every`` steps writes a point.

    Example:
        >>> ladder_steps(5, 10), ladder_steps(4, 10), ladder_steps(20, 10)
        ([5, 10], [4, 8, 10], [10])
    """
    steps = list(range(every, max_steps + 1, every))
    return steps if steps and steps[-1] == max_steps else [*steps, max_steps]


def ladder_dir(model_dir: str | Path, step: int) -> Path:
    """Where the ladder point of ``step`` lives in ``model_dir``.

    Example:
        >>> str(ladder_dir("runs/demo/dense", 300))
        'runs/demo/dense/ladder/step-000300'
    """
    return Path(model_dir) / LADDER_DIR / f"step-{step:06d}"


def ladder_points(model_dir: str | Path) -> list[Path]:
    """The complete ladder points of ``model_dir`` (those holding training.json), by step.

    Example:
        >>> ladder_points("no/such/dir")
        []
    """
    root = Path(model_dir) / LADDER_DIR
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / "training.json").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: p.name)


@torch.no_grad()
def validation_loss(trainer: L.Trainer, pl_module: L.LightningModule) -> float:
    """The validation loss of the module's current weights, as Lightning's validation computes it (same windows,
    same precision context, mean over batches, averaged over processes); leaves the RNGs and the mode untouched.

    Example:
        >>> validation_loss(trainer, module)  # doctest: +SKIP
        5.12
    """
    was_training = pl_module.training
    pl_module.eval()
    total, count = torch.zeros((), dtype=torch.float64, device=pl_module.device), 0
    try:
        with trainer.precision_plugin.val_step_context():
            for batch in trainer.datamodule.val_dataloader():
                batch = batch.to(pl_module.device)
                # The loss validation_step logs; every batch has batch_size windows, so the mean of the batch
                # means is Lightning's batch-size-weighted mean.
                total += pl_module._cross_entropy(batch).double()
                count += 1
    finally:
        pl_module.train(was_training)
    mean = total / max(count, 1)
    if trainer.world_size > 1:
        mean = trainer.strategy.reduce(mean, reduce_op="mean")
    return float(mean)


class CheckpointLadder(Callback):
    """Writes the ladder points of a run (see the module docstring); :meth:`bind` gives it what the directories
    hold besides the weights, once the corpus is prepared.

    Sits before :class:`~glassformer.training.guards.GracefulStop` and the checkpoint callbacks (Lightning runs
    those last), so a point the ladder measures itself is on disk before any checkpoint of its step.

    Example:
        >>> ladder = CheckpointLadder(every=300, out="runs/dense")
        >>> ladder.bind(tokenizer_json="{}", record={"seed": 0, "ladder_of": "dense"})
    """

    def __init__(self, every: int, out: str | Path):
        self.every, self.out = every, Path(out)
        self.tokenizer_json: str | None = None
        self.record: dict[str, Any] = {}
        self._pending: int | None = None  # a ladder step waiting for Lightning's validation of it
        self.written: list[int] = []
        self.seconds = {"validation": 0.0, "writing": 0.0}
        """Wall time this process spent on the ladder's own validation passes and on writing points."""

    def bind(self, *, tokenizer_json: str, record: dict[str, Any]) -> None:
        """Set the tokenizer and the fields every point's training.json holds (seed, variant, corpus, config...)."""
        self.tokenizer_json, self.record = tokenizer_json, dict(record)

    def is_ladder_step(self, step: int, max_steps: int) -> bool:
        return step > 0 and (step % self.every == 0 or step == max_steps)

    def summary(self) -> dict[str, Any]:
        """What the model's training.json records of its ladder: the interval, the points this process wrote and
        the seconds it spent (its own validations, writing).

        Example:
            >>> CheckpointLadder(every=300, out="runs/dense").summary()
            {'every': 300, 'written': [], 'seconds': {'validation': 0.0, 'writing': 0.0}}
        """
        return {"every": self.every, "written": list(self.written),
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        started = time.perf_counter()
        loss = validation_loss(trainer, pl_module)
        self.seconds["validation"] += time.perf_counter() - started
        return loss

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = None
        if trainer.is_global_zero:
            for path in remove_stale_model_dirs(self.out / LADDER_DIR):
                log.info("removed %s, a ladder point whose writer was stopped midway", path)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resume from a ladder step whose point is missing: the run stopped during that step's validation,
        # after its checkpoint. The restored weights are that step's, so the point can still be written.
        step = int(trainer.global_step)
        if not trainer.ckpt_path or not self.is_ladder_step(step, trainer.max_steps):
            return
        missing = trainer.is_global_zero and not ladder_dir(self.out, step).exists()
        if trainer.strategy.broadcast(missing, src=0):
            self._write(trainer, pl_module, step, self._measure(trainer, pl_module), "resumed run")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._flush(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = int(trainer.global_step)
        if not self.is_ladder_step(step, trainer.max_steps):
            return
        if step % trainer.val_check_batch == 0:
            self._pending = step  # Lightning validates right after this hook; on_validation_end takes its loss
        else:
            self._write(trainer, pl_module, step, self._measure(trainer, pl_module), "own validation")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None or self._pending != trainer.global_step or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get("loss/val")
        step, self._pending = self._pending, None
        loss = float(value) if value is not None else self._measure(trainer, pl_module)
        self._write(trainer, pl_module, step, loss, "Lightning's validation")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer, pl_module)

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule, val_loss: float) -> None:
        """After training: write the last step's point from the final validation (``val_loss``) if it is missing.

        It is missing when a resumed run had nothing left to train (the stop came during the last step's
        validation, after its checkpoint): Lightning then ends before ``on_train_start``. Every process calls this.

        Example:
            >>> ladder.finish(trainer, module, val_loss=5.1)  # doctest: +SKIP
        """
        step = int(trainer.global_step)
        missing = trainer.is_global_zero and not ladder_dir(self.out, step).exists()
        if self.is_ladder_step(step, trainer.max_steps) and trainer.strategy.broadcast(missing, src=0):
            self._write(trainer, pl_module, step, val_loss, "final validation")

    def _flush(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A pending step that Lightning did not validate after all: called before the next step's forward pass
        # and at the end of training, so the weights are still that step's.
        if self._pending is not None:
            step, self._pending = self._pending, None
            self._write(trainer, pl_module, step, self._measure(trainer, pl_module), "own validation")

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, val_loss: float,
               source: str) -> None:
        from glassformer.training.train import final_model

        started = time.perf_counter()
        # Collective under FSDP (every rank gathers); the other strategies return the module's own model.
        model = final_model(trainer, pl_module, pl_module.model.cfg)
        if not trainer.is_global_zero:
            return
        path = ladder_dir(self.out, step)
        n_ctx = pl_module.model.cfg.n_ctx
        batch_size = getattr(trainer.datamodule, "batch_size", 0)
        val = val_loss if math.isfinite(val_loss) else None
        training = {**self.record, "step": step, "val_loss": val, "val_loss_source": source, "steps": step,
                    "tokens_seen": step * batch_size * n_ctx * trainer.world_size,
                    "final": {**self.record.get("final", {}), "loss/val": val}}
        if publish_model_dir(path, model, tokenizer_json=self.tokenizer_json, training=training):
            self.written.append(step)
            log.info("ladder: wrote %s (validation loss %.4f, %s)", path, val_loss, source)
        else:
            log.info("ladder: %s exists (written before a resume), kept", path)
        self.seconds["writing"] += time.perf_counter() - started


__all__ = ["CheckpointLadder", "LADDER_DIR", "ladder_dir", "ladder_points", "ladder_steps", "validation_loss"]
