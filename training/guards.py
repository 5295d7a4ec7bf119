"""What keeps a long run safe: atomic checkpoint files, a stop on divergence, a clean stop on SIGTERM / Ctrl-C.

- :class:`AtomicCheckpointIO` writes every Lightning checkpoint to a temporary name in the same folder and renames
  it, so a crash mid-write leaves the previous file intact; it refuses to write a checkpoint holding a NaN or an
  infinity, and loads with ``torch.load(weights_only=True)``, so a checkpoint never runs code.
- :class:`DivergenceGuard` checks the loss and the gradient norm before every optimizer step and stops the run,
  naming the step, the offending quantity and the last good checkpoint, before the bad update touches the weights.
- :class:`GracefulStop` turns SIGTERM (schedulers, ``kill``) and the first Ctrl-C into "finish this step, write
  ``last.ckpt``, stop"; fit then raises :class:`TrainingInterrupted`, which the CLI turns into the resume command.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from glassformer.archs.model_dir import atomic_writer

log = logging.getLogger("glassformer")

LAST = "last.ckpt"


class TrainingDiverged(FloatingPointError):
    """A non-finite loss or gradient stopped training; nothing was written for the step that produced it.

    A ``FloatingPointError``, so that the CLI can tell it from a bad input without importing Lightning.
    """

    def __init__(self, message: str, *, step: int, quantity: str, checkpoint: Path | None):
        super().__init__(message)
        self.step, self.quantity, self.checkpoint = step, quantity, checkpoint


class TrainingInterrupted(RuntimeError):
    """SIGTERM or Ctrl-C stopped training after a step; ``checkpoint`` holds that step and resumes it exactly."""

    def __init__(self, message: str, *, step: int, signum: int, checkpoint: Path | None):
        super().__init__(message)
        self.step, self.signum, self.checkpoint = step, signum, checkpoint


class CheckpointError(ValueError):
    """A checkpoint file cannot be read (truncated, corrupt, or holding something other than plain state)."""


def nonfinite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors inside ``obj`` (nested dicts/lists) that hold a NaN or an inf.

    Example:
        >>> nonfinite_tensors({"a": torch.ones(2), "b": [torch.tensor([1.0, float("nan")])]})
        ['b.0']
    """
    if torch.is_tensor(obj):
        return [prefix] if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else []
    items: Any = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    found: list[str] = []
    for key, value in items:
        found += nonfinite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed :class:`AtomicCheckpointIO` writer left in ``folder``; return them.

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / ".last.ckpt.abc.tmp").write_bytes(b"x")
        1
        >>> [p.name for p in remove_stale_temporaries(d)]
        ['.last.ckpt.abc.tmp']
    """
    folder = Path(folder)
    stale = sorted(folder.glob(".*.ckpt.*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` made crash-safe: temporary file in the same folder, fsync, rename.

    With ``refuse_nonfinite`` it raises :class:`TrainingDiverged` rather than write weights or optimizer state
    holding a NaN or an inf: the last line of defence behind :class:`DivergenceGuard`.

    ``last_saved`` is the path and global step of the newest checkpoint this process wrote (rank 0 only).

    Example:
        >>> import tempfile; path = Path(tempfile.mkdtemp()) / "last.ckpt"
        >>> io = AtomicCheckpointIO(); io.save_checkpoint({"global_step": 3, "state_dict": {"w": torch.ones(2)}}, path)
        >>> io.load_checkpoint(path)["global_step"], io.last_saved[1]
        (3, 3)
    """

    def __init__(self, refuse_nonfinite: bool = True):
        super().__init__()
        self.refuse_nonfinite = refuse_nonfinite
        self.last_saved: tuple[Path, int] | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"storage_options={storage_options!r} is not supported by {type(self).__name__}: "
                            "expected None")
        path = Path(path)
        if self.refuse_nonfinite:
            # Weights and optimizer moments only: callbacks keep legitimate infinities (a best score of inf).
            bad = nonfinite_tensors({k: checkpoint[k] for k in ("state_dict", "optimizer_states") if k in checkpoint})
            if bad:
                raise TrainingDiverged(
                    f"refusing to write {path}: it would hold non-finite values in {', '.join(bad[:5])}"
                    f"{' ...' if len(bad) > 5 else ''}", step=int(checkpoint.get("global_step", -1)),
                    quantity=bad[0], checkpoint=self.last_saved[0] if self.last_saved else None)
        with atomic_writer(path) as f:
            torch.save(checkpoint, f)
        _fsync_folder(path.parent)
        self.last_saved = (path, int(checkpoint.get("global_step", -1)))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        try:
            # weights_only: a checkpoint is plain tensors and containers; unpickling anything else could run code.
            return torch.load(path, map_location=map_location or "cpu",
                              weights_only=True if weights_only is None else weights_only)
        except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, zipfile errors...
            raise CheckpointError(
                f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                f"delete it, or copy an earlier step*.ckpt from {path.parent} over it to resume from there") from e


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable across a power loss; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def interrupted_message(signal_name: str, step: int, saved: tuple[Path, int] | None) -> str:
    """What a stopped run says: the signal, the last finished step, and the checkpoint that holds it.

    Example:
        >>> interrupted_message("SIGTERM", 12, (Path("runs/x/checkpoints/last.ckpt"), 12))
        'training stopped by SIGTERM after step 12; runs/x/checkpoints/last.ckpt holds step 12'
    """
    where = f"{saved[0]} holds step {saved[1]}" if saved else "no checkpoint was written by this process"
    return f"training stopped by {signal_name} after step {step}; {where}"


