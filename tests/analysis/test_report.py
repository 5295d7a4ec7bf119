"""The trade-off report from two small real models: trained through fit, analysed through `glassformer compare`
(which runs the analysis where it is missing), written in three forms whose numbers agree.

One model directory is named with ``<script>``: the HTML must escape it.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from glassformer.analysis.report import ReportSchemaError, validate_report
from glassformer.archs import ModelConfig
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig

DATA = DataConfig(max_bytes=300_000)
SHAPE = dict(d_vocab=512, n_ctx=32, d_model=32, n_layers=2, n_heads=2, d_mlp=64)
TASKS = ["quote_close", "induction"]
HOSTILE = "<script>alert(1)"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """Two models (dense, TopK transcoder) trained 20 steps, compared by the CLI's compare command."""
    from glassformer.analysis import AnalysisConfig
    from glassformer.training.cli.compare import compare
    from glassformer.training.train import fit

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    trainer = TrainerConfig(max_steps=20, batch_size=8, val_every=20, val_batches=2, log_every=5,
                            checkpoint_every=20, progress_bar=False, seed=0)
    optim = OptimConfig(warmup_steps=5)
    dense = fit(ModelConfig(**SHAPE), DATA, optim, trainer, root / "dense")
    sparse_cfg = ModelConfig(**{**SHAPE, "d_mlp": None},
                             mlp={"kind": "transcoder", "activation": "topk", "k": 4, "expansion_factor": 2})
    sparse = fit(sparse_cfg, DATA, optim, trainer, root / HOSTILE)
    out = root / "out"
    # Twenty steps teach no task, so the capability gate rejects every one: size_gated_out sizes them anyway, so
    # that every part of the report is drawn (the gate as the report reads it: test_capability_gate.py).
    compare([str(dense), str(sparse)], out=str(out), analysis=AnalysisConfig(tasks=TASKS, n_pairs=6,
                                                                              corpus_windows=8, size_gated_out=True))
    return out


@pytest.fixture(scope="module")
def report(report_dir):
    return json.loads((report_dir / "report.json").read_text())


def numbers_in_json(obj) -> tuple[list[float], set[str]]:
    """Every number of report.json, and every digit run written inside its strings (names, versions, paths)."""
    values: list[float] = []
    in_strings: set[str] = set()

    def walk(x):
        if isinstance(x, bool):
            return
        if isinstance(x, (int, float)):
            values.append(float(x))
        elif isinstance(x, str):
            in_strings.update(re.findall(r"\d+(?:\.\d+)?", x))
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(obj)
    return values, in_strings


NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\d.])")


def unexplained_numbers(text: str, report: dict) -> list[str]:
    """Numbers shown in ``text`` that are neither a report.json number at the precision shown nor a digit run
    from one of its strings."""
    values, in_strings = numbers_in_json(report)
    bad = []
    for token in NUMBER.findall(text):
        digits = len(token.split(".")[1]) if "." in token else 0
        shown = float(token)
        if token.lstrip("+-") in in_strings:
            continue
        if not any(abs(round(v, digits) - shown) < 10 ** -(digits + 3) for v in values):
            bad.append(token)
    return bad


