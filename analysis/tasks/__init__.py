"""Task suites: minimal pairs whose circuits are enumerated. Every task is registered here, in one place; each
built-in task also has a shifted variant (``task.shifted()``, not registered) to score its circuit out of
distribution.

Example:
    >>> from glassformer.analysis.tasks import TASKS
    >>> TASKS["quote_close"].answers
    ("'", '"')
"""

from glassformer.analysis.tasks.base import (
    SHIFTED,
    AnswerTokenError,
    Pair,
    Task,
    TaskBatch,
    TaskError,
    TemplateTask,
    answer_logits,
    logit_diff,
    one_place,
    task_metrics,
)
from glassformer.analysis.tasks.induction import Induction
from glassformer.analysis.tasks.python_code import PYTHON_TASKS
from glassformer.analysis.tasks.registry import TaskRegistry, shifted_batch, with_shifted

TASKS = TaskRegistry()
for _cls in PYTHON_TASKS:
    TASKS.register(_cls())
TASKS.register(Induction())

__all__ = [
    "TASKS", "TaskRegistry", "Task", "TemplateTask", "TaskBatch", "Pair", "Induction", "TaskError",
    "AnswerTokenError", "answer_logits", "logit_diff", "task_metrics", "one_place", "shifted_batch", "with_shifted", "SHIFTED",
]
