"""Component level: circuits of edges between embeddings, attention heads (q/k/v inputs), MLPs and logits.

One task at a time (:func:`analyze_task`): edge scores by the configured method, circuits grown by each selection,
their faithfulness measured by running the model with everything outside the circuit ablated; then the summary
over tasks and the table the command line prints. :data:`LEVEL` is what :func:`glassformer.analysis.analyze`
reads.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from glassformer.analysis.capability import (
    GATE_HEADER,
    capability_gate,
    gate_columns,
    gate_notes,
    model_logit_diffs,
    task_capability,
)
from glassformer.analysis.common import CONTROLS, WHO, Level, geometric_mean
from glassformer.analysis.component.ablation import writer_means
from glassformer.analysis.component.attribution import (
    AUTO,
    COMPLETENESS_TOLERANCE,
    GL_IG_STEPS,
    attribute,
    check_completeness,
    completeness,
    method_steps,
    resolve_method,
)
from glassformer.analysis.component.checks import (
    CachedF,
    by_ablation,
    faithfulness_checks,
    n08_circuit,
)
from glassformer.analysis.component.circuits import rank
from glassformer.analysis.component.faithfulness import (
    GRID_PERCENT,
    THRESHOLDS,
    Faithfulness,
    evaluate_ranking,
)
from glassformer.analysis.component.graph import ComponentGraph, edge_count
from glassformer.analysis.component.ood import circuit_ood
from glassformer.analysis.tasks.base import TaskBatch, split_pairs

if TYPE_CHECKING:
    from glassformer.analysis.config import AnalysisConfig

SIZE_KEYS = tuple(f"N_{p:g}" for p in THRESHOLDS)
AREA_KEYS = ("CPR", "CMD")
TOP_EDGES = 20
RUN_KEYS = ("level", "method", "ablation", "n_pairs", "seed", "controls")
"""The settings every circuit entry and summary row repeats, so a report can mix runs."""


def run_fields(config: AnalysisConfig) -> dict[str, Any]:
    """The settings a circuit entry or summary row carries (controls as the list of those measured).

    Example:
        >>> from glassformer.analysis.config import AnalysisConfig
        >>> run_fields(AnalysisConfig(controls=False))["controls"]
        []
    """
    return {"level": config.level, "method": config.method, "ablation": config.ablation,
            "n_pairs": config.n_pairs, "seed": config.seed, "controls": list(CONTROLS) if config.controls else []}


def settings_record(config: AnalysisConfig) -> dict[str, Any]:
    """What analysis.json's ``settings`` holds for a component-level run beyond the shared fields: with method auto
    the rule that picks the method (each task records the method and steps it ran, and its completeness check).

    Example:
        >>> from glassformer.analysis.config import AnalysisConfig
        >>> settings_record(AnalysisConfig())["method_rule"]
        'exact if n_edges <= 1200, else eap-ig-gl with 12 steps and its top 200 edges measured exactly'
    """
    steps, rule = None, None
    if config.method != AUTO:
        steps = method_steps(config.method, config.ig_steps)
    else:
        rule = (f"exact if n_edges <= {config.exact_max_edges}, else eap-ig-gl with "
                f"{config.ig_steps or GL_IG_STEPS} steps and its top {config.rescore_edges} edges measured exactly")
    return {"selections": list(config.selections), "ig_steps": steps, "method_rule": rule,
            "completeness_tolerance": COMPLETENESS_TOLERANCE,
            "metric": "logit_diff", "grid_percent": list(GRID_PERCENT), "thresholds": list(THRESHOLDS)}


class MissingValues(ValueError):
    """An ablation's values cannot be had: they need corpus windows that were not passed."""


class AblatedValues:
    """One subject's ablated values for any ablation, computed when first asked for and kept: mean and
    position-mean read the corpus windows held here; zero and corrupt need none (None).

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> model = build_model(presets.get("debug")); g = ComponentGraph.from_config(model.cfg)
        >>> values = AblatedValues(model, g, torch.randint(0, 512, (2, 8)))
        >>> tuple(values.get("mean").shape), values.get("corrupt")
        ((11, 64), None)
    """

    def __init__(self, model: Any, graph: ComponentGraph, corpus: torch.Tensor | None):
        self.model, self.graph, self.corpus = model, graph, corpus
        self._cache: dict[str, torch.Tensor] = {}

    def get(self, ablation: str) -> torch.Tensor | None:
        if ablation not in ("mean", "position-mean"):
            return None
        if ablation not in self._cache:
            if self.corpus is None:
                raise MissingValues(f"{ablation} ablation needs corpus windows (corpus_tokens) and none were passed")
            self._cache[ablation] = writer_means(self.model, self.graph, self.corpus,
                                                 per_position=ablation == "position-mean")
        return self._cache[ablation]