def _describe_checkpoint(io: AtomicCheckpointIO, resumed: tuple[Path, int] | None) -> tuple[Path | None, str]:
    saved = io.last_saved or resumed
    if saved is None:
        return None, "no checkpoint has been written yet"
    return saved[0], f"the last good checkpoint is {saved[0]} (step {saved[1]})"


class DivergenceGuard(Callback):
    """Stop before an optimizer step whose loss or gradient norm is NaN or infinite.

    Runs in ``on_before_optimizer_step`` (after backward, before clipping and the update), so the weights, the
    optimizer state and every checkpoint stay those of the last good step. Checks the loss Lightning
    backpropagated (``on_before_backward``) and names its non-finite terms from ``pl_module.last_loss_terms``
    (set by ``LanguageModel.training_step``). Costs one device sync per step.
    Under fp16 mixed precision the gradient check is left to the GradScaler, which skips overflowing steps.

    Example:
        >>> from lightning import Trainer  # doctest: +SKIP
        >>> io = AtomicCheckpointIO(); Trainer(plugins=[io], callbacks=[DivergenceGuard(io)])  # doctest: +SKIP
    """

    def __init__(self, io: AtomicCheckpointIO):
        self.io = io
        self._resumed: tuple[Path, int] | None = None
        self._loss: torch.Tensor | None = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path:
            self._resumed = (Path(trainer.ckpt_path), int(trainer.global_step))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        terms: dict[str, torch.Tensor] = getattr(pl_module, "last_loss_terms", {}) or {}
        loss, self._loss = self._loss, None
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads and scaler is None else None
        checks = [torch.isfinite(x).reshape(()) for x in (loss, norm) if x is not None]
        finite = bool(torch.stack(checks).all()) if checks else True  # the step's one device sync
        if trainer.world_size > 1:
            # Under FSDP each rank sees only its shard's gradients; every rank must stop at the same step.
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        step = int(trainer.global_step) + 1  # the step being taken; step5.ckpt holds the state after step 5
        if loss is not None and not bool(torch.isfinite(loss)):
            parts = [f"{name}={float(v):g}" for name, v in terms.items() if not torch.isfinite(v)]
            quantity = f"the loss is {float(loss):g}" + (f" ({', '.join(parts)})" if parts else "")
        elif norm is not None and not bool(torch.isfinite(norm)):
            names = [n for n, p in pl_module.named_parameters() if p.grad is not None
                     and not bool(torch.isfinite(p.grad).all())]
            quantity = (f"the gradient norm is {float(norm):g} (non-finite gradients in {', '.join(names[:3])}"
                        f"{' ...' if len(names) > 3 else ''})")
        else:
            quantity = "another process's loss or gradient is not finite"
        path, where = _describe_checkpoint(self.io, self._resumed)
        raise TrainingDiverged(
            f"training diverged at step {step}: {quantity}. Nothing was written for this step; {where}. "
            "Lower optim.lr, lengthen optim.warmup_steps or set optim.grad_clip, then continue with --resume true "
            "(it loads checkpoints/last.ckpt).", step=step, quantity=quantity, checkpoint=path)


