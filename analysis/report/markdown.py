"""report.md: the verdict (its reasoning, a paragraph per comparison, then the details) and the tables of the
report, in Markdown (the plots are in index.html).

Example:
    >>> print(md_table(Table("T", ["a", "b"], [["1", "x|y"]])))
    | a | b |
    | --- | --- |
    | 1 | x\\|y |
"""

from __future__ import annotations

from typing import Any

from glassformer.analysis.report.tables import Table, all_tables, verdict_paragraphs


def _text(text: str) -> str:
    """User strings (names, reasons) with ``&``, ``<`` and ``>`` escaped: Markdown renderers pass raw HTML on."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    # A pipe ends a cell and a newline ends the row: both can come from user strings.
    return _text(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(table: Table) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in table.header) + " |",
             "| " + " | ".join("---" for _ in table.header) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report.md."""
    tables = all_tables(report)
    out = ["# glassformer trade-off report", "",
           f"Built {report['created']} by `{_text(' '.join(report['command']))}` "
           f"({', '.join(f'{k} {v}' for k, v in report['versions'].items())}). "
           "Plots: index.html beside this file; every number: report.json.", "", "## Verdict", ""]
    paragraphs, comparisons = verdict_paragraphs(report), tables["comparisons"]
    for title, reason in paragraphs:  # a blank line would end the paragraph: one line each
        out += [f"**{_text(title)}.** {_text(reason)}".replace("\n", " "), ""]
    if comparisons is not None:
        out += [f"### {comparisons.title}", "", md_table(comparisons), "", _text(comparisons.note), ""]
    if paragraphs or comparisons is not None:
        out += ["### Details", ""]
    shown = {reason for _, reason in paragraphs}  # a reason the verdict text repeats is shown once
    out += [f"- {_text(line)}" for line in report["verdict"]["text"] if line not in shown]
    sections = [tables["summary"], tables["variants"], *tables["tasks"], *tables["circuit_checks"],
                tables["task_info"], tables["stability"], tables["controls_sanity"], tables["sparse"],
                tables["training"], tables["settings"]]
    for table in sections:
        if table is None:
            continue
        out += ["", f"## {table.title}", "", md_table(table)]
        if table.note:
            out += ["", table.note]
    circuits = [m for m in report["models"] if m.get("circuit")]
    if circuits:
        out += ["", f"## Circuits of {_text(str(report['circuit_task']))}", ""]
        for m in circuits:
            c = m["circuit"]
            edges = _text(", ".join(f"{e['source']} → {e['target']}" + (f" ({e['channel']})" if e["channel"] else "")
                                    for e in c["edges"]))
            out.append(f"- {_cell(m['name'])}: {edges or 'no edges'}")
    return "\n".join(out) + "\n"