def ablated_values(model: Any, graph: ComponentGraph, corpus: torch.Tensor | None, ablation: str) -> AblatedValues:
    """Each writer's ablated values for ``model``: the ``ablation``'s now (so a bad corpus fails before any task),
    any other's (the second ablation's) when first asked for.

    Example:
        >>> ablated_values(model, graph, corpus, "mean").get("mean").shape  # doctest: +SKIP
        torch.Size([11, 64])
    """
    values = AblatedValues(model, graph, corpus)
    values.get(ablation)
    return values


def values_for(means: Any, ablation: str, primary: str) -> torch.Tensor | None:
    """The values ``ablation`` needs from ``means``: an :class:`AblatedValues`, or (as a caller may pass) the
    ``primary`` ablation's values alone, from which only the primary's and those needing none can be had.

    Example:
        >>> values_for(None, "corrupt", "zero") is None
        True
    """
    if isinstance(means, AblatedValues):
        return means.get(ablation)
    if ablation == primary:
        return means
    if ablation in ("zero", "corrupt"):
        return None
    raise MissingValues(f"{ablation} ablation needs its writer means; only the {primary} ablation's were given")


def graph_record(graph: ComponentGraph, model: Any) -> dict[str, Any]:
    """The graph as analysis.json describes it, with the edge count checked against its closed form."""
    cfg = model.cfg
    return {**graph.describe(), "edge_count_formula": "(3H+1)(H+1)L(L-1)/2 + L(5H+2) + 1"
            if not cfg.attn_only else "3H^2 L(L-1)/2 + 4HL + 1",
            "edge_count_by_formula": edge_count(cfg.n_layers, cfg.n_heads, cfg.attn_only)}


def analyze_task(name: str, description: str, batch: TaskBatch, graph: ComponentGraph, subjects: dict[str, Any],
                 means: dict[str, Any], config: AnalysisConfig) -> dict[str, Any]:
    """The component-level entry of one task in analysis.json: capability, then for each selection the circuit's
    faithfulness curve, N_0.8 / N_0.9, CPR and CMD, beside the same numbers on each control; for the model also
    the per-pair record (``pairs``), the completeness and minimality of its N_0.8 circuit
    (``faithfulness_checks``) and its sizes under the second ablation (``by_ablation``).

    ``config.ablation`` is the ablation actually used (after any fallback); ``subjects`` holds ``model`` and,
    with controls, ``random_init``; ``means`` their ablated values (an :class:`AblatedValues`, or the primary
    ablation's values alone). ``entry["attribution"]`` records the method and steps ``config.method`` resolved to
    on this graph and, per subject, the completeness check (``{identity, attributed, measured, relative_error}``, a
    warning above ``COMPLETENESS_TOLERANCE``); with ACDC its threshold and how many edges it kept.

    Example:
        >>> entry = analyze_task("induction", "", batch, graph, {"model": model}, {"model": None},
        ...                      AnalysisConfig(controls=False, ablation="zero"))  # doctest: +SKIP
        >>> entry["circuits"][0]["N_0.8"]["model"]["edges"]  # doctest: +SKIP
        4
    """
    start = time.perf_counter()
    primary = config.ablation
    runs = {"model": (subjects["model"], batch, means["model"])}
    if config.controls:
        runs["random_init"] = (subjects["random_init"], batch, means["random_init"])
        runs["shuffled_labels"] = (subjects["model"], batch.shuffled_labels(config.seed), means["model"])
    entry: dict[str, Any] = {"status": "ok", "description": description, "n_pairs": len(batch),
                             "seed": config.seed, "example": batch.pairs[0].example() if batch.pairs else None,
                             "capability": {k: task_capability(m, b) for k, (m, b, _) in runs.items()}}
    fas = {who: Faithfulness(model, graph, b, primary, values_for(mu, primary, primary))
           for who, (model, b, mu) in runs.items()}
    entry["gate"] = {who: _gate(model, b, fas[who], config) for who, (model, b, _) in runs.items()}
    entry["capable"] = entry["gate"]["model"]["passed"]
    # A task without capability is never sized: every subject is skipped (controls are sized beside a capable
    # model only, where they are the sanity check).
    sized = runs if entry["capable"] or config.size_gated_out else {}
    method, steps = resolve_method(config.method, graph, config.ig_steps, config.exact_max_edges)
    train, heldout = split_pairs(batch, config.holdout)
    entry["attribution"] = record = {"method": method, "ig_steps": steps, "ranked_on_pairs": len(train),
                                     "measured_on_pairs": len(heldout), "completeness": {}}
    evaluations = {who: _size_subject(name, who, model, b, values_for(mu, primary, primary), graph, config,
                                      primary, record)
                   for who, (model, b, mu) in sized.items()}
    second = None
    if "model" in evaluations and config.second_ablation is not None:
        second = _second_ablation(name, subjects["model"], batch, means["model"], graph, config, record)
    entry["circuits"] = [_circuit_entry(selection, evaluations, second, graph, config)
                         for selection in config.selections]
    if "model" in evaluations:
        _score_shifted(entry["circuits"], evaluations["model"], subjects["model"], batch,
                       values_for(means["model"], primary, primary), graph, config)
    entry["seconds"] = {"attribution": {who: ev["attribution"].seconds for who, ev in evaluations.items()},
                        "total": time.perf_counter() - start}
    return entry


