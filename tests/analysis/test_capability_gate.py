"""The capability gate: one-sided tests against the empty circuit and against chance, a minimum effect, planted
cases with known answers, the test helpers against hand-computed values, and a random-init model that must find
no capability on any task, at both levels."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests_analysis_support import small_config

from glassformer.analysis import CONTROLS, AnalysisConfig, analyze, format_table
from glassformer.analysis.capability import (
    binomial_sf,
    capability_gate,
    gate_notes,
    paired_one_sided_t,
    student_t_sf,
)
from glassformer.analysis.component.run import summary
from glassformer.archs import build_model, save_model_dir


def noisy(mean: float, n: int = 64, sd: float = 0.3, seed: int = 0) -> torch.Tensor:
    return mean + sd * torch.randn(n, generator=torch.Generator().manual_seed(seed))


# --- the helpers against values computed by hand ---------------------------------------------------------------


def test_binomial_tail_matches_hand_counts():
    assert binomial_sf(8, 10) == 56 / 1024  # C(10,8) + C(10,9) + C(10,10) = 45 + 10 + 1
    assert binomial_sf(9, 10) == 11 / 1024
    assert binomial_sf(5, 5) == 1 / 32
    assert binomial_sf(6, 10) == (210 + 120 + 45 + 10 + 1) / 1024
    assert binomial_sf(2, 3, 0.3) == pytest.approx(3 * 0.3 ** 2 * 0.7 + 0.3 ** 3)  # 0.216
    assert binomial_sf(0, 7) == 1.0 and binomial_sf(8, 7) == 0.0


@settings(max_examples=60, derandomize=True, deadline=None)
@given(n=st.integers(1, 80), k=st.integers(0, 81))
def test_binomial_tail_at_one_half_is_symmetric_and_decreasing(n, k):
    k = min(k, n + 1)
    # P(X >= k) + P(X >= n - k + 1) = 1 for p = 1/2, since P(X >= n - k + 1) = P(X <= k - 1).
    assert binomial_sf(k, n) + binomial_sf(n - k + 1, n) == pytest.approx(1.0, abs=1e-12)
    assert binomial_sf(k, n) >= binomial_sf(k + 1, n)


def test_student_t_tail_matches_closed_forms_and_tables():
    assert student_t_sf(1.0, 1) == pytest.approx(0.25, abs=1e-12)  # Cauchy: 1/2 - atan(1)/pi
    assert student_t_sf(-1.0, 1) == pytest.approx(0.75, abs=1e-12)
    # df 2: P(T > t) = 1/2 - t / (2 sqrt(2 + t^2))
    assert student_t_sf(math.sqrt(2), 2) == pytest.approx((1 - 1 / math.sqrt(2)) / 2, abs=1e-12)
    # df 3, t = sqrt(3): theta = pi/4, P(|T| < t) = (2/pi)(pi/4 + 1/2), so P(T > t) = 1/4 - 1/(2 pi).
    assert student_t_sf(math.sqrt(3), 3) == pytest.approx(0.25 - 1 / (2 * math.pi), abs=1e-12)
    # One-sided 5% points from printed t tables (4 significant digits there).
    for df, t05 in ((4, 2.131847), (10, 1.812461), (30, 1.697261), (63, 1.669402)):
        assert student_t_sf(t05, df) == pytest.approx(0.05, abs=2e-6), df
    assert student_t_sf(1.644854, 100000) == pytest.approx(0.05, abs=1e-4)  # the normal limit


@settings(max_examples=40, derandomize=True, deadline=None)
@given(t=st.floats(-30, 30), df=st.integers(1, 200))
def test_student_t_tail_is_symmetric_and_a_probability(t, df):
    p = student_t_sf(t, df)
    assert 0.0 <= p <= 1.0
    assert p + student_t_sf(-t, df) == pytest.approx(1.0, abs=1e-9)


def test_paired_t_is_one_sided():
    up = paired_one_sided_t([1.0, 2.0, 3.0])  # t = 2 sqrt 3, df 2: p = (1 - t / sqrt(2 + t^2)) / 2
    assert up["t"] == pytest.approx(2 * math.sqrt(3)) and up["p"] == pytest.approx((1 - math.sqrt(12 / 14)) / 2)
    down = paired_one_sided_t([-1.0, -2.0, -3.0])  # the same size of effect, the wrong way
    assert down["p"] == pytest.approx(1 - up["p"]) and down["p"] > 0.95
    assert paired_one_sided_t([2.0, 2.0])["p"] == 0.0 and paired_one_sided_t([-2.0, -2.0])["p"] == 1.0
    assert paired_one_sided_t([5.0])["p"] == 1.0  # one pair cannot be tested


# --- planted cases ----------------------------------------------------------------------------------------------


def test_a_model_worse_than_its_empty_circuit_is_gated_out():
    # The audit's elif_else: the model's logit difference 0.87, the empty circuit's 2.34. Every pair is "right"
    # (ld > 0), and |gap| is far above its noise: only a one-sided test against the empty circuit refuses it.
    g = capability_gate(noisy(0.87), noisy(2.34, seed=1))
    assert not g["passed"]
    assert g["accuracy"] == 1.0 and g["gap"] == pytest.approx(2 * 0.0 + g["logit_diff"] - g["logit_diff_empty"])
    assert g["gap"] < -1 and g["p_gap"] > 0.99
    assert any(r.startswith("not above the empty circuit") for r in g["reasons"])


def test_accuracy_at_chance_is_gated_out_even_with_a_large_gap():
    model = torch.tensor([3.0, -1.0] * 32)  # mean 1.0 above an empty circuit at 0, but right half the time
    g = capability_gate(model, torch.zeros(64) + 0.01 * noisy(0.0))
    assert g["accuracy"] == 0.5 and g["p_accuracy"] == pytest.approx(binomial_sf(32, 64))
    assert len(g["reasons"]) == 1 and g["reasons"][0].startswith("accuracy not above chance")


def test_the_binomial_line_at_64_pairs():
    # P(X >= 40 | 64, 1/2) = 0.0300 < 0.05 <= P(X >= 39) = 0.0519: 40 right of 64 passes, 39 does not.
    assert binomial_sf(40, 64) < 0.05 <= binomial_sf(39, 64)
    for right, passes in ((40, True), (39, False), (33, False)):
        model = torch.tensor([2.0] * right + [-0.5] * (64 - right)) + 0.01 * noisy(0.0)
        g = capability_gate(model, torch.zeros(64) - 3.0)
        assert g["passed"] is passes, (right, g["reasons"])


def test_a_clear_but_tiny_effect_is_gated_out_by_the_minimum():
    g = capability_gate(noisy(0.3, sd=0.05), noisy(0.0, sd=0.05, seed=1), min_logit_diff=0.5)
    assert g["accuracy"] == 1.0 and g["p_gap"] < 1e-10
    assert len(g["reasons"]) == 1 and g["reasons"][0].startswith("gap below the minimum effect")
    assert capability_gate(noisy(0.3, sd=0.05), noisy(0.0, sd=0.05, seed=1), min_logit_diff=0.2)["passed"]


def test_clear_capability_passes():
    g = capability_gate(noisy(3.0, sd=0.5), noisy(0.0, sd=0.5, seed=1))
    assert g["passed"] and g["reasons"] == []
    assert g["n_pairs"] == 64 and g["gap"] == pytest.approx(g["logit_diff"] - g["logit_diff_empty"])


def test_gate_settings_are_validated_by_name():
    with pytest.raises(ValueError, match="gate_alpha=0 is not allowed"):
        AnalysisConfig(gate_alpha=0)
    with pytest.raises(ValueError, match="gate_min_logit_diff=-1 is not allowed"):
        AnalysisConfig(gate_min_logit_diff=-1)
    with pytest.raises(ValueError, match="size_gated_out='yes' is not allowed"):
        AnalysisConfig(size_gated_out="yes")
    assert AnalysisConfig().record()["gate_min_logit_diff"] == 0.5


# --- the summary never averages a gated-out task ------------------------------------------------------------------


def _task(passed: bool, edges: int, control_passes: bool = False) -> dict:
    sizes = {who: {"edges": edges} for who in ("model", *CONTROLS)}
    return {"status": "ok", "gate": {"model": {"passed": passed, "reasons": [] if passed else ["accuracy"]},
                                     "random_init": {"passed": control_passes, "reasons": []},
                                     "shuffled_labels": {"passed": False, "reasons": []}},
            "circuits": [{"N_0.8": sizes, "N_0.9": sizes}]}


def test_summary_averages_only_the_tasks_that_passed_the_gate():
    tasks = {"a": _task(True, 4), "b": _task(True, 16), "sized_anyway": _task(False, 1)}
    row = summary(tasks, AnalysisConfig(selections=["topn"]))[0]
    assert row["n_tasks"] == 3 and row["n_tasks_gated_in"] == 2 and row["gated_out"] == ["sized_anyway"]
    assert row["geomean_N_0.8"]["model"] == pytest.approx(8.0)  # sqrt(4 * 16); with the 1: 4.0
    assert row["geomean_N_0.8"]["random_init"] == pytest.approx(8.0)


def test_a_control_that_passes_the_gate_is_reported_as_a_failed_sanity_check():
    tasks = {"a": _task(True, 4, control_passes=True), "b": _task(False, 2)}
    row = summary(tasks, AnalysisConfig(selections=["topn"]))[0]
    assert row["controls_passing_gate"] == {"random_init": ["a"], "shuffled_labels": []}
    notes = gate_notes(tasks)
    assert "sanity check FAILED, a: the control random_init passed the capability gate" in notes
    assert "no capability, b: accuracy" in notes


# --- a random-init model finds no capability ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_model_dir(tmp_path_factory, stdlib_bpe):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("random-init")
    save_model_dir(path, build_model(small_config()), tokenizer_json=stdlib_bpe.to_str())
    return path


@pytest.mark.parametrize("level", ["component", "node"])
def test_random_init_finds_no_capability(random_model_dir, tmp_path, level):
    path = tmp_path / "m"
    shutil.copytree(random_model_dir, path)
    corpus = torch.randint(0, 4096, (8, 32), generator=torch.Generator().manual_seed(0))
    out = analyze(path, AnalysisConfig(level=level, method="eap", n_pairs=32),
                  corpus_tokens=corpus, progress=False)
    ok = {n: t for n, t in out["tasks"].items() if t["status"] == "ok"}
    assert len(ok) >= 5
    for name, t in ok.items():
        assert t["capable"] is False and t["gate"]["model"]["reasons"], name
        assert not any(t["gate"][who]["passed"] for who in CONTROLS), name
        for c in t["circuits"]:  # never sized
            key = "N_0.8" if level == "component" else "loss_full"  # nodes is None also where a target is missed
            assert all(v is None for v in c[key].values()), name
    for row in out["summary"]:
        assert row["n_tasks_gated_in"] == 0 and sorted(row["gated_out"]) == sorted(ok)
        assert all(v is None for k, v in row.items() if k.startswith("geomean_") for v in v.values())
    table = format_table(out)
    assert sum(line.startswith("no capability, ") for line in table.splitlines()) == len(ok)
    assert "sanity check FAILED" not in table


# --- the report reads the gate --------------------------------------------------------------------------------------


def _analysis() -> dict:
    """One component run over three tasks: two the model passed the gate on (one where random init passed too),
    one it failed but that was sized anyway (size_gated_out) with a tiny circuit."""
    def task(passed: bool, edges: int, control: bool) -> dict:
        gate = {"model": {"passed": passed, "accuracy": 0.9 if passed else 0.5, "gap": 2.0 if passed else -1.5,
                          "reasons": [] if passed else ["not above the empty circuit"]},
                "random_init": {"passed": control, "accuracy": 0.5, "gap": 0.0, "reasons": []},
                "shuffled_labels": {"passed": False, "accuracy": 0.5, "gap": 0.0, "reasons": ["accuracy"]}}
        sizes = {who: {"edges": edges} for who in ("model", *CONTROLS)}
        return {"status": "ok", "capability": {}, "gate": gate, "capable": passed, "circuits": [
            {"level": "component", "method": "eap-ig", "selection": "greedy", "n_edges_total": 46, "N_0.8": sizes,
             "N_0.9": sizes, "signal": {who: True for who in ("model", *CONTROLS)}}]}
    tasks = {"a": task(True, 4, False), "b": task(True, 16, True), "c": task(False, 1, False)}
    row = summary(tasks, AnalysisConfig(selections=["greedy"], method="eap-ig"))[0]
    run = {"settings": {"level": "component", "method": "eap-ig", "ablation": "mean"}, "tasks": tasks,
           "summary": [row]}
    return {"results": {"component/eap-ig/mean": run}}


def _report(analysis: dict) -> dict:
    from glassformer.analysis.report.collect import read_circuits

    sizes, tasks = read_circuits(analysis)
    model = {"name": "dense", "constraints": [], "capability": {"val_loss": 3.0}, "n_params": 1,
             "n_nonzero_params": 1, "training": {}, "sizes": sizes, "tasks": tasks}
    return {"models": [model], "levels": ["component"], "baseline": "dense", "verdict": {"rows": []}}


def test_the_report_reads_the_gate_and_never_averages_a_gated_out_task():
    from glassformer.analysis.report.tables import task_table

    report = _report(_analysis())
    sizes = report["models"][0]["sizes"]["component"]
    assert sizes["n_tasks"] == 3 and sizes["n_tasks_gated_in"] == 2
    assert sizes["geomean"]["model"] == pytest.approx(8.0)  # sqrt(4 * 16): the gated-out 1 is left out
    assert sizes["controls_passing_gate"] == {"random_init": ["b"], "shuffled_labels": []}
    by_name = {t["name"]: t for t in report["models"][0]["tasks"]}
    c = by_name["c"]["circuits"]["component"]
    assert c["gate"]["model"] == {"passed": False, "accuracy": 0.5, "gap": -1.5,
                                  "reasons": ["not above the empty circuit"]}
    assert c["signal"]["model"] is False  # f had signal, but the model failed the gate: the verdict skips it
    table = task_table(report, "component")
    rows = {r[0]: r for r in table.rows}
    assert rows["a"][2:4] == ["in (gap 2.00)", "yes"]
    assert rows["b"][2:4] == ["in (gap 2.00)", "no: random init passed"]
    assert rows["c"][2:4] == ["out (gap -1.50)", "yes"]


def test_the_verdict_says_when_a_control_passed_the_gate():
    from glassformer.analysis.report.verdict import verdict_text

    text = verdict_text(_report(_analysis()))
    assert ("Sanity check failed: in dense at component level the random init control passed the capability gate "
            "on b.") in text
    analysis = _analysis()
    for t in analysis["results"]["component/eap-ig/mean"]["tasks"].values():
        t["gate"]["random_init"]["passed"] = False
    analysis["results"]["component/eap-ig/mean"]["summary"] = [
        summary(analysis["results"]["component/eap-ig/mean"]["tasks"], AnalysisConfig(selections=["greedy"]))[0]]
    assert any(line.startswith("Sanity check: the controls found no capability") for line in
               verdict_text(_report(analysis)))


def test_a_report_of_an_analysis_made_before_the_gate_claims_no_sanity_check():
    from glassformer.analysis.report.verdict import verdict_text

    analysis = _analysis()
    run = analysis["results"]["component/eap-ig/mean"]
    for t in run["tasks"].values():
        del t["gate"]
    for key in ("n_tasks_gated_in", "controls_passing_gate", "gated_out"):
        del run["summary"][0][key]
    report = _report(analysis)
    sizes = report["models"][0]["sizes"]["component"]
    assert sizes["n_tasks_gated_in"] is None and sizes["controls_passing_gate"] is None
    assert not any("anity check" in line for line in verdict_text(report))
