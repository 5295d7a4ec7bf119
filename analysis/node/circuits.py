"""Node-level circuits per task: size at a fixed task loss, by learned masks or by attribution, with controls.

For each subject (``model``, and the controls ``random_init``, a freshly initialised model of the same config,
and ``shuffled_labels``, the task with each pair's answers swapped at random), the pairs are split into training
pairs and held-out pairs (``holdout``). ``mask`` learns node masks on the training pairs (the seeded search of
:mod:`glassformer.analysis.node.masks` for the model; the controls reuse the (k_coef, lr) chosen for it);
``eap-ig`` / ``eap`` score nodes on them (:mod:`node_attribution`). Either way
the nodes are ranked and the circuit size at the target loss is bisected on the held-out pairs, each size
measured by running the model with every node outside the circuit ablated. A subject that cannot reach the
target is reported as such (``reached`` false, ``nodes`` None, the lowest loss found), never dropped. With
``mask`` the EAP-IG scores of the same training pairs are compared with the mask (``agreement``).

Example:
    >>> sorted(NODE_METHODS)
    ['eap', 'eap-ig', 'mask']
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from glassformer.analysis.capability import GATE_HEADER, gate_columns, gate_notes
from glassformer.analysis.common import CONTROLS, WHO, Level, geometric_mean
from glassformer.analysis.node.attribution import NODE_SCORES, agreement, attribute_nodes
from glassformer.analysis.node.graph import GatedModel, NodeGraph, node_means
from glassformer.analysis.node.masks import (
    circuit_kl,
    circuit_loss_fn,
    learn_circuit,
    rank_nodes,
    smallest_circuit,
)
from glassformer.analysis.node.ood import node_circuit_ood
from glassformer.analysis.tasks.base import TaskBatch, logit_diff, split_pairs

if TYPE_CHECKING:
    from glassformer.analysis.config import AnalysisConfig

NODE_METHODS: dict[str, str] = {
    "mask": "learned node masks (Gao et al. 2025): a seeded search over (k_coef, lr), then bisection",
    **NODE_SCORES,
}
MAX_CIRCUIT_NAMES = 200
RUN_KEYS = ("level", "method", "ablation", "target_rule", "target_margin", "target_loss", "artefact_margin",
            "holdout", "n_pairs", "seed", "controls")
"""The settings every circuit entry and summary row repeats, so a report can mix runs."""


def run_fields(config: AnalysisConfig) -> dict[str, Any]:
    """The settings a node-level circuit entry or summary row carries (controls as the list of those measured).

    Example:
        >>> from glassformer.analysis.config import AnalysisConfig
        >>> f = run_fields(AnalysisConfig(level="node"))
        >>> f["target_rule"], f["target_margin"], f["target_loss"]
        ('relative', 0.05, None)
    """
    absolute = config.target_loss is not None
    return {"level": config.level, "method": config.method, "ablation": config.ablation,
            "target_rule": "absolute" if absolute else "relative",
            "target_margin": None if absolute else float(config.target_margin),
            "target_loss": float(config.target_loss) if absolute else None,
            "artefact_margin": float(config.artefact_margin), "holdout": float(config.holdout),
            "n_pairs": config.n_pairs, "seed": config.seed, "controls": list(CONTROLS) if config.controls else []}


def settings_record(config: AnalysisConfig) -> dict[str, Any]:
    """What analysis.json's ``settings`` holds for a node-level run beyond the shared fields."""
    fields = run_fields(config)
    return {**{k: fields[k] for k in ("target_rule", "target_margin", "target_loss", "artefact_margin")},
            "holdout": float(config.holdout), "metric": "task_loss",
            "ig_steps": _ig_steps(config), "mask": config.mask.record() if config.method == "mask" else None}


def _ig_steps(config: AnalysisConfig) -> int:
    return config.ig_steps if config.method != "eap" else 1


