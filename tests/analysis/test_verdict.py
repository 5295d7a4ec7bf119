"""The verdict's rule on hand-made model directories with planted circuit sizes: a planted difference is called
with its direction, the two cases the old rule got wrong are called right, a difference no larger than the
baseline's own seed-to-seed spread (or with the spread unknown) is not called, tasks are chosen by the capability
gate of both sides, and the baseline is matched by steps and by validation loss over its checkpoint ladder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_intervals import model_dir, planted_tasks, task_entry
from test_report import unexplained_numbers

from glassformer.analysis.report import build_report, validate_report, write_report
from glassformer.analysis.report.intervals import Bootstrap
from glassformer.analysis.report.verdict import ReportStats, comparison, decide

N_BOOT = 400
SIZES = {"a": 40.0, "b": 24.0, "c": 60.0, "d": 30.0}


def scaled(factor: float, sizes: dict[str, float] = SIZES) -> dict[str, float]:
    return {t: v * factor for t, v in sizes.items()}


def variant_dirs(root, variant: str, per_seed: list[dict[str, float]], val_loss: float = 5.0, **kw):
    """One model directory per seed (``<variant>-seed<k>``), seed k's tasks planted at ``per_seed[k]``."""
    return [model_dir(root / f"{variant}-seed{k}", planted_tasks(sizes, seed=10 * len(variant) + k, **kw),
                      variant=variant, seed=k, val_loss=val_loss + 0.01 * k)
            for k, sizes in enumerate(per_seed)]


def only(report, level="component", matched="steps", variant=None):
    (row,) = [c for c in report["comparisons"] if c["level"] == level and c["matched"] == matched
              and (variant is None or c["variant"] == variant)]
    return row


def test_decide_follows_the_rule_of_the_docstring():
    spread, enough = [0.8, 1.25], (3, 3)
    assert decide(0.3, 0.2, 0.4, spread, enough)[0] == "smaller"
    assert decide(3.0, 2.0, 4.0, spread, enough)[0] == "larger"
    assert decide(0.3, 0.2, 1.1, spread, enough)[0] == "not distinguishable"  # the interval holds 1
    assert decide(0.9, 0.85, 0.95, spread, enough)[0] == "not distinguishable"  # inside the seed spread
    assert decide(1.1, 1.05, 1.2, spread, enough)[0] == "not distinguishable"  # inside it, above 1
    assert decide(3.0, None, None, spread, enough)[0] == "not distinguishable"  # no interval
    assert decide(None, None, None, spread, enough)[0] == "not distinguishable"  # no task
    for seeds, who in [((1, 3), "the variant has"), ((3, 1), "the baseline has"),
                       ((1, 1), "the variant and the baseline have")]:
        call, why = decide(0.3, 0.2, 0.4, spread, seeds)  # an interval far below 1: still no call
        assert call == "not distinguishable" and why.startswith(f"{who} one seed")
        assert "seed-to-seed variation cannot be estimated from one seed" in why
        assert "(the pairs-bootstrap interval, which does not include seed variation, excludes 1)" in why
    assert "no pairs-bootstrap interval either" in decide(0.3, None, None, None, (1, 1))[1]


