"""The TopK / AbsTopK activation on CPU: the sorting reference against the select path, measured in one run.

Two shapes: AbsTopK over (2048, 192) keeping 48 (activation sparsity at 25% on d_model 192, 16 x 128 tokens) and
TopK over (2048, 512) keeping 32 (a transcoder's latents). For each, the forward alone and forward plus backward,
reference and select alternating on the same input, their outputs and gradients checked bit-identical; prints the
median milliseconds and the ratio.

``--model-step CONFIG`` also times training steps (forward, cross-entropy, backward, AdamW; no weight projection,
which takes the select path either way) of CONFIG's model section, once with ``kernels: reference`` (what "auto"
ran on CPU before the select path) and once with ``kernels: auto`` (now the select path), two copies of one model
stepped in turn on the same tokens; their losses must stay equal.

    python benchmarks/topk_select.py --threads 1 --model-step configs/paper/weight_sparse.yaml
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import yaml

from glassformer.archs import ModelConfig, build_model
from glassformer.kernels import topk_activation
from glassformer.kernels.testing import assert_bits_equal

CASES = [("AbsTopK", (2048, 192), 48, True), ("TopK", (2048, 512), 32, False)]
IMPLS = ("reference", "select")


def time_op(x: torch.Tensor, k: int, use_abs: bool, backward: bool, repeats: int) -> dict[str, float]:
    """Median seconds per call of each impl, alternating them; checks the outputs (and gradients) are equal."""
    g = torch.randn_like(x)
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for i in range(repeats + 1):  # the first round warms up and is not counted
        results = {}
        for impl in IMPLS:
            xi = x.detach().clone().requires_grad_(backward)
            t0 = time.perf_counter()
            y = topk_activation(xi, k, use_abs=use_abs, impl=impl)
            if backward:
                y.backward(g)
            if i > 0:
                times[impl].append(time.perf_counter() - t0)
            results[impl] = (y.detach(), xi.grad)
        assert_bits_equal(results["select"][0], results["reference"][0], "y")
        if backward:
            assert_bits_equal(results["select"][1], results["reference"][1], "dx")
    return {impl: statistics.median(t) for impl, t in times.items()}


def time_model_step(config: str, steps: int, warmup: int) -> dict[str, float]:
    """Median seconds per training step with kernels "reference" and "auto", on two copies of one model."""
    with open(config) as f:
        model_dict = yaml.safe_load(f)["model"]
    torch.manual_seed(0)
    models, opts = {}, {}
    for kernels in ("reference", "auto"):
        cfg = ModelConfig.from_dict({**model_dict, "kernels": kernels})
        models[kernels] = build_model(cfg)
        if kernels == "auto":
            models[kernels].load_state_dict(models["reference"].state_dict())
        opts[kernels] = torch.optim.AdamW(models[kernels].parameters(), lr=1e-3)
    cfg = models["auto"].cfg
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(warmup + steps):
        tokens = torch.randint(0, cfg.d_vocab, (16, cfg.n_ctx + 1))
        losses = {}
        for kernels, model in models.items():
            t0 = time.perf_counter()
            logits = model(tokens[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, cfg.d_vocab), tokens[:, 1:].reshape(-1))
            opts[kernels].zero_grad(set_to_none=True)
            loss.backward()
            opts[kernels].step()
            if i >= warmup:
                times[kernels].append(time.perf_counter() - t0)
            losses[kernels] = loss.item()
        assert losses["reference"] == losses["auto"], f"step {i}: losses differ {losses}"
    return {k: statistics.median(t) for k, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model-step", metavar="CONFIG", help="also time training steps of CONFIG's model")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{args.threads} thread(s), median of {args.repeats} calls each, outputs and gradients bit-identical")
    for name, shape, k, use_abs in CASES:
        x = torch.randn(shape)
        for backward in (False, True):
            t = time_op(x, k, use_abs, backward, args.repeats)
            what = "forward+backward" if backward else "forward"
            print(f"{name} {shape} k={k} {what:>16}: reference {t['reference'] * 1e3:7.2f} ms, "
                  f"select {t['select'] * 1e3:6.2f} ms, {t['reference'] / t['select']:.1f}x")
    if args.model_step:
        t = time_model_step(args.model_step, args.steps, args.warmup)
        print(f"training step of {args.model_step}'s model (median of {args.steps}, losses equal): "
              f"kernels reference {t['reference']:.2f} s, auto (select) {t['auto']:.2f} s, "
              f"{t['reference'] / t['auto']:.2f}x")


if __name__ == "__main__":
    main()