def circuit_for(model: Any, graph: NodeGraph, batch: TaskBatch, means: Any, config: AnalysisConfig
                ) -> dict[str, Any]:
    """One subject: the circuit at the target (its own full loss + ``config.target_margin``, or
    ``config.target_loss``) by ``config.method`` under ``config.ablation`` (masks trained as ``config.mask`` says),
    its edges, the KL divergence of its next-token distribution from the full model's on the held-out pairs, timings.

    Example:
        >>> circuit_for(model, graph, batch, means, AnalysisConfig(level="node", method="eap-ig")
        ...             )["reached"]  # doctest: +SKIP
        True
    """
    start = time.perf_counter()
    method, target, ablation = config.method, config.target_loss, config.ablation
    train, heldout = split_pairs(batch, config.holdout)
    gated_train = GatedModel(model, graph, train, ablation, means)
    att = attribute_nodes("eap-ig" if method == "mask" else method, gated_train, ig_steps=_ig_steps(config))
    margins = {"margin": config.target_margin, "artefact_margin": config.artefact_margin}
    gated_eval = GatedModel(model, graph, heldout, ablation, means)
    if method == "mask":
        out = learn_circuit(model, graph, train, heldout, ablation, means, target, config.mask, **margins)
        out["agreement"] = {"method": "eap-ig", **agreement(out["keep"], out["tau"], att.scores)}
        scores = out["tau"]
    else:
        ranking = rank_nodes(att.scores)
        out = smallest_circuit(circuit_loss_fn(gated_eval, ranking), graph.n_nodes, target, **margins)
        out["ranking"], out["keep"] = ranking, None
        if out["reached"]:
            out["keep"] = torch.zeros(graph.n_nodes, dtype=torch.bool)
            out["keep"][ranking[: out["nodes"]]] = True
        scores = att.scores
    keep = out["keep"]
    out["kl"] = circuit_kl(gated_eval, out["ranking"], out["nodes"]) if out["reached"] else None
    out["edges"] = graph.edges(model, keep)["total"] if keep is not None else None
    out["nodes_by_kind"] = graph.kinds(keep) if keep is not None else None
    out["top_nodes"] = [[graph.node_name(i), float(scores[i])] for i in out["ranking"][:20].tolist()]
    out["train_pairs"], out["heldout_pairs"] = len(train), len(heldout)
    out["seconds"] = time.perf_counter() - start
    return out


def analyze_task(name: str, description: str, batch: TaskBatch, graph: NodeGraph, subjects: dict[str, Any],
                 means: dict[str, Any], config: AnalysisConfig) -> dict[str, Any]:
    """The node-level entry of one task in analysis.json (see the layout in ``analyze.py``); ``config.ablation``
    is the ablation actually used.

    Example:
        >>> analyze_task("induction", "", batch, graph, {"model": model}, {"model": means},
        ...              AnalysisConfig(level="node", controls=False))["circuits"][0]["nodes"]["model"]  # doctest: +SKIP
        14
    """
    from glassformer.analysis.capability import task_capability

    start = time.perf_counter()
    runs = {"model": (subjects["model"], batch, means["model"])}
    if config.controls:
        runs["random_init"] = (subjects["random_init"], batch, means["random_init"])
        runs["shuffled_labels"] = (subjects["model"], batch.shuffled_labels(config.seed), means["model"])
    gate = {who: node_gate(m, graph, b, mu, config) for who, (m, b, mu) in runs.items()}
    # A task without capability is never sized, for no subject (controls are sized beside a capable model only).
    found = _circuits(runs, graph, config) if gate["model"]["passed"] or config.size_gated_out else {}
    c: dict[str, Any] = run_fields(config)
    c.update(selection=config.method, n_nodes_total=graph.n_nodes)
    for key in ("nodes", "edges", "loss", "reached", "loss_full", "loss_empty", "target", "target_rule", "artefact",
                "kl", "bracket", "nodes_by_kind",
                "top_nodes", "train_pairs", "heldout_pairs", "seconds"):
        c[key] = {who: found.get(who, {}).get(key) for who in WHO}
    c["fraction"] = {who: (None if c["nodes"][who] is None else c["nodes"][who] / graph.n_nodes) for who in WHO}
    if config.method == "mask":
        for key in ("chosen", "search", "active", "agreement", "train_target"):
            c[key] = {who: found.get(who, {}).get(key) for who in WHO}
    keep = found.get("model", {}).get("keep")
    if "model" in found:
        c["ood"] = node_circuit_ood(subjects["model"], graph, batch, config.ablation, means["model"], keep,
                                    target=config.target_loss, margin=config.target_margin,
                                    gate_alpha=config.gate_alpha, gate_min_logit_diff=config.gate_min_logit_diff)
    c["circuit"] = ([graph.node_name(i) for i in keep.nonzero().flatten().tolist()[:MAX_CIRCUIT_NAMES]]
                    if keep is not None else None)
    return {"status": "ok", "description": description, "n_pairs": len(batch), "seed": config.seed,
            "example": batch.pairs[0].example() if batch.pairs else None,
            "capability": {who: task_capability(m, b) for who, (m, b, _) in runs.items()},
            "gate": gate, "capable": gate["model"]["passed"],
            "circuits": [c], "seconds": {"total": time.perf_counter() - start}}


