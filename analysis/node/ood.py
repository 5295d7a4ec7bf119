"""Out-of-distribution faithfulness at node level: a node circuit found on a task, scored on its shifted variant.

A node circuit (a boolean mask over the graph's nodes, e.g. ``learn_circuit(...)["keep"]``) is run on the pairs of
the task's shifted variant (``Task.shifted()``) with every other node ablated as in distribution
(:class:`~glassformer.analysis.node.graph.GatedModel`). Measured there: the circuit's task loss (binary
cross-entropy over the two answers, :func:`~glassformer.analysis.node.masks.task_loss`) against the full model's
on the same pairs, and the mean KL divergence of the circuit's last-position next-token distribution from the full
model's (as :func:`~glassformer.analysis.node.masks.circuit_kl`).

Loss and KL are absolute measurements, recorded always. The verdict ``reached`` (the circuit's loss at most the
target: the full model's loss there plus ``margin`` by the relative rule, or an absolute ``target``, as in
distribution) means something only where the model can do the shifted task: it is None when the model fails the capability gate on the shifted pairs (the gate as
``node_gate`` runs it: the whole model against every node ablated). The record (JSON-ready)::

    {"task": "<name>@shifted", "n_pairs": int, "ablation": str,
     "capability": {loss, accuracy, logit_diff}, "gate": {passed, reasons, ...}, "capable": bool,
     "loss_full": float, "loss_empty": float, "target_rule": "relative" | "absolute",
     "margin": float | None, "target": float,      # relative: loss_full + margin; absolute: the given target
     "circuits": {name: {"nodes": int, "loss": float, "loss_over_full": loss - loss_full, "kl": float,
                         "reached": bool | None}}}

Example:
    >>> record = score_shifted_nodes(model, graph, shifted, "mean", means, {"model": keep})  # doctest: +SKIP
    >>> record["circuits"]["model"]["loss"], record["loss_full"]  # doctest: +SKIP
    (0.21, 0.12)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from glassformer.analysis.capability import capability_gate, model_logit_diffs, task_capability
from glassformer.analysis.component.ood import check_shifted_inputs, circuit_masks
from glassformer.analysis.node.graph import GatedModel, NodeGraph
from glassformer.analysis.node.masks import DEFAULT_TARGET_MARGIN, task_loss
from glassformer.analysis.tasks.base import TaskBatch, logit_diff


@torch.no_grad()
def score_shifted_nodes(model: Any, graph: NodeGraph, shifted_batch: TaskBatch, ablation: str,
                        means: Tensor | None, circuits: dict[str, Tensor], *, target: float | None = None,
                        margin: float = DEFAULT_TARGET_MARGIN, gate_alpha: float = 0.05,
                        gate_min_logit_diff: float = 0.5, max_tokens: int = 16384) -> dict[str, Any]:
    """Each node circuit of ``circuits`` (name -> boolean (n_nodes,) mask) run on ``shifted_batch`` with every
    other node ablated by ``ablation`` (``means``: the node means used in distribution): its task loss, the full
    model's and the empty circuit's there, KL to the full model, and the gate. ``target`` None: the relative rule
    (the full model's loss on the shifted pairs + ``margin``); a number: that absolute target. The layout is in
    this module's docstring; ``reached`` is None when the model fails the gate on the shifted pairs.

    Example:
        >>> full = torch.ones(graph.n_nodes, dtype=torch.bool)  # doctest: +SKIP
        >>> r = score_shifted_nodes(model, graph, shifted, "zero", None, {"all": full})  # doctest: +SKIP
        >>> r["circuits"]["all"]["loss"] == r["loss_full"], r["circuits"]["all"]["kl"]  # doctest: +SKIP
        (True, 0.0)
    """
    for key, value in (("margin", margin), ("target", 0.0 if target is None else target)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise ValueError(f"{key}={value!r} is not allowed: expected a number >= 0 (nats)")
    check_shifted_inputs(model, shifted_batch, ablation, None)
    masks = circuit_masks(circuits, graph.n_nodes, "nodes")
    gated = GatedModel(model, graph, shifted_batch, ablation, means)
    n = graph.n_nodes
    # The full model and the empty circuit first, then the circuits, as gate settings of one model.
    gates = torch.cat([torch.ones(1, n), torch.zeros(1, n), masks.float()])  # (2 + K, n_nodes)
    per = max(1, max_tokens // shifted_batch.clean.numel())
    losses: list[float] = []
    kls: list[float] = []
    full_logp = empty_ld = None
    for first in range(0, gates.shape[0], per):
        logits = gated.logits(gates[first:first + per])  # (k, B, d_vocab)
        if first == 0:
            full_logp = torch.log_softmax(logits[0].double(), dim=-1)  # (B, d_vocab)
            empty_ld = logit_diff(logits[1][:, None], shifted_batch).float()
        losses.extend(task_loss(logits, shifted_batch).tolist())
        logp = torch.log_softmax(logits.double(), dim=-1)  # (k, B, d_vocab)
        kls.extend((full_logp.exp() * (full_logp - logp)).sum(-1).mean(-1).tolist())
    gate = capability_gate(model_logit_diffs(model, shifted_batch), empty_ld, alpha=gate_alpha,
                           min_logit_diff=gate_min_logit_diff)
    loss_full, loss_empty = losses[0], losses[1]
    rule = "relative" if target is None else "absolute"
    target = loss_full + margin if target is None else float(target)
    scored = {}
    for (name, mask), loss, kl in zip(circuits.items(), losses[2:], kls[2:], strict=True):
        scored[name] = {"nodes": int(mask.sum()), "loss": loss, "loss_over_full": loss - loss_full, "kl": kl,
                        "reached": (loss <= target) if gate["passed"] else None}
    return {"task": shifted_batch.task, "n_pairs": len(shifted_batch), "ablation": ablation,
            "capability": task_capability(model, shifted_batch), "gate": gate, "capable": gate["passed"],
            "loss_full": loss_full, "loss_empty": loss_empty, "target_rule": rule,
            "margin": float(margin) if rule == "relative" else None, "target": target,
            "circuits": scored}


def node_circuit_ood(model: Any, graph: NodeGraph, batch: TaskBatch, ablation: str, means: Tensor | None,
                     keep: Tensor | None, *, target: float | None = None, margin: float = DEFAULT_TARGET_MARGIN,
                     gate_alpha: float = 0.05, gate_min_logit_diff: float = 0.5) -> dict[str, Any]:
    """The ``ood`` entry of a node circuit record: the model's circuit ``keep`` (bool (n_nodes,), as
    ``learn_circuit`` returns it) scored on the shifted pairs ``batch`` carries (:func:`score_shifted_nodes`,
    the circuit under the name ``"model"``); ``{"skipped": reason}`` when ``batch`` carries no shifted pairs or
    the circuit did not reach its target in distribution (``keep`` None), or the shifted prompts do not fit the
    model's context (what :func:`score_shifted_nodes` would raise: the in-distribution analysis goes on).

    Example:
        >>> node_circuit_ood(model, graph, batch, "mean", means, out["keep"])["circuits"]["model"]["loss"]  # doctest: +SKIP
        0.21
    """
    if batch.shifted is None:
        return {"skipped": batch.shifted_note or "no shifted pairs were built for this task"}
    if keep is None:
        return {"skipped": "the model's circuit did not reach its target in distribution"}
    try:
        check_shifted_inputs(model, batch.shifted, ablation, None)
    except ValueError as e:
        return {"skipped": str(e)}
    return score_shifted_nodes(model, graph, batch.shifted, ablation, means, {"model": keep}, target=target,
                               margin=margin, gate_alpha=gate_alpha, gate_min_logit_diff=gate_min_logit_diff)
