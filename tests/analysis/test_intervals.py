"""The bootstrap of circuit sizes (analysis/report/intervals.py) on planted per-pair records with known answers,
and the hand-made model directories (analysis.json with per-pair records, training.json with variant, seed and
validation loss, a checkpoint ladder) that test_verdict.py builds reports from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.analysis.report.intervals import (
    Bootstrap,
    PairRecord,
    Subject,
    seed_logs,
    seed_ratio,
    seed_spread,
    size_at,
    welch_interval,
)

EDGES = [*range(0, 161), 400]
"""Circuit sizes measured along a planted ranking: every size up to 160 edges, then the whole 400-edge graph."""


def sig5(x: float) -> float:
    """Rounded to 5 significant digits, as analysis.json stores the per-pair logit differences."""
    return float(f"{x:.5g}")


def planted_pairs(size: float, n: int = 32, spread: float = 0.3, seed: int = 0) -> dict:
    """A per-pair record (INTERFACES section 1) whose pair i needs about size * exp(spread * z_i) edges: its f
    rises linearly with the edges and reaches 0.8 there, between its own model and empty-circuit values."""
    gen = np.random.default_rng(seed)
    need = size * np.exp(spread * gen.standard_normal(n))
    model, empty = 2.0 + 0.5 * gen.standard_normal(n), 0.3 * gen.standard_normal(n)
    ld = []
    for e in EDGES:
        f = np.ones(n) if e == EDGES[-1] else np.minimum(1.0, 0.8 * e / need)
        ld.append([sig5(x) for x in empty + (model - empty) * f])
    return {"edges": list(EDGES), "ld": ld, "ld_model": [sig5(x) for x in model],
            "ld_empty": [sig5(x) for x in empty]}


def n08(pairs: dict, idx: list[int] | None = None, target: float = 0.8) -> int:
    """N_0.8 of a per-pair record on the pairs ``idx`` (all by default), computed by hand: a plain loop."""
    idx = list(range(len(pairs["ld_model"]))) if idx is None else idx

    def mean(xs: list[float]) -> float:
        return sum(xs[i] for i in idx) / len(idx)

    m_model, m_empty = mean(pairs["ld_model"]), mean(pairs["ld_empty"])
    for edges, ld in zip(pairs["edges"], pairs["ld"], strict=True):
        if m_model > m_empty and (mean(ld) - m_empty) / (m_model - m_empty) >= target:
            return edges
    return pairs["edges"][-1]


# --- hand-made model directories --------------------------------------------------------------------------------


def task_entry(pairs: dict | None, *, passed: bool = True, controls: dict | None = None) -> dict:
    """A component-level task of analysis.json whose greedy circuit has the record's N_0.8 (``pairs`` None: a
    task analysed before per-pair records; its size then comes from ``controls['model']``)."""
    controls = controls or {}
    size = n08(pairs) if pairs is not None else controls["model"]
    sizes = {"model": {"edges": size}, **{who: {"edges": controls.get(who, 20)}
                                          for who in ("random_init", "shuffled_labels")}}
    gate = {"model": {"passed": passed, "accuracy": 0.9 if passed else 0.5, "gap": 2.0 if passed else -0.5,
                      "reasons": [] if passed else ["not above the empty circuit"]},
            **{who: {"passed": False, "accuracy": 0.5, "gap": 0.0, "reasons": ["at chance"]}
               for who in ("random_init", "shuffled_labels")}}
    circuit = {"level": "component", "method": "auto", "selection": "greedy", "n_edges_total": EDGES[-1],
               "N_0.8": sizes, "signal": {"model": True, "random_init": True, "shuffled_labels": True}}
    if pairs is not None:
        circuit["pairs"] = {"model": pairs}
    return {"status": "ok", "description": "planted", "n_pairs": 64, "capability": {"model": {"accuracy": 0.9}},
            "gate": gate, "capable": passed, "circuits": [circuit]}


def analysis_json(tasks: dict[str, dict]) -> dict:
    """An analysis.json (schema version 3) holding one component-level run over ``tasks``."""
    gated_in = [n for n, t in tasks.items() if t["capable"]]
    sizes = [tasks[n]["circuits"][0]["N_0.8"]["model"]["edges"] for n in gated_in]
    row = {"level": "component", "method": "auto", "ablation": "mean", "selection": "greedy",
           "n_tasks": len(tasks), "n_tasks_gated_in": len(gated_in), "gated_out": [],
           "controls_passing_gate": {"random_init": [], "shuffled_labels": []},
           "geomean_N_0.8": {"model": math.exp(sum(map(math.log, sizes)) / len(sizes)) if sizes else None}}
    run = {"settings": {"level": "component", "method": "auto", "ablation": "mean", "n_pairs": 64, "seed": 0,
                        "controls": ["random_init", "shuffled_labels"]},
           "capability": {}, "tasks": tasks, "summary": [row]}
    return {"schema_version": 3, "kind": "glassformer.analysis", "results": {"component/auto/mean": run},
            "latest": "component/auto/mean"}


def model_dir(path: Path, tasks: dict[str, dict], *, variant: str | None, seed: int | None, val_loss: float,
              step: int = 300, ladder_of: str | None = None, mlp: dict | None = None) -> Path:
    """A model directory: a tiny model's weights and config, ``tasks`` as its analysis, and a training.json with
    the fields INTERFACES section 2 adds."""
    import torch
    from tests_analysis_support import make_model

    from glassformer.archs import save_model_dir

    torch.manual_seed(seed or 0)
    save_model_dir(path, make_model(**({"mlp": mlp, "d_mlp": None} if mlp else {})))
    (path / "analysis.json").write_text(json.dumps(analysis_json(tasks)))
    training = {"steps" if ladder_of is None else "step": step, "final": {"loss/val": val_loss},
                "val_loss": val_loss}
    training.update({k: v for k, v in (("variant", variant), ("seed", seed), ("ladder_of", ladder_of))
                     if v is not None})
    (path / "training.json").write_text(json.dumps(training))
    return path


def planted_tasks(sizes: dict[str, float], seed: int, n: int = 32, **kw) -> dict[str, dict]:
    """Tasks named as ``sizes``' keys, each a planted record needing about that many edges."""
    return {name: task_entry(planted_pairs(s, n=n, seed=seed * 1000 + i), **kw)
            for i, (name, s) in enumerate(sizes.items())}


