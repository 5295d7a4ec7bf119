"""Small pieces every part of the analysis shares: the controls' names, the geometric mean, choice and token checks.

One home each, so a control added or a mean redefined changes everywhere at once.

Example:
    >>> CONTROLS, WHO[0]
    (('random_init', 'shuffled_labels'), 'model')
    >>> geometric_mean([2, 8, None])
    4.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

CONTROLS = ("random_init", "shuffled_labels")
"""The controls measured beside the model: a freshly initialised model of the same config, and the task with
each pair's answers swapped at random."""
WHO = ("model", *CONTROLS)
"""Every subject of an analysis, the model first."""


def geometric_mean(values: Iterable[float | None], floor: float | None = None) -> float | None:
    """Geometric mean of ``values``, None when nothing counts.

    ``floor=None`` leaves out None and non-positive values (sizes that were not measured); with a ``floor`` every
    non-None value counts, raised to at least ``floor`` (node circuits: an empty circuit counts as one node, so one
    task solved by nothing does not zero the mean).

    Example:
        >>> geometric_mean([2, 8, None, 0])
        4.0
        >>> round(geometric_mean([0, 16, None], floor=1.0), 6)
        4.0
    """
    if floor is None:
        vals = [float(v) for v in values if v is not None and v > 0]
    else:
        vals = [max(float(v), floor) for v in values if v is not None]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


def check_choice(field: str, value: Any, allowed: Iterable[str], where: str = "") -> None:
    """Refuse ``value`` unless it is one of ``allowed``, naming the field and listing the choices.

    Example:
        >>> check_choice("level", "edge", ["component", "node"])
        Traceback (most recent call last):
        ...
        ValueError: level='edge' is not allowed: expected one of component, node
    """
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not allowed: expected one of {', '.join(allowed)}{where}")


def check_tokens(tokens: Any, name: str, cfg: Any) -> None:
    """Refuse anything but an integer (N, T) tensor of ids below ``cfg.d_vocab``.

    Example:
        >>> from glassformer.archs import presets
        >>> check_tokens(torch.zeros(2, 3, dtype=torch.long), "corpus_tokens", presets.get("debug"))
    """
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"{name}={shape} is not allowed: expected an integer tensor of shape (N, T)")
    if tokens.numel() == 0:
        raise ValueError(f"{name} is empty: expected at least one window of tokens")
    if int(tokens.min()) < 0 or int(tokens.max()) >= cfg.d_vocab:
        raise ValueError(f"{name} holds ids in [{int(tokens.min())}, {int(tokens.max())}]: expected ids in "
                         f"[0, {cfg.d_vocab})")


@dataclass(frozen=True)
class Level:
    """What :func:`glassformer.analysis.analyze` needs from a level of analysis (component or node): the graph it
    builds, the ablated values it precomputes, one task's entry, the summary over tasks and the printed table.

    Example:
        >>> from glassformer.analysis.component.run import LEVEL
        >>> LEVEL.name, LEVEL.graph.__name__
        ('component', 'ComponentGraph')
    """

    name: str
    graph: Any
    """A class with ``from_config(model_cfg)``."""
    means: Callable[..., Any]
    """``(model, graph, corpus_tokens, ablation) -> ablated values`` (None where the ablation needs none)."""
    graph_record: Callable[..., dict[str, Any]]
    """``(graph, model) -> dict``: the graph as analysis.json records it."""
    settings: Callable[..., dict[str, Any]]
    """``(config) -> dict``: the level's own entries of the run's ``settings`` record."""
    analyze_task: Callable[..., dict[str, Any]]
    """``(name, description, batch, graph, subjects, means, config) -> dict``: one task's entry."""
    summary: Callable[..., list[dict[str, Any]]]
    """``(tasks, config) -> list of rows``: geometric means over tasks."""
    table: Callable[..., list[str]]
    """``(result) -> lines``: the table the command line prints."""
    table_notes: tuple[str, ...] = ()
    """Lines printed under the table (after the skipped tasks)."""
