"""Exact patching of chosen edges with each forward started at its edges' block (the default) against every forward
run from the input, measured in one run, with the effects checked equal.

On a GPT-2-small-shaped graph (random weights, 12 layers x 12 heads, 32,491 edges) this is the exact stage of the
default method above the exact-patching budget (``eap-ig-gl+exact``): its ``--edges`` edges, here drawn at random
from every block (EAP-IG-GL's top edges lie anywhere), 16 induction pairs, mean ablation, one thread.

    python benchmarks/exact_from_block.py --preset gpt2-small --d-vocab 512 --edges 200 --pairs 16 --threads 1
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from attribution import word_tokenizer  # benchmarks/attribution.py, beside this script

from glassformer.analysis.component.ablation import writer_means
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.component.rescore import exact_effects
from glassformer.analysis.tasks import TASKS
from glassformer.archs import build_model, presets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpt2-small")
    parser.add_argument("--d-vocab", type=int, default=512)
    parser.add_argument("--edges", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--task", default="induction")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = replace(presets.get(args.preset), d_vocab=args.d_vocab)
    model = build_model(cfg).eval()
    graph = ComponentGraph.from_config(cfg)
    batch = TASKS[args.task].generate(word_tokenizer(cfg.d_vocab), args.pairs, seed=0, max_len=cfg.n_ctx,
                                      d_vocab=cfg.d_vocab)
    corpus = torch.randint(0, cfg.d_vocab, (16, min(cfg.n_ctx, 32)), generator=torch.Generator().manual_seed(1))
    means = writer_means(model, graph, corpus)
    edges = torch.randperm(graph.n_edges, generator=torch.Generator().manual_seed(2))[: args.edges]
    times, results = {}, {}
    for from_block in (True, False):
        start = time.perf_counter()
        results[from_block], _ = exact_effects(model, graph, batch, "mean", means, edges, from_block=from_block)
        times[from_block] = time.perf_counter() - start
    gap = (results[True] - results[False]).abs().max().item()
    print(f"{args.preset} ({cfg.n_layers}x{cfg.n_heads}, {graph.n_edges} edges), {args.edges} edges, {args.pairs} "
          f"pairs of {args.task}, {args.threads} thread(s)")
    print(f"from each edge's block: {times[True]:.2f} s; from the input: {times[False]:.2f} s; "
          f"ratio {times[False] / times[True]:.2f}x; largest difference in effect {gap:.2e}")


if __name__ == "__main__":
    main()