def test_a_planted_difference_is_called_real_with_its_direction(tmp_path):
    """Three baseline seeds within 10% of each other; the variant's circuits a quarter of the size in all three
    of its seeds."""
    dense = variant_dirs(tmp_path, "dense", [SIZES, scaled(1.1), scaled(0.95)])
    sparse = variant_dirs(tmp_path, "sparse", [scaled(0.25), scaled(0.27), scaled(0.26)], val_loss=5.2)
    report = build_report([*dense, *sparse], n_boot=N_BOOT)
    validate_report(report)
    c = only(report)
    assert c["call"] == "smaller" and c["lo"] < c["ratio"] < c["hi"] < 1 and c["ratio"] < c["seed_spread"][0]
    assert c["interval_method"] == "welch-t over seeds" and 2 <= c["df"] <= 4  # Welch: between min(n) - 1, sum
    assert c["pairs_lo"] < c["ratio"] < c["pairs_hi"] < 1 and c["resampled"] == "pairs and seeds"
    assert c["tasks"] == list(SIZES) and c["seeds"] == [0, 1, 2] and c["baseline_seeds"] == [0, 1, 2]
    assert c["capability_matched"] is False and c["loss_gap"] == pytest.approx(0.2)
    assert 0.2 < c["ratio"] < 0.3
    assert "Call: smaller" in c["reason"] and f"{1 / c['ratio']:.2f}x smaller" in c["reason"]
    assert f"Welch t interval over seeds {c['lo']:.3f} to {c['hi']:.3f}, {c['df']:.2f} df" in c["reason"]
    assert c["fold"] == pytest.approx(1 / c["ratio"])
    assert report["verdict"]["rows"][0]["calls"] == {"component": {"steps": "smaller"}}
    assert c["reason"] in report["verdict"]["text"]
    variants = {v["variant"]: v for v in report["variants"]}
    assert variants["dense"]["seeds"] == [0, 1, 2] and variants["dense"]["levels"]["component"]["n_tasks"] == 4
    assert variants["sparse"]["val_loss"]["min"] == pytest.approx(5.2)


def sized(name: str, variant: str, seed: int, sizes: dict[str, float]) -> dict:
    """A report's model record with just what a node-level comparison reads: each task usable, at its size."""
    return {"name": name, "variant": variant, "seed": seed, "val_loss": 5.0, "training": {"steps": 100},
            "sizes": {"node": {}},
            "tasks": [{"name": t, "status": "ok", "circuits": {"node": {
                "size": {"model": x}, "signal": {"model": True}, "gate": {"model": {"passed": True}}}}}
                for t, x in sizes.items()]}


FLIP = {"smaller": "larger", "larger": "smaller", "not distinguishable": "not distinguishable"}


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.sampled_from([1 / 8, 1 / 2, 1.0, 2.0, 8.0]),
       st.sampled_from([0.02, 0.3]), st.integers(0, 2**16))
def test_swapping_variant_and_baseline_inverts_the_ratio_and_the_interval_and_flips_the_call(
        n_v, n_b, n_tasks, factor, noise, seed):
    gen = np.random.default_rng(seed)
    tasks = [f"t{i}" for i in range(n_tasks)]

    def side(variant, n, f):
        return [sized(f"{variant}{k}", variant, k, {t: 50 * f * math.exp(noise * gen.standard_normal())
                                                     for t in tasks}) for k in range(n)]

    v, b = side("v", n_v, factor), side("b", n_b, 1.0)
    stats = ReportStats(Bootstrap(n_boot=20), {})
    there, back = (comparison(x, y, {}, "node", "steps", stats) for x, y in ((v, b), (b, v)))
    assert back["ratio"] == pytest.approx(1 / there["ratio"], rel=1e-9)
    assert back["df"] == (None if there["df"] is None else pytest.approx(there["df"], rel=1e-9))
    if there["lo"] is None:
        assert back["lo"] is None and back["hi"] is None
    else:
        assert (back["lo"], back["hi"]) == (pytest.approx(1 / there["hi"], rel=1e-9),
                                            pytest.approx(1 / there["lo"], rel=1e-9))
    # The spread condition reads the baseline's own seed spread, which a swap exchanges for the variant's: the
    # call flips exactly when the ratio lies outside both; otherwise one direction may fall within its spread.
    spreads = [c["seed_spread"] for c in (there, back)]
    if all(s is None or not s[0] <= there["ratio"] <= s[1] for s in spreads):
        assert back["call"] == FLIP[there["call"]]
    else:
        assert "not distinguishable" in (there["call"], back["call"])
        for c in (there, back):  # a call that is made still goes the way of its own ratio
            assert c["call"] == "not distinguishable" or (c["call"] == "smaller") == (c["ratio"] < 1)
    if min(n_v, n_b) > 1 and noise < 0.1 and factor != 1.0:  # eightfold or twofold with 2% seed noise: called
        assert there["call"] == ("smaller" if factor < 1 else "larger") and back["call"] == FLIP[there["call"]]


