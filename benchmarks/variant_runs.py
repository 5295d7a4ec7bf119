"""Train every variant YAML in configs/ for the same number of tokens on the default corpus and tabulate them.

Each config is trained through the real CLI (`glassformer train --config configs/X.yaml`) with the same step
count, batch and context, so every run sees the same tokens; the table reads each model directory's
training.json and its metrics.csv (the last logged MLP L0, dead fraction, activation density at the AbsTopK
sites and weight density of the covered tensors).

    python benchmarks/variant_runs.py --steps 300 --out runs/variants
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["tiny", "topk", "solu", "transcoder", "transcoder_relu", "transcoder_jumprelu", "transcoder_batchtopk",
            "act_sparsity", "ortho", "weight_sparse"]


def last_logged(metrics_csv: Path, prefix: str) -> float | None:
    """The last value of the first column starting with ``prefix`` in a Lightning metrics.csv."""
    if not metrics_csv.is_file():
        return None
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in (rows[0].keys() if rows else []) if c == prefix]
    for row in reversed(rows):
        for c in cols:
            if row.get(c):
                return float(row[c])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default="runs/variants")
    parser.add_argument("--variants", nargs="*", default=VARIANTS)
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for name in args.variants:
        run = out / name
        if not (run / "training.json").is_file():
            cmd = [sys.executable, "-m", "glassformer.training.cli", "train", "--config", str(ROOT / "configs" /
                   f"{name}.yaml"), "--out", str(run), "--trainer.max_steps", str(args.steps),
                   "--trainer.val_every", str(args.steps), "--trainer.checkpoint_every", str(args.steps),
                   "--trainer.progress_bar", "false"]
            t0 = time.time()
            subprocess.run(cmd, check=True)
            print(f"{name}: {time.time() - t0:.0f} s", flush=True)
        t = json.loads((run / "training.json").read_text())
        metrics = run / "logs" / "metrics.csv"
        rows.append({
            "variant": name, "val_loss": t["final"]["loss/val"], "tokens": t["tokens_seen"],
            "l0": last_logged(metrics, "sparsity/l0"), "dead": last_logged(metrics, "sparsity/dead_fraction"),
            "density": last_logged(metrics, "weights/density"), "act": last_logged(metrics, "sparsity/act_density"),
            "wall_s": t["wall_seconds"],
            "tok_s": t["throughput"]["tokens_per_sec"], "unigram": t["final"]["unigram_entropy"],
        })
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print("| variant | val loss (nats) | tokens | MLP L0 | dead fraction | activation density | weight density | "
          "wall (s) | tokens/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['variant']} | {r['val_loss']:.3f} | {r['tokens']:,} | {fmt(r['l0'], '.1f')} | "
              f"{fmt(r['dead'], '.3f')} | {fmt(r['act'], '.3f')} | {fmt(r['density'], '.3f')} | {r['wall_s']:.0f} | "
              f"{r['tok_s']:.0f} |")
    print(f"unigram entropy of the corpus: {rows[0]['unigram']:.3f} nats")


if __name__ == "__main__":
    main()
