"""The report's plots, drawn by matplotlib from report.json's numbers and returned as SVG text.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, so no global figure state and no display) and
saved with text as paths and a fixed hash salt, so the same report draws the same bytes. Artists that tests and
the browser check look for carry a ``gid`` (the SVG group's id): ``frontier-<variant>`` (a variant's curve),
``frontier-err-<variant>``, ``scatter-err-<model>`` and ``sizes-err-<model>`` (their error bars).

Example:
    >>> svg = capability_scatter(report, "component")  # doctest: +SKIP
    >>> svg.startswith("<svg")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
CONTROL_MARKERS = {"random_init": ("x", "random init"), "shuffled_labels": ("^", "shuffled labels")}
CHANNEL_COLORS = {"q": "#1f77b4", "k": "#2ca02c", "v": "#d62728", None: "#555555"}


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def to_svg(fig: Any) -> str:
    """The figure as standalone SVG text (no XML prolog or date, ids from a fixed salt)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "glassformer", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def gid(kind: str, name: str) -> str:
    """An SVG id for an artist: ``kind-name`` with characters outside [A-Za-z0-9_.-] replaced by ``_``.

    Example:
        >>> gid("frontier", "weight sparse<1>")
        'frontier-weight_sparse_1_'
    """
    return f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"


def bounds(interval: Any) -> tuple[float | None, float | None]:
    """(lo, hi) of an interval given as ``[lo, hi]`` or ``{"lo", "hi"}``; (None, None) when there is none.

    Example:
        >>> bounds([3, 9]), bounds({"geomean": 5, "lo": 3, "hi": 9}), bounds(None)
        ((3, 9), (3, 9), (None, None))
    """
    if isinstance(interval, dict):
        return interval.get("lo"), interval.get("hi")
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        return interval[0], interval[1]
    return None, None


def error_bars(ax: Any, points: list[tuple[float, float, Any]], axis: str, name: str, **style: Any) -> int:
    """Draw an error bar along ``axis`` ("x" or "y") at each (x, y, interval) that has both bounds; returns how
    many were drawn. The bars form one artist with the SVG id ``name``."""
    xs, ys, lows, highs = [], [], [], []
    for x, y, interval in points:
        lo, hi = bounds(interval)
        if lo is None or hi is None:
            continue
        centre = x if axis == "x" else y
        xs.append(x)
        ys.append(y)
        # A bootstrap interval need not contain the point estimate (a skewed resampling): clip, never flip.
        lows.append(max(0.0, centre - lo))
        highs.append(max(0.0, hi - centre))
    if not xs:
        return 0
    err = {f"{axis}err": [lows, highs]}
    bars = ax.errorbar(xs, ys, fmt="none", capsize=3, elinewidth=1, zorder=2.5, **err, **style)
    for collection in bars.lines[2]:
        collection.set_gid(name)
    return len(xs)


