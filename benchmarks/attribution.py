"""Attribution methods timed on component graphs of increasing size, with their completeness checked.

For each size ``LxH`` (the ``--preset`` with ``n_layers = L`` and ``n_heads = H``, randomly initialised), the
``--task`` on the model's own vocabulary, ``--pairs`` pairs, mean ablation over random corpus windows: the time
of each of ``--methods``, its completeness check (the sum of the effects its identity covers against the measured
drop, see ``completeness`` in analysis/component/attribution.py) and, where exact patching ran, the Spearman
correlation of its edge scores with exact's. The table chose ``EXACT_MAX_EDGES`` (benchmarks/RESULTS.md).

    python benchmarks/attribution.py --sizes 2x4,4x4,4x8,6x8 --pairs 32 --threads 1
    python benchmarks/attribution.py --preset gpt2-small --d-vocab 512 --methods eap-ig-act --pairs 16 --threads 1
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from glassformer.analysis.component.ablation import writer_means
from glassformer.analysis.component.attribution import attribute, completeness, resolve_method
from glassformer.analysis.component.faithfulness import Faithfulness
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.tasks import TASKS
from glassformer.archs import build_model, presets


def word_tokenizer(d_vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(d_vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / (ra.norm() * rb.norm()))


def run_size(cfg, args) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    graph = ComponentGraph.from_config(cfg)
    batch = TASKS[args.task].generate(word_tokenizer(cfg.d_vocab), args.pairs, seed=0, max_len=cfg.n_ctx,
                                      d_vocab=cfg.d_vocab)
    T = min(cfg.n_ctx, 32)
    corpus = torch.randint(0, cfg.d_vocab, (16, T), generator=torch.Generator().manual_seed(1))
    means = writer_means(model, graph, corpus)
    attribute("eap-ig", model, graph, batch, "mean", means, ig_steps=1)  # warm-up: allocator, thread pools
    fa = Faithfulness(model, graph, batch, "mean", means)
    print(f"{cfg.n_layers}x{cfg.n_heads} (d_model {cfg.d_model}): {graph.n_edges} edges, task {args.task}, "
          f"{args.pairs} pairs of {batch.clean.shape[1]} tokens, torch threads {torch.get_num_threads()}")
    scores = {}
    for method in args.methods.split(","):
        name, steps = resolve_method(method, graph, args.ig_steps)
        start = time.perf_counter()
        att = attribute(name, model, graph, batch, "mean", means, ig_steps=steps)
        seconds = time.perf_counter() - start
        scores[name] = att.scores
        c = completeness(att, fa)
        check = "-" if c["relative_error"] is None else (
            f"sum {c['attributed']:+.4f} vs measured {c['measured']:+.4f} (error {c['relative_error']:.1%})")
        rho = f", Spearman vs exact {spearman(att.scores, scores['exact']):.3f}" if "exact" in scores and \
            name != "exact" else ""
        print(f"  {name:<10} steps {steps or '-':>3}  {seconds:8.2f} s  {att.forwards:5d} passes  "
              f"completeness {check}{rho}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--sizes", default="", help="comma-separated LxH (layers x heads); default the preset's")
    parser.add_argument("--d-vocab", type=int, default=0, help="vocabulary (0: the preset's)")
    parser.add_argument("--task", default="induction")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--methods", default="exact,eap-ig-act")
    parser.add_argument("--ig-steps", type=int, default=None, help="steps (default: each method's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = presets.get(args.preset)
    if args.d_vocab:
        base = replace(base, d_vocab=args.d_vocab)
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")] if args.sizes else \
        [(base.n_layers, base.n_heads)]
    for layers, heads in sizes:
        run_size(replace(base, n_layers=layers, n_heads=heads), args)


if __name__ == "__main__":
    main()
