"""``analyze`` and ``format_table``: the JSON contract, controls beside every size, refusals before any work."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests_analysis_support import make_model, small_config

from glassformer.analysis import CONTROLS, SCHEMA_VERSION, analyze, format_table
from glassformer.analysis.capability import validation_loss
from glassformer.analysis.tasks import TASKS, AnswerTokenError
from glassformer.archs import ModelDirError, build_model, save_model_dir

SIZE_KEYS = ("N_0.8", "N_0.9", "CPR", "CMD")


@pytest.fixture
def model_dir(tmp_path, small_model_dir):
    path = tmp_path / "model"
    shutil.copytree(small_model_dir, path)
    return path


def corpus(n: int, T: int = 32) -> torch.Tensor:
    return torch.randint(0, 4096, (n, T), generator=torch.Generator().manual_seed(n))


@pytest.fixture(scope="module")
def result(tmp_path_factory, stdlib_bpe):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("analyzed")
    save_model_dir(path, build_model(small_config()), tokenizer_json=stdlib_bpe.to_str())
    # A random-init model has no capability, so the gate rejects every task: size_gated_out sizes them anyway so the
    # sizing machinery is checked here (the gate itself: test_capability_gate.py).
    out = analyze(path, tasks=["quote_close", "induction"], corpus_tokens=corpus(8), val_tokens=corpus(4, 33),
                  n_pairs=6, seed=1, progress=False, size_gated_out=True)
    return path, out


def test_analysis_json_is_the_returned_dict(result):
    path, out = result
    assert json.loads((path / "analysis.json").read_text()) == json.loads(json.dumps(out))
    assert out["schema_version"] == SCHEMA_VERSION
    assert out["settings"]["method"] == "auto" and out["settings"]["ablation"] == "mean"
    assert out["graph"]["n_edges"] == out["graph"]["edge_count_by_formula"] == 46


def test_every_circuit_number_carries_its_settings_and_controls(result):
    _, out = result
    for name in ("quote_close", "induction"):
        task = out["tasks"][name]
        assert task["status"] == "ok" and task["n_pairs"] == 6 and task["seed"] == 1
        assert set(task["capability"]) == {"model", *CONTROLS}
        assert [c["selection"] for c in task["circuits"]] == ["topn", "greedy"]
        for c in task["circuits"]:
            for key in ("level", "method", "ablation", "n_pairs", "seed", "controls"):
                assert c[key] == out["settings"][key]
            for key in SIZE_KEYS:
                assert set(c[key]) == {"model", *CONTROLS}, key
                assert all(v is not None for v in c[key].values()), key
            for who in ("model", *CONTROLS):
                n = c["N_0.8"][who]["edges"]
                assert 1 <= n <= 46 and c["N_0.8"][who]["fraction"] == pytest.approx(n / 46)
                assert c["faithfulness_curve"][who][-1]["f"] == 1.0
    for row in out["summary"]:
        assert set(row["geomean_N_0.8"]) == {"model", *CONTROLS}


def test_tasks_sized_despite_the_gate_are_never_averaged(result):
    _, out = result
    assert not any(t["capable"] for t in out["tasks"].values())  # random init: every task gated out
    for i, row in enumerate(out["summary"]):
        assert row["n_tasks"] == 2 and row["n_tasks_gated_in"] == 0
        assert sorted(row["gated_out"]) == ["induction", "quote_close"]
        for who in ("model", *CONTROLS):
            assert all(t["circuits"][i]["N_0.8"][who]["edges"] for t in out["tasks"].values())  # sized...
            assert row["geomean_N_0.8"][who] is None  # ...but not averaged


def test_the_table_puts_controls_beside_every_size(result):
    _, out = result
    table = format_table(out)
    for name in ("quote_close", "induction"):
        rows = [line for line in table.splitlines() if line.startswith(name)]
        assert len(rows) == 2  # one per selection
        for row in rows:
            cells = row.split("  ")
            assert sum("[" in cell and "|" in cell and "]" in cell for cell in cells) == len(SIZE_KEYS)
    assert "random_init | shuffled_labels" in table


def test_random_init_control_is_a_different_model(result):
    _, out = result
    assert out["capability"]["random_init_val_loss"] != out["capability"]["val_loss"]


def test_mean_ablation_without_corpus_falls_back_to_zero_and_says_so(model_dir):
    with pytest.warns(UserWarning, match="no corpus_tokens"):
        out = analyze(model_dir, tasks=["quote_close"], n_pairs=3, controls=False, progress=False)
    assert out["settings"]["ablation"] == "zero" and out["settings"]["ablation_requested"] == "mean"
    assert "zero ablation used instead" in out["settings"]["ablation_note"]
    assert "zero ablation used instead" in format_table(out)
    c = out["tasks"]["quote_close"]["circuits"][0]
    assert c["ablation"] == "zero" and c["controls"] == [] and c["N_0.8"]["random_init"] is None


def test_tasks_whose_answers_are_not_single_tokens_are_skipped_with_the_reason(tmp_path, byte_bpe):
    torch.manual_seed(0)
    save_model_dir(tmp_path, make_model(d_vocab=300, n_ctx=64), tokenizer_json=byte_bpe.to_str())
    out = analyze(tmp_path, n_pairs=3, controls=False, progress=False, ablation="zero",
                  selections=("topn",))
    skipped = {n: t["reason"] for n, t in out["tasks"].items() if t["status"] == "skipped"}
    assert "else_vs_except" in skipped and "' else'" in skipped["else_vs_except"]
    assert out["tasks"]["induction"]["status"] == "ok"
    assert set(out["tasks"]) == set(TASKS.names())
    assert "skipped else_vs_except" in format_table(out)


def test_bad_input_is_refused_before_anything_is_written(model_dir, tmp_path):
    sentinel = '{"old": true}\n'
    (model_dir / "analysis.json").write_text(sentinel)
    with pytest.raises(ValueError, match="tasks='nope' is not allowed: expected one of .*quote_close.*induction"):
        analyze(model_dir, tasks=["nope"], progress=False)
    with pytest.raises(ValueError, match=r"method='nope' is not allowed: expected one of exact, eap, eap-ig, "
                       r"eap-ig-gl, eap-ig-act, acdc, eap-ig-gl\+exact, auto"):
        analyze(model_dir, method="nope", progress=False)
    with pytest.raises(ValueError, match="ablation='half' is not allowed"):
        analyze(model_dir, ablation="half", progress=False)
    with pytest.raises(ValueError, match=r"corpus_tokens holds ids in \[.*\]: expected ids in \[0, 4096\)"):
        analyze(model_dir, corpus_tokens=torch.full((2, 4), 5000), progress=False)
    assert (model_dir / "analysis.json").read_text() == sentinel
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    with pytest.raises(ModelDirError, match="config.json is missing"):
        analyze(empty, progress=False)
    assert not (empty / "analysis.json").exists()
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(ModelDirError, match="tokenizer.json is missing"):
        analyze(model_dir, progress=False)
    assert (model_dir / "analysis.json").read_text() == sentinel


def test_a_named_task_with_multi_token_answers_is_an_error(tmp_path, byte_bpe):
    save_model_dir(tmp_path, make_model(d_vocab=300, n_ctx=64), tokenizer_json=byte_bpe.to_str())
    with pytest.raises(AnswerTokenError, match="task 'else_vs_except': answer ' else' is not a single token"):
        analyze(tmp_path, tasks=["induction", "else_vs_except"], ablation="zero", progress=False)
    assert not (tmp_path / "analysis.json").exists()


def test_validation_loss_is_the_mean_next_token_cross_entropy():
    model = make_model()
    tokens = torch.randint(0, 50, (5, 9), generator=torch.Generator().manual_seed(0))
    logits = model(tokens[:, :-1])
    expected = F.cross_entropy(logits.reshape(-1, 50), tokens[:, 1:].reshape(-1)).item()
    out = validation_loss(model, tokens, batch_size=2)
    assert out["loss"] == pytest.approx(expected, rel=1e-5) and out["tokens"] == 40


def test_the_per_pair_record_reproduces_the_sizes_and_the_curve(result):
    """INTERFACES.md section 1: f of circuit j = (mean ld[j] - mean ld_empty) / (mean ld_model - mean ld_empty)
    over the held-out pairs, and N_p = edges[j] of the first j with f >= p; recomputed here with numpy."""
    _, out = result
    for task in out["tasks"].values():
        held_out = task["attribution"]["measured_on_pairs"]
        for c in task["circuits"]:
            assert set(c["pairs"]) == {"model"}
            rec = c["pairs"]["model"]
            assert len(rec["ld_model"]) == len(rec["ld_empty"]) == held_out
            assert all(len(row) == held_out for row in rec["ld"]) and len(rec["ld"]) == len(rec["edges"])
            assert rec["edges"][0] == 0 and rec["edges"][-1] == 46 and rec["edges"] == sorted(rec["edges"])
            assert rec["ld"][0] == rec["ld_empty"] and rec["ld"][-1] == rec["ld_model"]
            for row in [*rec["ld"], rec["ld_model"]]:
                assert all(float(f"{v:.5g}") == v for v in row)
            empty, full = np.mean(rec["ld_empty"]), np.mean(rec["ld_model"])
            f = [(np.mean(row) - empty) / (full - empty) for row in rec["ld"]]
            for p in (0.8, 0.9):
                first = next(j for j, v in enumerate(f) if v >= p)
                assert rec["edges"][first] == c[f"N_{p:g}"]["model"]["edges"]
            for point in c["faithfulness_curve"]["model"]:
                same = [v for e, v in zip(rec["edges"], f, strict=True) if e == point["edges"]]
                assert any(v == pytest.approx(point["f"], rel=1e-9, abs=1e-12) for v in same), point


def test_each_circuit_records_its_checks_and_its_sizes_under_both_ablations(result):
    _, out = result
    config = out["results"][out["latest"]]["config"]
    assert config["second_ablation"] == "corrupt" and config["n_subsets"] == 20
    for task in out["tasks"].values():
        assert task["attribution"]["second_ablation"]["ablation"] == "corrupt"
        for c in task["circuits"]:
            n08 = c["N_0.8"]["model"]
            checks = c["faithfulness_checks"]
            assert checks["edges"] == n08["edges"] == len(checks["minimality"]["drops"])
            assert len(checks["completeness"]["random"]["subsets"]) == 20
            assert len(checks["completeness"]["greedy"]["steps"]) == min(n08["edges"], 5)
            assert set(c["by_ablation"]) == {"mean", "corrupt"}
            assert c["by_ablation"]["mean"] == {"N_0.8": n08, "N_0.9": c["N_0.9"]["model"]}
            second = c["by_ablation"]["corrupt"]
            assert {"N_0.8", "N_0.9", "curve", "completeness", "signal"} <= set(second)
            assert second["curve"][-1]["f"] == 1.0 and second["N_0.8"]["edges"] <= 46
            assert len(second["completeness"]["greedy"]["steps"]) == min(second["N_0.8"]["edges"], 5)
