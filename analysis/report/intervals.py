"""Bootstrap intervals of circuit sizes: per task, per model, per variant, and the paired ratio to a baseline.

What is resampled (``RESAMPLED``):

- **Held-out pairs within each task.** A component-level circuit entry of analysis.json carries ``"pairs"``
  (INTERFACES section 1): the logit difference of every held-out pair on every circuit measured along the ranking,
  with the model's and the empty circuit's. A resample draws the task's pairs with replacement and recomputes
  ``N_0.8`` from them (:func:`size_at`): the first circuit, in the order measured, whose normalised faithfulness on
  the drawn pairs reaches 0.8. The ranking itself is not redone (it was made on the other half of the pairs), so
  the interval covers the measurement of f, not the choice of edges. The pairs of a task are one draw shared by
  every model whose record has as many pairs (models of a sweep are analysed on the same prompts: a paired
  bootstrap); a model without a record for the task contributes its recorded size unchanged.
- **Seeds, where a variant has several models** (a two-level bootstrap): each resample also draws the variant's
  seeds with replacement, and a task's log size is the mean over the drawn seeds.

These intervals hold each trained model fixed: they do not cover how the model, and with it the circuit's
ranking, changes with the training seed, so the verdict does not call a difference from them (they are reported
beside it). The call's interval is :func:`welch_interval` on :func:`seed_logs`: seeds are the unit of
replication there (:mod:`.verdict`).

Sizes are floored at 1 before the log (a zero-edge circuit cannot be averaged geometrically). Bootstrap intervals
are percentile intervals of ``N_BOOT`` resamples from a seeded numpy generator (geometric means and ratios
interpolated in the log): the same input gives the same interval. An interval is None where nothing can be
resampled: no per-pair records (analyses made before them, and node-level circuits, which have none) and a
single seed.

Example:
    >>> rec = PairRecord.parse({"edges": [0, 2, 5], "ld": [[0.0, 0.0], [1.0, 3.0], [2.0, 2.0]],
    ...                         "ld_model": [2.0, 2.0], "ld_empty": [0.0, 0.0]})
    >>> size_at(rec, np.array([[0, 1], [0, 0], [1, 1]])).tolist()  # f of circuit 1: 1.0, 0.5, 1.5
    [2.0, 5.0, 2.0]
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

N_BOOT = 1000
CONFIDENCE = 0.95
SEED = 0
TARGET = 0.8
"""The faithfulness of the headline size N_0.8."""
SIZE_FLOOR = 1.0
RESAMPLED = "held-out pairs within each task; seeds where a variant has several"


@dataclass(frozen=True)
class PairRecord:
    """The per-pair measurements of one circuit entry (INTERFACES section 1) as arrays.

    ``edges`` (J,) circuit sizes in the order measured; ``ld`` (J, n) logit difference of each held-out pair with
    everything outside circuit j ablated; ``ld_model`` and ``ld_empty`` (n,) the whole model and the empty circuit.
    """

    edges: np.ndarray
    ld: np.ndarray
    ld_model: np.ndarray
    ld_empty: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(self.ld_model.shape[0])

    @classmethod
    def parse(cls, record: Any) -> PairRecord | None:
        """The arrays of a ``pairs["model"]`` record, or None when it is missing or its shapes disagree.

        Example:
            >>> PairRecord.parse({"edges": [0, 1], "ld": [[0.0]], "ld_model": [1.0], "ld_empty": [0.0]}) is None
            True
        """
        if not isinstance(record, dict):
            return None
        try:
            edges = np.asarray(record["edges"], dtype=float)
            ld = np.asarray(record["ld"], dtype=float)
            ld_model = np.asarray(record["ld_model"], dtype=float)
            ld_empty = np.asarray(record["ld_empty"], dtype=float)
        except (KeyError, TypeError, ValueError):
            return None
        n = ld_model.shape[0] if ld_model.ndim == 1 else -1
        if (edges.ndim != 1 or not len(edges) or n < 1 or ld.shape != (len(edges), n) or ld_empty.shape != (n,)
                or not all(np.isfinite(a).all() for a in (edges, ld, ld_model, ld_empty))):
            return None
        return cls(edges, ld, ld_model, ld_empty)


def size_at(rec: PairRecord, idx: np.ndarray, target: float = TARGET) -> np.ndarray:
    """(B,) N_target of ``rec`` on each row of ``idx`` (B, n) pair indices: the edges of the first circuit whose
    f on those pairs reaches ``target``. Where the model is not above the empty circuit on the drawn pairs (f is
    undefined) or no circuit reaches the target, the last circuit measured (the whole graph) is the size.

    Example:
        >>> rec = PairRecord.parse({"edges": [0, 3, 9], "ld": [[0.0], [0.9], [1.0]], "ld_model": [1.0],
        ...                         "ld_empty": [0.0]})
        >>> size_at(rec, np.zeros((1, 1), dtype=int)).tolist()
        [3.0]
    """
    m = rec.ld[:, idx].mean(axis=-1)  # (J, B)
    m_model, m_empty = rec.ld_model[idx].mean(axis=-1), rec.ld_empty[idx].mean(axis=-1)  # (B,)
    gap = m_model - m_empty
    with np.errstate(divide="ignore", invalid="ignore"):
        reach = ((m - m_empty) / np.where(gap > 0, gap, np.nan)) >= target  # NaN compares False
    first = reach.argmax(axis=0)
    return np.where(reach.any(axis=0), rec.edges[first], rec.edges[-1])


@dataclass
class Subject:
    """One model at one level, as the bootstrap sees it: the recorded size of each task (the point estimate)
    and the task's per-pair record where there is one. ``key`` must be unique within a report."""

    key: str
    sizes: dict[str, float]
    pairs: dict[str, PairRecord]

    def has_pairs(self, tasks: list[str]) -> bool:
        return all(t in self.pairs for t in tasks)


