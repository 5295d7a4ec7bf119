"""The Circuit checks table of the report (report.json, report.md, index.html) and the check lines ``analyze``
prints: N_0.8 under each ablation, the OOD f of the N_0.8 circuit with the shifted task's gate, completeness and
minimality.

Every analysis.json entry below is written by hand with chosen numbers, and every expected cell is written out by
hand from those numbers (rounded by eye to two decimals), never formatted by the code under test.
"""

from __future__ import annotations

import copy
import html
import json
import re
from pathlib import Path

import pytest

from glassformer.analysis import format_table
from glassformer.analysis.report import build_report, validate_report, write_report
from glassformer.analysis.report.checks import check_summary, checks_rows, circuit_checks
from glassformer.analysis.report.collect import read_circuits
from glassformer.analysis.report.tables import all_tables, checks_table

SHAPE = {"n_layers": 2, "n_heads": 2, "d_model": 8, "d_mlp": 16, "d_vocab": 32, "n_ctx": 8}
PASSED = {"passed": True, "accuracy": 0.9, "gap": 2.0, "reasons": []}
FAILED = {"passed": False, "accuracy": 0.5, "gap": -0.1, "reasons": ["not above the empty circuit"]}
DASH = "—"


def entry_t0() -> dict:
    """quote-like task of model alpha: every check recorded."""
    return {
        "by_ablation": {"mean": {"N_0.8": {"edges": 6}, "N_0.9": {"edges": 7}},
                        "corrupt": {"N_0.8": {"edges": 9}, "N_0.9": {"edges": 11}, "signal": False}},
        "ood": {"task": "t0@shifted", "n_pairs": 8, "ablation": "mean", "capable": True,
                "gate": {"passed": True, "reasons": []},
                "circuits": {"N_0.8": {"edges": 6, "m": 2.3, "f": 0.9469, "f_raw": 0.9469},
                             "N_0.9": {"edges": 7, "m": 2.4, "f": 0.3333, "f_raw": 0.3333}}},
        "faithfulness_checks": {
            "edges": 8,
            "completeness": {"random": {"n_subsets": 20, "seed": 0, "mean": 0.3131, "max": 0.4088},
                             "greedy": {"incompleteness": 0.4189, "steps": []}},
            "minimality": {"f_circuit": 0.92, "min_drop": 0.01, "fraction_below": 0.25,
                           "drops": [["e", 0.5]] * 6 + [["g", 0.001]] * 2},
        },
    }


def entry_t1() -> dict:
    """Model alpha on t1: no capability on the shifted task (f None, f_raw 0.5), the second ablation skipped."""
    return {
        "by_ablation": {"mean": {"N_0.8": {"edges": 12}, "N_0.9": {"edges": 14}},
                        "corrupt": {"skipped": "no corrupted prompts"}},
        "ood": {"task": "t1@shifted", "capable": False, "gate": {"passed": False, "reasons": ["chance"]},
                "circuits": {"N_0.8": {"edges": 12, "f": None, "f_raw": 0.5}}},
        "faithfulness_checks": {
            "edges": 12,
            "completeness": {"random": {"mean": 0.0712, "max": 0.1549}, "greedy": {"incompleteness": 0.2861}},
            "minimality": {"min_drop": 0.05, "fraction_below": 0.5, "drops": [["e", 0.01]] * 4},
        },
    }


def analysis_json(entries: dict[str, dict | None]) -> dict:
    """An analysis.json (version 3) with one component run; ``entries``: per task the extra fields of the model's
    greedy circuit, None for a task the model failed the capability gate on."""
    tasks = {}
    for name, extra in entries.items():
        tasks[name] = {"status": "ok", "description": "a task", "n_pairs": 8,
                       "capability": {"model": {"accuracy": 0.9, "loss": 0.3}},
                       "gate": {"model": PASSED if extra is not None else FAILED, "random_init": FAILED,
                                "shuffled_labels": FAILED},
                       "capable": extra is not None,
                       "circuits": [{"level": "component", "method": "eap-ig", "selection": "greedy",
                                     "n_edges_total": 46, "N_0.8": {"model": {"edges": 6}},
                                     "signal": {"model": True}, **(extra or {})}]}
    run = {"settings": {"level": "component", "method": "eap-ig", "ablation": "mean", "n_pairs": 8, "seed": 0,
                        "controls": []},
           "graph": {}, "capability": {"val_loss": 4.0}, "tasks": tasks,
           "summary": [{"level": "component", "method": "eap-ig", "ablation": "mean", "selection": "greedy",
                        "n_tasks": len(tasks), "geomean_N_0.8": {"model": 6.0}}]}
    return {"schema_version": 3, "kind": "glassformer.analysis", "results": {"component/eap-ig/mean": run},
            "latest": "component/eap-ig/mean"}


def write_model(root: Path, name: str, analysis: dict) -> Path:
    import torch
    from safetensors.torch import save_file

    d = root / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(SHAPE))
    save_file({"w": torch.ones(4)}, str(d / "model.safetensors"))
    (d / "training.json").write_text(json.dumps({"steps": 400, "final": {"loss/val": 4.0}}))
    (d / "analysis.json").write_text(json.dumps(analysis))
    return d