def test_one_variant_seed_against_two_baseline_seeds_is_not_called(tmp_path):
    """The case the pairs-bootstrap rule got wrong 41% of the time on the null: one variant seed, planted 4x
    smaller, with a pairs interval far below 1 and outside the baseline's spread, is still not called."""
    dense = variant_dirs(tmp_path, "dense", [SIZES, scaled(1.1)])
    (sparse,) = variant_dirs(tmp_path, "sparse", [scaled(0.25)])
    c = only(build_report([*dense, sparse], n_boot=N_BOOT))
    assert c["pairs_hi"] < 1 and c["ratio"] < c["seed_spread"][0]
    assert c["interval_method"] == "pairs bootstrap, seed variation not included" and c["df"] is None
    assert (c["lo"], c["hi"]) == (c["pairs_lo"], c["pairs_hi"])
    assert c["call"] == "not distinguishable"
    assert "the variant has one seed, and seed-to-seed variation cannot be estimated from one seed" in c["reason"]
    assert "which does not include seed variation" in c["reason"]


@pytest.mark.parametrize(("base", "factor", "control", "call"), [(0.2, 5.0, 1 / 3, "larger"),
                                                                 (1.0, 1 / 3, 4.0, "smaller")])
def test_the_direction_cases_the_old_rule_got_wrong(tmp_path, base, factor, control, call):
    """Circuits 5x larger while the random-init control shrinks 3x were called "real" without a direction;
    circuits 3x smaller while the control grows 4x were "within the controls". The controls now judge nothing:
    both are called by the size ratio, with its direction."""
    def dirs(variant, f, ctrl):
        return [model_dir(tmp_path / f"{variant}{k}", {
            name: task_entry(rec["circuits"][0]["pairs"]["model"], controls={"random_init": 20 * ctrl})
            for name, rec in planted_tasks(scaled(base * f * (1 + 0.05 * k)), seed=10 * k + len(variant)).items()},
            variant=variant, seed=k, val_loss=5.0) for k in range(3)]

    report = build_report([*dirs("dense", 1.0, 1.0), *dirs("constrained", factor, control)], n_boot=N_BOOT)
    c = only(report)
    assert c["call"] == call and c["ratio"] == pytest.approx(factor, rel=0.3)
    assert report["controls_sanity"]["dense0"]["component"] == {"random_init": "found no capability",
                                                                "shuffled_labels": "found no capability"}


def test_a_difference_within_the_baselines_seed_spread_is_not_called(tmp_path):
    """Four baseline seeds spread 3.3x end to end (log offsets -0.6, -0.2, 0.2, 0.6); three variant seeds close
    together e (2.7x) below the baseline's middle. Welch: the baseline's log sd is sqrt(0.8 / 3) = 0.52, its
    standard error 0.26, t(0.975, ~3 df) = 3.18, so the interval's top is about e^(-1 + 0.82) = 0.84 and excludes
    1; but the ratio, about e^-1 = 0.37, lies within the spread, whose bottom is e^-1.2 = 0.30."""
    dense = variant_dirs(tmp_path, "dense", [scaled(math.exp(x)) for x in (-0.6, -0.2, 0.2, 0.6)])
    sparse = variant_dirs(tmp_path, "sparse", [scaled(math.exp(-1.0) * f) for f in (1.0, 1.01, 0.99)])
    c = only(build_report([*dense, *sparse], n_boot=N_BOOT))
    assert c["interval_method"] == "welch-t over seeds" and c["hi"] < 1 and c["seed_spread"][0] < c["ratio"]
    assert c["call"] == "not distinguishable" and "within the baseline's seed-to-seed spread" in c["why"]


def test_with_one_seed_a_side_nothing_is_called(tmp_path):
    dense = variant_dirs(tmp_path, "dense", [SIZES])
    sparse = variant_dirs(tmp_path, "sparse", [scaled(0.25)])
    c = only(build_report([*dense, *sparse], n_boot=N_BOOT))
    assert c["hi"] < 1 and c["seed_spread"] is None and c["resampled"] == "pairs"
    assert c["interval_method"] == "pairs bootstrap, seed variation not included" and c["df"] is None
    assert c["call"] == "not distinguishable"
    assert "the variant and the baseline have one seed, and seed-to-seed variation cannot be estimated" in c["reason"]


