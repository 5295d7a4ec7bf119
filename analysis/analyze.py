"""``analyze``: capability and circuits of one model directory, with controls, added to ``analysis.json``.

Two levels (``LEVELS``), each with its methods (``METHODS_BY_LEVEL``):

- ``component`` (methods ``exact``, ``eap``, ``eap-ig``): for each task, edge scores, circuits by each selection
  (top-n, greedy growth from the logits), their measured faithfulness curve, N_0.8 / N_0.9 (edges and fraction
  of edges), CPR and CMD.
- ``node`` (methods ``mask``, ``eap-ig``, ``eap``): nodes are residual, q/k/v and neuron or latent channels
  (:mod:`glassformer.analysis.nodes`); for each task the circuit size at a fixed task loss (``target_loss``,
  0.15 by default) on held-out pairs, in nodes and edges, by learned masks (:mod:`masks`) or attribution.

Every number has the same measurement on two controls beside it: a randomly initialised model of the same config
(``random_init``) and the task with shuffled labels (``shuffled_labels``). Beside the circuits, ``sparse_layers``
holds the interpretability metrics of the model's MLP layers (:mod:`sparse_metrics`).

analysis.json, ``schema_version`` 2 (:mod:`glassformer.analysis.results` reads versions 1 and 2)::

    {"schema_version": 2, "kind", "model_dir", "model": {shape, mlp kind, n_params},
     "results": {"<level>/<method>/<ablation>": RUN, ...},   # every run so far; e.g. "node/mask/mean"
     "latest": "<key of the most recent run>",
     "sparse_layers": {weight_density, layers: [{layer, site, tokens, l0, dead_fraction, dense_fraction,
                       histogram, interference}], parent, parent_note},
     "settings", "graph", "capability", "tasks", "summary"}  # = results[latest], the version-1 layout

A run at another level, method or ablation is added to ``results``; only a run with the same key is replaced
(a file describing another model is replaced whole, with a warning). RUN::

    {"settings": {level, method, ablation (used), ablation_requested, ablation_note, n_pairs, seed, controls,
                  corpus_windows, val_windows, ig_steps, ...
                  component: selections, metric, grid_percent, thresholds;
                  node: target_loss, holdout, mask: {steps, search: [[k_coef, lr], ...], temperature, ...}},
     "graph": component: {level, n_nodes, n_edges, edge_count_formula, ...};
              node: {level, n_nodes, nodes_by_kind, n_edges (non-zero weights), n_edges_dense, sites},
     "capability": {val_loss, val_tokens, random_init_val_loss},
     "tasks": {name: {"status": "ok", description, n_pairs, seed, example,
                      "capability": {"model" | control: {loss, accuracy, logit_diff}},
                      "circuits": [CIRCUIT], seconds} | {"status": "skipped", "reason"}},
     "summary": [component: {level, method, ablation, selection, n_pairs, seed, controls, n_tasks,
                             "geomean_N_0.8" | "geomean_N_0.9": {"model" | control: float}}
                 node: {level, method, ablation, target_loss, holdout, n_pairs, seed, controls, n_tasks,
                        "geomean_nodes" | "geomean_edges": {"model" | control: float | None},
                        "tasks_reached": {"model" | control: int}}],
     "seconds": float}

A component CIRCUIT (one per selection): ``{level, method, ablation, n_pairs, seed, controls, selection,
n_edges_total, "N_0.8" | "N_0.9": {who: {edges, fraction, bracket}}, "CPR" | "CMD": {who: float}, signal,
faithfulness_curve, baseline, top_edges, circuit_nodes}``. A node CIRCUIT: ``{level, method, ablation,
target_loss, holdout, n_pairs, seed, controls, selection, n_nodes_total, and per who ("model", "random_init",
"shuffled_labels"): nodes (None: target not reached), edges, fraction, loss (measured at that size; the lowest
found when not reached), reached, loss_full, loss_empty, bracket, nodes_by_kind, top_nodes, train_pairs,
heldout_pairs, seconds; with method mask also chosen ({k_coef, lr}), search, active, agreement ({method: eap-ig,
spearman, overlap, circuit_nodes}); circuit: the model's circuit as node names}``. Every circuit entry carries
its own settings, so a report can mix runs.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch

from glassformer.analysis import node_circuits
from glassformer.analysis.ablation import ABLATIONS, check_tokens, writer_means
from glassformer.analysis.attribution import DEFAULT_IG_STEPS, METHODS, attribute
from glassformer.analysis.capability import task_capability, validation_loss
from glassformer.analysis.circuits import SELECTIONS, rank
from glassformer.analysis.graph import ComponentGraph, edge_count
from glassformer.analysis.masks import DEFAULT_TARGET_LOSS, MaskSettings
from glassformer.analysis.metrics import (
    GRID_PERCENT,
    THRESHOLDS,
    Faithfulness,
    evaluate_ranking,
    geometric_mean,
)
from glassformer.analysis.node_circuits import NODE_METHODS
from glassformer.analysis.nodes import NODE_ABLATIONS, NodeGraph, node_means
from glassformer.analysis.results import SCHEMA_VERSION, existing_analysis, merge_run, read_analysis
from glassformer.analysis.tasks import TASKS, TaskBatch, TaskError

LEVELS = {"component": ComponentGraph, "node": NodeGraph}
METHODS_BY_LEVEL: dict[str, dict[str, Any]] = {"component": METHODS, "node": NODE_METHODS}
ABLATIONS_BY_LEVEL: dict[str, dict[str, str]] = {"component": ABLATIONS, "node": NODE_ABLATIONS}
DEFAULT_METHOD = {"component": "eap-ig", "node": "mask"}
CONTROLS = ("random_init", "shuffled_labels")
SIZE_KEYS = tuple(f"N_{p:g}" for p in THRESHOLDS)
AREA_KEYS = ("CPR", "CMD")
TOP_EDGES = 20
RANDOM_INIT_SEED_OFFSET = 7919


def analyze(model_dir: str | Path, *, tasks: list[str] | None = None, method: str | None = None,
            ablation: str = "mean", corpus_tokens: torch.Tensor | None = None,
            val_tokens: torch.Tensor | None = None, n_pairs: int = 64, seed: int = 0, controls: bool = True,
            progress: bool = True, device: str = "cpu", level: str = "component",
            selections: tuple[str, ...] = ("topn", "greedy"), ig_steps: int = DEFAULT_IG_STEPS,
            target_loss: float = DEFAULT_TARGET_LOSS, holdout: float = 0.5, mask: MaskSettings | None = None,
            sparse_layers: bool = True) -> dict:
    """Analyse the model directory ``model_dir`` at ``level`` by ``method`` (default: eap-ig for components,
    mask for nodes); add the run to ``analysis.json`` there and return the file's new content.

    Node level only: ``target_loss`` (the circuit size is the smallest circuit at or below it), ``holdout`` (the
    fraction of pairs held out to measure sizes on; the rest train masks or attribution) and ``mask`` (how
    masks are trained and searched). ``sparse_layers``: also measure the MLP layers' L0, dead/dense fractions,
    interference, weight density and, for a fine-tuned model, FVU and CE loss recovered against its parent
    (needs ``corpus_tokens``).

    Everything is validated before any work: an unknown task, level, method, ablation or selection raises
    ValueError naming it and listing the allowed ones; a folder that is not a model directory raises
    :class:`glassformer.archs.ModelDirError`; a named task whose answers are not single tokens raises
    :class:`~glassformer.analysis.tasks.AnswerTokenError` (with ``tasks=None`` it is skipped and the reason
    recorded). Mean ablation needs ``corpus_tokens`` (N, T); without them zero ablation is used, with a warning
    and a note in the result. The file is written atomically at the end: nothing is written on error.

    Example:
        >>> result = analyze("runs/demo/tiny", tasks=["induction"], corpus_tokens=corpus)  # doctest: +SKIP
        >>> result = analyze("runs/demo/tiny", level="node", corpus_tokens=corpus)  # doctest: +SKIP
        >>> sorted(result["results"])  # doctest: +SKIP
        ['component/eap-ig/mean', 'node/mask/mean']
        >>> print(format_table(result))  # doctest: +SKIP
    """
    from tokenizers import Tokenizer

    from glassformer.archs import load_config, load_model_dir
    from glassformer.archs.model_dir import ANALYSIS_FILE, TOKENIZER_FILE, ModelDirError, atomic_write_json

    _check_choice("level", level, LEVELS)
    method = DEFAULT_METHOD[level] if method is None else method
    _check_choice("method", method, METHODS_BY_LEVEL[level], f" (at level={level!r})")
    _check_choice("ablation", ablation, ABLATIONS_BY_LEVEL[level], f" (at level={level!r})")
    for s in selections:
        _check_choice("selections", s, SELECTIONS)
    if tasks is not None:
        if isinstance(tasks, str) or not all(isinstance(t, str) for t in tasks):
            raise ValueError(f"tasks={tasks!r} is not allowed: expected a list of task names")
        for t in tasks:
            _check_choice("tasks", t, TASKS.names())
    for name, value in (("n_pairs", n_pairs), ("ig_steps", ig_steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} is not allowed: expected a positive integer")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed={seed!r} is not allowed: expected an integer")
    if isinstance(target_loss, bool) or not isinstance(target_loss, (int, float)) or not target_loss > 0:
        raise ValueError(f"target_loss={target_loss!r} is not allowed: expected a positive number of nats")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
        raise ValueError(f"holdout={holdout!r} is not allowed: expected a fraction in [0, 1)")
    mask = MaskSettings(seed=seed) if mask is None else mask
    if not isinstance(mask, MaskSettings):
        raise ValueError(f"mask={mask!r} is not allowed: expected a MaskSettings")

    model_dir = Path(model_dir)
    cfg = load_config(model_dir)
    if not (model_dir / TOKENIZER_FILE).is_file():
        raise ModelDirError(f"{model_dir / TOKENIZER_FILE} is missing: analysis needs the model's tokenizer")
    for name, tokens in (("corpus_tokens", corpus_tokens), ("val_tokens", val_tokens)):
        if tokens is not None:
            check_tokens(tokens, name, cfg)
    existing_analysis(model_dir / ANALYSIS_FILE)  # a file from a newer glassformer stops us before any work
    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    tokenizer.encode_special_tokens = True  # as training loads it: document text never forges a special token

    batches: dict[str, TaskBatch] = {}
    skipped: dict[str, str] = {}
    for name in tasks if tasks is not None else TASKS.names():
        try:
            batches[name] = TASKS[name].generate(tokenizer, n_pairs, seed, max_len=cfg.n_ctx, d_vocab=cfg.d_vocab)
        except TaskError as e:
            if tasks is not None:
                raise
            skipped[name] = str(e)
    if not batches:
        raise TaskError(f"no task can run on this model: {skipped}")

    used_ablation, ablation_note = ablation, None
    if ablation in ("mean", "position-mean") and corpus_tokens is None:
        used_ablation = "zero"
        ablation_note = f"{ablation} ablation asked for but no corpus_tokens were passed: zero ablation used instead"
        warnings.warn(ablation_note, stacklevel=2)

    started = time.perf_counter()
    model = load_model_dir(model_dir, device=device).eval()
    graph = LEVELS[level].from_config(cfg)
    control_names = list(CONTROLS) if controls else []
    settings: dict[str, Any] = {
        "level": level, "method": method, "ablation": used_ablation, "ablation_requested": ablation,
        "ablation_note": ablation_note, "n_pairs": n_pairs, "seed": seed, "controls": control_names,
        "corpus_windows": int(corpus_tokens.shape[0]) if corpus_tokens is not None else 0,
        "val_windows": int(val_tokens.shape[0]) if val_tokens is not None else 0}
    if level == "component":
        settings.update(selections=list(selections), ig_steps=ig_steps if method == "eap-ig" else None,
                        metric="logit_diff", grid_percent=list(GRID_PERCENT), thresholds=list(THRESHOLDS))
    else:
        settings.update(target_loss=float(target_loss), holdout=float(holdout), metric="task_loss",
                        ig_steps=ig_steps if method != "eap" else 1,
                        mask=mask.record() if method == "mask" else None)
    subjects = {"model": model}
    if controls:
        subjects["random_init"] = _random_init(cfg, seed, device)
    if level == "component":
        means = {k: (writer_means(m, graph, corpus_tokens, per_position=used_ablation == "position-mean")
                     if used_ablation in ("mean", "position-mean") else None) for k, m in subjects.items()}
    else:
        means = {k: node_means(m, graph, corpus_tokens) if used_ablation == "mean" else None
                 for k, m in subjects.items()}

    capability: dict[str, Any] = {"val_loss": None, "val_tokens": 0}
    if val_tokens is not None:
        val = validation_loss(model, val_tokens)
        capability.update(val_loss=val["loss"], val_tokens=val["tokens"])
        if controls:
            capability["random_init_val_loss"] = validation_loss(subjects["random_init"], val_tokens)["loss"]

    header = {"kind": "glassformer.analysis", "model_dir": str(model_dir),
              "model": {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_model": cfg.d_model,
                        "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx, "attn_only": cfg.attn_only,
                        "mlp": None if cfg.attn_only else cfg.mlp_config.kind,
                        "n_params": sum(p.numel() for p in model.parameters())}}
    if level == "component":
        graph_record = {**graph.describe(), "edge_count_formula": "(3H+1)(H+1)L(L-1)/2 + L(5H+2) + 1"
                        if not cfg.attn_only else "3H^2 L(L-1)/2 + 4HL + 1",
                        "edge_count_by_formula": edge_count(cfg.n_layers, cfg.n_heads, cfg.attn_only)}
    else:
        graph_record = graph.describe(model)
    run: dict[str, Any] = {
        "settings": settings, "graph": graph_record, "capability": capability,
        "tasks": {name: {"status": "skipped", "reason": reason} for name, reason in skipped.items()},
    }
    from tqdm.auto import tqdm

    bar = tqdm(total=len(batches), desc=f"analyze {level}/{method}", unit="task", disable=not progress)
    try:
        for name, batch in batches.items():
            bar.set_postfix_str(name)
            if level == "component":
                run["tasks"][name] = _analyze_task(name, batch.to(device), graph, subjects, means, settings)
            else:
                run["tasks"][name] = node_circuits.analyze_task(name, TASKS[name].description, batch.to(device),
                                                                graph, subjects, means, settings, mask)
            bar.update(1)
    finally:
        bar.close()
    run["summary"] = (_summary(run, settings) if level == "component"
                      else node_circuits.summary(run["tasks"], settings))
    extra = {}
    if sparse_layers and corpus_tokens is not None:
        extra["sparse_layers"] = _sparse_layers(model, model_dir, corpus_tokens, val_tokens, used_ablation)
    run["seconds"] = time.perf_counter() - started
    result = merge_run(existing_analysis(model_dir / ANALYSIS_FILE, header["model"]), run, header, extra)
    atomic_write_json(model_dir / ANALYSIS_FILE, result)
    return result


def _sparse_layers(model: Any, model_dir: Path, corpus: torch.Tensor, val: torch.Tensor | None,
                   ablation: str) -> dict[str, Any]:
    from glassformer.analysis.sparse_metrics import load_parent, sparse_layer_report

    parent, note = load_parent(model_dir)
    if parent is not None and (parent.cfg.d_model != model.cfg.d_model or parent.cfg.n_layers != model.cfg.n_layers
                               or parent.cfg.attn_only or model.cfg.attn_only):
        parent, note = None, f"{note}: not the shape of this model, not compared"
    # The CE comparison reads next-token windows: the validation windows when there are some.
    eval_tokens = val if val is not None else corpus
    return sparse_layer_report(model, corpus, parent=parent, parent_note=note, eval_tokens=eval_tokens,
                               ablation="zero" if ablation == "zero" else "mean")


def _check_choice(field: str, value: str, allowed: Any, where: str = "") -> None:
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not allowed: expected one of {', '.join(allowed)}{where}")


def _random_init(cfg: Any, seed: int, device: str) -> Any:
    from glassformer.archs import build_model

    # A forked RNG: seeding here must not change the caller's random stream. The offset keeps the control from
    # repeating a model that was itself initialised with the analysis seed (seed 0 is everyone's default).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED_OFFSET + seed)
        return build_model(cfg).to(device).eval()


def _analyze_task(name: str, batch: TaskBatch, graph: ComponentGraph, subjects: dict[str, Any],
                  means: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    runs = {"model": (subjects["model"], batch, means["model"])}
    if settings["controls"]:
        runs["random_init"] = (subjects["random_init"], batch, means["random_init"])
        runs["shuffled_labels"] = (subjects["model"], batch.shuffled_labels(settings["seed"]), means["model"])
    entry: dict[str, Any] = {"status": "ok", "description": TASKS[name].description, "n_pairs": len(batch),
                             "seed": settings["seed"], "example": batch.pairs[0].example(),
                             "capability": {k: task_capability(m, b) for k, (m, b, _) in runs.items()}}
    evaluations: dict[str, dict[str, Any]] = {}
    for who, (model, b, mu) in runs.items():
        att = attribute(settings["method"], model, graph, b, settings["ablation"], mu,
                        ig_steps=settings["ig_steps"] or DEFAULT_IG_STEPS)
        fa = Faithfulness(model, graph, b, settings["ablation"], mu)
        evaluations[who] = {"attribution": att, "faithfulness": fa,
                            "rankings": {s: rank(s, graph, att.scores) for s in settings["selections"]}}
        evaluations[who]["results"] = {s: evaluate_ranking(fa, r) for s, r in evaluations[who]["rankings"].items()}
    names = graph.edge_names()
    circuits = []
    for selection in settings["selections"]:
        c: dict[str, Any] = {key: settings[key] for key in ("level", "method", "ablation", "n_pairs", "seed",
                                                             "controls")}
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
        n08 = c[SIZE_KEYS[0]]["model"]["edges"]
        if n08 is not None:
            mask = torch.zeros(graph.n_edges, dtype=torch.bool)
            mask[evaluations["model"]["rankings"][selection][:n08]] = True
            c["circuit_nodes"] = sorted(graph.edge_nodes(mask))
        circuits.append(c)
    entry["circuits"] = circuits
    entry["seconds"] = {"attribution": {who: ev["attribution"].seconds for who, ev in evaluations.items()},
                        "total": time.perf_counter() - start}
    return entry


def _summary(result: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Geometric means over the analysed tasks of N_0.8 and N_0.9 (edges), beside their controls."""
    ok = [t for t in result["tasks"].values() if t["status"] == "ok"]
    out = []
    for i, selection in enumerate(settings["selections"]):
        row: dict[str, Any] = {key: settings[key] for key in ("level", "method", "ablation", "n_pairs", "seed",
                                                               "controls")}
        row.update(selection=selection, n_tasks=len(ok))
        who_all = ("model", *CONTROLS)
        # A size measured without signal (the model's logit difference is not clearly above the empty circuit's)
        # is noise over noise: the second mean leaves those tasks out, per subject.
        with_signal = {who: [t for t in ok if t["circuits"][i]["signal"].get(who)] for who in who_all}
        row["n_tasks_with_signal"] = {who: len(ts) for who, ts in with_signal.items()}
        for key in SIZE_KEYS:
            row[f"geomean_{key}"] = {
                who: geometric_mean([(t["circuits"][i][key].get(who) or {}).get("edges") for t in ok])
                for who in who_all}
            row[f"signal_geomean_{key}"] = {
                who: geometric_mean([(t["circuits"][i][key].get(who) or {}).get("edges") for t in with_signal[who]])
                for who in who_all}
        out.append(row)
    return out