# alpha: checks on t0 and t1, t2 gated out; beta: an analysis made before the checks (t0, t1 capable).
ALPHA = {"t0": entry_t0(), "t1": entry_t1(), "t2": None}
BETA = {"t0": {}, "t1": {}}

HEADER = ["model", "task", "N_0.8, mean ablation", "N_0.8, corrupt ablation", "OOD: shifted task's capability gate",
          "OOD: f of N_0.8", "incompleteness, random K: mean", "incompleteness, random K: max",
          "incompleteness, greedy K", "minimality: fraction of members dropping f < min_drop"]
ROWS = {
    ("alpha", "t0"): ["6", "9?", "passed", "0.95", "0.31", "0.41", "0.42", "0.25 of 8 (drop < 0.01)"],
    ("beta", "t0"): [DASH] * 8,
    ("alpha", "t1"): ["12", "skipped", "no capability on the shifted task", DASH, "0.07", "0.15", "0.29",
                      "0.50 of 4 (drop < 0.05)"],
    ("beta", "t1"): [DASH] * 8,
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    dirs = [write_model(root, "alpha", analysis_json(ALPHA)), write_model(root, "beta", analysis_json(BETA))]
    report = build_report(dirs)
    paths = write_report(report, root / "report")
    return json.loads(Path(paths["json"]).read_text()), Path(paths["md"]).read_text(), Path(paths["html"]).read_text()


def md_section(md: str, title: str) -> list[list[str]]:
    """The rows (header first) of the Markdown table under ``## title``, cells unescaped."""
    lines = md[md.index(f"## {title}\n"):].splitlines()[2:]
    lines = lines[:next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))]
    del lines[1]  # | --- | --- |
    return [[html.unescape(c.strip()) for c in line[1:-1].split(" | ")] for line in lines]