# --- N_0.8 recomputed on resampled pairs ------------------------------------------------------------------------


def test_the_size_on_resampled_pairs_is_the_first_circuit_reaching_the_target_on_them():
    rec = {"edges": [0, 2, 5, 9], "ld": [[0.0, 0.0, 0.0], [1.0, 0.2, 0.0], [1.0, 2.0, 0.5], [2.0, 2.0, 2.0]],
           "ld_model": [2.0, 2.0, 2.0], "ld_empty": [0.0, 0.0, 0.0]}
    parsed = PairRecord.parse(rec)
    # Pair 0 thrice: f of circuits 1 and 2 is 0.5, so 9 edges; pair 1 thrice: circuit 2 reaches 1.0, so 5; pairs
    # 0, 1, 2: circuit 2 is (1 + 2 + 0.5) / 6 = 0.58, so 9; pair 2 thrice: 0.25 at circuit 2, so 9.
    got = size_at(parsed, np.array([[0, 0, 0], [1, 1, 1], [0, 1, 2], [2, 2, 2]]))
    assert got.tolist() == [9, 5, 9, 9]
    assert size_at(parsed, np.array([[0, 1, 1]])).tolist() == [5]  # (1 + 2 + 2) / 6 = 0.83


def test_a_model_no_better_than_its_empty_circuit_on_the_drawn_pairs_needs_the_whole_graph():
    rec = PairRecord.parse({"edges": [0, 3, 7], "ld": [[0.0, 0.0], [1.0, -1.0], [1.0, -1.0]],
                            "ld_model": [1.0, -1.0], "ld_empty": [0.0, 0.0]})
    assert size_at(rec, np.array([[1, 1], [0, 0]])).tolist() == [7, 3]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(0, 2**16), st.integers(2, 12), st.floats(3.0, 60.0))