def test_tasks_are_those_both_sides_pass_the_gate_on_and_the_rest_are_listed(tmp_path):
    """The baseline fails the gate on c, the variant's second seed on d: both are left out, named, and the
    comparison is over a and b only, whichever side would have looked better on them."""
    def dirs(variant, factor, fail):
        out = []
        for k in range(2):
            tasks = planted_tasks(scaled(factor), seed=7 * k + len(variant))
            for name, seed in fail:
                if seed == k:
                    tasks[name] = task_entry(tasks[name]["circuits"][0]["pairs"]["model"], passed=False)
            out.append(model_dir(tmp_path / f"{variant}-{k}", tasks, variant=variant, seed=k, val_loss=5.0))
        return out

    report = build_report([*dirs("dense", 1.0, [("c", 0), ("c", 1)]), *dirs("tc", 0.5, [("d", 1)])],
                          n_boot=N_BOOT)
    c = only(report)
    assert c["tasks"] == ["a", "b"]
    assert c["dropped"] == [{"task": "c", "reason": "dense-0 failed the capability gate; dense-1 failed the "
                                                    "capability gate"},
                            {"task": "d", "reason": "tc-1 failed the capability gate"}]
    assert "Left out: c (dense-0 failed the capability gate" in c["reason"]
    # A model's own interval is over its own usable tasks: all four for tc-0, three for tc-1.
    intervals = {m["name"]: m["sizes"]["component"]["interval"] for m in report["models"]}
    assert intervals["tc-0"]["n_tasks"] == 4 and intervals["tc-1"]["n_tasks"] == 3
    tc0 = next(m for m in report["models"] if m["name"] == "tc-0")
    by_task = {t["name"]: t["circuits"]["component"]["interval"] for t in tc0["tasks"]}
    assert all(lo <= hi for lo, hi in by_task.values())


def ladder(model, steps_losses):
    """Ladder rungs of a baseline model directory: (step, val_loss) each, circuits planted larger early on."""
    for step, loss in steps_losses:
        model_dir(model / "ladder" / f"step-{step:06d}", planted_tasks(scaled(300 / step), seed=step),
                  variant="dense", seed=0, val_loss=loss, step=step, ladder_of="dense")


def test_a_ladder_gives_a_loss_matched_comparison_beside_the_steps_one_and_a_frontier(tmp_path):
    (dense,) = variant_dirs(tmp_path, "dense", [SIZES], val_loss=5.0)
    ladder(dense, [(100, 5.6), (200, 5.22), (300, 5.0)])
    (tc,) = variant_dirs(tmp_path, "tc", [scaled(1.5)], val_loss=5.25)
    report = build_report([dense, tc], n_boot=N_BOOT)
    validate_report(report)
    assert [m["name"] for m in report["models"]] == ["dense-seed0", "tc-seed0"]  # rungs are not models
    steps, loss = only(report, matched="steps"), only(report, matched="loss")
    assert steps["baseline_point"] == {"model": "dense-seed0", "step": 300, "val_loss": 5.0}
    assert steps["loss_gap"] == pytest.approx(0.25)
    assert loss["baseline_point"] == {"model": "dense-seed0/ladder/step-000200", "step": 200, "val_loss": 5.22}
    assert loss["loss_gap"] == pytest.approx(0.03) and loss["capability_matched"] is True
    # Matched at equal loss the baseline's circuits are 1.5x larger (planted 300/200): the ratio moves to ~1.
    assert steps["ratio"] == pytest.approx(1.5, rel=0.2) and loss["ratio"] == pytest.approx(1.0, rel=0.2)
    assert "at matched capability" in loss["reason"] and "Capability matched" in loss["reason"]
    front = report["frontier"]["component"]["dense"]
    # By falling loss; the rung at the last step holds the final weights, so the final model stands for it.
    assert [p["step"] for p in front] == [100, 200, 300] and front[-1]["model"] == "dense-seed0"
    assert all(p["lo"] <= p["geomean"] <= p["hi"] for p in front)
    assert front[0]["geomean"] > front[-1]["geomean"]


