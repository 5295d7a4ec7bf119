"""Training throughput and model FLOPs utilisation, per variant, on the Lightning path and a bare PyTorch loop.

Both paths do the same work per step: forward, cross-entropy plus auxiliary losses, backward, gradient clipping,
AdamW, the LR schedule, and (weight-sparse variants) the magnitude projection after each step. Timing starts
after ``--warmup`` steps so one-off costs (allocation, Lightning's setup, kernel compilation) are excluded from
both. Prints tokens/s for each path and the ratio Lightning / bare (target: >= 0.9), and the model FLOPs
utilisation: model FLOPs per token (:func:`train_flops_per_token`) times tokens/s, over the rate of a large matrix
multiply in the training's dtype timed in the same run.

    python benchmarks/train_throughput.py --preset tiny --steps 40 --rounds 3
    python benchmarks/train_throughput.py --preset small --device cuda --precision bf16-mixed \\
        --variants dense transcoder weight_sparse --paths lightning --rounds 1 --json throughput.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from types import SimpleNamespace

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from glassformer.archs import ModelConfig, presets
from glassformer.training.callbacks import WeightSparsityCallback
from glassformer.training.config import OptimConfig
from glassformer.training.module import LanguageModel, optim_dict

# The three variants the GPU check compares, as overrides of a preset. The transcoder and the weight sparsity
# are those of configs/transcoder.yaml and configs/weight_sparse.yaml, at the preset's own shape.
VARIANTS: dict[str, dict] = {
    "dense": {},
    "transcoder": {"mlp": {"kind": "transcoder", "activation": "topk", "expansion_factor": 4, "k": 32}},
    "weight_sparse": {"weight_sparsity": {"fraction": 0.25, "embed_fraction": 0.5, "bias_fraction": 0.5,
                                          "anneal_start": 0.01, "anneal_end": 0.5, "min_per_neuron": 4,
                                          "lr_scaling": True}},
}
PATHS = ("bare", "lightning")


def variant_config(preset: str, variant: str) -> ModelConfig:
    """The model config of ``variant`` (a key of :data:`VARIANTS`) at ``preset``.

    Example:
        >>> variant_config("small", "transcoder").mlp.k
        32
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not allowed: expected one of {', '.join(VARIANTS)}")
    return presets.get(preset, **VARIANTS[variant])


def forward_flops_per_token(cfg: ModelConfig) -> dict[str, float]:
    """Forward FLOPs per token by kind: dense matrix multiplies, attention scores, the sparse decode.

    Conventions (PaLM's): a multiply-add is 2 FLOPs; attention scores and their product with the values count
    the full context (``2 * 2 * n_ctx * n_heads * d_head`` per layer), causal masking notwithstanding; embeddings
    and norms count nothing. Weight-sparse models count their dense matrices: the hardware multiplies the zeros.
    A TopK transcoder's decoder counts its ``k`` active rows, as the sparse decode reads only those.

    Example:
        >>> from glassformer.archs import presets
        >>> forward_flops_per_token(presets.get("debug"))["attention"]  # 2 layers * 2 * 2 * 64 * 64
        32768
    """
    d, layers = cfg.d_model, cfg.n_layers
    d_attn = cfg.n_heads * cfg.head_dim
    matmul = 2 * 4 * d * d_attn  # W_Q, W_K, W_V, W_O
    sparse = 0
    mlp = cfg.mlp_config
    if not cfg.attn_only:
        if mlp.kind == "transcoder":
            n = mlp.n_latents(d)
            matmul += 2 * d * n + (2 * d * d if mlp.skip else 0)
            if mlp.activation == "topk":
                sparse = 2 * mlp.k * d
            else:  # the other activations decode through a dense (tokens, n_latents) code matrix
                matmul += 2 * n * d
        elif mlp.kind in ("dense", "solu", "topk"):
            matmul += 2 * 2 * d * cfg.mlp_width
        else:
            raise ValueError(f"model.mlp.kind={mlp.kind!r}: no FLOP count for it (dense, solu, topk, transcoder)")
    return {"matmul": layers * matmul + 2 * d * cfg.d_vocab, "attention": layers * 2 * 2 * cfg.n_ctx * d_attn,
            "sparse_decode": layers * sparse}


def train_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token: three times the forward's (the backward computes two products per one).

    Example:
        >>> from glassformer.archs import presets
        >>> train_flops_per_token(presets.get("debug")) == 3 * sum(forward_flops_per_token(presets.get("debug")).values())
        True
    """
    return 3.0 * sum(forward_flops_per_token(cfg).values())


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_tflops(device: str, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """Measured TFLOP/s of an ``n x n x n`` matrix multiply in ``dtype`` (the best of ``reps``, after a warm-up).

    Example:
        >>> matmul_tflops("cpu", torch.float32, 64, reps=2) > 0
        True
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