def format_table(result: dict[str, Any]) -> str:
    """The per-task table the CLI prints for the latest run (``result``'s top-level fields): capability, then
    circuit sizes with the controls beside them; then the sparse-layer metrics when measured.

    Example:
        >>> print(format_table(analyze("runs/demo/tiny", corpus_tokens=corpus)))  # doctest: +SKIP
    """
    s = result["settings"]
    lines = [f"level={s['level']}  method={s['method']}  ablation={s['ablation']}  n_pairs={s['n_pairs']}  "
             f"seed={s['seed']}  controls={','.join(s['controls']) or 'off'}"]
    if s.get("ablation_note"):
        lines.append(f"note: {s['ablation_note']}")
    cap = result["capability"]
    if cap.get("val_loss") is not None:
        rand = cap.get("random_init_val_loss")
        lines.append(f"validation loss {cap['val_loss']:.4f}" + (f" (random init {rand:.4f})" if rand else ""))
    if s["level"] == "node":
        lines += ["", *node_circuits.format_table(result)]
    else:
        lines += _component_table(result)
    for name, t in result["tasks"].items():
        if t["status"] != "ok":
            lines.append(f"skipped {name}: {t['reason']}")
    if s["level"] == "component":
        lines.append("? = logit difference not clearly above the empty circuit's, so f is noise over noise")
    if result.get("sparse_layers", {}).get("layers"):
        lines += ["", *_sparse_table(result["sparse_layers"])]
    return "\n".join(lines)