def _log(x: Any) -> Any:
    return np.log(np.maximum(x, SIZE_FLOOR))


class Bootstrap:
    """Resamples shared across one report: one draw of pair indices per (task, number of pairs), one draw of
    seeds per group, each from a generator seeded by ``seed`` and the name it serves (order-independent).

    Example:
        >>> bs = Bootstrap(n_boot=200)
        >>> s = Subject("m", {"t": 10.0}, {})
        >>> bs.model_interval(s, ["t"]) is None  # no pairs and one model: nothing to resample
        True
    """

    def __init__(self, n_boot: int = N_BOOT, seed: int = SEED, confidence: float = CONFIDENCE):
        if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 2:
            raise ValueError(f"n_boot={n_boot!r} is not allowed: expected an integer of at least 2")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence={confidence!r} is not allowed: expected a number between 0 and 1")
        self.n_boot, self.seed, self.confidence = n_boot, seed, confidence
        self._pair_idx: dict[tuple[str, int], np.ndarray] = {}
        self._draws: dict[tuple[str, str], np.ndarray] = {}

    def record(self) -> dict[str, Any]:
        """What report.json's ``bootstrap`` says."""
        return {"n_boot": self.n_boot, "resampled": RESAMPLED, "confidence": self.confidence, "seed": self.seed}

    def _rng(self, *names: str | int) -> np.random.Generator:
        words = [self.seed] + [zlib.crc32(n.encode()) if isinstance(n, str) else n for n in names]
        return np.random.default_rng(words)

    def pair_indices(self, task: str, n: int) -> np.ndarray:
        """(n_boot, n) pair indices of ``task``, the same for every model with ``n`` pairs there."""
        if (task, n) not in self._pair_idx:
            self._pair_idx[task, n] = self._rng("pairs", task, n).integers(0, n, size=(self.n_boot, n))
        return self._pair_idx[task, n]

    def seed_indices(self, group: str, n: int) -> np.ndarray:
        """(n_boot, n) indices of the seeds drawn for ``group`` (a variant, or a baseline point)."""
        return self._rng("seeds", group, n).integers(0, n, size=(self.n_boot, n))

    def draws(self, s: Subject, task: str) -> np.ndarray:
        """(n_boot,) sizes of ``s`` on ``task``: resampled from its pairs, or the recorded size repeated."""
        if (s.key, task) not in self._draws:
            rec = s.pairs.get(task)
            self._draws[s.key, task] = (size_at(rec, self.pair_indices(task, rec.n_pairs)) if rec is not None
                                        else np.full(self.n_boot, s.sizes[task]))
        return self._draws[s.key, task]

    def percentiles(self, values: np.ndarray) -> tuple[float, float]:
        tail = 100 * (1 - self.confidence) / 2
        lo, hi = np.percentile(values, [tail, 100 - tail])
        return float(lo), float(hi)

    def log_percentiles(self, logs: np.ndarray) -> tuple[float, float]:
        """Percentiles of log sizes (or log ratios), back on the size scale: interpolating in the log keeps a
        ratio's interval the exact inverse of its inverse's."""
        lo, hi = self.percentiles(logs)
        return math.exp(lo), math.exp(hi)

    def task_interval(self, s: Subject, task: str) -> list[float] | None:
        """[lo, hi] of the size of ``s`` on ``task`` (pairs resampled), None without a per-pair record."""
        if task not in s.pairs:
            return None
        return list(self.percentiles(self.draws(s, task)))

    def group_log(self, group: str, subjects: list[Subject], tasks: list[str]) -> np.ndarray:
        """(n_boot, n_tasks) log size per task, averaged over the seeds drawn (two-level bootstrap)."""
        logs = np.stack([np.stack([_log(self.draws(s, t)) for t in tasks], axis=1) for s in subjects])  # (S, B, T)
        if len(subjects) == 1:
            return logs[0]
        pick = self.seed_indices(group, len(subjects))  # (B, S)
        return logs[pick, np.arange(self.n_boot)[:, None]].mean(axis=1)

    def resampled(self, groups: list[list[Subject]], tasks: list[str]) -> str | None:
        """What an interval over ``groups`` resamples: pairs (every model has records for every task), seeds
        (every group has several), both, or None (nothing: no interval)."""
        pairs = all(s.has_pairs(tasks) for g in groups for s in g)
        seeds = all(len(g) > 1 for g in groups)
        return {(True, True): "pairs and seeds", (True, False): "pairs", (False, True): "seeds"}.get((pairs, seeds))

    def model_interval(self, s: Subject, tasks: list[str]) -> dict[str, Any] | None:
        """``{"geomean", "lo", "hi", "n_tasks"}`` of one model's geometric mean over ``tasks``: pairs resampled; None when a
        task lacks a per-pair record or there are no tasks."""
        if not tasks or not s.has_pairs(tasks):
            return None
        lo, hi = self.log_percentiles(self.group_log(s.key, [s], tasks).mean(axis=1))
        return {"geomean": geomean([s.sizes[t] for t in tasks]), "lo": lo, "hi": hi, "n_tasks": len(tasks)}

    def group_interval(self, group: str, subjects: list[Subject], tasks: list[str]) -> dict[str, Any]:
        """``{"geomean", "lo", "hi", "n_tasks"}`` of a variant (its seeds' models): the geometric mean over tasks
        of each task's geometric mean over seeds; lo and hi None when nothing can be resampled."""
        point = _mean_log(subjects, tasks)
        out = {"geomean": None if point is None else math.exp(point), "lo": None, "hi": None, "n_tasks": len(tasks)}
        if tasks and self.resampled([subjects], tasks) is not None:
            out["lo"], out["hi"] = self.log_percentiles(self.group_log(group, subjects, tasks).mean(axis=1))
        return out

    def ratio(self, variant: tuple[str, list[Subject]], base: tuple[str, list[Subject]], tasks: list[str]
              ) -> dict[str, Any]:
        """The paired ratio of ``variant`` to ``base`` (each a (group name, models) pair) over ``tasks``: the
        geometric mean over tasks of (variant's size / baseline's size), each side averaged over its seeds in
        the log, with its interval. ``{"ratio", "lo", "hi", "resampled"}``; lo and hi None when nothing can be
        resampled."""
        (vname, vs), (bname, bs) = variant, base
        mv, mb = _mean_log(vs, tasks), _mean_log(bs, tasks)
        out: dict[str, Any] = {"ratio": None if mv is None or mb is None else math.exp(mv - mb), "lo": None,
                               "hi": None, "resampled": self.resampled([vs, bs], tasks) if tasks else None}
        if out["resampled"] is not None:
            diff = self.group_log(vname, vs, tasks) - self.group_log(bname, bs, tasks)
            out["lo"], out["hi"] = self.log_percentiles(diff.mean(axis=1))
        return out


