"""Training throughput: the Lightning path versus a bare PyTorch loop, same model, same batches, one run.

Both paths do the same work per step: forward, cross-entropy plus auxiliary losses, backward, gradient clipping,
AdamW and the LR schedule. Timing starts after ``--warmup`` steps so one-off costs (allocation, Lightning's setup)
are excluded from both. Prints tokens/s for each and the ratio Lightning / bare (target: >= 0.9).

    python benchmarks/train_throughput.py --preset tiny --steps 40 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from glassformer.archs import presets
from glassformer.training.config import OptimConfig
from glassformer.training.module import LanguageModel, optim_dict


class StepTimer(Callback):
    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1, self.steps = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, idx):
        if idx == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, idx):
        if idx >= self.warmup:
            self.t1, self.steps = time.perf_counter(), self.steps + 1


def bare_loop(module: LanguageModel, batches: list[torch.Tensor], warmup: int, grad_clip: float) -> float:
    opt_cfg = module.configure_optimizers()
    optimizer, scheduler = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    model = module.model.train()
    t0 = 0.0
    for i, batch in enumerate(batches):
        if i == warmup:
            t0 = time.perf_counter()
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
        aux = model.aux_losses()
        if aux:
            loss = loss + sum(aux.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - t0


def lightning_run(module: LanguageModel, batches: list[torch.Tensor], warmup: int, grad_clip: float) -> float:
    """Seconds for the timed steps of ``trainer.fit`` over ``batches`` (the same work as :func:`bare_loop`)."""
    timer = StepTimer(warmup)
    trainer = L.Trainer(max_steps=len(batches), logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=grad_clip, accelerator="cpu",
                        devices=1, limit_val_batches=0, callbacks=[timer])
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return timer.t1 - timer.t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="bare and Lightning runs alternate this many times; the median of each is reported, "
                             "so a burst of load on a shared machine hits both paths alike")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = presets.get(args.preset)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.d_vocab, (args.batch_size, cfg.n_ctx + 1), generator=gen)
               for _ in range(args.steps)]
    tokens_per_step = args.batch_size * cfg.n_ctx
    timed = args.steps - args.warmup
    optim = OptimConfig()

    def fresh() -> LanguageModel:
        torch.manual_seed(0)
        return LanguageModel(cfg.to_dict(), optim_dict(optim), max_steps=args.steps)

    print(f"preset {args.preset}: {timed} timed steps of {tokens_per_step} tokens per run, {args.rounds} rounds, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bare, lit = [], []
    for r in range(args.rounds):
        bare.append(timed * tokens_per_step / bare_loop(fresh(), batches, args.warmup, optim.grad_clip))
        lit.append(timed * tokens_per_step / lightning_run(fresh(), batches, args.warmup, optim.grad_clip))
        print(f"round {r + 1}: bare {bare[-1]:8.0f} tokens/s, Lightning {lit[-1]:8.0f} tokens/s, "
              f"ratio {lit[-1] / bare[-1]:.3f}", flush=True)
    bare_tps, lit_tps = statistics.median(bare), statistics.median(lit)
    print(f"bare PyTorch loop : {bare_tps:9.0f} tokens/s (median)")
    print(f"Lightning module  : {lit_tps:9.0f} tokens/s (median)")
    print(f"ratio Lightning / bare = {lit_tps / bare_tps:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
