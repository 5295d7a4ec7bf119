"""The task registry: name -> task. The CLI's ``--tasks`` choices and the parametrised tests read from here.

Example:
    >>> from glassformer.analysis.tasks import TASKS
    >>> "induction" in TASKS.names() and len(TASKS.names()) >= 13
    True
"""

from __future__ import annotations

from glassformer.analysis.tasks.base import Task


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
