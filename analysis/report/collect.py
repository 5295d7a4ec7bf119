"""Read one model directory into the per-model record of a report (the ``models[i]`` entries of report.json).

Sources: ``config.json`` (shape and constraints), ``training.json`` (losses, tokens, throughput),
``analysis.json`` (circuits, one run per level; the sparse-layer metrics: L0, dead and dense fractions,
interference, weight density), ``logs/metrics.csv`` (training curves; the last L0 and dead fraction logged in
training when the analysis has no sparse-layer metrics) and ``model.safetensors`` (non-zero parameters). Only JSON,
CSV and safetensors are read: nothing in the folder is executed. training.json's ``variant``, ``seed`` and
``val_loss`` (INTERFACES section 2) give the record's own; the per-pair records of the circuits (INTERFACES
section 1), the bootstrap's input, are handed out beside the record (:func:`read_circuits`), not kept in it; the
checkpoint ladder's directories are listed by :func:`ladder_dirs`.

Example:
    >>> record = collect_model("runs/demo/dense")  # doctest: +SKIP
    >>> record["capability"]["val_loss"], record["sizes"]["component"]["geomean"]["model"]  # doctest: +SKIP
    (5.12, 9.4)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glassformer.analysis.common import CONTROLS
from glassformer.analysis.config import DEFAULT_METHOD
from glassformer.analysis.report.checks import circuit_checks
from glassformer.analysis.report.training_log import (
    finite,
    parameter_counts,
    read_metrics,
    sparse_stats,
    training_curve,
)

WHO = ("model", *CONTROLS)
SELECTION_PREFERENCE = ("greedy", "topn")
"""Greedy circuits are grown from the logits, so every edge has a path to the output: the headline selection."""
SIZE_PREFERENCE = ("N_0.8", "nodes")
"""The size at the target: at component level the edges that reach 80% normalised faithfulness; at node level
the nodes of the smallest circuit at the target task loss. Other runs use their first ``geomean_*`` key."""
ABLATION_PREFERENCE = ("mean", "position-mean", "zero", "corrupt")


def describe_constraints(cfg: dict[str, Any]) -> list[str]:
    """Human descriptions of a config.json's constraints; an empty list means a dense model.

    Example:
        >>> describe_constraints({"mlp": {"kind": "transcoder", "activation": "topk", "k": 16,
        ...                               "expansion_factor": 4}, "d_model": 64})
        ['transcoder (topk, k=16, 256 latents)']
        >>> describe_constraints({"weight_sparsity": {"fraction": 0.25}})
        ['weight sparsity (25% of weights kept)']
    """
    out = []
    mlp = cfg.get("mlp") or {}
    kind = mlp.get("kind", "dense")
    if kind == "transcoder":
        latents = mlp.get("expansion_factor", 0) * cfg.get("d_model", 0)
        k = f", k={mlp['k']}" if mlp.get("activation") in ("topk", "batchtopk") and mlp.get("k") else ""
        out.append(f"transcoder ({mlp.get('activation', '?')}{k}, {latents} latents)")
    elif kind == "topk":
        out.append(f"TopK MLP (k={mlp.get('k')} of {cfg.get('d_mlp')})")
    elif kind != "dense":
        out.append(f"{kind} MLP")
    act = cfg.get("activation_sparsity")
    if act:
        out.append(f"activation sparsity ({act.get('fraction', 0) * 100:g}% kept at {', '.join(act.get('sites', []))})")
    ws = cfg.get("weight_sparsity")
    if ws:
        out.append(f"weight sparsity ({ws.get('fraction', 0) * 100:g}% of weights kept)")
    penalties = cfg.get("penalties") or []
    if penalties:
        out.append(f"orthogonality penalty on {', '.join(str(p.get('target')) for p in penalties)}")
    return out


def size_value(v: Any) -> float | None:
    """The circuit size in an analysis.json size entry: ``{"edges": n, ...}``, ``{"nodes": n}`` or a number."""
    if isinstance(v, dict):
        for key in ("edges", "nodes", "size"):
            if v.get(key) is not None:
                return finite(v[key])
        return None
    return finite(v)


def _unit(entries: list[Any]) -> str:
    for v in entries:
        if isinstance(v, dict):
            for key in ("edges", "nodes"):
                if v.get(key) is not None:
                    return key
    return "edges"


def pick_runs(analysis: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Per level, the (run, summary row) the report headlines.

    The run: the level's default method (eap-ig for components, mask for nodes) before others, mean ablation
    before others, then the most recent. The row: the greedy selection before top-n.

    Example:
        >>> runs = {"component/eap/zero": {"settings": {"level": "component", "method": "eap", "ablation": "zero"},
        ...                                "summary": [{"selection": "topn"}]},
        ...         "component/eap-ig/mean": {"settings": {"level": "component", "method": "eap-ig",
        ...                                   "ablation": "mean"}, "summary": [{"selection": "topn"},
        ...                                                                    {"selection": "greedy"}]}}
        >>> run, row = pick_runs({"results": runs, "latest": "component/eap/zero"})["component"]
        >>> run["settings"]["method"], row["selection"]
        ('eap-ig', 'greedy')
    """
    runs = list((analysis.get("results") or {}).items())
    latest = analysis.get("latest")
    by_level: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
    for i, (key, run) in enumerate(runs):
        by_level.setdefault(run.get("settings", {}).get("level", "component"), []).append((i, key, run))
    out = {}
    for level, candidates in by_level.items():
        def rank(item: tuple[int, str, dict[str, Any]], level: str = level) -> tuple[int, int, int, int]:
            order, key, run = item
            s = run.get("settings", {})
            abl = s.get("ablation")
            # Among equals the newest run: results are kept in the order the runs finished.
            return (s.get("method") != DEFAULT_METHOD.get(level),
                    ABLATION_PREFERENCE.index(abl) if abl in ABLATION_PREFERENCE else len(ABLATION_PREFERENCE),
                    key != latest, -order)

        _, key, run = min(candidates, key=rank)
        run = {**run, "key": key}
        rows = run.get("summary") or []
        if not rows:
            continue
        order = {sel: j for j, sel in enumerate(SELECTION_PREFERENCE)}
        out[level] = (run, min(rows, key=lambda r: order.get(r.get("selection"), len(order))))
    return out