class StepTimer(Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch (the device synchronised)."""

    def __init__(self, warmup: int, last: int, device: str):
        self.warmup, self.last, self.device, self.t0, self.t1 = warmup, last, device, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, idx):
        if idx == self.warmup:
            sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, idx):
        if idx == self.last:
            sync(self.device)
            self.t1 = time.perf_counter()


def _autocast(device: str, precision: str):
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))


def bare_loop(module: LanguageModel, batches: list[torch.Tensor], warmup: int, grad_clip: float,
              device: str = "cpu", precision: str = "32-true") -> float:
    """Seconds for the timed steps of a plain PyTorch loop doing the work of ``trainer.fit``."""
    model = module.model.to(device).train()
    opt_cfg = module.configure_optimizers()
    optimizer, scheduler = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    sparsity = WeightSparsityCallback() if model.cfg.weight_sparsity is not None else None
    # What the projection reads of a trainer: the run length and the optimizers whose state it zeroes.
    trainer = SimpleNamespace(max_steps=len(batches), optimizers=[optimizer])
    if sparsity is not None:
        sparsity.project(trainer, module, 0)
    t0 = 0.0
    for i, batch in enumerate(batches):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        with _autocast(device, precision):
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
        if sparsity is not None:
            sparsity.project(trainer, module, i + 1)
    sync(device)
    return time.perf_counter() - t0


def lightning_run(module: LanguageModel, batches: list[torch.Tensor], warmup: int, grad_clip: float,
                  device: str = "cpu", precision: str = "32-true") -> float:
    """Seconds for the timed steps of ``trainer.fit`` over ``batches`` (the same work as :func:`bare_loop`)."""
    timer = StepTimer(warmup, len(batches) - 1, device)
    callbacks: list[Callback] = [timer]
    if module.model_cfg.weight_sparsity is not None:
        callbacks.insert(0, WeightSparsityCallback())
    trainer = L.Trainer(max_steps=len(batches), logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=grad_clip,
                        accelerator="gpu" if device == "cuda" else "cpu", precision=precision,
                        devices=1, limit_val_batches=0, callbacks=callbacks)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return timer.t1 - timer.t0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["dense"])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="the paths alternate this many times; the median of each is reported, "
                             "so a burst of load on a shared machine hits both paths alike")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed on a GPU")
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="side of the timed matrix multiply (default 8192 on cuda, 512 on cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.warmup >= args.steps:
        parser.error(f"--warmup={args.warmup} must be below --steps={args.steps}: no step would be timed")
    return args


def measure_variant(args: argparse.Namespace, variant: str, peak_tflops: float) -> dict:
    """Tokens/s of each path (median over rounds) and the MFU of each, for one variant."""
    cfg = variant_config(args.preset, variant)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.d_vocab, (args.batch_size, cfg.n_ctx + 1), generator=gen).to(args.device)
               for _ in range(args.steps)]
    tokens = (args.steps - args.warmup) * args.batch_size * cfg.n_ctx
    optim = OptimConfig()
    runners = {"bare": bare_loop, "lightning": lightning_run}
    per_path: dict[str, list[float]] = {p: [] for p in args.paths}
    n_params = 0
    for r in range(args.rounds):
        for path in args.paths:
            torch.manual_seed(0)
            module = LanguageModel(cfg.to_dict(), optim_dict(optim), max_steps=args.steps)
            n_params = sum(p.numel() for p in module.model.parameters())
            seconds = runners[path](module, batches, args.warmup, optim.grad_clip, args.device, args.precision)
            per_path[path].append(tokens / seconds)
        print(f"{variant} round {r + 1}: " + ", ".join(f"{p} {v[-1]:9.0f} tokens/s" for p, v in per_path.items()),
              flush=True)
    flops = train_flops_per_token(cfg)
    out = {"variant": variant, "flops_per_token": flops, "tokens_per_step": args.batch_size * cfg.n_ctx,
           "n_params": n_params}
    for path, values in per_path.items():
        tps = statistics.median(values)
        out[path] = {"tokens_per_sec": tps, "rounds": values, "mfu": flops * tps / (peak_tflops * 1e12),
                     "steps_per_sec": tps / out["tokens_per_step"]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if args.precision.startswith("bf16") else torch.float32
    size = args.matmul_size or (8192 if args.device == "cuda" else 512)
    peak = matmul_tflops(args.device, dtype, size)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"preset {args.preset} on {name}: {args.steps - args.warmup} timed steps of batch {args.batch_size}, "
          f"{args.rounds} rounds, {args.precision}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{str(dtype).removeprefix('torch.')} {size}^3 matmul: {peak:.3g} TFLOP/s", flush=True)
    results = [measure_variant(args, v, peak) for v in args.variants]
    print("| variant | path | tokens/s | steps/s | model GFLOP/token | MFU |")
    print("| --- | --- | --- | --- | --- | --- |")
    for res in results:
        for path in args.paths:
            p = res[path]
            print(f"| {res['variant']} | {path} | {p['tokens_per_sec']:.0f} | {p['steps_per_sec']:.2f} | "
                  f"{res['flops_per_token'] / 1e9:.4f} | {p['mfu']:.3f} |")
    for res in results if set(PATHS) <= set(args.paths) else []:
        ratio = res["lightning"]["tokens_per_sec"] / res["bare"]["tokens_per_sec"]
        print(f"{res['variant']}: ratio Lightning / bare = {ratio:.3f}  (target >= 0.9)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "preset": args.preset, "precision": args.precision, "matmul_size": size,
                       "matmul_tflops": peak, "batch_size": args.batch_size, "timed_steps": args.steps - args.warmup,
                       "variants": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
