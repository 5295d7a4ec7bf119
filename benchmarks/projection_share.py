"""The weight-sparsity projection's share of a CPU training step, and what refreshing its masks less often saves.

A bare training loop (forward, cross-entropy, backward, AdamW step) on random tokens, at a model shape and kept
fractions given on the command line; after every step either the full projection (``project_``: a magnitude
selection over every covered tensor) or, between refreshes, only the last masks re-applied (an in-place
``masked_fill_``, what ``refresh_every`` > 1 does). Prints the mean seconds of the step and of each projection mode
over ``--steps`` steps (after ``--warmup``), measured in the same run, and their ratios.

``--impl both`` projects each step's weights twice, from the same copy, with the sorting reference
(``model.kernels="reference"``) and with the selection path ("auto", which on CPU is ``impl="select"``); it checks
that the two give the same masks and prints both times and their ratio. The step ratios use the last one named.

    python benchmarks/projection_share.py --d-model 256 --d-mlp 1024 --n-layers 4 --d-vocab 2048 \\
        --fraction 0.0625 --embed-fraction 0.25 --threads 1 --impl both
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from glassformer.archs import ModelConfig, build_model
from glassformer.archs.weight_sparsity import WeightSparsityConfig, project_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--d-mlp", type=int, default=1024)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--d-vocab", type=int, default=2048)
    parser.add_argument("--n-ctx", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--fraction", type=float, default=0.0625)
    parser.add_argument("--embed-fraction", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--impl", choices=("reference", "select", "both"), default="select",
                        help="projection path: the sorting reference, the selection path, or both on the same "
                             "weights (default: select, what impl='auto' runs on CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ws = WeightSparsityConfig(fraction=args.fraction, embed_fraction=args.embed_fraction, bias_fraction=0.5)
    cfg = ModelConfig(d_vocab=args.d_vocab, n_ctx=args.n_ctx, d_model=args.d_model, n_layers=args.n_layers,
                      n_heads=args.n_heads, d_mlp=args.d_mlp, weight_sparsity=ws)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    impls = {"reference": ["reference"], "select": ["select"], "both": ["reference", "select"]}[args.impl]
    # project_ reads the kernel choice from the model's config; on CPU tensors "auto" is the select path.
    model_cfgs = {impl: dataclasses.replace(cfg, kernels="auto" if impl == "select" else impl) for impl in impls}
    model.cfg = model_cfgs[impls[-1]]
    masks = project_(model, cfg=ws, progress=1.0)
    params = dict(model.named_parameters())
    step_s, reapply_s = [], []
    full_s: dict[str, list[float]] = {impl: [] for impl in impls}
    for i in range(args.warmup + args.steps):
        tokens = torch.randint(0, args.d_vocab, (args.batch_size, args.n_ctx + 1))
        t0 = time.perf_counter()
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, args.d_vocab), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].data.masked_fill_(~mask, 0)
        t2 = time.perf_counter()
        before = {name: p.detach().clone() for name, p in params.items()} if len(impls) > 1 else None
        by_impl = {}
        for j, impl in enumerate(impls):
            if j > 0:  # the same weights for every path (copying them back is not timed)
                with torch.no_grad():
                    for name, p in params.items():
                        p.copy_(before[name])
            model.cfg = model_cfgs[impl]
            t3 = time.perf_counter()
            by_impl[impl] = project_(model, cfg=ws, progress=1.0)
            if i >= args.warmup:
                full_s[impl].append(time.perf_counter() - t3)
        masks = by_impl[impls[-1]]
        for impl in impls[:-1]:
            assert all(torch.equal(by_impl[impl][name], m) for name, m in masks.items()), f"{impl} masks differ"
        if i >= args.warmup:
            step_s.append(t1 - t0)
            reapply_s.append(t2 - t1)
    step, reapply = (sum(x) / len(x) for x in (step_s, reapply_s))
    fulls = {impl: sum(x) / len(x) for impl, x in full_s.items()}
    full = fulls[impls[-1]]
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {args.n_layers} layers, d_model {args.d_model}, d_mlp {args.d_mlp}, vocab {args.d_vocab}, "
          f"{n / 1e6:.2f}M parameters; kept fraction {args.fraction} (embeddings {args.embed_fraction}); "
          f"batch {args.batch_size} x {args.n_ctx}; {args.threads} thread(s); {args.steps} steps")
    print(f"training step (forward, backward, AdamW): {step * 1e3:.1f} ms")
    for impl, t in fulls.items():
        print(f"full projection, {impl} (over every tensor): {t * 1e3:.1f} ms = {t / step:.2f}x the step "
              f"({t / (step + t):.0%} of step + projection)")
    if len(fulls) > 1:
        print(f"reference / select: {fulls['reference'] / fulls['select']:.1f}x (same weights, same masks)")
    print(f"masks re-applied (between refreshes): {reapply * 1e3:.2f} ms = {reapply / step:.3f}x the step")
    for every in (1, 4, 16):
        per_step = step + (full + (every - 1) * reapply) / every
        print(f"refresh every {every:>2} steps: {per_step / (step + full):.2f}x the time per step of refreshing "
              f"every step")


if __name__ == "__main__":
    main()
