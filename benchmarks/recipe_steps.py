"""Seconds per training step of every recipe YAML in a folder, on the CPU: what a sweep of them will cost.

Each model (the YAML's model section) runs ``--steps`` steps of ``--batch-size`` x (n_ctx + 1) random tokens
after one warm-up step: forward, cross-entropy plus auxiliary losses, backward, AdamW, and for weight-sparse
models the projection at the annealed targets. Prints the mean seconds per step and the minutes the YAML's own
``trainer.max_steps`` would take at that rate (validation, checkpoints and data loading not included).

    python benchmarks/recipe_steps.py --configs configs/paper --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from glassformer.archs import ModelConfig, build_model
from glassformer.archs.weight_sparsity import project_


def step_seconds(cfg: ModelConfig, steps: int, batch_size: int) -> float:
    """Mean seconds of ``steps`` training steps after one warm-up."""
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for i in range(steps + 1):
        tokens = torch.randint(0, cfg.d_vocab, (batch_size, cfg.n_ctx + 1))
        start = time.perf_counter()
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg.d_vocab), tokens[:, 1:].reshape(-1))
        loss = loss + sum(model.aux_losses().values(), torch.zeros(()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cfg.weight_sparsity is not None:
            project_(model, cfg=cfg.weight_sparsity, progress=1.0)
        if i:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=Path, default=Path("configs/paper"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{args.configs}: {args.steps} steps of {args.batch_size} sequences, {args.threads} thread(s)")
    for path in sorted(args.configs.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        cfg = ModelConfig.from_dict(raw["model"])
        seconds = step_seconds(cfg, args.steps, args.batch_size)
        max_steps = raw.get("trainer", {}).get("max_steps", 0)
        print(f"{path.stem:<16} {seconds:.3f} s/step  {max_steps} steps: {seconds * max_steps / 60:.1f} min",
              flush=True)


if __name__ == "__main__":
    main()