def capability_scatter(report: dict[str, Any], level: str) -> str:
    """Validation loss against the geometric-mean circuit size at the target, with the Pareto frontier and the
    size's interval as a horizontal error bar where report.json has one."""
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    points = {}
    for i, m in enumerate(report["models"]):
        x = (m["sizes"].get(level) or {}).get("geomean", {}).get("model")
        y = m["capability"]["val_loss"]
        if x is None or y is None:
            continue
        points[m["name"]] = (x, y)
        ax.scatter([x], [y], s=60, color=color(i), zorder=3, label=m["name"])
        error_bars(ax, [(x, y, (m["sizes"].get(level) or {}).get("interval"))], "x", gid("scatter-err", m["name"]),
                   ecolor=color(i))
        ax.annotate(m["name"], (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    front = [points[n] for n in report["pareto"].get(level, []) if n in points]
    if len(front) > 1:
        xs, ys = [], []
        for (x0, y0), (x1, _) in zip(front, front[1:], strict=False):
            xs += [x0, x1]
            ys += [y0, y0]
        xs.append(front[-1][0])
        ys.append(front[-1][1])
        ax.plot(xs, ys, color="#888", linestyle="--", zorder=2, label="Pareto frontier")
    elif front:
        ax.scatter(*zip(*front, strict=True), s=160, facecolors="none", edgecolors="#888", label="Pareto frontier")
    unit, key = _unit_key(report, level)
    ax.set_xscale("log")
    ax.set_xlabel(f"geometric-mean circuit size {key} ({unit}, log scale; smaller is more enumerable)")
    ax.set_ylabel("validation loss (nats/token; lower is more capable)")
    ax.set_title(f"capability against enumerability, {level} level")
    ax.grid(True, alpha=0.3)
    if points:
        ax.legend(fontsize=8, loc="best")
    return to_svg(fig)


def frontier_levels(report: dict[str, Any]) -> list[str]:
    """The levels of report.json's ``frontier`` that have a point to draw, in the report's level order.

    Example:
        >>> frontier_levels({"levels": ["component"], "frontier": {"component": {"dense": []}}})
        []
    """
    fr = report.get("frontier") or {}
    order = [lv for lv in report.get("levels", []) if lv in fr] + sorted(set(fr) - set(report.get("levels", [])))
    return [lv for lv in order if any(frontier_points(pts) for pts in (fr[lv] or {}).values())]


def frontier_points(points: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The points that can be drawn (a validation loss and a positive size), highest loss first (the x order).

    Example:
        >>> [p["model"] for p in frontier_points([{"model": "a", "val_loss": 3.0, "geomean": 9},
        ...     {"model": "b", "val_loss": 4.0, "geomean": 20}, {"model": "c", "val_loss": 3.5, "geomean": None}])]
        ['b', 'a']
    """
    ok = [p for p in points or [] if p.get("val_loss") is not None and (p.get("geomean") or 0) > 0]
    return sorted(ok, key=lambda p: -p["val_loss"])


def _variant_colors(report: dict[str, Any]) -> dict[str, str]:
    names = [v["variant"] for v in report.get("variants") or [] if "variant" in v]
    for per_level in (report.get("frontier") or {}).values():
        names += [n for n in per_level or {} if n not in names]
    return {n: color(i) for i, n in enumerate(names)}


def baseline_variant(report: dict[str, Any]) -> str | None:
    """The variant the comparisons measure against (the baseline model's variant when there is none)."""
    for c in report.get("comparisons") or []:
        if c.get("baseline"):
            return str(c["baseline"])
    base = next((m for m in report.get("models", []) if m.get("name") == report.get("baseline")), None)
    return (base or {}).get("variant")


def frontier(report: dict[str, Any], level: str) -> str:
    """Gao et al.'s Figure-2 view: geometric-mean circuit size (log) against validation loss, lower loss to the
    right; one curve per variant through its points (the baseline's checkpoint ladder, the other variants'
    seeds), the sizes' intervals as error bars, ladder checkpoints labelled by step."""
    fig = _figure(6.8, 4.6)
    ax = fig.subplots()
    colors = _variant_colors(report)
    base = baseline_variant(report)
    for variant, raw in ((report.get("frontier") or {}).get(level) or {}).items():
        pts = frontier_points(raw)
        if not pts:
            continue
        xs, ys = [p["val_loss"] for p in pts], [p["geomean"] for p in pts]
        # A ladder: points at several steps; seeds of a variant share their step (or have none).
        ladder = len({p.get("step") for p in pts if p.get("step") is not None}) > 1
        what = "checkpoints" if ladder else "seeds"
        label = f"{variant} ({'baseline, ' if variant == base else ''}{what})"
        (line,) = ax.plot(xs, ys, marker="o", markersize=5, color=colors[variant], label=label, zorder=3)
        line.set_gid(gid("frontier", variant))
        error_bars(ax, [(x, y, p) for x, y, p in zip(xs, ys, pts, strict=True)], "y",
                   gid("frontier-err", variant), ecolor=colors[variant])
        for x, y, p in zip(xs, ys, pts, strict=True):
            if ladder and p.get("step") is not None:
                ax.annotate(f"step {p['step']}", (x, y), textcoords="offset points", xytext=(4, -11), fontsize=7,
                            color=colors[variant])
    unit, key = _unit_key(report, level)
    from matplotlib.ticker import LogFormatter

    ax.set_yscale("log")
    # Plain numbers (30, not 3x10^1); minor ticks labelled only when the axis spans under two decades.
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    ax.invert_xaxis()  # Gao et al. draw capability growing to the right
    ax.margins(x=0.08)  # room for the step labels beside the last points
    ax.set_xlabel("validation loss (nats/token), decreasing to the right: more capable \u2192")
    ax.set_ylabel(f"geometric-mean {key} ({unit}, log scale;\nlower is more enumerable)")
    ax.set_title(f"capability-enumerability frontier, {level} level")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return to_svg(fig)


def _unit_key(report: dict[str, Any], level: str) -> tuple[str, str]:
    for m in report["models"]:
        s = m["sizes"].get(level)
        if s:
            return s["unit"], s["key"]
    return "edges", "N"


def task_names(report: dict[str, Any], level: str) -> list[str]:
    """Tasks analysed at ``level`` in any model, in the order the analyses list them."""
    names: list[str] = []
    for m in report["models"]:
        for t in m["tasks"]:
            if t.get("status") == "ok" and level in t["circuits"] and t["name"] not in names:
                names.append(t["name"])
    return names


def _task(m: dict[str, Any], name: str, level: str) -> dict[str, Any] | None:
    t = next((t for t in m["tasks"] if t["name"] == name and t.get("status") == "ok"), None)
    return t["circuits"].get(level) if t else None


def circuit_sizes(report: dict[str, Any], level: str) -> str:
    """Per task, each model's circuit size as a bar (with its interval as an error bar where report.json has
    one), its controls as markers beside it."""
    names = task_names(report, level)
    models = report["models"]
    fig = _figure(min(14.0, max(6.4, 0.3 * len(names) * max(1, len(models)) + 2)), 4.4)
    ax = fig.subplots()
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        intervals = []
        for j, name in enumerate(names):
            c = _task(m, name, level)
            if c is None:
                continue
            x = j - 0.4 + width * (i + 0.5)
            size = c["size"].get("model")
            if size is not None:
                ax.bar([x], [size], width=width * 0.9, color=color(i), alpha=1.0 if c["signal"].get("model") else
                       0.35, label=m["name"] if j == 0 else None)
                intervals.append((x, size, c.get("interval")))
            for who, (marker, label) in CONTROL_MARKERS.items():
                v = c["size"].get(who)
                if v is not None:
                    ax.scatter([x], [v], marker=marker, color="black", s=22, zorder=3,
                               label=label if (i == 0 and j == 0) else None)
        error_bars(ax, intervals, "y", gid("sizes-err", m["name"]), ecolor="#333")
    unit, key = _unit_key(report, level)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel(f"{key} ({unit}, log scale)")
    ax.set_title(f"circuit size per task, {level} level (faded bars: no signal above the empty circuit)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    return to_svg(fig)


def has_curves(report: dict[str, Any], level: str) -> bool:
    """Whether any model has a measured faithfulness curve at ``level`` (node-level runs have none)."""
    return any((t.get("circuits", {}).get(level) or {}).get("curves", {}).get("model")
               for m in report["models"] for t in m["tasks"])


def faithfulness_curves(report: dict[str, Any], level: str) -> str:
    """Small multiples, one per task: f against the percent of edges kept, a line per model."""
    names = task_names(report, level)
    cols = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = _figure(3.2 * cols, 2.5 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        for i, m in enumerate(report["models"]):
            c = _task(m, name, level)
            curve = (c or {}).get("curves", {}).get("model") or []
            pts = [(p["percent"], p["f"]) for p in curve if p["f"] is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, color=color(i),
                        label=m["name"] if k == 0 else None)
        ax.axhline(0.8, color="#aaa", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_ylim(-0.5, 1.5)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.supxlabel("edges kept (% of the graph, log scale)", fontsize=9)
    fig.supylabel("normalised faithfulness f", fontsize=9)
    if names:
        fig.legend(loc="outside upper right", fontsize=8, ncols=min(4, len(report["models"])))
    return to_svg(fig)


def _node_position(name: str, n_layers: int) -> tuple[float | None, float, str]:
    """(x, y, label) of a node: y by layer (input at the bottom, logits on top), x by head (None: place in turn)."""
    if name == "input":
        return 0.0, -1.0, "input"
    if name == "logits":
        return 0.0, float(n_layers), "logits"
    m = re.fullmatch(r"a(\d+)\.h(\d+)", name)
    if m:
        return float(m.group(2)), float(m.group(1)), f"L{m.group(1)} H{m.group(2)}"
    m = re.fullmatch(r"m(\d+)", name)
    if m:
        return -1.5, float(m.group(1)) + 0.5, f"MLP {m.group(1)}"
    m = re.match(r"[a-z]+(\d+)", name)
    # Node level (a0.q[h1.3], m1.hidden[17]): the layer from the site, the label the node's own name.
    return None, (float(m.group(1)) + 0.5 if m else -0.5), name


def circuit_drawing(model: dict[str, Any]) -> str | None:
    """The drawn circuit of one model: nodes placed by layer and head, edges coloured by q/k/v input."""
    c = model.get("circuit")
    if not c or not c["nodes"]:
        return None
    n_layers = model["shape"].get("n_layers") or 1
    pos: dict[str, tuple[float, float, str]] = {}
    placed: dict[float, int] = {}
    for n in c["nodes"]:
        x, y, label = _node_position(n, n_layers)
        if x is None:  # side by side within the layer, alternately shifted so that long labels do not overlap
            i = placed[y] = placed.get(y, -1) + 1
            x, y = 1.6 * (i // 2), y + (0.22 if i % 2 else -0.22)
        pos[n] = (x, y, label)
    fig = _figure(5.2, 1.2 * (n_layers + 2) + 0.6)
    ax = fig.subplots()
    scores = [abs(e["score"]) for e in c["edges"] if e["score"] is not None] or [1.0]
    top = max(scores) or 1.0
    for e in c["edges"]:
        (x0, y0, _), (x1, y1, _) = pos[e["source"]], pos[e["target"]]
        weight = 0.6 + 3.0 * abs(e["score"] or 0) / top
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={
            "arrowstyle": "-|>", "color": CHANNEL_COLORS.get(e["channel"], "#555"), "lw": weight, "alpha": 0.75,
            "shrinkA": 11, "shrinkB": 11, "connectionstyle": "arc3,rad=0.08"})
    for x, y, label in pos.values():
        ax.text(x, y, label, ha="center", va="center", fontsize=8 if c["edges"] else 6, zorder=4,
                bbox={"boxstyle": "round,pad=0.3", "fc": "#f4f4f4", "ec": "#333"})
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    ax.set_ylim(-1.6, n_layers + 0.6)
    ax.axis("off")
    for ch, col in CHANNEL_COLORS.items():
        ax.plot([], [], color=col, label=f"into {ch}" if ch else "into MLP / logits")
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    count, unit = (c["shown"], "edges") if c["edges"] else (len(c["nodes"]), "nodes")
    shown = f"first {count} of {int(c['size'])}" if c["size"] and count < c["size"] else f"{count}"
    ax.set_title(f"{model['name']}: {c['task']} ({shown} {unit})", fontsize=9)
    return to_svg(fig)


def training_curves(report: dict[str, Any]) -> str | None:
    """Training loss (lines) and validation loss (markers) against step, one colour per model."""
    if not any(m.get("training_curve") for m in report["models"]):
        return None
    fig = _figure(6.4, 3.8)
    ax = fig.subplots()
    for i, m in enumerate(report["models"]):
        curve = m.get("training_curve")
        if not curve:
            continue
        if curve["train"]:
            ax.plot(*zip(*curve["train"], strict=True), color=color(i), linewidth=1, label=f"{m['name']} train")
        if curve["val"]:
            ax.plot(*zip(*curve["val"], strict=True), color=color(i), marker="s", linestyle="none",
                    label=f"{m['name']} validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("training curves (logs/metrics.csv)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    return to_svg(fig)
