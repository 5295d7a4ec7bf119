"""report.md: the verdict and the tables of the report, in Markdown (the plots are in index.html).

Example:
    >>> print(md_table(Table("T", ["a", "b"], [["1", "x|y"]])))
    | a | b |
    | --- | --- |
    | 1 | x\\|y |
"""

from __future__ import annotations

from typing import Any

from glassformer.analysis.report.tables import Table, all_tables


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
    out += [f"- {_text(line)}" for line in report["verdict"]["text"]]
    sections = [tables["summary"], *tables["tasks"], tables["task_info"], tables["sparse"], tables["training"],
                tables["settings"]]
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