def _size_key(row: dict[str, Any]) -> str | None:
    keys = [k[len("geomean_"):] for k in row if k.startswith("geomean_")]
    return next((k for k in SIZE_PREFERENCE if k in keys), keys[0] if keys else None)


def _circuit_entry(task: dict[str, Any], row: dict[str, Any]) -> dict[str, Any] | None:
    """The task's circuit entry with the same level, method and selection as the headline summary row."""
    for c in task.get("circuits", []):
        if all(c.get(k) == row.get(k) for k in ("level", "method", "selection")):
            return c
    return None


def _curve(points: Any) -> list[dict[str, float]]:
    out = []
    for p in points or []:
        x, f = finite(p.get("percent")), finite(p.get("f"))
        if x is not None:
            out.append({"percent": x, "f": f})
    return out


def read_circuits(analysis: dict[str, Any], pairs: dict[str, dict[str, Any]] | None = None
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(sizes per level, per-task records) from an analysis.json (version-2 layout), at every level it holds.
    ``pairs``, when given, receives each headline circuit's per-pair record (INTERFACES section 1) by level and
    task: the bootstrap's input, too large to keep in report.json.

    Example:
        >>> read_circuits({"results": {}})
        ({}, [])
    """
    pairs = {} if pairs is None else pairs
    picked = pick_runs(analysis)
    sizes: dict[str, Any] = {}
    for level, (run, row) in picked.items():
        key = _size_key(row)
        if key is None:
            continue
        ok = [t for t in run.get("tasks", {}).values() if t.get("status") == "ok"]
        entries = [(_circuit_entry(t, row) or {}).get(key, {}).get("model") for t in ok]
        totals = [(_circuit_entry(t, row) or {}).get("n_edges_total", (_circuit_entry(t, row) or {}).get(
            "n_nodes_total")) for t in ok]
        sizes[level] = {
            "method": row.get("method"), "selection": row.get("selection"),
            "ablation": row.get("ablation", run.get("settings", {}).get("ablation")), "key": key,
            "unit": "nodes" if key == "nodes" else _unit(entries),
            "n_total": next((int(n) for n in totals if isinstance(n, int)), None),
            "n_tasks": int(row.get("n_tasks", 0)),
            # Runs made since the capability gate average only the tasks it let in; older runs lack these fields.
            "n_tasks_gated_in": row.get("n_tasks_gated_in") if isinstance(row.get("n_tasks_gated_in"), int) else None,
            "controls_passing_gate": None if not isinstance(row.get("controls_passing_gate"), dict) else {
                who: [str(n) for n in names] for who, names in row["controls_passing_gate"].items()
                if who in CONTROLS},
            "geomean": {who: finite((row.get(f"geomean_{key}") or {}).get(who)) for who in WHO},
        }
    tasks: dict[str, dict[str, Any]] = {}
    for level, (run, row) in picked.items():
        key = sizes.get(level, {}).get("key")
        for name, t in run.get("tasks", {}).items():
            if t.get("status") != "ok":
                tasks.setdefault(name, {"name": name, "status": "skipped", "reason": str(t.get("reason", ""))})
                continue
            cap = t.get("capability", {})
            rec = tasks.get(name)
            if rec is None or rec["status"] != "ok":
                rec = tasks[name] = {
                    "name": name, "status": "ok", "description": str(t.get("description", "")),
                    "n_pairs": t.get("n_pairs"),
                    "example": {k: str(v) for k, v in (t.get("example") or {}).items()},
                    "capability": {who: {"accuracy": finite((cap.get(who) or {}).get("accuracy")),
                                         "loss": finite((cap.get(who) or {}).get("loss"))}
                                   for who in WHO if who in cap},
                    "circuits": {}}
            c = _circuit_entry(t, row)
            if c is None or key is None:
                continue
            # Component circuits flag whether f rises clearly above the empty circuit ("signal"); node circuits
            # whether the target loss was reached: either way, a size without it measures nothing.
            signal = c.get("signal") if c.get("signal") is not None else c.get("reached")
            signal = {who: bool(v) for who, v in (signal or {}).items() if v is not None}
            gate = read_gate(t.get("gate"))
            if gate.get("model") is not None:
                # A task the model failed the capability gate on has no circuit to speak of, whatever f did.
                signal["model"] = signal.get("model", False) and gate["model"]["passed"]
            top = (c.get("top_edges") or {}).get("model") or []
            if isinstance((c.get("pairs") or {}).get("model"), dict):
                pairs.setdefault(level, {})[name] = c["pairs"]["model"]
            rec["circuits"][level] = {
                "size": {who: size_value((c.get(key) or {}).get(who)) for who in WHO},
                "signal": signal, "gate": gate,
                "CPR": {who: finite((c.get("CPR") or {}).get(who)) for who in WHO},
                "CMD": {who: finite((c.get("CMD") or {}).get(who)) for who in WHO},
                "curves": {who: _curve(v) for who, v in (c.get("faithfulness_curve") or {}).items()},
                "top_edges": [[str(e), finite(v)] for e, v in top],
                "nodes": [str(n) for n in (c.get("circuit") or c.get("circuit_nodes") or [])],
                "checks": circuit_checks(c),
            }
    return sizes, list(tasks.values())


def read_gate(gate: Any) -> dict[str, Any]:
    """The capability gate of one task as the report keeps it: per subject whether it passed, the accuracy, the
    gap (model minus empty circuit, logits) and the reasons it failed; empty for analyses made before the gate.

    Example:
        >>> read_gate({"model": {"passed": False, "accuracy": 0.5, "gap": -1.5, "reasons": ["not above"]}})
        {'model': {'passed': False, 'accuracy': 0.5, 'gap': -1.5, 'reasons': ['not above']}}
    """
    out = {}
    for who, g in (gate or {}).items():
        if who in WHO and isinstance(g, dict):
            out[who] = {"passed": bool(g.get("passed")), "accuracy": finite(g.get("accuracy")),
                        "gap": finite(g.get("gap")), "reasons": [str(r) for r in g.get("reasons") or []]}
    return out


def ladder_dirs(model_dir: str | Path) -> list[Path]:
    """The analysed checkpoints of ``model_dir``'s ladder (``ladder/step-<06d>/``, INTERFACES section 2), in step
    order; a rung without analysis.json is left out (it has no circuits to place).

    Example:
        >>> ladder_dirs("no/such/model")
        []
    """
    from glassformer.archs.model_dir import ANALYSIS_FILE

    rungs = Path(model_dir) / "ladder"
    return sorted(d for d in rungs.glob("step-*") if (d / ANALYSIS_FILE).is_file()) if rungs.is_dir() else []


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def collect_model(model_dir: str | Path, name: str | None = None,
                  pairs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The report record of one analysed model directory (see the module docstring for the sources).

    ``variant``, ``seed`` and ``val_loss`` come from training.json (INTERFACES section 2); a directory trained
    before they were recorded is its own variant (its name), with the trainer config's seed and the final
    validation loss. ``pairs`` receives the per-pair records (see :func:`read_circuits`).

    Raises :class:`glassformer.archs.ModelDirError` naming the file when config.json or analysis.json is missing
    or malformed; training.json and metrics.csv are optional (a model from elsewhere may lack them).
    """
    from glassformer.analysis.results import read_analysis
    from glassformer.archs.model_dir import (
        ANALYSIS_FILE,
        CONFIG_FILE,
        TRAINING_FILE,
        ModelDirError,
        read_json,
    )

    model_dir = Path(model_dir)
    cfg = read_json(model_dir / CONFIG_FILE)
    if not isinstance(cfg, dict):
        raise ModelDirError(f"{model_dir / CONFIG_FILE} must hold a JSON object")
    analysis = read_analysis(model_dir / ANALYSIS_FILE)
    training = read_json(model_dir / TRAINING_FILE) if (model_dir / TRAINING_FILE).is_file() else {}
    if not isinstance(training, dict):
        raise ModelDirError(f"{model_dir / TRAINING_FILE} must hold a JSON object")
    final = training.get("final") or {}
    rows = read_metrics(model_dir)
    n_params, n_nonzero = parameter_counts(model_dir)
    sizes, tasks = read_circuits(analysis, pairs)
    picked = pick_runs(analysis)
    cap = next(iter(picked.values()))[0].get("capability", {}) if picked else analysis.get("capability", {})
    train_val = finite(training.get("val_loss"))
    train_val = finite(final.get("loss/val")) if train_val is None else train_val
    seed = _int(training.get("seed"))
    seed = _int(((training.get("config") or {}).get("trainer") or {}).get("seed")) if seed is None else seed
    name = name or model_dir.name
    variant = training.get("variant") or training.get("ladder_of")
    return {
        "name": name,
        "model_dir": str(model_dir),
        "variant": variant if isinstance(variant, str) and variant else name,
        "seed": seed,
        "val_loss": train_val if train_val is not None else finite(cap.get("val_loss")),
        "constraints": describe_constraints(cfg),
        "shape": {k: cfg.get(k) for k in ("n_layers", "n_heads", "d_model", "d_mlp", "d_vocab", "n_ctx")},
        "n_params": n_params,
        "n_nonzero_params": n_nonzero,
        "training": {
            "steps": _int(training.get("steps", training.get("step"))), "tokens_seen": training.get("tokens_seen"),
            "val_loss": train_val, "train_loss": finite(final.get("loss/train")),
            "unigram_entropy": finite(final.get("unigram_entropy")),
            "wall_seconds": finite(training.get("wall_seconds")),
            "tokens_per_sec": finite((training.get("throughput") or {}).get("tokens_per_sec")),
            "corpus_fingerprint": (training.get("corpus") or {}).get("fingerprint"),
            "seed": seed,
        },
        "capability": {
            # training.json's validation loss when there is one (the same windows for every model of a sweep),
            # else the analysis's own.
            "val_loss": train_val if train_val is not None else finite(cap.get("val_loss")),
            "val_loss_source": "training.json" if train_val is not None else "analysis.json",
            "analysis_val_loss": finite(cap.get("val_loss")),
            "random_init_val_loss": finite(cap.get("random_init_val_loss")),
        },
        "analysis": {level: {"run": run["key"], **{k: run.get("settings", {}).get(k) for k in (
            "method", "ablation", "n_pairs", "seed", "controls", "corpus_windows", "target_loss",
            "target_margin")}}
            for level, (run, _) in picked.items()},
        "sizes": sizes,
        "tasks": tasks,
        "sparse_layers": sparse_stats(analysis, rows),
        "training_curve": training_curve(rows),
    }