def html_section(page: str, title: str) -> list[list[str]]:
    """The rows (header first) of the HTML table titled ``title``, cells unescaped."""
    table = page[page.index(f"<h3>{title}</h3>"):]
    table = table[:table.index("</table>")]
    return [[html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", table)]


def test_the_markdown_table_shows_each_number_in_its_column(written):
    _, md, _ = written
    rows = md_section(md, "Circuit checks, component level")
    assert rows[0] == HEADER
    # Per task, then per model; the gated-out t2 has no row.
    assert [tuple(r[:2]) for r in rows[1:]] == list(ROWS)
    for row in rows[1:]:
        assert row[2:] == ROWS[tuple(row[:2])], row[:2]


def test_the_html_table_is_the_same_table(written):
    _, _, page = written
    rows = html_section(page, "Circuit checks, component level")
    assert rows[0] == HEADER
    assert {tuple(r[:2]): r[2:] for r in rows[1:]} == ROWS


def test_f_is_never_shown_where_the_shifted_gate_failed(written):
    _, md, _ = written
    row = next(r for r in md_section(md, "Circuit checks, component level") if r[:2] == ["alpha", "t1"])
    assert "0.50" not in row[5] and row[5] == DASH  # f_raw 0.5 is for diagnosis only


def test_report_json_keeps_the_checks_as_recorded(written):
    report, _, _ = written
    validate_report(report)
    validate_report(report, use_jsonschema=False)
    alpha = next(m for m in report["models"] if m["name"] == "alpha")
    t0 = next(t for t in alpha["tasks"] if t["name"] == "t0")["circuits"]["component"]["checks"]
    assert t0 == {
        "by_ablation": [{"ablation": "mean", "N_0.8": 6, "N_0.9": 7, "signal": True, "skipped": None},
                        {"ablation": "corrupt", "N_0.8": 9, "N_0.9": 11, "signal": False, "skipped": None}],
        "ood": {"task": "t0@shifted", "capable": True, "f": 0.9469, "size": 6, "skipped": None},
        "completeness": {"random_mean": 0.3131, "random_max": 0.4088, "greedy_incompleteness": 0.4189},
        "minimality": {"fraction_below": 0.25, "min_drop": 0.01, "members": 8}}
    beta = next(m for m in report["models"] if m["name"] == "beta")
    t0 = next(t for t in beta["tasks"] if t["name"] == "t0")["circuits"]["component"]["checks"]
    assert t0 == {"by_ablation": [], "ood": None, "completeness": None, "minimality": None}


def test_a_broken_checks_record_is_refused_by_the_schema(written):
    from glassformer.analysis.report import ReportSchemaError

    broken = copy.deepcopy(written[0])
    alpha = next(m for m in broken["models"] if m["name"] == "alpha")
    alpha["tasks"][0]["circuits"]["component"]["checks"]["ood"]["f"] = "0.95"
    for use_jsonschema in (True, False):
        with pytest.raises(ReportSchemaError, match="checks/ood/f"):
            validate_report(broken, use_jsonschema=use_jsonschema)


def checks_rows_of(entries: dict[str, dict | None]) -> list[list[str]] | None:
    """The rows of the checks table of a one-model report built from ``entries`` (None: no table)."""
    _, tasks = read_circuits(analysis_json(entries))
    table = checks_table({"models": [{"name": "m", "tasks": tasks}], "levels": ["component"]}, "component")
    return None if table is None else table.rows


@pytest.mark.parametrize(("missing", "dashed"), [
    ("by_ablation", [0, 1]), ("ood", [2, 3]), ("faithfulness_checks", [4, 5, 6, 7])])
def test_an_entry_missing_one_record_shows_dashes_there_only(missing, dashed):
    entry = entry_t0()
    del entry[missing]
    rows = checks_rows_of({"t0": entry})
    if missing == "by_ablation":
        # No ablation columns at all: the table has the other six cells.
        assert rows == [["m", "t0", "passed", "0.95", "0.31", "0.41", "0.42", "0.25 of 8 (drop < 0.01)"]]
        return
    expected = ROWS[("alpha", "t0")][:]
    for i in dashed:
        expected[i] = DASH
    assert rows == [["m", "t0", *expected]]


@pytest.mark.parametrize("broken", [
    {"ood": {"task": "t0@shifted", "capable": True}},  # no circuits scored
    {"ood": {"capable": None, "circuits": {"N_0.8": None}}},
    {"faithfulness_checks": {"completeness": {"random": None}, "minimality": {"drops": None}}},
    {"by_ablation": {"mean": None, "corrupt": {"N_0.8": None}}},
    {"faithfulness_checks": None, "ood": None},
    {"by_ablation": {"mean": "6", "corrupt": [9]}, "ood": {"circuits": "none", "gate": "?"}},
])
def test_partial_records_never_crash_and_show_dashes(broken):
    entry = {**entry_t0(), **broken}
    rows = checks_rows_of({"t0": entry})
    assert rows is not None and len(rows) == 1 and DASH in rows[0]


def test_a_report_whose_analyses_predate_the_checks_has_no_checks_table():
    assert checks_rows_of({"t0": {}, "t1": {}}) is None


def test_a_skipped_ood_record_says_why():
    entry = {**entry_t0(), "ood": {"skipped": "no shifted pairs were built for this task"}}
    row = checks_rows_of({"t0": entry})[0]
    assert row[4:6] == ["not scored: no shifted pairs were built for this task", DASH]


def test_node_level_entries_show_the_shifted_gate_and_dashes_elsewhere():
    node = {"level": "node", "ood": {"task": "t0@shifted", "capable": True, "circuits": {
        "model": {"nodes": 31, "loss": 0.2, "kl": 0.1, "reached": True}}}}
    _, tasks = read_circuits(analysis_json({"t0": {}}))
    tasks[0]["circuits"]["node"] = {"gate": {"model": PASSED}, "checks": circuit_checks(node)}
    names, rows = checks_rows({"models": [{"name": "m", "tasks": tasks}]}, "node")
    assert names == [] and rows == [["m", "t0", "passed", DASH, DASH, DASH, DASH, DASH]]


def test_analyze_prints_one_check_line_per_capable_task():
    run = analysis_json(ALPHA)["results"]["component/eap-ig/mean"]
    lines = check_summary(run)
    assert lines[2:] == [
        "  t0: N_0.8 by ablation mean 6, corrupt 9?; OOD f 0.95 (shifted task: passed); incompleteness random "
        "mean 0.31 max 0.41, greedy 0.42; minimality 0.25 of 8 (drop < 0.01)",
        "  t1: N_0.8 by ablation mean 12, corrupt skipped; OOD f — (shifted task: no capability on the shifted "
        "task); incompleteness random mean 0.07 max 0.15, greedy 0.29; minimality 0.50 of 4 (drop < 0.05)"]
    assert check_summary({"tasks": {"t2": run["tasks"]["t2"]}}) == []  # gated out: no line


def test_the_analyze_table_ends_with_the_check_lines():
    run = analysis_json(ALPHA)["results"]["component/eap-ig/mean"]
    run["settings"].update(selections=["greedy"], controls=[])
    run["graph"] = {"n_edges": 46}
    for t in run["tasks"].values():
        c = t["circuits"][0]
        c.update({"N_0.9": {"model": {"edges": 7}}, "CPR": {"model": 0.5}, "CMD": {"model": 0.1}})
    run["summary"][0].update({"geomean_N_0.9": {"model": 7.0}, "n_tasks_gated_in": 2})
    text = format_table(run)
    assert ("  t0: N_0.8 by ablation mean 6, corrupt 9?; OOD f 0.95 (shifted task: passed); incompleteness random "
            "mean 0.31 max 0.41, greedy 0.42; minimality 0.25 of 8 (drop < 0.01)") in text.splitlines()
    assert not any(line.startswith("  t2:") for line in text.splitlines())
    # Printed once: the task rows above carry no second copy of these numbers.
    assert not any(line.lstrip().startswith("+") for line in text.splitlines())


def test_every_tables_dict_holds_the_checks_of_each_level(written):
    report, _, _ = written
    tables = all_tables(report)
    assert [t.title for t in tables["circuit_checks"]] == ["Circuit checks, component level"]
