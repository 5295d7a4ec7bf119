"""``glassformer train``: train a model and write its model directory."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from glassformer.archs import ModelConfig, read_training
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig


def train(
    model: ModelConfig = ModelConfig(),
    data: DataConfig = DataConfig(),
    optim: OptimConfig = OptimConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    out: str = "runs/latest",
    resume: bool = False,
) -> None:
    """Train a model and write its model directory.

    Args:
        model: Model shape and variant (see configs/*.yaml).
        data: Training corpus (default: the Python standard library).
        optim: Optimiser and learning-rate schedule.
        trainer: Steps, batch size, logging, devices.
        out: Model directory to write (Lightning checkpoints and logs go under it).
        resume: Continue from OUT/checkpoints/last.ckpt exactly where it stopped (after a crash, SIGTERM or Ctrl-C).
    """
    from lightning.pytorch.utilities import rank_zero_only

    from glassformer.training.guards import TrainingInterrupted
    from glassformer.training.train import fit

    try:
        path = fit(model, data, optim, trainer, out, resume=resume)
    except TrainingInterrupted as e:
        if rank_zero_only.rank == 0:  # under DDP every process gets here; one message is enough
            print(f"glassformer: {e}\nglassformer: resume with:\n  {resume_command()}", file=sys.stderr, flush=True)
        sys.exit(128 + e.signum)
    if rank_zero_only.rank != 0:
        return
    final = read_training(path).get("final", {})
    print(f"model directory: {path}")
    print(f"validation loss {final.get('loss/val', float('nan')):.4f} nats/token "
          f"(unigram entropy of the corpus {final.get('unigram_entropy', float('nan')):.4f})")


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that resumes this ``glassformer train`` run: the same flags plus ``--resume true``.

    Example:
        >>> resume_command(["glassformer", "train", "--config", "c.yaml", "--resume", "false"])
        'glassformer train --config c.yaml --resume true'
    """
    argv = list(sys.argv if argv is None else argv)
    # Started as `python -m glassformer.training.cli` (or Lightning's DDP relaunch of it) rather than the script.
    program = ("glassformer" if Path(argv[0]).name == "glassformer"
               else f"{shlex.quote(sys.executable)} -m glassformer.training.cli")
    args, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            args.append(arg)
    return " ".join([program, *map(shlex.quote, args), "--resume", "true"])
