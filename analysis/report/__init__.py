"""Reports: several analysed model directories -> one trade-off report (index.html, report.md, report.json).

Example:
    >>> from glassformer.analysis.report import build_report, write_report
    >>> write_report(build_report(["runs/demo/dense", "runs/demo/transcoder"]), "runs/demo/report")  # doctest: +SKIP
"""

from glassformer.analysis.report.compare import SCHEMA_VERSION, build_report, pareto_front, write_report
from glassformer.analysis.report.schema import ReportSchemaError, load_schema, validate_report

__all__ = ["build_report", "write_report", "pareto_front", "validate_report", "load_schema", "ReportSchemaError",
           "SCHEMA_VERSION"]