def _circuit_entry(selection: str, evaluations: dict[str, Any], second: dict[str, Any] | None,
                   graph: ComponentGraph, config: AnalysisConfig) -> dict[str, Any]:
    """One selection's circuit entry: sizes and curves of every subject sized; for the model also its per-pair
    record, its circuit's nodes, the checks of its N_0.8 circuit and its sizes under both ablations."""
    names = graph.edge_names()
    c: dict[str, Any] = run_fields(config)
    c.update(selection=selection, n_edges_total=graph.n_edges)
    for key in (*SIZE_KEYS, *AREA_KEYS):
        c[key] = {who: evaluations.get(who, {}).get("results", {}).get(selection, {}).get(key)
                  for who in ("model", *CONTROLS)}
    c["signal"] = {who: ev["results"][selection]["signal"] for who, ev in evaluations.items()}
    c["faithfulness_curve"] = {who: ev["results"][selection]["curve"] for who, ev in evaluations.items()}
    c["baseline"] = {who: {"m_model": ev["faithfulness"].m_model, "m_empty": ev["faithfulness"].m_empty}
                     for who, ev in evaluations.items()}
    c["top_edges"] = {who: [[names[e], ev["attribution"].effects[e].item()]
                            for e in ev["rankings"][selection][:TOP_EDGES].tolist()]
                      for who, ev in evaluations.items()}
    model = evaluations.get("model")
    if model is None:
        return c
    c["pairs"] = {"model": model["results"][selection]["pairs"]}  # for bootstrap intervals (INTERFACES.md 1)
    circuit = n08_circuit(graph, model["rankings"][selection], model["results"][selection])
    if circuit is not None:
        c["circuit_nodes"] = sorted(graph.edge_nodes(circuit))
        c["faithfulness_checks"] = faithfulness_checks(model["cached"], circuit, names, config.n_subsets,
                                                       config.seed)
    if second is not None:
        c["by_ablation"] = by_ablation(selection, model["results"][selection], second, graph, config)
    return c


def _score_shifted(circuits: list[dict[str, Any]], model_eval: dict[str, Any], model: Any, batch: TaskBatch,
                   means: Any, graph: ComponentGraph, config: AnalysisConfig) -> None:
    """Each circuit entry's ``ood``: its N_0.8 and N_0.9 circuits, pruned as they were measured, scored on the
    task's shifted pairs (:func:`~glassformer.analysis.component.ood.circuit_ood`)."""
    masks = {}
    for selection in config.selections:
        result, ranking = model_eval["results"][selection], model_eval["rankings"][selection]
        masks[selection] = {key: n08_circuit(graph, ranking, result, key) for key in SIZE_KEYS}
    ood = circuit_ood(model, graph, batch, config.ablation, means, masks, gate_alpha=config.gate_alpha,
                      gate_min_logit_diff=config.gate_min_logit_diff)
    for selection, c in zip(config.selections, circuits, strict=True):
        c["ood"] = ood[selection]


