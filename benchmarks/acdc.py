"""ACDC against exact patching and EAP-IG on the ``tiny`` preset's component graph: time and N_0.8, side by side.

The same setting as ``benchmarks/attribution.py``: a randomly initialised ``tiny`` model (4 layers, 4 heads: 479
edges), the induction task on its own vocabulary, mean ablation over random corpus windows. For each method it
prints the time, the model passes, and N_0.8 of its top-n ranking measured by the faithfulness machinery
(``evaluate_ranking``); for ACDC also the edges it kept and the faithfulness of exactly that circuit. The KL of the
empty circuit is printed so the threshold can be read against it.

    python benchmarks/acdc.py --pairs 32 --threads 2 --threshold 1e-4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attribution import word_tokenizer  # noqa: E402  (the sibling benchmark's tokenizer)

from glassformer.analysis.component.ablation import (
    default_max_tokens,  # noqa: E402
    writer_means,  # noqa: E402
)
from glassformer.analysis.component.acdc import _KL  # noqa: E402
from glassformer.analysis.component.attribution import attribute  # noqa: E402
from glassformer.analysis.component.circuits import rank  # noqa: E402
from glassformer.analysis.component.faithfulness import Faithfulness, evaluate_ranking  # noqa: E402
from glassformer.analysis.component.graph import ComponentGraph  # noqa: E402
from glassformer.analysis.tasks import TASKS  # noqa: E402
from glassformer.archs import build_model, presets  # noqa: E402


def train_induction(model: torch.nn.Module, steps: int, batch: int = 32) -> None:
    """Brief training on ``r_1 .. r_n r_1 .. r_n`` windows, the loss on the repeat: enough for induction heads, so
    the methods are compared on a model with a circuit to find. ``n`` changes every step (5 to 16): with one fixed
    ``n`` the model learns to copy from a fixed distance back instead of by induction."""
    d_vocab = model.cfg.d_vocab
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(2)
    start = time.perf_counter()
    for step in range(steps):
        half = int(torch.randint(5, 17, (), generator=gen))
        first = torch.randint(0, d_vocab, (batch, half), generator=gen)
        tokens = torch.cat([first, first], dim=1)
        logits = model(tokens[:, :-1])[:, half:]  # predictions of the repeated half
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, d_vocab), tokens[:, half + 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"train step {step}: repeat loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--task", default="induction")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=1e-4, help="ACDC's acdc_threshold (nats of KL)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="AdamW steps on repeated random tokens before measuring (0: the random init)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = presets.get(args.preset)
    model = build_model(cfg)
    if args.train_steps:
        train_induction(model, args.train_steps)
    model.eval()
    graph = ComponentGraph.from_config(cfg)
    batch = TASKS[args.task].generate(word_tokenizer(cfg.d_vocab), args.pairs, seed=0, max_len=cfg.n_ctx,
                                      d_vocab=cfg.d_vocab)
    corpus = torch.randint(0, cfg.d_vocab, (16, cfg.n_ctx), generator=torch.Generator().manual_seed(1))
    means = writer_means(model, graph, corpus)
    attribute("eap-ig", model, graph, batch, "mean", means, ig_steps=1)  # warm-up: allocator, thread pools
    kl = _KL(model, graph, batch, "mean", means, default_max_tokens(cfg, graph))
    kl_empty = float(kl(torch.zeros(1, graph.n_edges))[0])

    fa = Faithfulness(model, graph, batch, "mean", means)
    print(f"preset {args.preset}: {graph.n_edges} edges, task {args.task}, {args.pairs} pairs of "
          f"{batch.clean.shape[1]} tokens, torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.1f}; KL(model || empty circuit) {kl_empty:.4g} nats; logit-diff gap "
          f"{fa.gap:.4g} (signal: {fa.signal})")
    print("| method | time | model passes | N_0.8 (top-n, edges) | note |")
    print("| --- | --- | --- | --- | --- |")
    runs = [("acdc", {"acdc_threshold": args.threshold}), ("exact", {}), ("eap-ig", {"ig_steps": args.ig_steps})]
    for method, kwargs in runs:
        start = time.perf_counter()
        att = attribute(method, model, graph, batch, "mean", means, **kwargs)
        seconds = time.perf_counter() - start
        n08 = evaluate_ranking(fa, rank("topn", graph, att.scores))["N_0.8"]
        note = ""
        if method == "acdc":
            f_kept = float(fa.f(att.kept[None])[0])
            note = f"threshold {args.threshold:g}: kept {att.n_kept} edges, f(kept circuit) = {f_kept:.3f}"
        elif method == "eap-ig":
            note = f"{args.ig_steps} steps"
        print(f"| {method} | {seconds:.2f} s | {att.forwards} | {n08['edges']} (bracket {n08['bracket']}) "
              f"| {note} |")


if __name__ == "__main__":
    main()
