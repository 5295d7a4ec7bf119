"""Training-side configuration: data, optimiser and trainer settings.

Like the model config, each field carries a docstring (shown by ``glassformer train --help``) and bad values
raise :class:`glassformer.archs.ConfigError` naming the field before any work starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from glassformer.archs.config import check, check_fraction, check_positive_int

SOURCES = ("python-stdlib", "files", "hf")


def default_cache_dir() -> Path:
    """Where tokenizers and token arrays are cached: ``$GLASSFORMER_CACHE`` or ``~/.cache/glassformer/data``.

    Example:
        >>> default_cache_dir().name != ""
        True
    """
    env = os.environ.get("GLASSFORMER_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "glassformer" / "data"


@dataclass
class DataConfig:
    """Where the training text comes from and how it is split and cached.

    Example:
        >>> DataConfig().source
        'python-stdlib'
    """

    source: Literal["python-stdlib", "files", "hf"] = "python-stdlib"
    """``python-stdlib``: the running interpreter's own standard library (no download); ``files``: local files
    matched by ``paths`` (text, code or JSONL); ``hf``: a Hugging Face dataset by ``name`` (cached or reachable)."""
    paths: list[str] = field(default_factory=list)
    """Glob patterns for the ``files`` source, e.g. ``["src/**/*.py", "notes/*.jsonl"]``."""
    name: str | None = None
    """Dataset name (or local dataset folder) for the ``hf`` source."""
    config_name: str | None = None
    """Configuration (subset) of the ``hf`` dataset, e.g. ``wikitext-2-raw-v1``."""
    split: str = "train"
    """Split of the ``hf`` dataset to read."""
    text_field: str = "text"
    """Field holding the text in JSONL records and ``hf`` datasets."""
    val_fraction: float = 0.02
    """Fraction of documents held out for validation, chosen by a hash of each document's path or index."""
    max_bytes: int | None = None
    """Use only the first documents (in sorted order) up to this many bytes: quick runs and tests."""
    cache_dir: str | None = None
    """Cache for tokenizers and token arrays; None means ``$GLASSFORMER_CACHE`` or ``~/.cache/glassformer/data``."""
    num_proc: int = 1
    """Processes for tokenisation through ``datasets.map``."""

    def __post_init__(self) -> None:
        check(self.source in SOURCES, "data.source", self.source, f"one of {', '.join(SOURCES)}")
        if self.source == "files":
            check(bool(self.paths), "data.paths", self.paths, "at least one glob pattern for source 'files'")
        if self.source == "hf":
            check(bool(self.name), "data.name", self.name, "a dataset name for source 'hf'")
        check(isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 1, "data.val_fraction",
              self.val_fraction, "a fraction in (0, 1)")
        if self.max_bytes is not None:
            check_positive_int(self.max_bytes, "data.max_bytes")
        check_positive_int(self.num_proc, "data.num_proc")

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


@dataclass
class OptimConfig:
    """AdamW with linear warmup, then cosine or linear decay.

    Example:
        >>> OptimConfig(lr=1e-3).schedule
        'cosine'
    """

    lr: float = 3e-3
    """Peak learning rate (small models tolerate a high one)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Adam betas; 0.95 for beta2 as in GPT-3 and Gao et al., steadier at small batch sizes."""
    eps: float = 1e-8
    """Adam epsilon."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices (never on norms, biases or embeddings' positions)."""
    warmup_steps: int = 50
    """Linear warmup from zero."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup, down to ``min_lr_ratio * lr`` at the last step."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this; None disables."""

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", self.lr, "a positive float")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas", self.betas,
              "two floats in [0, 1)")
        check(self.eps > 0, "optim.eps", self.eps, "a positive float")
        check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a non-negative float")
        check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "optim.warmup_steps",
              self.warmup_steps, "a non-negative integer")
        check(self.schedule in ("cosine", "linear", "constant"), "optim.schedule", self.schedule,
              "'cosine', 'linear' or 'constant'")
        check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", self.min_lr_ratio, "a fraction in [0, 1]")
        check(self.grad_clip is None or self.grad_clip > 0, "optim.grad_clip", self.grad_clip,
              "a positive float or null")


LOGGERS = ("csv", "tensorboard", "wandb")


@dataclass
class TrainerConfig:
    """How long to train, on what, and what to log.

    Example:
        >>> TrainerConfig(max_steps=10).batch_size
        16
    """

    max_steps: int = 1000
    """Optimizer steps; tokens seen = max_steps * batch_size * n_ctx."""
    batch_size: int = 16
    """Sequences per step (per device)."""
    seed: int = 0
    """Seeds the model initialisation and the order of training windows."""
    val_every: int = 200
    """Run validation every this many steps (and always at the end)."""
    val_batches: int = 20
    """Validation batches per evaluation (fixed windows, the same every time)."""
    log_every: int = 10
    """Log training metrics every this many steps."""
    checkpoint_every: int = 500
    """Write a Lightning checkpoint every this many steps (under OUT/checkpoints)."""
    precision: str = "32-true"
    """Lightning precision, e.g. ``32-true`` or ``bf16-mixed`` (use bf16 on GPUs only: it is slow on CPUs)."""
    accelerator: str = "auto"
    """Lightning accelerator: ``auto``, ``cpu``, ``gpu``."""
    devices: int | str = 1
    """Devices per node, or ``auto``."""
    strategy: str = "auto"
    """Lightning strategy: ``auto``, ``ddp``, ``fsdp``..."""
    num_nodes: int = 1
    """Machines taking part (multi-node launch through torchrun or SLURM, see the README)."""
    loggers: list[Literal["csv", "tensorboard", "wandb"]] = field(default_factory=lambda: ["csv"])
    """Any of ``csv``, ``tensorboard``, ``wandb`` (W&B runs offline unless WANDB_MODE says otherwise)."""
    wandb_project: str = "glassformer"
    """W&B project name."""
    num_workers: int = 0
    """DataLoader workers (windows come from a memory-mapped array, so 0 is usually fastest on CPU)."""
    progress_bar: bool = True
    """Show Lightning's progress bar."""
    ladder_every: int | None = None
    """Also write a complete model directory ``OUT/ladder/step-<06d>/`` (with its validation loss) every this many
    steps and at the last step; None: no ladder. A multiple of ``val_every`` reuses that validation; other steps
    run one of their own."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "val_every", "val_batches", "log_every", "checkpoint_every",
                     "num_nodes"):
            check_positive_int(getattr(self, name), f"trainer.{name}")
        check(isinstance(self.seed, int) and self.seed >= 0, "trainer.seed", self.seed, "a non-negative integer")
        bad = [lg for lg in self.loggers if lg not in LOGGERS]
        check(not bad, "trainer.loggers", self.loggers, f"a list drawn from {', '.join(LOGGERS)}")
        if self.ladder_every is not None:
            check(isinstance(self.ladder_every, int) and not isinstance(self.ladder_every, bool)
                  and self.ladder_every > 0, "trainer.ladder_every", self.ladder_every,
                  "a positive integer (steps) or null (no ladder)")
        check(isinstance(self.num_workers, int) and self.num_workers >= 0, "trainer.num_workers", self.num_workers,
              "a non-negative integer")


__all__ = ["DataConfig", "OptimConfig", "TrainerConfig", "default_cache_dir", "check_fraction"]
