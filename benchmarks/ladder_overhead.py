"""What the checkpoint ladder (``trainer.ladder_every``) costs a training run.

Trains the same config with and without a ladder, alternating, ``--rounds`` times each (the corpus is prepared
once beforehand, so both pay only for training). Prints, per round, the wall time of ``fit`` for each, and what
the laddered run's own timer measured (its training.json ``ladder.seconds``: the validation passes it ran itself
at steps Lightning does not validate, and writing the points); then the medians. The ladder's own seconds are
the figure to trust on a shared machine, where the difference between two wall times is mostly noise.

    python benchmarks/ladder_overhead.py --config configs/debug.yaml --ladder-every 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from glassformer.archs import ModelConfig
from glassformer.archs.config import from_dict
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig


def load(config: Path) -> tuple[ModelConfig, DataConfig, OptimConfig, TrainerConfig]:
    """The four configs of a training YAML (``configs/debug.yaml`` and the like), progress bar and loggers off."""
    import yaml

    raw = yaml.safe_load(config.read_text())
    trainer = {**raw.get("trainer", {}), "progress_bar": False, "loggers": []}
    return (ModelConfig.from_dict(raw["model"]), from_dict(DataConfig, raw.get("data", {}), "data"),
            from_dict(OptimConfig, raw.get("optim", {}), "optim"), from_dict(TrainerConfig, trainer, "trainer"))


def timed_fit(cfgs: tuple, ladder_every: int | None, out: Path) -> tuple[float, dict]:
    """Seconds ``fit`` took, and the model's training.json."""
    from dataclasses import asdict

    from glassformer.training.train import fit

    model, data, optim, trainer = cfgs
    trainer = TrainerConfig(**{**asdict(trainer), "ladder_every": ladder_every})
    started = time.perf_counter()
    fit(model, data, optim, trainer, out)
    return time.perf_counter() - started, json.loads((out / "training.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/debug.yaml"))
    parser.add_argument("--ladder-every", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfgs = load(args.config)
    work = Path(tempfile.mkdtemp(prefix="ladder-overhead-"))
    try:
        timed_fit(cfgs, None, work / "warmup")  # prepares and caches the corpus, imports everything
        rows = []
        for i in range(args.rounds):
            plain, _ = timed_fit(cfgs, None, work / f"plain{i}")
            laddered, record = timed_fit(cfgs, args.ladder_every, work / f"ladder{i}")
            own = record["ladder"]["seconds"]
            points = sorted(p.name for p in (work / f"ladder{i}" / "ladder").iterdir())
            rows.append((plain, laddered, own["validation"], own["writing"]))
            print(f"round {i}: without ladder {plain:.2f} s, with ladder {laddered:.2f} s ({len(points)} points: "
                  f"{', '.join(points)}); the ladder's own time: validation {own['validation']:.3f} s, "
                  f"writing {own['writing']:.3f} s", flush=True)
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        steps = cfgs[3].max_steps
        print(f"median of {args.rounds}: without {med[0]:.2f} s, with {med[1]:.2f} s (difference {med[1] - med[0]:+.2f} "
              f"s); ladder's own validation {med[2]:.3f} s + writing {med[3]:.3f} s = {med[2] + med[3]:.3f} s "
              f"= {100 * (med[2] + med[3]) / med[0]:.1f}% of the run without ladder ({steps} steps, "
              f"ladder every {args.ladder_every})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