def _size_subject(name: str, who: str, model: Any, batch: TaskBatch, means: Any, graph: ComponentGraph,
                  config: AnalysisConfig, ablation: str, record: dict[str, Any]) -> dict[str, Any]:
    """Edge scores on the ranking pairs under ``ablation``, completeness checked there, and each selection's
    circuits measured on the held-out pairs (``config.holdout`` of them), so a circuit is never scored on the
    pairs that chose it. ``record`` (the task's attribution record) gets the completeness, and ACDC's result."""
    method, steps = record["method"], record["ig_steps"]
    train, heldout = split_pairs(batch, config.holdout)
    extra = {"acdc": {"acdc_threshold": config.acdc_threshold},
             "eap-ig-gl+exact": {"rescore_edges": config.rescore_edges}}.get(method, {})
    att = attribute(method, model, graph, train, ablation, means, ig_steps=steps, **extra)
    record["completeness"][who] = done = completeness(att, Faithfulness(model, graph, train, ablation, means))
    check_completeness(done, f"task {name!r}, subject {who!r}, {ablation} ablation")
    if method == "acdc":
        acdc_record = record.setdefault("acdc", {"threshold": att.threshold, "n_kept": {}, "n_kept_pruned": {}})
        acdc_record["n_kept"][who] = att.n_kept
        acdc_record["n_kept_pruned"][who] = int(graph.prune(att.kept).sum())
    if att.details:
        record.setdefault("details", {})[who] = att.details
    fa = Faithfulness(model, graph, heldout, ablation, means)
    rankings = {s: rank(s, graph, att.scores) for s in config.selections}
    return {"attribution": att, "faithfulness": fa, "cached": CachedF(fa), "rankings": rankings,
            "results": {s: evaluate_ranking(fa, r) for s, r in rankings.items()}}


def _second_ablation(name: str, model: Any, batch: TaskBatch, means: Any, graph: ComponentGraph,
                     config: AnalysisConfig, record: dict[str, Any]) -> dict[str, Any]:
    """The model sized again under ``config.second_ablation``: scored on the ranking pairs with the same method,
    ranked, measured on the held-out pairs; or why it could not be (its ablated values need corpus windows)."""
    ablation = config.second_ablation
    try:
        values = values_for(means, ablation, config.ablation)
    except MissingValues as e:
        record["second_ablation"] = {"ablation": ablation, "skipped": str(e)}
        return {"ablation": ablation, "skipped": str(e)}
    sub = {"method": record["method"], "ig_steps": record["ig_steps"], "completeness": {}}
    ev = _size_subject(name, "model", model, batch, values, graph, config, ablation, sub)
    record["second_ablation"] = {"ablation": ablation, "completeness": sub["completeness"]["model"],
                                 "seconds": ev["attribution"].seconds, **{k: v for k, v in sub.items()
                                                                         if k == "acdc"}}
    return {"ablation": ablation, **ev}


def _gate(model: Any, batch: TaskBatch, fa: Faithfulness, config: AnalysisConfig) -> dict[str, Any]:
    """The capability gate of one subject: the whole model against the empty circuit (every edge ablated)."""
    empty = fa.per_pair(torch.zeros(1, fa.graph.n_edges, dtype=torch.bool))[0]
    return capability_gate(model_logit_diffs(model, batch), empty, alpha=config.gate_alpha,
                           min_logit_diff=config.gate_min_logit_diff)


def capable(task: dict[str, Any]) -> bool:
    """Whether the model passed the capability gate on ``task`` (a task entry of analysis.json).

    Example:
        >>> capable({"status": "ok", "gate": {"model": {"passed": False}}})
        False
    """
    return task.get("status") == "ok" and bool(((task.get("gate") or {}).get("model") or {}).get("passed"))


def gate_counts(tasks: dict[str, Any]) -> dict[str, Any]:
    """The summary's gate fields: how many tasks passed, which did not, and where a control passed (it must not).

    Example:
        >>> t = {"a": {"status": "ok", "gate": {"model": {"passed": True}, "random_init": {"passed": False}}},
        ...      "b": {"status": "ok", "gate": {"model": {"passed": False}}}}
        >>> gate_counts(t)
        {'n_tasks_gated_in': 1, 'gated_out': ['b'], 'controls_passing_gate': {'random_init': [], 'shuffled_labels': []}}
    """
    ok = {n: t for n, t in tasks.items() if t.get("status") == "ok"}
    return {"n_tasks_gated_in": sum(capable(t) for t in ok.values()),
            "gated_out": [n for n, t in ok.items() if not capable(t)],
            "controls_passing_gate": {who: [n for n, t in ok.items()
                                            if ((t.get("gate") or {}).get(who) or {}).get("passed")]
                                      for who in CONTROLS}}


