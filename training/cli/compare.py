"""``glassformer compare``: several model directories in one trade-off report."""

from __future__ import annotations

import sys

from glassformer.analysis import AnalysisConfig
from glassformer.training.cli.plugins import load_plugins
from glassformer.training.orchestrate.models import compare_models, report_summary


def compare(
    model_dirs: list[str],
    out: str = "runs/report",
    baseline: str | None = None,
    circuit_task: str | None = None,
    analysis: AnalysisConfig = AnalysisConfig(),
    plugins: list[str] | str | None = None,
) -> None:
    """Compare model directories in one trade-off report: OUT/index.html, OUT/report.md and OUT/report.json.

    A model directory without analysis.json is analysed first, as `glassformer analyze` does with the analysis
    settings given here (--tasks, --n_pairs, --seed, --corpus_windows, ...). Prints the verdict and the path of
    index.html.

    Args:
        model_dirs: Model directories, e.g. `glassformer compare runs/dense runs/transcoder --out runs/report`.
        out: Folder for the report (created; its three files are replaced).
        baseline: The dense model the verdict measures against (a directory given or its name); default: the
            first model without constraints.
        circuit_task: The task whose circuit is drawn for every model; default: the task with signal in most.
        analysis: The analysis of models that have none yet (glassformer.analysis.AnalysisConfig).
        plugins: Modules to import first, which register tasks of their own (docs/adding-a-task.md).
    """
    load_plugins(plugins)
    report = compare_models(model_dirs, out, analysis, baseline=baseline, circuit_task=circuit_task,
                            command=sys.argv)
    print(report_summary(report))