def test_the_vectorised_size_agrees_with_a_hand_loop(seed, n, size):
    pairs = planted_pairs(size, n=n, seed=seed)
    idx = np.random.default_rng(seed).integers(0, n, size=(8, n))
    got = size_at(PairRecord.parse(pairs), idx)
    assert got.tolist() == [n08(pairs, row.tolist()) for row in idx]


def test_malformed_or_missing_records_give_no_record():
    good = planted_pairs(10, n=4)
    assert PairRecord.parse(good) is not None
    assert PairRecord.parse(None) is None
    assert PairRecord.parse({**good, "ld": good["ld"][:-1]}) is None  # one circuit short
    assert PairRecord.parse({**good, "ld_empty": good["ld_empty"][:-1]}) is None
    assert PairRecord.parse({k: v for k, v in good.items() if k != "ld_model"}) is None


# --- intervals --------------------------------------------------------------------------------------------------


def subject(key: str, sizes: dict[str, float], seed: int, n: int = 32) -> Subject:
    records = {t: planted_pairs(s, n=n, seed=seed * 1000 + i) for i, (t, s) in enumerate(sizes.items())}
    return Subject(key, {t: float(n08(r)) for t, r in records.items()},
                   {t: PairRecord.parse(r) for t, r in records.items()})


TASKS = {"a": 10.0, "b": 20.0, "c": 15.0}


def test_a_per_task_interval_holds_its_size_and_narrows_with_more_pairs():
    bs = Bootstrap(n_boot=400)
    widths = []
    for n in (16, 256):
        s = subject(f"n{n}", {"a": 20.0}, seed=1, n=n)
        lo, hi = bs.task_interval(s, "a")
        assert lo <= s.sizes["a"] <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # sixteen times the pairs: about a quarter of the width


def test_one_record_on_both_sides_has_ratio_one_with_no_width():
    """Two models with the same records: each resample draws the same pairs for both (a paired bootstrap)."""
    bs = Bootstrap(n_boot=200)
    s, twin = subject("m", TASKS, seed=0), subject("twin", TASKS, seed=0)
    r = bs.ratio(("v", [s]), ("b", [twin]), list(TASKS))
    assert (r["ratio"], r["lo"], r["hi"], r["resampled"]) == (pytest.approx(1.0), 1.0, 1.0, "pairs")


def test_swapping_the_sides_inverts_the_ratio_and_its_interval():
    bs = Bootstrap(n_boot=300)
    small, large = subject("s", {t: v / 3 for t, v in TASKS.items()}, seed=2), subject("l", TASKS, seed=3)
    there = bs.ratio(("s", [small]), ("l", [large]), list(TASKS))
    back = bs.ratio(("l", [large]), ("s", [small]), list(TASKS))
    assert back["ratio"] == pytest.approx(1 / there["ratio"])
    assert back["lo"] == pytest.approx(1 / there["hi"]) and back["hi"] == pytest.approx(1 / there["lo"])
    assert there["hi"] < 1  # three times smaller at 32 pairs a task: clearly below 1