def _circuits(runs: dict[str, Any], graph: NodeGraph, config: AnalysisConfig) -> dict[str, Any]:
    model, batch, model_means = runs["model"]
    found = {"model": circuit_for(model, graph, batch, model_means, config)}
    control_config = config
    if config.method == "mask":
        # The controls reuse the (k_coef, lr) chosen for the model: the same procedure, a third of the cost.
        chosen = found["model"]["chosen"]
        control_config = replace(config, mask=replace(config.mask, search=((chosen["k_coef"], chosen["lr"]),)))
    for who, (m, b, mu) in runs.items():
        if who != "model":
            found[who] = circuit_for(m, graph, b, mu, control_config)
    return found


@torch.no_grad()
def node_gate(model: Any, graph: NodeGraph, batch: TaskBatch, means: Any, config: AnalysisConfig) -> dict[str, Any]:
    """The capability gate of one subject at node level: the whole model against every node ablated, on all pairs.

    Example:
        >>> node_gate(model, graph, batch, means, AnalysisConfig(level="node"))["passed"]  # doctest: +SKIP
        True
    """
    from glassformer.analysis.capability import capability_gate, model_logit_diffs

    empty_logits = GatedModel(model, graph, batch, config.ablation, means).logits(torch.zeros(1, graph.n_nodes))[0]
    empty = logit_diff(empty_logits[:, None], batch).float()
    return capability_gate(model_logit_diffs(model, batch), empty, alpha=config.gate_alpha,
                           min_logit_diff=config.gate_min_logit_diff)


def summary(tasks: dict[str, Any], config: AnalysisConfig) -> list[dict[str, Any]]:
    """Geometric means over tasks of the circuit size (nodes, edges) at the target, for each subject, over the
    tasks where it reached the target with a circuit that is not an artefact (one that beats its full model is
    counted in ``tasks_artefact`` and never averaged), with how many did (so a mean over few tasks shows as one).

    Example:
        >>> t = {"a": {"status": "ok", "circuits": [{"nodes": {"model": 4}, "edges": {"model": 9},
        ...      "reached": {"model": True}}]}, "b": {"status": "ok", "circuits": [{"nodes": {"model": 16},
        ...      "edges": {"model": 1}, "reached": {"model": True}}]}}
        >>> from glassformer.analysis.config import AnalysisConfig
        >>> row = summary(t, AnalysisConfig(level="node", n_pairs=8, controls=False))[0]
        >>> round(row["geomean_nodes"]["model"], 6), row["tasks_reached"]["model"]
        (8.0, 2)
    """
    from glassformer.analysis.component.run import capable, gate_counts

    ok = [t for t in tasks.values() if t["status"] == "ok"]
    # Analyses written before the gate have no gate record: every task counts, as it did then.
    gated_in = [t for t in ok if "gate" not in t or capable(t)]
    row: dict[str, Any] = run_fields(config)
    row.update(selection=config.method, n_tasks=len(ok), **gate_counts(tasks))
    row["n_tasks_gated_in"] = len(gated_in)

    def artefact(t: dict[str, Any], who: str) -> bool:
        # Entries written before the artefact rule have no flag: none is an artefact, as none was then.
        return bool(t["circuits"][0].get("artefact", {}).get(who))

    for key in ("nodes", "edges"):
        row[f"geomean_{key}"] = {who: geometric_mean([t["circuits"][0][key].get(who) for t in gated_in
                                                      if not artefact(t, who)], floor=1.0) for who in WHO}
    row["tasks_reached"] = {who: sum(bool(t["circuits"][0]["reached"].get(who)) and not artefact(t, who)
                                     for t in gated_in) for who in WHO}
    row["tasks_artefact"] = {who: sum(artefact(t, who) for t in gated_in) for who in WHO}
    return [row]


