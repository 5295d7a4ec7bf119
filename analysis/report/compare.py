"""``build_report``: several analysed model directories -> one report dict (report.json); ``write_report``.

report.json (``schema_version`` 1, described field by field in ``schema.json`` beside this file)::

    {"schema_version", "kind": "glassformer.report", "created", "command", "versions", "baseline",
     "circuit_task", "levels", "models": [per-model records, see collect.py, with intervals],
     "pareto": {level: [names]}, "bootstrap", "variants", "comparisons", "frontier", "stability",
     "controls_sanity", "verdict": {"rows": [...], "text": [sentences]}}

Models sharing a variant (training.json's ``variant``) are its seeds; each model directory's checkpoint ladder
(``ladder/step-*``) is read for the frontier and the loss-matched comparisons but is not a model of the report.
The statistics are in :mod:`.intervals`, the rule of the verdict in :mod:`.verdict`.

Example:
    >>> report = build_report(["runs/demo/dense", "runs/demo/transcoder"])  # doctest: +SKIP
    >>> paths = write_report(report, "runs/demo/report")  # doctest: +SKIP
    >>> sorted(p.name for p in paths.values())  # doctest: +SKIP
    ['index.html', 'report.json', 'report.md']
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from glassformer.analysis.report.collect import collect_model, ladder_dirs
from glassformer.analysis.report.intervals import N_BOOT, SEED, Bootstrap, geomean
from glassformer.analysis.report.verdict import (
    ReportStats,
    comparison,
    controls_sanity,
    usable_tasks,
    verdict_rows,
    verdict_text,
)
from glassformer.archs.model_dir import software_versions

SCHEMA_VERSION = 1
CIRCUIT_EDGES_SHOWN = 20
CIRCUIT_NODES_SHOWN = 40
LEVEL_ORDER = ("component", "node")


def unique_names(dirs: list[Path]) -> list[str]:
    """Folder names, prefixed by as many parent folders as it takes to tell them apart.

    Example:
        >>> unique_names([Path("a/run"), Path("b/run"), Path("c/other")])
        ['a/run', 'b/run', 'other']
    """
    names = []
    for d in dirs:
        depth = 1
        while depth < len(d.parts) and sum(Path(*o.parts[-depth:]) == Path(*d.parts[-depth:]) for o in dirs) > 1:
            depth += 1
        names.append(str(Path(*d.parts[-depth:])))
    return names


def pareto_front(points: list[tuple[str, float | None, float | None]]) -> list[str]:
    """Names of the points (name, circuit size, loss) that no other point beats on both (lower is better).

    Example:
        >>> pareto_front([("a", 10, 5.0), ("b", 5, 5.5), ("c", 12, 5.2), ("d", None, 4.0)])
        ['b', 'a']
    """
    pts = [(n, x, y) for n, x, y in points if x is not None and y is not None]
    front = [(n, x, y) for n, x, y in pts
             if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for _, x2, y2 in pts)]
    return [n for n, _, _ in sorted(front, key=lambda p: (p[1], p[2]))]


def parse_edge(name: str) -> dict[str, str | None]:
    """``writer->reader<channel>`` -> source, target and channel (None when the reader has no channel).

    Example:
        >>> parse_edge("a0.h1->a1.h3<k>")
        {'source': 'a0.h1', 'target': 'a1.h3', 'channel': 'k'}
    """
    source, _, reader = name.partition("->")
    channel = None
    if reader.endswith(">") and "<" in reader:
        reader, _, channel = reader[:-1].partition("<")
    return {"source": source, "target": reader, "channel": channel}


def choose_circuit_task(models: list[dict[str, Any]], level: str) -> str | None:
    """The task to draw for every model: analysed in all of them, with signal in most, then most accurate."""
    def ok(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {t["name"]: t for t in m["tasks"] if t.get("status") == "ok" and level in t["circuits"]}

    per_model = [ok(m) for m in models]
    names = [n for n in (per_model[0] if per_model else {}) if all(n in p for p in per_model)]
    if not names:
        return None

    def score(n: str) -> tuple[int, float]:
        signal = sum(bool(p[n]["circuits"][level]["signal"].get("model")) for p in per_model)
        accs = [p[n]["capability"].get("model", {}).get("accuracy") for p in per_model]
        return signal, sum(a for a in accs if a is not None) / len(accs)

    return max(names, key=score)  # max keeps the first of equals: the analysis's task order breaks ties


def circuit_drawing(model: dict[str, Any], task: str | None, level: str) -> dict[str, Any] | None:
    """The circuit of ``task`` to draw: its first edges (at most 20) up to the size at the target; a circuit
    known only by its nodes (node level) is drawn as at most 40 of its nodes."""
    t = next((t for t in model["tasks"] if t["name"] == task and t.get("status") == "ok"), None)
    if t is None or level not in t["circuits"]:
        return None
    c = t["circuits"][level]
    size = c["size"].get("model")
    edges = c["top_edges"][: min(int(size), CIRCUIT_EDGES_SHOWN)] if size else []
    parsed = [{**parse_edge(e), "score": s} for e, s in edges]
    nodes = sorted({p["source"] for p in parsed} | {p["target"] for p in parsed}) or c["nodes"][:CIRCUIT_NODES_SHOWN]
    return {"task": task, "level": level, "size": size, "shown": len(parsed), "nodes": nodes, "edges": parsed,
            "signal": bool(c["signal"].get("model"))}


def build_report(model_dirs: list[str | Path], *, baseline: str | Path | None = None,
                 circuit_task: str | None = None, command: list[str] | None = None, n_boot: int = N_BOOT,
                 seed: int = SEED) -> dict[str, Any]:
    """The report dict of analysed model directories (each must hold analysis.json; see ``collect_model``).

    ``baseline``: the dense model the verdict measures against (a directory given, or its name; every model of
    its variant is a seed of the baseline); default: the first model without constraints. ``circuit_task``: the
    task whose circuit is drawn; default: the task with signal in the most models. ``n_boot`` and ``seed``: the
    bootstrap's samples and generator seed.

    Example:
        >>> build_report([])
        Traceback (most recent call last):
        ...
        ValueError: model_dirs=[] is not allowed: expected at least one analysed model directory
    """
    if not model_dirs:
        raise ValueError(f"model_dirs={list(model_dirs)!r} is not allowed: expected at least one analysed model "
                         f"directory")
    dirs = [Path(d) for d in model_dirs]
    if len({d.resolve() for d in dirs}) < len(dirs):
        raise ValueError(f"model_dirs={[str(d) for d in dirs]} names a directory twice")
    pairs: dict[str, dict[str, Any]] = {}
    models = [collect_model(d, name, pairs.setdefault(name, {})) for d, name in zip(dirs, unique_names(dirs),
                                                                                     strict=True)]
    ladders = {m["name"]: [collect_model(r, f"{m['name']}/ladder/{r.name}", pairs.setdefault(
        f"{m['name']}/ladder/{r.name}", {})) for r in ladder_dirs(m["model_dir"])] for m in models}
    base_name = _baseline(models, dirs, baseline)
    levels = [lv for lv in LEVEL_ORDER if any(lv in m["sizes"] for m in models)]
    levels += sorted({lv for m in models for lv in m["sizes"]} - set(levels))
    if circuit_task is not None and not any(t["name"] == circuit_task for m in models for t in m["tasks"]):
        names = sorted({t["name"] for m in models for t in m["tasks"]})
        raise ValueError(f"circuit_task={circuit_task!r} is not allowed: expected one of the analysed tasks "
                         f"{', '.join(names)}")
    level = levels[0] if levels else "component"
    task = circuit_task or choose_circuit_task(models, level)
    for m in models:
        m["circuit"] = circuit_drawing(m, task, level)
    stats = ReportStats(Bootstrap(n_boot, seed), pairs)
    add_intervals(models, stats)
    groups = group_variants(models)
    base_variant = next((m["variant"] for m in models if m["name"] == base_name), None)
    variants = [variant_record(v, ms, stats) for v, ms in groups.items()]
    comparisons = all_comparisons(groups, base_variant, ladders, levels, stats)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "kind": "glassformer.report",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": list(command if command is not None else sys.argv),
        "versions": software_versions(("glassformer", "torch", "matplotlib", "jsonschema")),
        "baseline": base_name, "circuit_task": task, "levels": levels,
        "drawing": {"max_edges": CIRCUIT_EDGES_SHOWN, "max_nodes": CIRCUIT_NODES_SHOWN}, "models": models,
        "pareto": {lv: pareto_front([(m["name"], (m["sizes"].get(lv) or {}).get("geomean", {}).get("model"),
                                      m["capability"]["val_loss"]) for m in models]) for lv in levels},
        "bootstrap": stats.bootstrap.record(), "variants": variants, "comparisons": comparisons,
        "frontier": frontier(groups, ladders, levels, stats), "stability": stability(groups, seed),
        "controls_sanity": controls_sanity(models),
        "verdict": {"rows": verdict_rows(variants, comparisons, base_variant), "text": []},
    }
    # Round-trip through JSON first, so the text is formatted from exactly what report.json holds.
    report = json.loads(json.dumps(report, allow_nan=False))
    report["verdict"]["text"] = verdict_text(report)
    return report


def all_comparisons(groups: dict[str, list[dict[str, Any]]], base_variant: str | None,
                    ladders: dict[str, list[dict[str, Any]]], levels: list[str], stats: ReportStats
                    ) -> list[dict[str, Any]]:
    """report.json's ``comparisons``: each other variant against the baseline at each level both hold, at the
    same steps and, where the baseline has a checkpoint ladder, at matched validation loss."""
    if base_variant is None:
        return []
    base = groups[base_variant]
    matchings = ("steps", "loss") if any(ladders[b["name"]] for b in base) else ("steps",)
    return [comparison(ms, base, ladders, level, matched, stats)
            for variant, ms in groups.items() if variant != base_variant
            for level in levels if any(level in m["sizes"] for m in ms) and any(level in b["sizes"] for b in base)
            for matched in matchings]


def add_intervals(models: list[dict[str, Any]], stats: ReportStats) -> None:
    """Give each model's level summary ``interval`` (its geometric mean over the usable tasks, pairs resampled)
    and each task circuit ``interval`` ([lo, hi] of its size): None where there are no per-pair records."""
    for m in models:
        for level, sizes in m["sizes"].items():
            s = stats.subject(m, level)
            sizes["interval"] = stats.bootstrap.model_interval(s, usable_tasks(m, level))
            for t in m["tasks"]:
                if level in t.get("circuits", {}):
                    t["circuits"][level]["interval"] = stats.bootstrap.task_interval(s, t["name"])


def group_variants(models: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Models by variant, in the order each variant first appears (a variant's models are its seeds).

    Example:
        >>> list(group_variants([{"variant": "a"}, {"variant": "b"}, {"variant": "a"}]))
        ['a', 'b']
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for m in models:
        out.setdefault(m["variant"], []).append(m)
    return out


def _shared_tasks(models: list[dict[str, Any]], level: str) -> list[str]:
    usable = [set(usable_tasks(m, level)) for m in models]
    return [t for t in usable_tasks(models[0], level) if all(t in u for u in usable)]


def variant_record(variant: str, models: list[dict[str, Any]], stats: ReportStats) -> dict[str, Any]:
    """report.json's ``variants`` entry: seeds, models, validation loss over seeds, and per level the geometric
    mean over the tasks usable in every seed with its two-level interval (pairs and seeds)."""
    losses = [m["val_loss"] for m in models if m["val_loss"] is not None]
    levels = {}
    for level in dict.fromkeys(lv for m in models for lv in m["sizes"]):
        have = [m for m in models if level in m["sizes"]]
        levels[level] = stats.bootstrap.group_interval(variant, [stats.subject(m, level) for m in have],
                                                       _shared_tasks(have, level))
    return {"variant": variant, "constraints": models[0]["constraints"],
            "seeds": [m["seed"] for m in models if m["seed"] is not None], "models": [m["name"] for m in models],
            "val_loss": {"mean": sum(losses) / len(losses) if losses else None, "min": min(losses, default=None),
                         "max": max(losses, default=None)}, "levels": levels}


def frontier(groups: dict[str, list[dict[str, Any]]], ladders: dict[str, list[dict[str, Any]]], levels: list[str],
             stats: ReportStats) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """report.json's ``frontier``: per level and variant, each model and ladder checkpoint's geometric-mean size
    over its own usable tasks (interval: pairs resampled) against its validation loss, by falling loss."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for level in levels:
        for variant, models in groups.items():
            points = []
            for m in (p for final in models for p in (*_rungs(final, ladders), final)):
                if level not in m["sizes"]:
                    continue
                s, tasks = stats.subject(m, level), usable_tasks(m, level)
                ci = stats.bootstrap.model_interval(s, tasks) or {}
                points.append({"model": m["name"], "seed": m["seed"], "step": m["training"].get("steps"),
                               "val_loss": m["val_loss"], "geomean": geomean([s.sizes[t] for t in tasks]),
                               "lo": ci.get("lo"), "hi": ci.get("hi"), "n_tasks": len(tasks)})
            if points:
                out.setdefault(level, {})[variant] = sorted(
                    points, key=lambda p: (p["val_loss"] is None, -(p["val_loss"] or 0.0)))
    return out


