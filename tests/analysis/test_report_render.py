"""Drawing the uncertainty parts of a report (INTERFACES section 3): intervals in every size cell, the comparisons,
variants, stability and controls-sanity tables, the verdict's reasoning, error bars and the frontier plot.

The report is built by the current code (``build_report``) from hand-made model directories whose numbers are
chosen here, then given the new fields by hand with known numbers; every expected cell below is written out by
hand from those numbers, never formatted by the code under test.

    python tests/analysis/test_report_render.py OUT_DIR   # writes that report (index.html, report.md, report.json)
"""

from __future__ import annotations

import base64
import copy
import html
import json
import re
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from glassformer.analysis.report import plots
from glassformer.analysis.report.html import render_html
from glassformer.analysis.report.markdown import render_markdown
from glassformer.analysis.report.tables import all_tables

sys.path.insert(0, str(Path(__file__).parent))
from test_report import html_text, unexplained_numbers  # noqa: E402

SHAPE = {"n_layers": 2, "n_heads": 2, "d_model": 8, "d_mlp": 16, "d_vocab": 32, "n_ctx": 8}
TASKS = ["t0", "t1", "t2"]
# name: (extra config, per-task N_0.8, geometric mean (by hand: cube root of the product), validation loss)
MODELS = {
    "dense-seed0": ({}, [9, 12, 16], 12.0, 4.0),
    "dense-seed1": ({}, [8, 8, 8], 8.0, 4.02),
    "weight_sparse-seed0": ({"weight_sparsity": {"fraction": 0.25}}, [4, 6, 9], 6.0, 4.1),
    "weight_sparse-seed1": ({"weight_sparsity": {"fraction": 0.25}}, [2, 4, 8], 4.0, 4.15),
}
SVG_NS = "{http://www.w3.org/2000/svg}"


def write_model(root: Path, name: str) -> Path:
    """A model directory as collect_model reads it: config, a one-tensor safetensors, training and analysis."""
    import torch
    from safetensors.torch import save_file

    extra, sizes, geomean, val_loss = MODELS[name]
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**SHAPE, **extra}))
    save_file({"w": torch.ones(4)}, str(d / "model.safetensors"))
    (d / "training.json").write_text(json.dumps({"steps": 400, "final": {"loss/val": val_loss}}))
    failed = {"passed": False, "accuracy": 0.5, "gap": -0.1, "reasons": ["not above the empty circuit"]}
    tasks = {t: {"status": "ok", "description": "a task", "n_pairs": 8,
                 "capability": {"model": {"accuracy": 0.9, "loss": 0.3}},
                 "gate": {"model": {"passed": True, "accuracy": 0.9, "gap": 2.0, "reasons": []},
                          "random_init": failed, "shuffled_labels": failed},
                 "circuits": [{"level": "component", "method": "eap-ig", "selection": "greedy", "n_edges_total": 46,
                               "N_0.8": {"model": {"edges": s}, "random_init": {"edges": 30},
                                         "shuffled_labels": {"edges": 35}},
                               "signal": {"model": True, "random_init": False, "shuffled_labels": False},
                               "top_edges": {"model": [["input->logits", 0.5], ["a0.h1->logits", 0.25]]}}]}
             for t, s in zip(TASKS, sizes, strict=True)}
    run = {"settings": {"level": "component", "method": "eap-ig", "ablation": "mean", "n_pairs": 8, "seed": 0,
                        "controls": ["random_init", "shuffled_labels"]},
           "graph": {}, "capability": {"val_loss": val_loss}, "tasks": tasks,
           "summary": [{"level": "component", "method": "eap-ig", "ablation": "mean", "selection": "greedy",
                        "n_tasks": 3, "n_tasks_gated_in": 3,
                        "controls_passing_gate": {"random_init": [], "shuffled_labels": []},
                        "geomean_N_0.8": {"model": geomean, "random_init": 30.0, "shuffled_labels": 35.0}}]}
    (d / "analysis.json").write_text(json.dumps({"schema_version": 3, "kind": "glassformer.analysis",
                                                 "results": {"component/eap-ig/mean": run},
                                                 "latest": "component/eap-ig/mean"}))
    return d


NEW_KEYS = ("bootstrap", "variants", "comparisons", "frontier", "stability", "controls_sanity")


