"""How many of EAP-IG-GL's top edges exact patching must measure to recover exact patching's circuits.

On a trained model directory, per task: exact patching of every edge (the ground truth), EAP-IG-GL, and EAP-IG-GL
with its top M edges measured exactly (``eap-ig-gl+exact``'s rescoring) for each M; each ranked on the first half of
the pairs and its N_0.8 (topn / greedy) measured on the held-out half, under mean ablation over windows of the
model's own corpus. Prints one line per task; the seconds are the rescoring's alone.

    python benchmarks/rescore.py runs/tiny --tasks quote_close,bracket_type,indent_after_colon --m 25,50,100,200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from glassformer.analysis import AnalysisConfig, task_batches
from glassformer.analysis.component.attribution import attribute
from glassformer.analysis.component.circuits import rank
from glassformer.analysis.component.faithfulness import Faithfulness, evaluate_ranking
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.component.records import Attribution
from glassformer.analysis.component.rescore import exact_effects, rescore
from glassformer.analysis.component.run import ablated_values
from glassformer.analysis.tasks.base import split_pairs
from glassformer.archs import load_config, load_model_dir
from glassformer.training.evaluate import corpus_windows_for


def n08(fa: Faithfulness, graph: ComponentGraph, att: Attribution) -> str:
    """N_0.8 of the topn and greedy circuits of ``att``, measured by ``fa``."""
    sizes = [evaluate_ranking(fa, rank(s, graph, att.scores))["N_0.8"]["edges"] for s in ("topn", "greedy")]
    return " / ".join(str(n) for n in sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--tasks", required=True, help="comma-separated task names")
    parser.add_argument("--m", default="25,50,100,200", help="comma-separated numbers of edges to measure")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = AnalysisConfig(tasks=args.tasks.split(","), n_pairs=args.pairs, controls=False)
    cfg = load_config(args.model_dir)
    batches, _ = task_batches(args.model_dir, config, cfg)
    corpus, _ = corpus_windows_for(args.model_dir, config.corpus_windows)
    model = load_model_dir(args.model_dir).eval()
    graph = ComponentGraph.from_config(cfg)
    means = ablated_values(model, graph, corpus, "mean")
    for name, batch in batches.items():
        train, held = split_pairs(batch, config.holdout)
        fa = Faithfulness(model, graph, held, "mean", means)

        exact = attribute("exact", model, graph, train, "mean", means)
        estimate = attribute("eap-ig-gl", model, graph, train, "mean", means)
        cells = [f"exact {n08(fa, graph, exact)} ({exact.seconds:.1f} s)", f"eap-ig-gl {n08(fa, graph, estimate)}"]
        order = estimate.scores.argsort(descending=True)
        for m in (int(x) for x in args.m.split(",")):
            start = time.perf_counter()
            measured, _ = exact_effects(model, graph, train, "mean", means, order[:m])
            rescored = Attribution("eap-ig-gl+exact", rescore(estimate, measured, order[:m]), 0.0, 0, 12)
            cells.append(f"M={m} {n08(fa, graph, rescored)} ({time.perf_counter() - start:.1f} s)")
        print(f"{name}: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