def _mean_log(subjects: list[Subject], tasks: list[str]) -> float | None:
    if not tasks:
        return None
    return float(np.mean([np.mean([_log(s.sizes[t]) for s in subjects]) for t in tasks]))


def geomean(sizes: list[float]) -> float | None:
    """Geometric mean of sizes floored at 1 (None for no sizes).

    Example:
        >>> geomean([0, 4, 16]), geomean([])
        (4.0, None)
    """
    return float(math.exp(np.mean(_log(np.asarray(sizes, dtype=float))))) if sizes else None


def seed_logs(subjects: list[Subject], tasks: list[str]) -> np.ndarray:
    """(S,) each model's (seed's) mean log size over ``tasks``, sizes floored at 1: the log of its geometric mean.
    The mean of these over seeds is the mean over tasks of the seed-averaged log sizes, since every model holds
    every task of a comparison, so differences of their means are the log of the paired ratio.

    Example:
        >>> [round(float(x), 6) for x in seed_logs([Subject("a", {"t": 4.0, "u": 16.0}, {})], ["t", "u"])]
        [2.079442]
    """
    return np.array([np.mean([_log(s.sizes[t]) for t in tasks]) for s in subjects], dtype=float)


def welch_interval(a: Any, b: Any, confidence: float = CONFIDENCE) -> dict[str, float] | None:
    """The Welch t interval of mean(a) - mean(b): ``{"diff", "lo", "hi", "df"}`` (df by Welch-Satterthwaite).
    None when a side has fewer than two values (its variance cannot be estimated) or every value of both sides
    is the same (no variance: df is 0/0).

    Example:
        >>> w = welch_interval([1.0, 3.0], [0.0, 0.0, 0.0])  # se 1, df 1, t(0.975, 1) = 12.706
        >>> [round(w[k], 3) for k in ("diff", "lo", "hi", "df")]
        [2.0, -10.706, 14.706, 1.0]
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(va + vb)
    diff = float(a.mean() - b.mean())
    return {"diff": diff, "lo": diff - half, "hi": diff + half, "df": float(df)}


def seed_ratio(variant: list[Subject], base: list[Subject], tasks: list[str], confidence: float = CONFIDENCE
               ) -> dict[str, float | None]:
    """``{"ratio", "lo", "hi", "df"}``: the size ratio of ``variant`` to ``base`` over ``tasks`` and its Welch t
    interval over seeds (:func:`welch_interval` on :func:`seed_logs`, back on the ratio scale); lo, hi and df
    None where it is undefined (fewer than two seeds a side, no spread at all, or no task).

    Example:
        >>> v = [Subject(k, {"t": x}, {}) for k, x in (("v0", 5.0), ("v1", 20.0))]
        >>> b = [Subject(k, {"t": x}, {}) for k, x in (("b0", 10.0), ("b1", 40.0))]
        >>> r = seed_ratio(v, b, ["t"])  # logs differ by ln 2 within each side: se ln 2, df 2
        >>> round(r["ratio"], 6), round(r["df"], 6), r["lo"] < 0.5 * math.exp(-4.3 * math.log(2)) < 1 < r["hi"]
        (0.5, 2.0, True)
    """
    out: dict[str, float | None] = {"ratio": None, "lo": None, "hi": None, "df": None}
    if not tasks:
        return out
    v, b = seed_logs(variant, tasks), seed_logs(base, tasks)
    out["ratio"] = math.exp(float(v.mean() - b.mean()))
    w = welch_interval(v, b, confidence)
    if w is not None:
        out.update(lo=math.exp(w["lo"]), hi=math.exp(w["hi"]), df=w["df"])
    return out


def seed_spread(subjects: list[Subject], tasks: list[str]) -> list[float] | None:
    """[lo, hi]: the smallest and largest geometric-mean ratio over ``tasks`` between two different seeds of the
    baseline (every ordered pair, so the range holds each ratio and its inverse); None with one seed or no task.

    Example:
        >>> a, b = Subject("a", {"t": 10.0}, {}), Subject("b", {"t": 20.0}, {})
        >>> [round(r, 6) for r in seed_spread([a, b], ["t"])]
        [0.5, 2.0]
    """
    if len(subjects) < 2 or not tasks:
        return None
    ratios = [math.exp(float(np.mean([_log(a.sizes[t]) - _log(b.sizes[t]) for t in tasks])))
              for a in subjects for b in subjects if a is not b]
    return [min(ratios), max(ratios)]
