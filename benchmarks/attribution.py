"""Exact patching versus EAP-IG on the ``tiny`` preset's component graph, one task, one run.

A randomly initialised ``tiny`` model (4 layers, 4 heads: 479 edges), the induction task on its own vocabulary,
mean ablation over random corpus windows. Exact patching runs one forward per edge (batched as replicas);
EAP-IG runs ``--ig-steps`` forward/backward passes. Prints both times, their ratio (target: EAP-IG >= 10x
faster) and the rank correlation of the two methods' edge scores.

    python benchmarks/attribution.py --pairs 32 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from glassformer.analysis.component.ablation import writer_means
from glassformer.analysis.component.attribution import attribute
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--task", default="induction")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = presets.get(args.preset)
    model = build_model(cfg).eval()
    graph = ComponentGraph.from_config(cfg)
    batch = TASKS[args.task].generate(word_tokenizer(cfg.d_vocab), args.pairs, seed=0, max_len=cfg.n_ctx,
                                      d_vocab=cfg.d_vocab)
    corpus = torch.randint(0, cfg.d_vocab, (16, cfg.n_ctx), generator=torch.Generator().manual_seed(1))
    means = writer_means(model, graph, corpus)
    attribute("eap-ig", model, graph, batch, "mean", means, ig_steps=1)  # warm-up: allocator, thread pools

    start = time.perf_counter()
    ig = attribute("eap-ig", model, graph, batch, "mean", means, ig_steps=args.ig_steps)
    t_ig = time.perf_counter() - start
    start = time.perf_counter()
    exact = attribute("exact", model, graph, batch, "mean", means)
    t_exact = time.perf_counter() - start

    print(f"preset {args.preset}: {graph.n_edges} edges, task {args.task}, {args.pairs} pairs of "
          f"{batch.clean.shape[1]} tokens, torch threads {torch.get_num_threads()}")
    print(f"exact patching  {t_exact:8.2f} s  ({exact.forwards} batched forwards)")
    print(f"EAP-IG (m={args.ig_steps})    {t_ig:8.2f} s  ({ig.forwards} forward/backward)")
    print(f"ratio exact / EAP-IG: {t_exact / t_ig:.1f}x (target >= 10x)")
    print(f"Spearman correlation of edge scores: {spearman(ig.scores, exact.scores):.3f}")


if __name__ == "__main__":
    main()