def test_scaling_every_size_of_one_side_scales_the_ratio_and_its_interval():
    bs = Bootstrap(n_boot=300)
    base = subject("b", TASKS, seed=4)
    scaled = Subject("x", {t: 2 * v for t, v in base.sizes.items()},
                     {t: PairRecord(2 * r.edges, r.ld, r.ld_model, r.ld_empty) for t, r in base.pairs.items()})
    r = bs.ratio(("x", [scaled]), ("b", [base]), list(TASKS))
    assert (r["ratio"], r["lo"], r["hi"]) == (pytest.approx(2.0), pytest.approx(2.0), pytest.approx(2.0))


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    s = subject("m", TASKS, seed=5)
    one, two = Bootstrap(n_boot=200, seed=0), Bootstrap(n_boot=200, seed=0)
    assert one.model_interval(s, list(TASKS)) == two.model_interval(s, list(TASKS))
    assert Bootstrap(n_boot=200, seed=1).model_interval(s, list(TASKS)) != one.model_interval(s, list(TASKS))


def test_without_per_pair_records_only_seeds_are_resampled():
    bs = Bootstrap(n_boot=500)
    seeds = [Subject(f"s{i}", {"a": v}, {}) for i, v in enumerate((10.0, 40.0))]
    assert bs.model_interval(seeds[0], ["a"]) is None and bs.task_interval(seeds[0], "a") is None
    g = bs.group_interval("v", seeds, ["a"])
    assert g["geomean"] == pytest.approx(20.0) and g["n_tasks"] == 1
    # Two seeds drawn with replacement: 10 and 10, 10 and 40, or 40 and 40; the interval spans the extremes.
    assert (g["lo"], g["hi"]) == (pytest.approx(10.0), pytest.approx(40.0))
    assert bs.group_interval("one", seeds[:1], ["a"])["lo"] is None
    r = bs.ratio(("v", seeds), ("b", seeds[:1]), ["a"])
    assert r["resampled"] is None and r["lo"] is None and r["ratio"] == pytest.approx(2.0)
    assert seed_spread(seeds, ["a"]) == [pytest.approx(0.25), pytest.approx(4.0)]
    assert seed_spread(seeds[:1], ["a"]) is None


def test_two_level_intervals_are_wider_than_either_seed_alone():
    bs = Bootstrap(n_boot=400)
    seeds = [subject("s0", {"a": 10.0}, seed=6), subject("s1", {"a": 30.0}, seed=7)]
    both = bs.group_interval("v", seeds, ["a"])
    for s in seeds:
        one = bs.model_interval(s, ["a"])
        assert both["hi"] - both["lo"] > one["hi"] - one["lo"]
    assert bs.resampled([seeds], ["a"]) == "pairs and seeds"


def test_bad_bootstrap_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="n_boot=1 is not allowed"):
        Bootstrap(n_boot=1)
    with pytest.raises(ValueError, match="confidence=1.5 is not allowed"):
        Bootstrap(confidence=1.5)


# --- the Welch t interval over seeds (the verdict's call) --------------------------------------------------------