def summary(tasks: dict[str, Any], config: AnalysisConfig) -> list[dict[str, Any]]:
    """Geometric means of N_0.8 and N_0.9 (edges), beside their controls, over the tasks where the model passed
    the capability gate only (a size without capability measures nothing), with how many passed.

    Example:
        >>> summary(run["tasks"], config)[0]["geomean_N_0.8"]["model"]  # doctest: +SKIP
        16.8
    """
    ok = [t for t in tasks.values() if t["status"] == "ok"]
    gated_in = [t for t in ok if capable(t)]
    out = []
    for i, selection in enumerate(config.selections):
        row: dict[str, Any] = run_fields(config)
        row.update(selection=selection, n_tasks=len(ok), **gate_counts(tasks))
        for key in SIZE_KEYS:
            row[f"geomean_{key}"] = {
                who: geometric_mean([(t["circuits"][i][key].get(who) or {}).get("edges") for t in gated_in])
                for who in WHO}
        out.append(row)
    return out


def format_table(result: dict[str, Any]) -> list[str]:
    """Lines of the component-level table: per task the gate verdict, accuracy and gap (model minus empty
    circuit, logits), then each size with the controls beside it; then the geometric means over the tasks that
    passed the gate; under it, why each task failed and any control that passed (it must not). The checks of each
    N_0.8 circuit (second ablation, OOD, completeness, minimality) follow the whole table, one line per task
    (:func:`glassformer.analysis.report.checks.check_summary`), so they are not repeated here."""
    s, lines = result["settings"], []
    ok = {n: t for n, t in result["tasks"].items() if t["status"] == "ok"}
    width = max([len(n) for n in result["tasks"]] + [8])
    for i, selection in enumerate(s["selections"]):
        lines.append("")
        lines.append(f"circuits by {selection}; each number [random_init | shuffled_labels]; "
                     f"E = {result['graph']['n_edges']} edges")
        header = f"{'task':<{width}}  {GATE_HEADER}  " + "  ".join(f"{k:<26}" for k in (*SIZE_KEYS, *AREA_KEYS))
        lines.append(header)
        for name, t in ok.items():
            c = t["circuits"][i]
            cells = [_cell(c, k, _edges) for k in SIZE_KEYS] + [_cell(c, k, _area) for k in AREA_KEYS]
            lines.append(f"{name:<{width}}  {gate_columns(t)}  " + "  ".join(f"{x:<26}" for x in cells))
        summary = result["summary"][i]
        n_in = summary.get("n_tasks_gated_in")  # analyses written before the gate lack it
        note = f"  over the {n_in} of {summary['n_tasks']} tasks that passed the gate" if n_in is not None else ""
        geo = [_cell({k: summary["geomean_" + k], "signal": {}}, k, _geo) for k in SIZE_KEYS]
        lines.append(f"{'geomean':<{width}}  {'':<{len(GATE_HEADER)}}  " + "  ".join(f"{x:<26}" for x in geo)
                     + note)
    return [*lines, *gate_notes(ok)]


def _edges(v: Any) -> str:
    return "-" if not v or v.get("edges") is None else str(v["edges"])


def _area(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def _geo(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def _cell(c: dict[str, Any], key: str, fmt: Any) -> str:
    def one(who: str) -> str:
        flag = "" if c["signal"].get(who, True) else "?"
        return fmt(c[key].get(who)) + flag

    controls = [one(who) for who in CONTROLS if who in c[key]]
    return f"{one('model')} [{' | '.join(controls)}]"


LEVEL = Level(name="component", graph=ComponentGraph, means=ablated_values, graph_record=graph_record,
              settings=settings_record, analyze_task=analyze_task, summary=summary, table=format_table,
              table_notes=("gate: in = the model passed the capability gate (one-sided: above the empty circuit, "
                           "accuracy above chance, gap at least the minimum); out = never sized, never averaged",
                           "? = logit difference not clearly above the empty circuit's, so f is noise over noise"))