class GracefulStop(Callback):
    """SIGTERM or a first Ctrl-C: finish the current step, write ``checkpoint_path``, raise TrainingInterrupted.

    A second Ctrl-C interrupts at once (Lightning's KeyboardInterrupt handling, no checkpoint). SIGTERM is caught
    by Lightning's own handler (``trainer.received_sigterm``), which also forwards it to DDP workers; under DDP the
    decision to stop is shared across processes so that every rank writes the same step. After training ends
    normally it writes a final ``checkpoint_path`` if the last periodic one is older, so ``--resume`` always has
    the last step (and can extend a finished run with a larger ``--trainer.max_steps``).

    Example:
        >>> from lightning import Trainer  # doctest: +SKIP
        >>> io = AtomicCheckpointIO(); Trainer(plugins=[io], callbacks=[GracefulStop("ck/last.ckpt", io)])  # doctest: +SKIP
    """

    def __init__(self, checkpoint_path: str | Path, io: AtomicCheckpointIO):
        self.checkpoint_path = Path(checkpoint_path)
        self.io = io
        self.requested: int | None = None
        self._previous: Any = None
        self._installed = False
        self._resumed_step: int | None = None

    # --- signals -------------------------------------------------------------------------------------------------
    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait for the step
        self.requested = signum
        print("\nglassformer: Ctrl-C: stopping after this step and writing a checkpoint "
              "(press Ctrl-C again to abort without one)", flush=True)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.requested = None
        if trainer.is_global_zero:
            for path in remove_stale_temporaries(self.checkpoint_path.parent):
                log.info("removed %s, left by a writer that was killed mid-write", path)

    def _restore_sigint(self) -> None:
        if self._installed and signal.getsignal(signal.SIGINT) == self._on_sigint:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)
        self._installed = False

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_sigint()

    # --- stopping ------------------------------------------------------------------------------------------------
    def _signal(self, trainer: L.Trainer) -> int | None:
        signum = self.requested if self.requested is not None else (
            int(signal.SIGTERM) if trainer.received_sigterm else None)
        if trainer.world_size > 1:
            # Every rank must stop at the same step (checkpointing is collective); any rank's signal counts.
            stop = trainer.strategy.reduce_boolean_decision(signum is not None, all=False)
            if stop and signum is None:
                signum = int(signal.SIGTERM)
        return signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        signum = self._signal(trainer)
        if signum is None:
            return
        step = int(trainer.global_step)
        trainer.save_checkpoint(self.checkpoint_path)
        message = interrupted_message(signal.Signals(signum).name, step, (self.checkpoint_path, step))
        raise TrainingInterrupted(message, step=step, signum=signum, checkpoint=self.checkpoint_path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException itself when SIGTERM lands after this step's on_train_batch_end or during
        # validation. The training state is still that of the last finished step, so a single process writes it
        # here; under DDP the ranks may not all be here, and a collective save could hang.
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        try:
            if isinstance(exception, SIGTERMException) and trainer.world_size == 1 and not self._wrote_this_step(trainer):
                trainer.save_checkpoint(self.checkpoint_path)
        finally:
            # Lightning calls no teardown hook after an exception; a notebook must get its Ctrl-C back.
            self._restore_sigint()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._resumed_step = int(trainer.global_step) if trainer.ckpt_path else None
        # Installed here, after Lightning snapshots the signal handlers (between on_fit_start and this hook):
        # Lightning puts its snapshot back when fit ends, even after an exception, so ours must not be in it.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True

    def _wrote_this_step(self, trainer: L.Trainer) -> bool:
        saved = self.io.last_saved[1] if self.io.last_saved else self._resumed_step
        return saved == trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Decided on rank 0 (the only writer) and shared, because saving is a collective call.
        if trainer.strategy.broadcast(trainer.is_global_zero and not self._wrote_this_step(trainer), src=0):
            trainer.save_checkpoint(self.checkpoint_path)


__all__ = ["AtomicCheckpointIO", "CheckpointError", "DivergenceGuard", "GracefulStop", "TrainingDiverged",
           "TrainingInterrupted", "interrupted_message", "nonfinite_tensors", "remove_stale_temporaries"]