def html_text(page: str) -> str:
    """The visible text of the page: tags, styles and embedded images removed, entities decoded."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    page = re.sub(r"<[^>]+>", " ", page)
    return html.unescape(page)


def test_the_report_is_written_in_three_forms(report_dir, report):
    assert {p.name for p in report_dir.iterdir()} == {"index.html", "report.md", "report.json"}
    assert [m["name"] for m in report["models"]] == ["dense", HOSTILE]
    assert report["baseline"] == "dense"
    assert report["models"][1]["constraints"] == ["transcoder (topk, k=4, 64 latents)"]
    assert report["levels"] == ["component"]
    for m in report["models"]:
        assert [t["name"] for t in m["tasks"]] == TASKS
        assert m["training"]["steps"] == 20 and m["capability"]["val_loss_source"] == "training.json"
        assert m["sizes"]["component"]["n_total"] == 46  # (3H+1)(H+1)L(L-1)/2 + L(5H+2) + 1 at L = H = 2
        assert m["training_curve"]["train"] and m["sparse_layers"]["source"] == "analysis.json"
    assert report["models"][1]["sparse_layers"]["l0"] <= 4  # TopK with k=4: never more than 4 latents


def test_every_number_in_report_md_is_a_number_of_report_json(report_dir, report):
    md = (report_dir / "report.md").read_text()
    assert unexplained_numbers(md, report) == []
    for m in report["models"]:
        models = md[md.index("## Models"):]  # other tables (comparisons, variants) also start rows with names
        row = next(line for line in models.splitlines() if line.startswith(f"| {html.escape(m['name'], quote=False)}"))
        assert f"{m['capability']['val_loss']:.3f}" in row
        assert f"| {m['n_params']} |" in row


def test_every_number_in_index_html_is_a_number_of_report_json(report_dir, report):
    text = html_text((report_dir / "index.html").read_text())
    assert unexplained_numbers(text, report) == []
    for line in report["verdict"]["text"]:
        assert line in text  # the verdict is shown exactly as report.json holds it


def test_the_checker_catches_a_number_that_is_not_in_report_json(report):
    # The check above can fail: a loss shown with a digit changed is caught.
    loss = report["models"][0]["capability"]["val_loss"]
    assert unexplained_numbers(f"validation loss {loss + 0.01:.3f}", report) != []
    assert unexplained_numbers(f"validation loss {loss:.3f}", report) == []


def test_the_verdict_states_the_cost_and_each_comparison_from_report_json(report):
    (row,) = report["verdict"]["rows"]
    assert row["loss_delta"] == pytest.approx(row["val_loss"] - row["base_val_loss"])
    text = " ".join(report["verdict"]["text"])
    assert f"{row['loss_delta']:+.3f} nats" in text
    (c,) = report["comparisons"]  # no checkpoint ladder: only the comparison at the same steps
    assert c["matched"] == "steps" and c["reason"] in report["verdict"]["text"]
    assert row["calls"] == {"component": {"steps": c["call"]}}
    # Twenty steps teach no task: every task is left out, naming the models that failed the gate, and no call.
    assert c["tasks"] == [] and c["ratio"] is None and c["call"] == "not distinguishable"
    assert [d["task"] for d in c["dropped"]] == TASKS
    assert all("dense failed the capability gate" in d["reason"] for d in c["dropped"])
    assert report["bootstrap"]["n_boot"] == 1000 and report["controls_sanity"]["dense"]["component"]


def test_user_strings_are_escaped_in_the_html(report_dir):
    page = (report_dir / "index.html").read_text()
    assert "<script" not in page.lower()
    assert html.escape(HOSTILE) in page
    md = (report_dir / "report.md").read_text()
    assert "<script" not in md  # Markdown renderers pass raw HTML through


def test_the_html_is_self_contained(report_dir):
    page = (report_dir / "index.html").read_text()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    assert page.count('src="data:image/svg+xml;base64,') >= 5  # scatter, sizes, curves, circuits, training


def test_report_json_follows_the_schema(report):
    validate_report(report)
    validate_report(report, use_jsonschema=False)  # the fallback validator agrees


try:
    import jsonschema  # noqa: F401  (optional: without it validate_report uses its own validator)

    HAVE_JSONSCHEMA = True
except ImportError:
    HAVE_JSONSCHEMA = False


@pytest.mark.parametrize("use_jsonschema", [
    pytest.param(True, marks=pytest.mark.skipif(not HAVE_JSONSCHEMA, reason="jsonschema is not installed")), False])
def test_a_broken_report_is_refused_naming_where(report, use_jsonschema):
    broken = json.loads(json.dumps(report))
    broken["models"][0]["capability"]["val_loss"] = "low"
    with pytest.raises(ReportSchemaError, match="models/0/capability/val_loss"):
        validate_report(broken, use_jsonschema=use_jsonschema)
    del broken["verdict"]
    with pytest.raises(ReportSchemaError, match="verdict"):
        validate_report(broken, use_jsonschema=use_jsonschema)


def test_the_schema_file_is_valid_json_schema():
    jsonschema = pytest.importorskip("jsonschema")

    from glassformer.analysis.report import load_schema

    jsonschema.Draft202012Validator.check_schema(load_schema())


def test_compare_refuses_an_unknown_baseline_and_a_folder_that_is_no_model(report_dir, tmp_path, capsys):
    from glassformer.training.cli import main

    dirs = [str(p) for p in sorted(report_dir.parent.iterdir()) if (p / "analysis.json").is_file()]
    with pytest.raises(SystemExit) as e:
        main(["compare", json.dumps(dirs), "--out", str(tmp_path / "r"), "--baseline", "nope"])
    assert e.value.code == 2 and "baseline='nope' is not allowed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["compare", json.dumps([str(tmp_path)]), "--out", str(tmp_path / "r")])
    assert e.value.code == 2 and "config.json" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_positional_model_directories_become_one_list():
    from glassformer.training.cli.argv import gather_positional_lists

    assert gather_positional_lists(["compare", "a", "--out", "r", "b"]) == ["compare", '["a", "b"]', "--out", "r"]
    assert gather_positional_lists(["compare", "[a, b]", "--out=r"]) == ["compare", "[a, b]", "--out=r"]
    assert gather_positional_lists(["train", "--out", "x"]) == ["train", "--out", "x"]


def test_a_report_folder_that_is_a_file_is_refused(report, tmp_path):
    from glassformer.analysis.report import write_report

    (tmp_path / "r").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        write_report(report, tmp_path / "r")


def test_the_page_names_each_model_directory(report_dir, report):
    # The page names each model directory exactly as report.json records it.
    page = html.unescape((report_dir / "index.html").read_text())
    for m in report["models"]:
        assert m["model_dir"] in page and Path(m["model_dir"]).is_dir()


def test_a_report_shows_the_node_level_when_an_analysis_has_it(report_dir, tmp_path):
    """The two models, one given a node-level run (hand-made, see test_report_units): the report gains that level."""
    from test_report_units import NODE_RUN

    from glassformer.analysis.report import build_report, write_report

    dirs = []
    for src in sorted(p for p in report_dir.parent.iterdir() if (p / "analysis.json").is_file()):
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        dirs.append(dst)
    data = json.loads((dirs[0] / "analysis.json").read_text())
    data["results"]["node/mask/mean"] = NODE_RUN
    (dirs[0] / "analysis.json").write_text(json.dumps(data))
    report = build_report(dirs)
    assert report["levels"] == ["component", "node"]
    dense = next(m for m in report["models"] if "node" in m["sizes"])
    assert dense["sizes"]["node"]["geomean"]["model"] == 12.0
    paths = write_report(report, tmp_path / "report")
    assert "node level" in paths["html"].read_text()