def _component_table(result: dict[str, Any]) -> list[str]:
    s, lines = result["settings"], []
    ok = {n: t for n, t in result["tasks"].items() if t["status"] == "ok"}
    width = max([len(n) for n in result["tasks"]] + [8])
    for i, selection in enumerate(s["selections"]):
        lines.append("")
        lines.append(f"circuits by {selection}; each number [random_init | shuffled_labels]; "
                     f"E = {result['graph']['n_edges']} edges")
        header = f"{'task':<{width}}  {'acc':>5} {'loss':>6}  " + "  ".join(
            f"{k:<26}" for k in (*SIZE_KEYS, *AREA_KEYS))
        lines.append(header)
        for name, t in ok.items():
            c = t["circuits"][i]
            cells = [_cell(c, k, _edges) for k in SIZE_KEYS] + [_cell(c, k, _area) for k in AREA_KEYS]
            capm = t["capability"]["model"]
            lines.append(f"{name:<{width}}  {capm['accuracy']:>5.2f} {capm['loss']:>6.3f}  "
                         + "  ".join(f"{x:<26}" for x in cells))
        summary = result["summary"][i]
        n = summary.get("n_tasks_with_signal")  # analyses written before the signal-only row lack it
        rows = [("geomean", "geomean_", "")]
        if n is not None:
            counts = f"{n['model']} [" + " | ".join(str(n[w]) for w in CONTROLS if w in n) + "]"
            rows.append(("geomean, signal", "signal_geomean_", f"  over the tasks with signal: {counts}"))
        for label, prefix, note in rows:
            geo = [_cell({k: summary[prefix + k], "signal": {}}, k, _geo) for k in SIZE_KEYS]
            lines.append(f"{label:<{width}}  {'':>5} {'':>6}  " + "  ".join(f"{x:<26}" for x in geo) + note)
    return lines