def _rungs(final: dict[str, Any], ladders: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The ladder rungs of ``final`` before its last step (the rung at the last step holds the final weights)."""
    step = final["training"].get("steps")
    return [r for r in ladders[final["name"]] if step is None or r["training"].get("steps") != step]


def stability(groups: dict[str, list[dict[str, Any]]], seed: int) -> dict[str, dict[str, Any]]:
    """report.json's ``stability``: for each variant with a dictionary (transcoder or TopK MLP) and at least two
    seeds, the decoder directions of its first two seeds matched one-to-one, beside two random dictionaries."""
    from glassformer.analysis.stability import has_dictionary, seed_stability

    out = {}
    for variant, models in groups.items():
        seeded = [m for m in models if m["seed"] is not None]
        if len({m["seed"] for m in seeded}) >= 2 and has_dictionary(seeded[0]["model_dir"]):
            a = seeded[0]
            b = next(m for m in seeded if m["seed"] != a["seed"])
            out[variant] = {**seed_stability(a["model_dir"], b["model_dir"], seed), "seeds": [a["seed"], b["seed"]]}
    return out


def _baseline(models: list[dict[str, Any]], dirs: list[Path], baseline: str | Path | None) -> str | None:
    if baseline is None:
        return next((m["name"] for m in models if not m["constraints"]), None)
    for m, d in zip(models, dirs, strict=True):
        if str(baseline) == m["name"] or Path(baseline).resolve() == d.resolve():
            return m["name"]
    raise ValueError(f"baseline={str(baseline)!r} is not allowed: expected one of the compared models "
                     f"{', '.join(m['name'] for m in models)}")


def write_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Validate ``report`` against schema.json, then write report.json, report.md and index.html atomically.

    Example:
        >>> write_report(build_report(["runs/a", "runs/b"]), "runs/report")["html"]  # doctest: +SKIP
        PosixPath('runs/report/index.html')
    """
    from glassformer.analysis.report.html import render_html
    from glassformer.analysis.report.markdown import render_markdown
    from glassformer.analysis.report.schema import validate_report
    from glassformer.archs.model_dir import atomic_write_bytes, atomic_write_json

    validate_report(report)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file: expected a folder for the report")
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "index.html"}
    html = render_html(report)  # plots are drawn before anything is written: a failure leaves no half report
    atomic_write_json(paths["json"], report)
    atomic_write_bytes(paths["md"], render_markdown(report).encode())
    atomic_write_bytes(paths["html"], html.encode())
    return paths


def fmt(x: Any, digits: int) -> str:
    """A number at ``digits`` decimals, or "-" when it is missing (the one formatter of report.md and HTML)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"
