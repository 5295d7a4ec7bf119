"""Tasks (and other registrations) from outside the library: entry points and ``--plugins`` modules.

A plugin is an ordinary Python module that registers what it adds when it is imported, e.g.
``TASKS.register(MyTask())`` (see docs/adding-a-task.md). Two routes bring it in:

- an installed package declares it under the entry-point group ``glassformer.tasks`` (in its pyproject.toml:
  ``[project.entry-points."glassformer.tasks"] my_tasks = "my_package.tasks"``): every command loads it;
- ``--plugins my_module`` (or ``--plugins '[a, b]'``) on ``analyze``, ``compare`` and ``sweep`` imports the named
  modules, found on ``sys.path`` (the current folder included, as ``python -m`` would).

Example:
    >>> load_plugins([])  # the installed entry points only
    []
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "glassformer.tasks"
_loaded: set[str] = set()


def load_plugins(modules: list[str] | str | None = None) -> list[str]:
    """Import every ``glassformer.tasks`` entry point and each module in ``modules`` (one name or a list; once
    each); returns the names loaded by this call. A module that cannot be imported raises ImportError naming it.

    Example:
        >>> load_plugins(["json"])  # any importable module; a real plugin registers tasks on import
        ['json']
    """
    if isinstance(modules, str):  # --plugins my_module
        modules = [modules]
    done: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if f"ep:{ep.value}" not in _loaded:
            ep.load()
            _loaded.add(f"ep:{ep.value}")
            done.append(ep.value)
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # the console script's path omits the current folder; `python -m` has it
    for name in modules or []:
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"--plugins {name!r} cannot be imported ({e}); expected a module on the Python path "
                              f"that registers tasks when imported") from e
        _loaded.add(name)
        done.append(name)
    return done