def test_the_welch_interval_matches_hand_computed_cases():
    # a = [1, 3], b = [0, 2]: means 2 and 1, diff 1; each sample variance 2, over n = 2 gives 1; se = sqrt(2).
    # df = (1 + 1)^2 / (1^2 / 1 + 1^2 / 1) = 2. For 2 df the t quantile has a closed form,
    # t_p = (2p - 1) / sqrt(2p(1 - p)) = 0.95 / sqrt(0.04875) = 4.3026527; half width 4.3026527 * 1.4142136 =
    # 6.0848698, so the interval is 1 -/+ 6.0848698.
    w = welch_interval([1.0, 3.0], [0.0, 2.0])
    assert w == pytest.approx({"diff": 1.0, "lo": -5.0848698, "hi": 7.0848698, "df": 2.0}, abs=1e-6)
    # a = [1, 3] (variance over n: 1), b = [5, 5, 5] (none): df = 1^2 / (1^2 / 1 + 0) = 1, where t is Cauchy:
    # t_0.975 = tan(0.475 pi) = 12.7062047; diff 2 - 5 = -3, se 1.
    w = welch_interval([1.0, 3.0], [5.0, 5.0, 5.0])
    assert w == pytest.approx({"diff": -3.0, "lo": -15.7062047, "hi": 9.7062047, "df": 1.0}, abs=1e-6)
    # a = [1, 3] (1), b = [0, 2, 4]: sample variance 8 / 2 = 4, over n = 3 gives 4/3; se^2 = 7/3;
    # df = (7/3)^2 / (1 + (4/3)^2 / 2) = (49/9) / (17/9) = 49/17 = 2.8823529, between 2 and 3 df, so the half
    # width lies between t(0.975, 3) * sqrt(7/3) = 3.1824 * 1.5275 = 4.861 and t(0.975, 2) * 1.5275 = 6.572.
    w = welch_interval([1.0, 3.0], [0.0, 2.0, 4.0])
    assert w["df"] == pytest.approx(49 / 17) and w["diff"] == 0.0 and w["lo"] == -w["hi"]
    assert 4.861 < w["hi"] < 6.572
    # Fewer than two values a side: no variance to estimate; no spread anywhere: df is 0/0.
    assert welch_interval([1.0], [0.0, 2.0]) is None and welch_interval([1.0, 3.0], [2.0]) is None
    assert welch_interval([2.0, 2.0], [1.0, 1.0, 1.0]) is None


def test_the_seed_ratio_is_the_welch_interval_of_each_seeds_log_geometric_mean():
    """Seeds whose mean log sizes over two tasks are 2 and 4 (variant) and 1 and 3 (baseline): the hand case
    [1, 3] against [0, 2] above shifted by 1, so the ratio is e^1 and the interval e^-5.0848698 to e^7.0848698."""
    e = math.exp
    v = [Subject("v0", {"t": e(1.5), "u": e(2.5)}, {}), Subject("v1", {"t": e(3.5), "u": e(4.5)}, {})]
    b = [Subject("b0", {"t": e(0.5), "u": e(1.5)}, {}), Subject("b1", {"t": e(2.5), "u": e(3.5)}, {})]
    assert seed_logs(v, ["t", "u"]).tolist() == pytest.approx([2.0, 4.0])
    r = seed_ratio(v, b, ["t", "u"])
    assert r == pytest.approx({"ratio": e(1.0), "lo": e(-5.0848698), "hi": e(7.0848698), "df": 2.0}, rel=1e-6)
    # One variant seed (log 2) against the baseline's mean log 2: the ratio 1, and no interval.
    assert seed_ratio(v[:1], b, ["t", "u"]) == {"ratio": pytest.approx(1.0), "lo": None, "hi": None, "df": None}
    assert seed_ratio(v, b, []) == {"ratio": None, "lo": None, "hi": None, "df": None}


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 4), st.lists(st.integers(2, 4), min_size=2, max_size=2), st.integers(0, 2**16))
def test_the_seed_ratio_keeps_the_paired_per_task_ratio(n_tasks, n_seeds, seed):
    """The point the Welch interval is centred on (difference of the seeds' mean log geometric means) is the
    paired statistic: the geometric mean over tasks of each task's ratio of seed-averaged sizes, by a hand loop."""
    gen = np.random.default_rng(seed)
    tasks = [f"t{i}" for i in range(n_tasks)]
    v, b = ([Subject(f"{side}{k}", {t: float(gen.integers(1, 500)) for t in tasks}, {}) for k in range(n)]
            for side, n in zip("vb", n_seeds, strict=True))
    per_task = [sum(math.log(s.sizes[t]) for s in v) / len(v) - sum(math.log(s.sizes[t]) for s in b) / len(b)
                for t in tasks]
    by_hand = math.exp(sum(per_task) / n_tasks)
    assert seed_ratio(v, b, tasks)["ratio"] == pytest.approx(by_hand, rel=1e-12)
    assert Bootstrap(n_boot=2).ratio(("v", v), ("b", b), tasks)["ratio"] == pytest.approx(by_hand, rel=1e-12)
