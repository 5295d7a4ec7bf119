"""The capability gate of every task on trained model directories, without sizing any circuit.

For each model directory: its validation loss (training.json), then per task the gate the analysis applies before
sizing (the whole model against the empty circuit under mean ablation over windows of the model's own corpus:
one-sided paired t-test, binomial accuracy test, minimum gap; ``glassformer.analysis.capability``), with accuracy
and gap. It costs two patched forwards per task, so it is the cheap way to compare training recipes by how many
tasks they give the model capability on (the recipe-levers table in benchmarks/RESULTS.md).

    python benchmarks/capability_gate.py runs/tiny runs/tiny-v2048 --pairs 100 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from glassformer.analysis import AnalysisConfig, task_batches
from glassformer.analysis.capability import capability_gate, model_logit_diffs
from glassformer.analysis.component.faithfulness import Faithfulness
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.component.run import ablated_values, values_for
from glassformer.archs import load_config, load_model_dir, read_training
from glassformer.training.evaluate import corpus_windows_for


def gate_model(model_dir: Path, config: AnalysisConfig) -> dict:
    """Validation loss and the gate record of every task of ``config`` on ``model_dir``."""
    cfg = load_config(model_dir)
    batches, skipped = task_batches(model_dir, config, cfg)
    corpus, _ = corpus_windows_for(model_dir, config.corpus_windows)
    model = load_model_dir(model_dir).eval()
    graph = ComponentGraph.from_config(cfg)
    means = values_for(ablated_values(model, graph, corpus, config.ablation), config.ablation, config.ablation)
    tasks = {}
    for name, batch in batches.items():
        fa = Faithfulness(model, graph, batch, config.ablation, means)
        empty = fa.per_pair(torch.zeros(1, graph.n_edges, dtype=torch.bool))[0]
        tasks[name] = capability_gate(model_logit_diffs(model, batch), empty, alpha=config.gate_alpha,
                                      min_logit_diff=config.gate_min_logit_diff)
    training = read_training(model_dir) or {}
    return {"model_dir": str(model_dir), "val_loss": training.get("val_loss"),
            "n_capable": sum(bool(t["passed"]) for t in tasks.values()), "n_tasks": len(tasks),
            "tasks": tasks, "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", nargs="+", type=Path)
    parser.add_argument("--pairs", type=int, default=AnalysisConfig().n_pairs)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the records here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = AnalysisConfig(n_pairs=args.pairs, controls=False)
    records = []
    for d in args.model_dirs:
        r = gate_model(d, config)
        records.append(r)
        print(f"{d}: val_loss {r['val_loss']}, capability on {r['n_capable']} of {r['n_tasks']} tasks")
        for name, g in r["tasks"].items():
            verdict = "in " if g["passed"] else "out"
            print(f"  {name:<20} {verdict} acc {g.get('accuracy', float('nan')):.2f} "
                  f"gap {g.get('gap', float('nan')):+.2f}  {'; '.join(g['reasons'])}")
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
