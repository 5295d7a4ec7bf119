"""Out-of-distribution faithfulness at component level: circuits found on a task, scored on its shifted variant.

A circuit (a boolean edge mask) found on a task's in-distribution pairs is run, with every other edge ablated as
in distribution, on the pairs of the task's shifted variant (``Task.shifted()``: held-out names, other wording,
distractor code first; see :mod:`glassformer.analysis.tasks`). ``f = (m(C) - m(empty)) / (m(model) - m(empty))``
there is measured by :class:`~glassformer.analysis.component.faithfulness.Faithfulness`, as in distribution.

f divides by the model's own gap on the shifted pairs, so it means something only where the model can do the
shifted task: the capability gate (:func:`~glassformer.analysis.capability.capability_gate`) is run on the shifted
pairs, and ``f`` is None when the model fails it. The measured ratio is kept as ``f_raw`` for diagnosis only: no
table or mean should read it. The record (JSON-ready)::

    {"task": "<name>@shifted", "n_pairs": int, "ablation": str,
     "capability": {loss, accuracy, logit_diff},     # the whole model on the shifted clean prompts
     "gate": {passed, reasons, accuracy, gap, ...},  # capability_gate on the shifted pairs
     "capable": bool,                                 # gate["passed"]
     "m_model": float, "m_empty": float, "signal": bool,
     "circuits": {name: {"edges": int, "m": float, "f": float | None, "f_raw": float | None}}}

``f_raw`` is None only where the model equals its empty circuit (no gap to divide by).

Example:
    >>> record = score_shifted(model, graph, shifted, "mean", means, {"N_0.8": mask})  # doctest: +SKIP
    >>> record["capable"], record["circuits"]["N_0.8"]["f"]  # doctest: +SKIP
    (True, 0.71)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from glassformer.analysis.capability import capability_gate, model_logit_diffs, task_capability
from glassformer.analysis.component.faithfulness import Faithfulness
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.tasks.base import TaskBatch


def check_shifted_inputs(model: Any, batch: TaskBatch, ablation: str, means: Tensor | None) -> None:
    """Raise ValueError when the shifted prompts do not fit the model's context, or when position-mean ablation
    has means for fewer positions than the longest shifted prompt (shifted prompts are longer than the task's).

    Example:
        >>> b = TaskBatch("t@shifted", torch.zeros(1, 9, dtype=torch.long), torch.zeros(1, 9, dtype=torch.long),
        ...               torch.tensor([8]), torch.tensor([1]), torch.tensor([2]))
        >>> from types import SimpleNamespace
        >>> check_shifted_inputs(SimpleNamespace(cfg=SimpleNamespace(n_ctx=16)), b, "position-mean",
        ...                      torch.zeros(3, 8, 4))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: position-mean ablation on the shifted pairs of 't@shifted' needs writer means for at least 9 ...
    """
    T = batch.clean.shape[1]
    if len(batch) == 0:
        raise ValueError(f"shifted batch {batch.task!r} has no pairs: expected at least one")
    if T > model.cfg.n_ctx:
        raise ValueError(f"shifted prompts of {batch.task!r} are {T} tokens long, beyond the model's context "
                         f"n_ctx={model.cfg.n_ctx}: generate them with max_len={model.cfg.n_ctx}")
    if ablation == "position-mean" and (means is None or means.dim() != 3 or means.shape[1] < T):
        got = None if means is None else tuple(means.shape)
        raise ValueError(f"position-mean ablation on the shifted pairs of {batch.task!r} needs writer means for at "
                         f"least {T} positions (its longest prompt), shaped (n_writers, >= {T}, d_model); got "
                         f"{got}: compute them with writer_means(..., per_position=True) on corpus windows of at "
                         f"least {T} tokens")


def circuit_masks(circuits: dict[str, Tensor], n: int, what: str = "edges") -> Tensor:
    """The masks of ``circuits`` stacked as (K, n) bool, each checked to be a boolean (n,) tensor.

    Example:
        >>> circuit_masks({"a": torch.tensor([True, False]), "b": torch.ones(2, dtype=torch.bool)}, 2).tolist()
        [[True, False], [True, True]]
    """
    for name, mask in circuits.items():
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n,):
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            dtype = mask.dtype if isinstance(mask, Tensor) else None
            raise ValueError(f"circuit {name!r} is {shape} of {dtype}: expected a boolean mask over the graph's "
                             f"{n} {what}, shape ({n},)")
    if not circuits:
        return torch.zeros(0, n, dtype=torch.bool)
    return torch.stack([m.cpu() for m in circuits.values()])


def _finite(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


@torch.no_grad()
def score_shifted(model: Any, graph: ComponentGraph, shifted_batch: TaskBatch, ablation: str,
                  means: Tensor | None, circuits: dict[str, Tensor], *, gate_alpha: float = 0.05,
                  gate_min_logit_diff: float = 0.5, max_tokens: int | None = None) -> dict[str, Any]:
    """Each circuit of ``circuits`` (name -> boolean (n_edges,) edge mask) measured on ``shifted_batch`` with
    every other edge ablated by ``ablation`` (``means``: the writer means used in distribution), beside the
    model's capability and gate there. The record's layout is in this module's docstring; ``f`` is None when the
    model fails the gate on the shifted pairs.

    Example:
        >>> E = graph.n_edges  # doctest: +SKIP
        >>> r = score_shifted(model, graph, shifted, "zero", None, {"all": torch.ones(E, dtype=torch.bool)})  # doctest: +SKIP
        >>> r["circuits"]["all"]["f_raw"]  # doctest: +SKIP
        1.0
    """
    check_shifted_inputs(model, shifted_batch, ablation, means)
    masks = circuit_masks(circuits, graph.n_edges)
    fa = Faithfulness(model, graph, shifted_batch, ablation, means, max_tokens)
    # The empty circuit rides along with the circuits: its per-pair logit differences feed the gate.
    per_pair = fa.per_pair(torch.cat([torch.zeros(1, graph.n_edges, dtype=torch.bool), masks]))  # (1 + K, B)
    gate = capability_gate(model_logit_diffs(model, shifted_batch), per_pair[0], alpha=gate_alpha,
                           min_logit_diff=gate_min_logit_diff)
    m = per_pair[1:].mean(dim=1).tolist()  # (K,)
    scored = {}
    for (name, mask), m_c in zip(circuits.items(), m, strict=True):
        f_raw = _finite((m_c - fa.m_empty) / fa.gap) if fa.gap != 0 else None  # as Faithfulness.f
        scored[name] = {"edges": int(mask.sum()), "m": m_c, "f": f_raw if gate["passed"] else None, "f_raw": f_raw}
    return {"task": shifted_batch.task, "n_pairs": len(shifted_batch), "ablation": ablation,
            "capability": task_capability(model, shifted_batch), "gate": gate, "capable": gate["passed"],
            "m_model": fa.m_model, "m_empty": fa.m_empty, "signal": fa.signal, "circuits": scored}


def circuit_ood(model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str, means: Tensor | None,
                circuits: dict[str, dict[str, Tensor | None]], *, gate_alpha: float = 0.05,
                gate_min_logit_diff: float = 0.5) -> dict[str, dict[str, Any]]:
    """The ``ood`` entry of each selection's circuit record: for selection s, the circuits ``circuits[s]`` (name
    -> boolean edge mask, e.g. ``{"N_0.8": mask, "N_0.9": None}``, the circuits as the analysis measured them
    in distribution, pruned; None is skipped), scored on the shifted pairs ``batch`` carries (:func:`score_shifted`, all selections in one
    call, so the gate is run once). Each entry is :func:`score_shifted`'s record with only that selection's
    circuits, under their own names; ``{"skipped": reason}`` for every selection when ``batch`` carries no
    shifted pairs, or pairs these means or this context cannot score (what :func:`score_shifted` would raise:
    the in-distribution analysis goes on).

    Example:
        >>> ood = circuit_ood(model, graph, batch, "mean", means, {"topn": {"N_0.8": mask}})  # doctest: +SKIP
        >>> ood["topn"]["circuits"]["N_0.8"]["edges"]  # doctest: +SKIP
        12
    """
    if batch.shifted is None:
        why = batch.shifted_note or "no shifted pairs were built for this task"
        return {s: {"skipped": why} for s in circuits}
    try:
        check_shifted_inputs(model, batch.shifted, ablation, means)
    except ValueError as e:
        return {s: {"skipped": str(e)} for s in circuits}
    masks = {f"{s}/{name}": mask.cpu() for s, by_name in circuits.items() for name, mask in by_name.items()
             if mask is not None}
    record = score_shifted(model, graph, batch.shifted, ablation, means, masks, gate_alpha=gate_alpha,
                           gate_min_logit_diff=gate_min_logit_diff)
    shared = {k: v for k, v in record.items() if k != "circuits"}
    return {s: {**shared, "circuits": {name: record["circuits"].get(f"{s}/{name}") for name in by_name}}
            for s, by_name in circuits.items()}
