"""The task registry: name -> task (the CLI's ``--tasks`` choices and the parametrised tests read from here), and
:func:`shifted_batch`, the pairs of a task's shifted variant.

Example:
    >>> from glassformer.analysis.tasks import TASKS
    >>> "induction" in TASKS.names() and len(TASKS.names()) >= 13
    True
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from glassformer.analysis.tasks.base import Task, TaskBatch, TaskError


class TaskRegistry:
    """Name -> :class:`Task`; registering a name twice raises."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def register(self, task: Task) -> Task:
        if not task.name:
            raise ValueError(f"task {task!r} has no name")
        if task.name in self._tasks:
            raise ValueError(f"task {task.name!r} is already registered")
        self._tasks[task.name] = task
        return task

    def names(self) -> list[str]:
        return list(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __getitem__(self, name: str) -> Task:
        if name not in self._tasks:
            raise ValueError(f"unknown task {name!r}; allowed: {', '.join(self._tasks)}")
        return self._tasks[name]

    def __iter__(self):
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)


def with_shifted(batch: TaskBatch, task: Task, tokenizer: Any, n: int, seed: int = 0, max_len: int | None = None,
                 d_vocab: int | None = None) -> TaskBatch:
    """``batch`` (the task's own pairs) carrying the pairs of its shifted variant in ``batch.shifted``, or None
    there and the reason in ``batch.shifted_note`` (see :func:`shifted_batch`).

    Example:
        >>> from glassformer.analysis.tasks import TASKS
        >>> b = with_shifted(TASKS["induction"].generate(tokenizer, 8), TASKS["induction"], tokenizer, 8)  # doctest: +SKIP
        >>> b.shifted.task, b.shifted_note  # doctest: +SKIP
        ('induction@shifted', None)
    """
    shifted, note = shifted_batch(task, tokenizer, n, seed, max_len, d_vocab)
    return replace(batch, shifted=shifted, shifted_note=note)


def shifted_batch(task: Task, tokenizer: Any, n: int, seed: int = 0, max_len: int | None = None,
                  d_vocab: int | None = None) -> tuple[TaskBatch | None, str | None]:
    """``(batch, None)``: ``n`` pairs of ``task``'s shifted variant; ``(None, reason)`` when the task has no variant
    or the variant cannot run on this tokenizer (a reason to record, never an error: the in-distribution analysis
    goes on without it).

    Example:
        >>> from glassformer.analysis.tasks import TASKS
        >>> batch, why = shifted_batch(TASKS["induction"], tokenizer, 16, max_len=64)  # doctest: +SKIP
        >>> batch.task, why  # doctest: +SKIP
        ('induction@shifted', None)
    """
    variant = task.shifted()
    if variant is None:
        return None, f"task {task.name!r} has no shifted variant"
    try:
        return variant.generate(tokenizer, n, seed, max_len=max_len, d_vocab=d_vocab), None
    except TaskError as e:
        return None, str(e)