def test_an_analysis_made_before_per_pair_records_loads_with_no_interval(tmp_path):
    old = {name: task_entry(None, controls={"model": int(s)}) for name, s in SIZES.items()}
    dense = model_dir(tmp_path / "dense", old, variant=None, seed=None, val_loss=5.0)
    tc = model_dir(tmp_path / "tc", old, variant=None, seed=None, val_loss=5.1)
    report = build_report([dense, tc], n_boot=N_BOOT)
    validate_report(report)
    assert [m["variant"] for m in report["models"]] == ["dense", "tc"]  # no variant recorded: the name
    assert report["models"][0]["sizes"]["component"]["interval"] is None
    assert all(t["circuits"]["component"]["interval"] is None for t in report["models"][0]["tasks"])
    c = only(report)
    assert c["ratio"] == pytest.approx(1.0) and c["lo"] is None and c["call"] == "not distinguishable"
    assert c["interval_method"] is None and c["pairs_lo"] is None
    assert "one seed" in c["reason"] and "there is no pairs-bootstrap interval either" in c["reason"]


def test_every_number_of_the_verdict_is_a_number_of_report_json(tmp_path):
    dense = variant_dirs(tmp_path, "dense", [SIZES, scaled(1.1)])
    ladder(dense[0], [(100, 5.6), (200, 5.2)])
    sparse = variant_dirs(tmp_path, "sparse", [scaled(0.3), scaled(0.32)], val_loss=5.3)
    report = build_report([*dense, *sparse], n_boot=N_BOOT)
    paths = write_report(report, tmp_path / "report")
    on_disk = json.loads(paths["json"].read_text())
    assert on_disk["comparisons"] == report["comparisons"]
    text = " ".join(on_disk["verdict"]["text"])
    assert f"{N_BOOT} bootstrap samples" in text and all(c["reason"] in text for c in on_disk["comparisons"])
    # Checked against report.json without the sentences themselves: every number in them is a number it holds.
    bare = {**on_disk, "verdict": {**on_disk["verdict"], "text": []},
            "comparisons": [{k: v for k, v in c.items() if k not in ("reason", "why")} for c in on_disk["comparisons"]]}
    assert unexplained_numbers(text, bare) == []
    assert unexplained_numbers(paths["md"].read_text(), on_disk) == []


