"""glassformer.analysis: task suites, capability, the component graph, circuit discovery and faithfulness.

Reads model directories and touches models only through hook names and public methods; never imports
``glassformer.training``.

Example:
    >>> from glassformer.analysis import METHODS, TASKS, ComponentGraph
    >>> ComponentGraph(2, 4).n_edges, "eap-ig" in METHODS, "induction" in TASKS
    (110, True, True)
"""

from glassformer.analysis.ablation import ABLATIONS, Patcher, writer_means
from glassformer.analysis.analyze import CONTROLS, LEVELS, SCHEMA_VERSION, analyze, format_table
from glassformer.analysis.attribution import METHODS, Attribution, attribute
from glassformer.analysis.capability import task_capability, validation_loss
from glassformer.analysis.circuits import SELECTIONS, circuit_mask, rank
from glassformer.analysis.graph import ComponentGraph, edge_count
from glassformer.analysis.metrics import Faithfulness, evaluate_ranking
from glassformer.analysis.tasks import TASKS, AnswerTokenError, TaskBatch, TaskError

__all__ = [
    "analyze", "format_table", "SCHEMA_VERSION", "LEVELS", "CONTROLS", "TASKS", "TaskBatch", "TaskError",
    "AnswerTokenError", "METHODS", "ABLATIONS", "SELECTIONS", "attribute", "Attribution", "ComponentGraph",
    "edge_count", "Patcher", "writer_means", "Faithfulness", "evaluate_ranking", "rank", "circuit_mask",
    "validation_loss", "task_capability",
]