def old_report_from(root: Path) -> dict:
    """The report of build_report over the four hand-made model directories, without INTERFACES section 3's
    fields (a build_report that already writes them has them taken out: this is the old format)."""
    from glassformer.analysis.report import build_report

    root.mkdir(parents=True, exist_ok=True)
    dirs = [write_model(root, name) for name in MODELS]
    report = build_report(dirs, baseline=dirs[0], command=["test"])
    for key in NEW_KEYS:
        report.pop(key, None)
    for m in report["models"]:
        for key in ("variant", "seed", "val_loss"):
            m.pop(key, None)
        for sizes in m["sizes"].values():
            sizes.pop("interval", None)
        for t in m["tasks"]:
            for c in t.get("circuits", {}).values():
                c.pop("interval", None)
    return report


REASON_STEPS = ("After the same 400 steps weight_sparse's circuits are half the size of dense's (ratio 0.50, "
                "interval 0.40 to 0.61), beyond dense's own seed-to-seed range of 0.80 to 1.25.")
REASON_LOSS = ("Against the dense checkpoint with the nearest validation loss the ratio is 0.62 (0.45 to 0.90); "
               "with one baseline seed there is no seed-to-seed range, so this is not distinguishable.")
FRONTIER_DENSE = [  # the baseline's ladder; step 50 has no size (never drawn), step 200 no interval (no error bar)
    {"model": "dense-seed0/ladder/step-000050", "step": 50, "val_loss": 5.2, "geomean": None, "lo": None, "hi": None},
    {"model": "dense-seed0/ladder/step-000100", "step": 100, "val_loss": 4.6, "geomean": 25.0, "lo": 20.0, "hi": 31.0},
    {"model": "dense-seed0/ladder/step-000200", "step": 200, "val_loss": 4.3, "geomean": 18.0, "lo": None, "hi": None},
    {"model": "dense-seed0/ladder/step-000300", "step": 300, "val_loss": 4.12, "geomean": 14.0, "lo": 11.0, "hi": 17.0},
    {"model": "dense-seed0", "step": 400, "val_loss": 4.0, "geomean": 12.0, "lo": 9.0, "hi": 16.0},
]
FRONTIER_WS = [  # seeds: one step shared (a ladder has several)
    {"model": "weight_sparse-seed0", "step": 400, "val_loss": 4.1, "geomean": 6.0, "lo": 4.5, "hi": 8.0},
    {"model": "weight_sparse-seed1", "step": 400, "val_loss": 4.15, "geomean": 4.0, "lo": 3.0, "hi": 5.5},
]


def add_new_fields(report: dict) -> dict:
    """INTERFACES section 3's fields, by hand, with known numbers."""
    r = copy.deepcopy(report)
    r["bootstrap"] = {"n_boot": 1000, "resampled": "held-out pairs within each task; seeds where a variant has "
                      "several", "confidence": 0.95, "seed": 0}
    intervals = {"dense-seed0": ({"geomean": 12.0, "lo": 9.0, "hi": 16.0}, [[7, 11], [10, 15], None]),
                 "dense-seed1": (None, [None, None, None]),  # a model the bootstrap could not resample
                 "weight_sparse-seed0": ({"geomean": 6.0, "lo": 4.5, "hi": 8.0}, [[3, 5], [5, 8], [7, 12]]),
                 "weight_sparse-seed1": ({"geomean": 4.0, "lo": 3.0, "hi": 5.5}, [[1, 3], [3, 6], [6, 11]])}
    for m in r["models"]:
        variant, seed = m["name"].rsplit("-seed", 1)
        m.update(variant=variant, seed=int(seed), val_loss=m["capability"]["val_loss"])
        whole, per_task = intervals[m["name"]]
        m["sizes"]["component"]["interval"] = whole
        for t, iv in zip(m["tasks"], per_task, strict=True):
            t["circuits"]["component"]["interval"] = iv
    r["variants"] = [
        {"variant": "dense", "seeds": [0, 1], "models": ["dense-seed0", "dense-seed1"],
         "val_loss": {"mean": 4.01, "min": 4.0, "max": 4.02},
         "levels": {"component": {"geomean": 9.8, "lo": 7.5, "hi": 13.0, "n_tasks": 3}}},
        {"variant": "weight_sparse", "seeds": [0, 1], "models": ["weight_sparse-seed0", "weight_sparse-seed1"],
         "val_loss": {"mean": 4.125, "min": 4.1, "max": 4.15},
         "levels": {"component": {"geomean": 4.9, "lo": 3.5, "hi": 6.5, "n_tasks": 3}}}]
    common = {"variant": "weight_sparse", "baseline": "dense", "level": "component", "tasks": TASKS, "seeds": [0, 1]}
    r["comparisons"] = [
        {**common, "matched": "steps", "baseline_point": {"model": "dense-seed0", "step": 400, "val_loss": 4.01},
         "baseline_models": ["dense-seed0", "dense-seed1"],  # beyond section 3: both seeds, as branch uncert has it
         "loss_gap": 0.115, "ratio": 0.5, "lo": 0.4, "hi": 0.61, "seed_spread": [0.8, 1.25], "call": "smaller",
         "reason": REASON_STEPS},
        {**common, "matched": "loss",
         "baseline_point": {"model": "dense-seed0/ladder/step-000300", "step": 300, "val_loss": 4.12},
         "loss_gap": 0.005, "ratio": 0.62, "lo": 0.45, "hi": 0.9, "seed_spread": None,
         "call": "not distinguishable", "reason": REASON_LOSS}]
    r["verdict"]["text"] += [REASON_STEPS, REASON_LOSS]  # the verdict's sentences repeat each reason
    r["frontier"] = {"component": {"dense": FRONTIER_DENSE, "weight_sparse": FRONTIER_WS}}
    r["stability"] = {"transcoder": {"mean_best_cosine": 0.83, "frac_above_0.9": 0.41,
                                     "chance_mean_best_cosine": 0.21, "chance_frac_above_0.9": 0.0, "seeds": [0, 1],
                                     "site": "layer 0 decoder"}}
    r["controls_sanity"] = {"dense-seed0": {"component": {"random_init": "found no capability",
                                                          "shuffled_labels": "found capability on t2"}}}
    return r