def test_a_dictionary_variant_with_two_seeds_gets_its_decomposition_stability(tmp_path):
    """Two transcoder seeds whose decoders are one dictionary with its latents permuted: perfectly stable, far
    above two random dictionaries; the dense baseline (no dictionary) gets no entry."""
    import torch

    from glassformer.archs import load_model_dir, save_model_dir

    tc = {"kind": "transcoder", "activation": "topk", "k": 4, "expansion_factor": 2}
    dense = variant_dirs(tmp_path, "dense", [SIZES, scaled(1.1)])
    dirs = [model_dir(tmp_path / f"tc-seed{k}", planted_tasks(scaled(0.5), seed=k), variant="tc", seed=k,
                      val_loss=5.1, mlp=tc) for k in range(2)]
    first = load_model_dir(dirs[0])
    with torch.no_grad():  # a transcoder's decoder starts at zero: give it directions, as training would
        for block in first.blocks:
            block.mlp.W_dec.normal_(generator=torch.Generator().manual_seed(3))
    save_model_dir(dirs[0], first)
    second = load_model_dir(dirs[0])
    with torch.no_grad():
        for block in second.blocks:
            perm = torch.randperm(block.mlp.W_dec.shape[0], generator=torch.Generator().manual_seed(4))
            block.mlp.W_dec.copy_(block.mlp.W_dec[perm])
    save_model_dir(dirs[1], second)
    report = build_report([*dense, *dirs], n_boot=N_BOOT)
    validate_report(report)
    assert set(report["stability"]) == {"tc"}
    s = report["stability"]["tc"]
    assert s["seeds"] == [0, 1] and s["mean_best_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert s["frac_above_0.9"] == 1.0 and s["chance_frac_above_0.9"] == 0.0 and s["chance_mean_best_cosine"] < 0.6
    assert "Decomposition stability of tc" in " ".join(report["verdict"]["text"])


def test_the_controls_are_reported_as_sanity_checks():
    from glassformer.analysis.report.verdict import controls_sanity

    def model(name, passing, controls):
        return {"name": name, "analysis": {"component": {"controls": controls}},
                "sizes": {"component": {"controls_passing_gate": passing}}}

    got = controls_sanity([model("a", {"random_init": ["x", "y"], "shuffled_labels": []},
                                 ["random_init", "shuffled_labels"]),
                           model("b", None, ["random_init", "shuffled_labels"]),  # made before the gate
                           model("c", {"random_init": [], "shuffled_labels": []}, [])])  # controls off
    assert got == {"a": {"component": {"random_init": "found capability on x, y",
                                       "shuffled_labels": "found no capability"}},
                   "b": {"component": {"random_init": "not checked", "shuffled_labels": "not checked"}},
                   "c": {"component": {"random_init": "not checked", "shuffled_labels": "not checked"}}}


def add_node_run(path, nodes: dict[str, int]) -> None:
    """Add a node-level run (no per-pair records: node circuits have none) to a model directory's analysis."""
    data = json.loads((path / "analysis.json").read_text())
    tasks = {name: {"status": "ok", "capability": {}, "circuits": [
        {"level": "node", "method": "mask", "selection": "mask", "n_nodes_total": 500, "nodes": {"model": k},
         "reached": {"model": True}}]} for name, k in nodes.items()}
    data["results"]["node/mask/mean"] = {
        "settings": {"level": "node", "method": "mask", "ablation": "mean"}, "tasks": tasks,
        "summary": [{"level": "node", "method": "mask", "selection": "mask", "n_tasks": len(nodes),
                     "geomean_nodes": {"model": None}}]}
    (path / "analysis.json").write_text(json.dumps(data))


def test_node_level_intervals_come_from_seeds_only(tmp_path):
    dense = variant_dirs(tmp_path, "dense", [SIZES, SIZES])
    tc = variant_dirs(tmp_path, "tc", [SIZES, SIZES, SIZES])
    for path, nodes in zip([*dense, *tc], (10, 20, 4, 5, 6), strict=True):
        add_node_run(path, {"a": nodes, "b": 2 * nodes})
    report = build_report([*dense, *tc[:1]], n_boot=N_BOOT)
    assert report["levels"] == ["component", "node"]
    m = report["models"][0]
    assert m["sizes"]["node"]["interval"] is None  # one model, no pairs: nothing to resample
    assert all(t["circuits"]["node"]["interval"] is None for t in m["tasks"] if "node" in t["circuits"])
    variants = {v["variant"]: v["levels"]["node"] for v in report["variants"]}
    assert variants["tc"]["lo"] is None and variants["dense"]["n_tasks"] == 2
    assert (variants["dense"]["lo"], variants["dense"]["hi"]) == (pytest.approx(10 * 2 ** 0.5),
                                                                  pytest.approx(20 * 2 ** 0.5))
    c = only(report, level="node")
    assert c["lo"] is None and c["call"] == "not distinguishable" and c["seed_spread"] == pytest.approx([0.5, 2.0])
    c = only(build_report([*dense, *tc], n_boot=N_BOOT), level="node")
    assert c["resampled"] == "seeds" and c["pairs_hi"] < 1 and c["ratio"] == pytest.approx(120 ** (1 / 3) / 200 ** 0.5)
    # Without per-pair records the call still gets its Welch interval over seeds: here two baseline seeds 2x apart
    # leave about 1.2 df, and the interval holds 1 though the variant's three seeds are all below both.
    assert c["interval_method"] == "welch-t over seeds" and c["lo"] < 1 < c["hi"] and 1 < c["df"] < 2
    assert c["call"] == "not distinguishable" and c["why"] == "the interval includes 1"
