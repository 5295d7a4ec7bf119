"""glassformer.analysis: task suites, capability, circuits at two levels (components and nodes), and reports.

Reads model directories and touches models only through hook names and public methods; never imports
``glassformer.training``. :func:`analyze` takes one :class:`AnalysisConfig`; the levels live in
:mod:`glassformer.analysis.component` and :mod:`glassformer.analysis.node`.

Example:
    >>> from glassformer.analysis import METHODS, TASKS, ComponentGraph
    >>> ComponentGraph(2, 4).n_edges, "eap-ig" in METHODS, "induction" in TASKS
    (110, True, True)
"""

from glassformer.analysis.analyze import LEVELS, analyze, format_table, random_init_control, task_batches
from glassformer.analysis.capability import task_capability, validation_loss
from glassformer.analysis.common import CONTROLS, WHO, geometric_mean
from glassformer.analysis.component.ablation import ABLATIONS, Patcher, writer_means
from glassformer.analysis.component.attribution import METHODS, attribute
from glassformer.analysis.component.circuits import SELECTIONS, circuit_mask, rank
from glassformer.analysis.component.faithfulness import Faithfulness, evaluate_ranking
from glassformer.analysis.component.graph import ComponentGraph, edge_count
from glassformer.analysis.component.records import Attribution
from glassformer.analysis.config import DEFAULT_METHOD, AnalysisConfig
from glassformer.analysis.node.masks import MaskConfig
from glassformer.analysis.results import SCHEMA_VERSION, read_analysis, runs_matching
from glassformer.analysis.tasks import TASKS, AnswerTokenError, TaskBatch, TaskError

__all__ = [
    "analyze", "format_table", "task_batches", "random_init_control", "AnalysisConfig", "MaskConfig",
    "DEFAULT_METHOD", "SCHEMA_VERSION", "read_analysis", "runs_matching", "LEVELS", "CONTROLS", "WHO",
    "geometric_mean", "TASKS", "TaskBatch", "TaskError", "AnswerTokenError", "METHODS", "ABLATIONS", "SELECTIONS",
    "attribute", "Attribution", "ComponentGraph", "edge_count", "Patcher", "writer_means", "Faithfulness",
    "evaluate_ranking", "rank", "circuit_mask", "validation_loss", "task_capability",
]