@pytest.fixture(scope="module")
def old_report(tmp_path_factory):
    return old_report_from(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def report(old_report):
    return add_new_fields(old_report)


@pytest.fixture(scope="module")
def md(report):
    return render_markdown(report)


@pytest.fixture(scope="module")
def page(report):
    return render_html(report)


def md_rows(md: str, title: str) -> list[list[str]]:
    """The body rows of the Markdown table under the heading ``title``, as cells."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == title)
    rows = []
    for line in lines[start + 3:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])  # a pipe inside a cell is escaped as \|
        rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows[1:]


def html_rows(page: str, title: str) -> list[list[str]]:
    """The body rows of the HTML table under ``<h3>title</h3>``, as unescaped cell texts."""
    start = page.index(f"<h3>{html.escape(title)}</h3>")
    body = page[start:page.index("</tbody>", start)]
    return [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)] for row in body.split("<tr>")[2:]]


def test_every_size_in_the_tables_carries_its_interval(md, page):
    for rows in (md_rows(md, "Models"), html_rows(page, "Models")):
        sizes = {r[0].replace(" (baseline)", ""): r[-1] for r in rows}
        assert sizes["dense-seed0"] == "12 [9, 16] (30 | 35), tasks: 3/3"
        assert sizes["dense-seed1"] == "8 (30 | 35), tasks: 3/3"  # no interval: the size alone
        assert sizes["weight_sparse-seed0"] == "6 [4.5, 8] (30 | 35), tasks: 3/3"
    for rows in (md_rows(md, "Circuit size per task, component level"),
                 html_rows(page, "Circuit size per task, component level")):
        cells = {r[0]: r[-4:] for r in rows}  # the last four columns: each model's size
        assert cells["t0"] == ["9 [7, 11] (30? | 35?)", "8 (30? | 35?)", "4 [3, 5] (30? | 35?)",
                               "2 [1, 3] (30? | 35?)"]
        assert cells["t2"][0] == "16 (30? | 35?)"


def test_the_comparisons_table_shows_both_matchings(md, page):
    for rows in (md_rows(md, "Comparisons"), html_rows(page, "Comparisons")):
        steps, loss = rows
        assert steps == ["weight_sparse", "component", "steps",
                         "dense-seed0, dense-seed1 (step 400, validation loss 4.010)", "+0.115",
                         "0.50 [0.40, 0.61]", "3: t0, t1, t2", "0, 1", "[0.80, 1.25]", "smaller"]
        assert loss[2:6] == ["loss", "dense-seed0/ladder/step-000300 (step 300, validation loss 4.120)", "+0.005",
                             "0.62 [0.45, 0.90]"]
        assert loss[8:] == ["-", "not distinguishable"]  # one baseline seed: no seed-to-seed range


def test_the_variants_stability_and_sanity_tables(md, page):
    for rows_of in (lambda t: md_rows(md, t), lambda t: html_rows(page, t)):
        assert rows_of("Variants") == [
            ["dense", "0, 1", "dense-seed0, dense-seed1", "4.010 [4.000, 4.020]", "9.8 [7.5, 13], tasks: 3"],
            ["weight_sparse", "0, 1", "weight_sparse-seed0, weight_sparse-seed1", "4.125 [4.100, 4.150]",
             "4.9 [3.5, 6.5], tasks: 3"]]
        assert rows_of("Stability across seeds") == [["transcoder", "layer 0 decoder", "0, 1", "0.830", "0.210",
                                                      "0.410", "0.000"]]
        assert rows_of("Controls sanity check") == [["dense-seed0", "component", "found no capability",
                                                     "found capability on t2"]]


def test_the_verdict_reasons_come_first_one_paragraph_each(md, page):
    """Each reason once (the verdict's sentences repeat it: not again in the details), before the details."""
    verdict = md.index("## Verdict")
    details = md.index("### Details")
    for reason in (REASON_STEPS, REASON_LOSS):
        assert md.count(reason) == 1 and verdict < md.index(reason) < details
    assert md.index(REASON_STEPS) < md.index(REASON_LOSS) < md.index("### Comparisons") < details
    assert "**weight_sparse against dense, component level, matched by steps.** " + REASON_STEPS in md
    section = page[page.index('<section id="verdict"'):page.index("</section>", page.index('id="verdict"'))]
    paragraphs = [html.unescape(p) for p in re.findall(r'<p class="reason">(.*?)</p>', section)]
    assert len(paragraphs) == 2 and REASON_STEPS in paragraphs[0] and REASON_LOSS in paragraphs[1]
    assert html.unescape(page).count(REASON_STEPS) == 1
    assert section.index("not distinguishable.</p>") < section.index("<h3>Comparisons</h3>") < section.index("<h3>Details</h3>")


def test_every_number_shown_is_a_number_of_report_json(report, md, page):
    assert unexplained_numbers(md, report) == []
    assert unexplained_numbers(html_text(page), report) == []


def svg_root(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)


def group(root: ElementTree.Element, gid: str) -> list[ElementTree.Element]:
    return [g for g in root.iter(f"{SVG_NS}g") if g.get("id") == gid]


def test_the_frontier_has_one_curve_per_variant_through_its_points(report):
    svg = plots.frontier(report, "component")
    root = svg_root(svg)
    # matplotlib writes each text as a comment beside its glyph paths: the legend and the ladder's step labels.
    assert "<!-- dense (baseline, checkpoints) -->" in svg and "<!-- weight_sparse (seeds) -->" in svg
    assert re.findall(r"<!-- step (\d+) -->", svg) == ["100", "200", "300", "400"]
    expected = {"dense": (4, 3), "weight_sparse": (2, 2)}  # (points with a size, points with an interval)
    for variant, (n_points, n_bars) in expected.items():
        (curve,) = group(root, f"frontier-{variant}")
        paths = [p for p in curve if p.tag == f"{SVG_NS}path"]
        assert len(paths) == 1  # one line through the points ...
        markers = list(curve.iter(f"{SVG_NS}use"))
        assert len(markers) == n_points  # ... with a marker on each
        xs = [float(u.get("x")) for u in markers]
        assert xs == sorted(xs) and len(set(xs)) == len(xs)
        (bars,) = group(root, f"frontier-err-{variant}")
        assert len(bars.findall(f"{SVG_NS}path")) == n_bars
    # Lower loss to the right: the dense point at 4.00 lies right of the one at 4.60.
    dense = [float(u.get("x")) for u in group(root, "frontier-dense")[0].iter(f"{SVG_NS}use")]
    assert dense[-1] > dense[0]
    assert len([g for g in root.iter(f"{SVG_NS}g") if (g.get("id") or "").startswith("frontier-")]) == 4


def test_sizes_are_drawn_with_error_bars(report):
    sizes = svg_root(plots.circuit_sizes(report, "component"))
    bars = {m: len(group(sizes, f"sizes-err-{m}")[0].findall(f"{SVG_NS}path")) if group(sizes, f"sizes-err-{m}")
            else 0 for m in MODELS}
    assert bars == {"dense-seed0": 2, "dense-seed1": 0, "weight_sparse-seed0": 3, "weight_sparse-seed1": 3}
    scatter = svg_root(plots.capability_scatter(report, "component"))
    assert {m: len(group(scatter, f"scatter-err-{m}")) for m in MODELS} == {
        "dense-seed0": 1, "dense-seed1": 0, "weight_sparse-seed0": 1, "weight_sparse-seed1": 1}


def test_the_page_embeds_the_frontier_and_links_the_new_sections(page):
    for section in ("verdict", "frontier", "checks"):
        assert f'id="{section}"' in page and f'href="#{section}"' in page
    images = dict(re.findall(r'<img class="plot" alt="([^"]*)" src="data:image/svg\+xml;base64,([^"]+)"', page))
    frontier = svg_root(base64.b64decode(images["capability-enumerability frontier, component level"]).decode())
    assert group(frontier, "frontier-weight_sparse")


def test_an_old_report_renders_without_the_new_parts(old_report):
    md, page = render_markdown(old_report), render_html(old_report)
    # The verdict's own sentences are build_report's to word (a newer one may speak of intervals): out of the check.
    md_rest = md[:md.index("## Verdict")] + md[md.index("\n## ", md.index("## Verdict") + 1):]
    start = page.index('<section id="verdict"')
    page_rest = page[:start] + page[page.index("</section>", start):]
    for text in (md_rest, page_rest):
        for absent in ("Comparisons", "Variants", "Stability", "Controls sanity", "Details", "interval"):
            assert absent not in text
    assert "Details" not in md and "Details" not in page
    assert md_rows(md, "Models")[0][-1] == "12 (30 | 35), tasks: 3/3"  # no interval
    assert 'id="frontier"' not in page and 'id="checks"' not in page and 'class="reason"' not in page
    for svg in (plots.circuit_sizes(old_report, "component"), plots.capability_scatter(old_report, "component")):
        assert "-err-" not in svg
    assert unexplained_numbers(md, old_report) == []


def test_user_strings_in_the_new_parts_are_escaped(report):
    r = copy.deepcopy(report)
    r["comparisons"][0]["reason"] = "<script>alert(1)</script> | a pipe"
    r["comparisons"][0]["variant"] = "<img src=x>"
    page, md = render_html(r), render_markdown(r)
    assert "<script" not in page and "<img src=x>" not in page and "&lt;script&gt;" in page
    assert "<script" not in md and "&lt;script&gt;alert(1)&lt;/script&gt; | a pipe" in md  # a paragraph
    assert "| &lt;img src=x&gt; | component | steps |" in md  # a table cell


COMPARISON_KEYS = ["variant", "baseline", "level", "matched", "baseline_point", "loss_gap", "ratio", "lo", "hi",
                   "tasks", "seeds", "seed_spread", "call", "reason", "baseline_models"]
VARIANT_KEYS = ["variant", "seeds", "models", "val_loss", "levels"]


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drop_c=st.sets(st.sampled_from(COMPARISON_KEYS)), drop_v=st.sets(st.sampled_from(VARIANT_KEYS)),
       none_c=st.sets(st.sampled_from(COMPARISON_KEYS)), drop_s=st.booleans(),
       drop_p=st.sets(st.sampled_from(["model", "step", "val_loss"])))
@example(drop_c=set(), drop_v=set(), none_c=set(), drop_s=False, drop_p={"step"})  # a final model: no step
@example(drop_c=set(), drop_v={"seeds"}, none_c={"seed_spread"}, drop_s=True, drop_p={"val_loss"})
def test_missing_fields_render_as_a_dash(report, drop_c, drop_v, none_c, drop_s, drop_p):
    """Any field of a comparison, its baseline point or a variant absent or null (an old or one-seed report): no
    crash, every row as wide as its header, and the cells of what is missing are "-"."""
    r = copy.deepcopy(report)
    for c in r["comparisons"]:
        for k in drop_p:
            c["baseline_point"].pop(k)
        for k in drop_c:
            c.pop(k, None)
        for k in none_c - drop_c:
            c[k] = None
    for v in r["variants"]:
        for k in drop_v:
            v.pop(k)
    if drop_s:
        r["stability"]["transcoder"] = {}
    tables = all_tables(r)
    for name in ("comparisons", "variants", "stability"):
        t = tables[name]
        assert all(len(row) == len(t.header) for row in t.rows)
    row = tables["comparisons"].rows[0]
    if {"ratio", "lo", "hi"} <= drop_c | none_c:
        assert row[5] == "- [-, -]"
    if {"seed_spread"} & (drop_c | none_c):
        assert row[8] == "-"
    if "baseline_point" in drop_c | none_c or len(drop_p) == 3:
        assert row[3] == "-"
    else:
        names = ("dense-seed0, dense-seed1" if "baseline_models" not in drop_c | none_c
                 else "-" if "model" in drop_p else "dense-seed0")
        assert row[3] == "{} ({}validation loss {})".format(
            names, "" if "step" in drop_p else "step 400, ", "-" if "val_loss" in drop_p else "4.010")
    if "seeds" in drop_v:
        assert tables["variants"].rows[0][1] == "-"
    if drop_s:
        assert tables["stability"].rows[0][1:] == ["-"] * 6
    render_markdown(r)


if __name__ == "__main__":
    import tempfile

    from glassformer.analysis.report import write_report

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/report-render")
    print(write_report(add_new_fields(old_report_from(Path(tempfile.mkdtemp()) / "models")), out)["html"])
