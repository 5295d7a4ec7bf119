"""index.html: one self-contained page (no script, no network: styles inline, plots as base64 SVG images).

Every string that comes from a user (model and task names, reasons, prompts, paths, the command) goes through
``html.escape``; plots are embedded as ``data:`` images, which browsers render without scripts or fetches.

Example:
    >>> "<script>" in render_html(report)  # doctest: +SKIP
    False
"""

from __future__ import annotations

import base64
import html
from typing import Any

from glassformer.analysis.report import plots
from glassformer.analysis.report.tables import Table, all_tables, verdict_paragraphs

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1300px;
       padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.meta { color: #666; font-size: 0.85em; } code { background: #f4f4f4; padding: 0 0.25em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: left; vertical-align: top; }
th { background: #f0f3f7; } tr:nth-child(even) td { background: #fafafa; }
.note { color: #555; font-size: 0.85em; max-width: 60em; }
.verdict li { margin-bottom: 0.5em; } .verdict p.reason { max-width: 60em; } .plots { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0.5em 0; } figcaption { font-size: 0.8em; color: #555; max-width: 40em; }
img.plot { max-width: 100%; height: auto; border: 1px solid #eee; }
nav a { margin-right: 1em; }
"""


def esc(text: Any) -> str:
    """Escape any value for HTML text and attributes (quotes included)."""
    return html.escape(str(text), quote=True)


def image(svg: str | None, alt: str, caption: str = "") -> str:
    if not svg:
        return ""
    data = base64.b64encode(svg.encode()).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img class="plot" alt="{esc(alt)}" src="data:image/svg+xml;base64,{data}">{cap}</figure>'


def table_html(table: Table | None) -> str:
    if table is None:
        return ""
    head = "".join(f"<th>{esc(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    note = f'<p class="note">{esc(table.note)}</p>' if table.note else ""
    return f"<h3>{esc(table.title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _circuits(report: dict[str, Any]) -> str:
    parts = []
    for m in report["models"]:
        c = m.get("circuit")
        if not c:
            continue
        edges = "".join(f"<li><code>{esc(e['source'])}</code> &rarr; <code>{esc(e['target'])}</code>"
                        + (f" ({esc(e['channel'])})" if e["channel"] else "") + "</li>" for e in c["edges"])
        drawing = plots.circuit_drawing(m)
        parts.append(f"<div><h3>{esc(m['name'])}</h3>"
                     + image(drawing, f"circuit of {c['task']} in {m['name']}")
                     + (f"<details><summary>edges, in order of importance</summary><ul>{edges}</ul></details>"
                        if edges else "<p>no edges</p>")
                     + ("" if c["signal"] else '<p class="note">no signal above the empty circuit: this circuit '
                        'is noise</p>') + "</div>")
    if not parts:
        return ""
    return (f'<section id="circuits"><h2>Circuits of {esc(report["circuit_task"])}</h2>'
            f'<p class="note">Each model\'s circuit for the same task: the first edges of its ranking up to the size '
            f'at the target (at most {report["drawing"]["max_edges"]} drawn; a circuit known by its nodes only: at '
            f'most {report["drawing"]["max_nodes"]} of them). Nodes: input, heads (L layer H head), MLPs, logits; '
            f'edges are coloured by the input they feed (q, k, v) and drawn thicker for larger attribution.</p>'
            f'<div class="plots">{"".join(parts)}</div></section>')


def _verdict(report: dict[str, Any], tables: dict[str, Any]) -> str:
    """The verdict's reasoning (a paragraph per comparison), the comparisons table, then the verdict's other
    sentences (a reason the verdict text repeats is shown once, as its paragraph)."""
    reasons = "".join(f'<p class="reason"><strong>{esc(title)}.</strong> {esc(reason)}</p>'
                      for title, reason in verdict_paragraphs(report))
    shown = {reason for _, reason in verdict_paragraphs(report)}
    details = "".join(f"<li>{esc(line)}</li>" for line in report["verdict"]["text"] if line not in shown)
    table = table_html(tables.get("comparisons"))
    if reasons or table:
        details = f"<h3>Details</h3><ul>{details}</ul>"
    else:
        details = f"<ul>{details}</ul>"
    return f'<section id="verdict" class="verdict"><h2>Verdict</h2>{reasons}{table}{details}</section>'


def _frontier(report: dict[str, Any]) -> str:
    levels = plots.frontier_levels(report)
    if not levels:
        return ""
    figures = "".join(image(plots.frontier(report, lv), f"capability-enumerability frontier, {lv} level",
                            "Each curve a variant through its points: a checkpoint ladder (labelled by step) where "
                            "the report has one, else the variant's seeds. Error bars: the interval of the geometric-mean size. Lower loss is to the "
                            "right.") for lv in levels)
    return f'<section id="frontier"><h2>Frontier</h2><div class="plots">{figures}</div></section>'


def _checks(tables: dict[str, Any]) -> str:
    parts = table_html(tables.get("stability")) + table_html(tables.get("controls_sanity"))
    return f'<section id="checks"><h2>Stability and sanity checks</h2>{parts}</section>' if parts else ""


def _nav(report: dict[str, Any], tables: dict[str, Any]) -> str:
    links = [("verdict", "verdict"), ("tradeoff", "trade-off")]
    links += [("frontier", "frontier")] if plots.frontier_levels(report) else []
    links += [("tasks", "tasks"), ("faithfulness", "faithfulness"), ("circuits", "circuits")]
    links += [("checks", "checks")] if tables.get("stability") or tables.get("controls_sanity") else []
    links += [("sparse", "sparse layers")] if tables.get("sparse") else []
    links += [("training", "training"), ("settings", "settings")]
    return "<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in links) + "</nav>"


def render_html(report: dict[str, Any]) -> str:
    """The whole index.html."""
    tables = all_tables(report)
    levels = report["levels"]
    bars = "; horizontal bars: the size's interval" if report.get("bootstrap") else ""
    scatter = "".join(image(plots.capability_scatter(report, lv), f"capability against enumerability, {lv} level",
                            "Each point a model; the dashed line joins the Pareto frontier (no model is both more "
                            "capable and more enumerable than one on it)" + bars + ". Sizes: the analysis's geometric "
                            "mean over every analysed task, with signal or not; the verdict compares only tasks with "
                            "signal in both models.") for lv in levels)
    tasks = "".join(table_html(t) + image(plots.circuit_sizes(report, lv), f"circuit size per task, {lv} level",
                                          "Bars: the model" + (", with its interval" if bars else "")
                                          + "; markers: its controls.")
                    for t, lv in zip(tables["tasks"], levels, strict=True))
    curves = "".join(image(plots.faithfulness_curves(report, lv), f"faithfulness curves, {lv} level",
                           "Normalised faithfulness of the circuit made of the first edges of each ranking; "
                           "dotted line: the target.") for lv in levels if plots.has_curves(report, lv))
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    sparse = tables["sparse"]
    body = [
        "<h1>glassformer trade-off report</h1>",
        f'<p class="meta">Built {esc(report["created"])} by <code>{esc(" ".join(report["command"]))}</code> '
        f'({esc(versions)}). Every number on this page is in report.json beside it (schema: '
        f'glassformer/analysis/report/schema.json).</p>',
        _nav(report, tables),
        _verdict(report, tables),
        f'<section id="tradeoff"><h2>Capability against enumerability</h2><div class="plots">{scatter}</div>'
        f'{table_html(tables["summary"])}{table_html(tables["variants"])}</section>',
        _frontier(report),
        f'<section id="tasks"><h2>Circuit size per task, with controls</h2>{tasks}'
        f'{"".join(map(table_html, tables["circuit_checks"]))}{table_html(tables["task_info"])}</section>',
        f'<section id="faithfulness"><h2>Faithfulness curves</h2>{curves or "<p>none measured</p>"}</section>',
        _circuits(report),
        _checks(tables),
        f'<section id="sparse"><h2>Sparse layers</h2>{table_html(sparse)}</section>' if sparse else "",
        f'<section id="training"><h2>Training</h2>'
        f'{image(plots.training_curves(report), "training curves")}{table_html(tables["training"])}</section>',
        f'<section id="settings"><h2>Settings</h2>{table_html(tables["settings"])}</section>',
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            # Belt and braces: even a string that slipped past escaping could neither run nor fetch anything.
            "<meta http-equiv=\"Content-Security-Policy\" "
            "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
            "<title>glassformer trade-off report</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(p for p in body if p) + "\n</body></html>\n")
