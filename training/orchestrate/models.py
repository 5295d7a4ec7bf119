"""Analyse a model directory on its own corpus, and compare several in one report.

These join the two halves of the library: the corpus windows come from ``glassformer.training`` (the corpus the
model was trained on, as training.json records it), the circuits and the report from ``glassformer.analysis``.

Example:
    >>> from glassformer.analysis import AnalysisConfig
    >>> analyze_model_dir("runs/demo/dense", AnalysisConfig(tasks=["induction"]))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from glassformer.analysis import AnalysisConfig, analyze, format_table, task_batches
from glassformer.analysis.report import build_report, write_report
from glassformer.analysis.results import read_analysis
from glassformer.archs import load_config
from glassformer.archs.model_dir import ANALYSIS_FILE
from glassformer.training.checks import check_model_dir, check_replaceable, check_writable
from glassformer.training.evaluate import corpus_windows_for

log = logging.getLogger("glassformer")


def analyze_model_dir(model_dir: str | Path, config: AnalysisConfig, progress: bool = True) -> dict[str, Any]:
    """Analyse ``model_dir`` as ``config`` says, with mean ablation over windows of the model's own corpus; adds
    the run to its analysis.json and returns the file's content.

    The model directory, the output file and the tasks (single-token answers in this tokenizer) are checked
    before the corpus is read.

    Example:
        >>> print(format_table(analyze_model_dir("runs/tiny", AnalysisConfig())))  # doctest: +SKIP
    """
    check_model_dir(model_dir)
    check_replaceable(Path(model_dir) / ANALYSIS_FILE, "the model directory's analysis.json")
    task_batches(Path(model_dir), config, load_config(model_dir))  # a named task that cannot run fails here
    corpus, val = corpus_windows_for(model_dir, config.corpus_windows)
    return analyze(model_dir, config, corpus_tokens=corpus, val_tokens=val, progress=progress)


def has_run(model_dir: str | Path, config: AnalysisConfig) -> bool:
    """Whether ``model_dir``'s analysis.json already holds a run made with exactly ``config``.

    Example:
        >>> has_run("no/such/dir", AnalysisConfig())
        False
    """
    path = Path(model_dir) / ANALYSIS_FILE
    if not path.is_file():
        return False
    record = config.record()
    return any(run.get("config") == record for run in (read_analysis(path).get("results") or {}).values())


def compare_models(model_dirs: list[str], out: str | Path, config: AnalysisConfig, baseline: str | None = None,
                   circuit_task: str | None = None, command: list[str] | None = None) -> dict[str, Any]:
    """One trade-off report over ``model_dirs`` in ``out`` (index.html, report.md, report.json); a model without
    analysis.json is analysed first with ``config``. Returns the report (its verdict under ``verdict``).

    Example:
        >>> report = compare_models(["runs/dense", "runs/tc"], "runs/report", AnalysisConfig())  # doctest: +SKIP
        >>> print("\\n".join(report["verdict"]["text"]))  # doctest: +SKIP
    """
    if isinstance(model_dirs, str) or not model_dirs:
        raise ValueError(f"model_dirs={model_dirs!r} is not allowed: expected one or more model directories")
    for d in model_dirs:
        check_model_dir(d)
    check_writable(out)
    for d in model_dirs:
        if not (Path(d) / ANALYSIS_FILE).is_file():
            log.info("%s has no analysis.json: analysing it first", d)
            print(format_table(analyze_model_dir(d, config)))
    report = build_report(model_dirs, baseline=baseline, circuit_task=circuit_task, command=command)
    report["paths"] = write_report(report, out)
    return report


def report_summary(report: dict[str, Any]) -> str:
    """What ``glassformer compare`` prints at the end: the verdict, then where the report is.

    Example:
        >>> print(report_summary({"verdict": {"text": ["Baseline: dense."]},
        ...                       "paths": {"html": Path("r/index.html"), "md": Path("r/report.md"),
        ...                                 "json": Path("r/report.json")}}))
        Baseline: dense.
        report: r/index.html (and report.md, report.json beside it)
    """
    paths = report["paths"]
    return "\n".join([*report["verdict"]["text"],
                      f"report: {paths['html']} (and {paths['md'].name}, {paths['json'].name} beside it)"])