def format_table(result: dict[str, Any]) -> list[str]:
    """Lines of the node-level table: per task the circuit size at the target loss (nodes, edges, the loss
    measured there), the controls beside each, and the agreement of EAP-IG with the mask."""
    s = result["settings"]
    target = (f"task loss <= {s['target_loss']}" if s.get("target_loss") is not None
              else f"task loss <= full model's + {s.get('target_margin')}")
    lines = [f"node-level circuits by {s['method']}: size at {target} on held-out pairs; "
             f"each number [random_init | shuffled_labels]; {result['graph']['n_nodes']} nodes, "
             f"{result['graph'].get('n_edges')} edges in the whole model", ""]
    ok = {n: t for n, t in result["tasks"].items() if t["status"] == "ok"}
    width = max([len(n) for n in result["tasks"]] + [8])
    lines.append(f"{'task':<{width}}  {GATE_HEADER}  {'nodes':<22}{'edges':<26}{'loss at size':<14}"
                 + f"{'KL':<8}" + ("spearman/overlap" if s["method"] == "mask" else ""))
    for name, t in ok.items():
        c = t["circuits"][0]
        agree = ""
        if s["method"] == "mask" and c.get("agreement", {}).get("model"):
            a = c["agreement"]["model"]
            agree = f"{_num(a['spearman'], 2)}/{_num(a['overlap'], 2)}"
        lines.append(f"{name:<{width}}  {gate_columns(t)}  {_cell(c, 'nodes'):<22}"
                     f"{_cell(c, 'edges'):<26}{_num(c['loss']['model'], 3) + ('' if c['reached']['model'] else '!'):<14}"
                     f"{_num(c.get('kl', {}).get('model'), 3):<8}" + agree)
    row = result["summary"][0]
    geo = {k: f"{_num(row[f'geomean_{k}'].get('model'), 1)} [" + " | ".join(
        _num(row[f"geomean_{k}"].get(w), 1) for w in WHO[1:] if w in s["controls"]) + "]" for k in ("nodes", "edges")}
    n_in = row.get("n_tasks_gated_in", row["n_tasks"])
    lines.append(f"{'geomean':<{width}}  {'':<{len(GATE_HEADER)}}  {geo['nodes']:<22}{geo['edges']:<26}"
                 f"reached {row['tasks_reached']['model']}/{n_in} (+{row.get('tasks_artefact', {}).get('model', 0)} "
                 f"artefact) of the {n_in} of {row['n_tasks']} tasks that passed the gate")
    lines.append("- = target not reached (the loss column then shows the lowest loss found, marked !)")
    lines.append(f"* = artefact: the circuit's loss is more than {s.get('artefact_margin')} nats below its full "
                 "model's (it beats the model); never averaged. KL: full model || circuit, last position, held out")
    lines.append("gate: in = the model passed the capability gate; out = never sized, never averaged")
    return [*lines, *gate_notes(ok)]


def _num(v: Any, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _cell(c: dict[str, Any], key: str) -> str:
    def one(who: str) -> str:
        v = c[key].get(who)
        return "-" if v is None else str(v) + ("*" if c.get("artefact", {}).get(who) else "")

    controls = [one(w) for w in WHO[1:] if w in c["controls"]]
    return f"{one('model')} [{' | '.join(controls)}]"


def ablated_values(model: Any, graph: NodeGraph, corpus: torch.Tensor | None, ablation: str) -> Any:
    """Each node's mean over corpus windows for mean ablation; None for zero ablation."""
    return node_means(model, graph, corpus) if ablation == "mean" else None


def graph_record(graph: NodeGraph, model: Any) -> dict[str, Any]:
    """The node graph as analysis.json records it (counts by kind, edges as non-zero weights)."""
    return graph.describe(model)


def table(result: dict[str, Any]) -> list[str]:
    """The node-level table as the command line prints it (after a blank line)."""
    return ["", *format_table(result)]


LEVEL = Level(name="node", graph=NodeGraph, means=ablated_values, graph_record=graph_record,
              settings=settings_record, analyze_task=analyze_task, summary=summary, table=table)
