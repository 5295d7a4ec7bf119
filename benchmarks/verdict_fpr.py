"""The verdict's false-positive rate and power, simulated: how often the rule calls "smaller" or "larger" when two
groups of seeds share one config (the null), and how often it calls a planted 2x or 4x difference the right way.

The setting of the engineer's scratch study (fpr.py): each model's (seed's) log N_0.8 on a task is the task's
level, plus a seed effect shared across tasks (sd ``--sigma`` 0.17 in the log, the scratch study's value; the
four induction models of tests/analysis/test_verdict_null.py, 250 steps, spread 0.29: try ``--sigma 0.34``), plus a measurement noise per task and seed (sd ``--tau`` 0.03 on a
seed's geometric mean over the tasks, so ``tau * sqrt(n_tasks)`` per task: what resampling held-out pairs moves a
size by); the variant's sizes are the baseline's times the planted factor.

Columns:
- **old rule**: the rule before this change, simulated as in fpr.py: a percentile interval of ``--n-boot``
  bootstrap samples that resamples each side's seeds and adds the pair noise, excluding 1, and the ratio outside
  the baseline's seed-to-seed spread (no call with one baseline seed);
- **welch alone**: the Welch t interval over seeds excludes 1 (``intervals.welch_interval``), without the spread;
- **new rule**: the call that ``verdict.decide`` makes from ``intervals.seed_ratio`` and ``intervals.seed_spread``
  (the report's own code on each simulated comparison).

A rate is the fraction of ``--n-sim`` simulated comparisons with a call ("smaller" or "larger"; for a planted
difference, the right direction), with its 95% Wilson interval; "wrong way" counts calls against the planted
direction. Seeded: the same arguments print the same table.

    python benchmarks/verdict_fpr.py                  # the table of benchmarks/RESULTS.md
    python benchmarks/verdict_fpr.py --n-sim 2000     # quicker, coarser
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from glassformer.analysis.report.intervals import Subject, seed_ratio, seed_spread, welch_interval
from glassformer.analysis.report.verdict import decide

TASK_SIZES = (40.0, 24.0, 60.0)
"""Each task's baseline size (edges); the ratio does not depend on them, the floor at 1 is never reached."""
NULL = [(1, 1), (2, 1), (3, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
POWER = [(2, 2), (3, 3), (4, 4), (5, 5)]
FACTORS = (0.5, 0.25)


def draw(rng: np.random.Generator, k: int, sigma: float, tau: float, n_tasks: int, tails: str) -> np.ndarray:
    """(k, n_tasks) log sizes of k seeds around zero: a seed effect shared by the tasks plus per-task noise (tau
    on the mean over the tasks)."""
    if tails == "normal":
        seed = sigma * rng.standard_normal((k, 1))
    else:  # Student t with 3 df scaled to sd sigma: heavy tails, a few seeds far out
        seed = sigma * rng.standard_t(3, (k, 1)) / math.sqrt(3.0)
    return seed + tau * math.sqrt(n_tasks) * rng.standard_normal((k, n_tasks))


def old_rule(rng: np.random.Generator, lv: np.ndarray, lb: np.ndarray, tau: float, n_boot: int) -> bool:
    """fpr.py's rule: the bootstrap interval of the log ratio (seeds resampled where a side has several, pair
    noise added per sample) excludes 0, and |ratio| exceeds the baseline's largest seed-to-seed log ratio."""
    def boot(logs: np.ndarray) -> np.ndarray:
        per_seed = logs.mean(axis=1)
        k = len(per_seed)
        pick = rng.integers(0, k, (n_boot, k)) if k > 1 else np.zeros((n_boot, 1), dtype=int)
        return (per_seed[pick] + tau * rng.standard_normal((n_boot, k))).mean(axis=1)

    lo, hi = np.percentile(boot(lv) - boot(lb), [2.5, 97.5])
    if len(lb) < 2 or not (hi < 0 or lo > 0):
        return False
    per_seed = lb.mean(axis=1)
    return abs(lv.mean() - lb.mean()) > np.ptp(per_seed)


def new_rule(lv: np.ndarray, lb: np.ndarray) -> tuple[str, bool]:
    """(the report's call, whether the Welch interval alone excludes 1) for one simulated comparison."""
    tasks = [f"t{i}" for i in range(lv.shape[1])]

    def subjects(side: str, logs: np.ndarray) -> list[Subject]:
        return [Subject(f"{side}{s}", {t: TASK_SIZES[i % len(TASK_SIZES)] * math.exp(x)
                                       for i, (t, x) in enumerate(zip(tasks, row, strict=True))}, {})
                for s, row in enumerate(logs)]

    vs, bs = subjects("v", lv), subjects("b", lb)
    r = seed_ratio(vs, bs, tasks)
    call, _ = decide(r["ratio"], r["lo"], r["hi"], seed_spread(bs, tasks), (len(vs), len(bs)))
    w = welch_interval(lv.mean(axis=1), lb.mean(axis=1))
    return call, w is not None and (w["hi"] < 0 or w["lo"] > 0)


def wilson(hits: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a binomial rate."""
    z, p = 1.959964, hits / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def rate(hits: int, n: int) -> str:
    lo, hi = wilson(hits, n)
    return f"{hits / n:.4f} ({lo:.4f}-{hi:.4f})"


def row(args: argparse.Namespace, kb: int, kv: int, factor: float, tails: str = "normal",
        variant_sigma: float | None = None) -> str:
    """One line of the table: kb baseline seeds against kv variant seeds, variant sizes times ``factor``."""
    rng = np.random.default_rng([args.seed, kb, kv, int(1000 * factor), len(tails), int(1000 * (variant_sigma or 0))])
    want = None if factor == 1 else ("smaller" if factor < 1 else "larger")
    old = welch = right = wrong = 0
    for _ in range(args.n_sim):
        lb = draw(rng, kb, args.sigma, args.tau, args.n_tasks, tails)
        lv = draw(rng, kv, variant_sigma or args.sigma, args.tau, args.n_tasks, tails) + math.log(factor)
        call, excludes = new_rule(lv, lb)
        # The old rule and Welch alone count calls in the planted direction (any call under the null).
        right_way = (np.mean(lv) < np.mean(lb)) == (factor < 1) if want else True
        old += old_rule(rng, lv, lb, args.tau, args.n_boot) and right_way
        welch += excludes and right_way
        right += call != "not distinguishable" and (want is None or call == want)
        wrong += want is not None and call not in ("not distinguishable", want)
    setting = "null" if factor == 1 else f"{1 / factor:g}x smaller"
    extra = "" if tails == "normal" and variant_sigma is None else (
        " t(3) seed effects" if tails != "normal" else f" variant sd {variant_sigma:g}")
    return (f"| {setting}{extra} | {kb} | {kv} | {rate(old, args.n_sim)} | {rate(welch, args.n_sim)} | "
            f"{rate(right, args.n_sim)} | {wrong} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-sim", type=int, default=10000, help="simulated comparisons per row")
    ap.add_argument("--sigma", type=float, default=0.17, help="sd of a seed's log size (shared across tasks)")
    ap.add_argument("--tau", type=float, default=0.03, help="sd of a size's measurement noise in the log")
    ap.add_argument("--n-tasks", type=int, default=3)
    ap.add_argument("--n-boot", type=int, default=400, help="bootstrap samples of the old rule")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    start = time.perf_counter()
    print(f"sigma {args.sigma}, tau {args.tau}, {args.n_tasks} tasks, {args.n_sim} comparisons a row, seed "
          f"{args.seed}; rate (95% Wilson interval)\n")
    print("| setting | baseline seeds | variant seeds | old rule | welch alone | new rule | wrong way |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kb, kv in NULL:
        print(row(args, kb, kv, 1.0), flush=True)
    for factor in FACTORS:
        for kb, kv in POWER:
            print(row(args, kb, kv, factor), flush=True)
    print(row(args, 3, 3, 1.0, tails="t3"), flush=True)
    print(row(args, 3, 3, 1.0, variant_sigma=2 * args.sigma), flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