def _sparse_table(sparse: dict[str, Any]) -> list[str]:
    cos = sparse["layers"][0]["interference"]["threshold"]
    lines = [f"sparse layers: weight density {sparse['weight_density']['overall']:.3f}; {sparse['parent_note']}",
             f"layer  {'L0':>8} {'dead':>6} {'dense':>6}  |cos|>{cos:g}  {'FVU':>7} {'CE rec.':>7}"]
    parent = {row["layer"]: row for row in (sparse.get("parent") or {}).get("layers", [])}
    for row in sparse["layers"]:
        p = parent.get(row["layer"], {})
        frac = row["interference"]["fraction_above"]
        lines.append(f"{row['layer']:<6} {row['l0']:>8.1f} {row['dead_fraction']:>6.3f} {row['dense_fraction']:>6.3f}"
                     f"  {'-' if frac is None else f'{frac:.4f}':>9}  {_fmt(p.get('fvu'), 7, 4)} "
                     f"{_fmt(p.get('ce_loss_recovered'), 7, 3)}")
    return lines


def _fmt(v: Any, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


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


__all__ = ["analyze", "format_table", "read_analysis", "SCHEMA_VERSION", "LEVELS", "METHODS_BY_LEVEL",
           "ABLATIONS_BY_LEVEL", "DEFAULT_METHOD", "CONTROLS", "METHODS", "ABLATIONS"]
