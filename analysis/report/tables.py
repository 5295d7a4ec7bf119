"""The report's tables as plain rows of strings, formatted from report.json; report.md and index.html both render
these, so the two show the same numbers.

Example:
    >>> size_cell({"model": 12, "random_init": 3, "shuffled_labels": None}, {"model": True, "random_init": False})
    '12 [3? | -]'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from glassformer.analysis.common import CONTROLS
from glassformer.analysis.report.compare import fmt
from glassformer.analysis.report.plots import task_names


@dataclass
class Table:
    """A titled table: a header and rows of cells, with a note under it."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""


def size(x: float | None) -> str:
    """A circuit size: integers as integers, geometric means with one decimal."""
    if x is None:
        return "-"
    return str(int(x)) if float(x).is_integer() else fmt(x, 1)


def size_cell(values: dict[str, Any], signal: dict[str, bool] | None = None) -> str:
    """``model [random_init | shuffled_labels]``; ``?`` marks a measurement without signal."""
    signal = signal or {}

    def one(who: str) -> str:
        return size(values.get(who)) + ("" if signal.get(who, True) else "?")

    return f"{one('model')} [{' | '.join(one(c) for c in CONTROLS)}]"


def summary_table(report: dict[str, Any]) -> Table:
    levels = report["levels"]
    header = ["model", "constraints", "parameters", "non-zero parameters", "tokens seen", "validation loss"]
    header += [f"geomean {_key(report, lv)} at {lv} level [random init | shuffled labels]" for lv in levels]
    rows = []
    for m in report["models"]:
        row = [m["name"] + (" (baseline)" if m["name"] == report["baseline"] else ""),
               "; ".join(m["constraints"]) or "dense", str(m["n_params"]), str(m["n_nonzero_params"]),
               str(m["training"].get("tokens_seen") if m["training"].get("tokens_seen") is not None else "-"),
               fmt(m["capability"]["val_loss"], 3)]
        row += [size_cell((m["sizes"].get(lv) or {}).get("geomean", {})) + _gated_in(m["sizes"].get(lv))
                for lv in levels]
        rows.append(row)
    return Table("Models", header, rows, note="Validation loss in nats/token. Circuit sizes are geometric means "
                 "over the tasks where the model passed the capability gate (shown per level as tasks: passed/"
                 "analysed) of the smallest circuit reaching the target, with the same measurement on a randomly "
                 "initialised model and on shuffled labels beside them.")


def _gated_in(sizes: dict[str, Any] | None) -> str:
    n = (sizes or {}).get("n_tasks_gated_in")
    return "" if n is None else f", tasks: {n}/{sizes['n_tasks']}"


def _key(report: dict[str, Any], level: str) -> str:
    for m in report["models"]:
        if level in m["sizes"]:
            return f"{m['sizes'][level]['key']} ({m['sizes'][level]['unit']})"
    return "size"


def gate_cell(gate: dict[str, Any] | None) -> str:
    """The model's capability gate on a task: ``in``/``out`` with the gap (model minus empty circuit, logits).

    Example:
        >>> gate_cell({"model": {"passed": False, "accuracy": 0.5, "gap": -1.47, "reasons": []}})
        'out (gap -1.47)'
    """
    g = (gate or {}).get("model")
    if g is None:
        return "-"
    return f"{'in' if g['passed'] else 'out'} (gap {fmt(g['gap'], 2)})"


def controls_cell(gate: dict[str, Any] | None) -> str:
    """The sanity check: ``yes`` when every control measured found no capability (failed the gate), else ``no``
    with the controls that passed it.

    Example:
        >>> controls_cell({"model": {"passed": True}, "random_init": {"passed": True}, "shuffled_labels": {"passed": False}})
        'no: random init passed'
    """
    measured = {who: g for who, g in (gate or {}).items() if who in CONTROLS}
    if not measured:
        return "-"
    passed = [who.replace("_", " ") for who, g in measured.items() if g["passed"]]
    return "yes" if not passed else f"no: {', '.join(passed)} passed"


def task_table(report: dict[str, Any], level: str) -> Table:
    models = report["models"]
    header = ["task"] + [f"{m['name']}: accuracy" for m in models] + [f"{m['name']}: gate" for m in models] + [
        f"{m['name']}: controls found no capability" for m in models] + [f"{m['name']}: {_key(report, level)}"
                                                                         for m in models]
    rows = []
    for name in task_names(report, level):
        accs, gates, sanity, sizes = [], [], [], []
        for m in models:
            t = next((t for t in m["tasks"] if t["name"] == name and t.get("status") == "ok"), None)
            c = t["circuits"].get(level) if t else None
            accs.append(fmt((t or {}).get("capability", {}).get("model", {}).get("accuracy"), 2))
            gates.append(gate_cell((c or {}).get("gate")))
            sanity.append(controls_cell((c or {}).get("gate")))
            sizes.append(size_cell(c["size"], c["signal"]) if c else "-")
        rows.append([name, *accs, *gates, *sanity, *sizes])
    skipped = sorted({f"{t['name']} ({m['name']}: {t['reason']})" for m in models for t in m["tasks"]
                      if t.get("status") != "ok"})
    note = ("Each size: model [random init | shuffled labels]. ? = the logit difference is not clearly above the "
            "empty circuit's, or the model failed the capability gate, so the size measures noise. Gate: in = the "
            "model's logit difference is above the empty circuit's (one-sided test), its accuracy above chance, and "
            "the gap (model minus empty circuit, logits) at least the minimum; out = no capability: never sized "
            "and never in a geometric mean. The controls must find no capability.")
    if skipped:
        note += " Skipped: " + "; ".join(skipped) + "."
    return Table(f"Circuit size per task, {level} level", header, rows, note)


def sparse_table(report: dict[str, Any]) -> Table | None:
    rows = []
    for m in report["models"]:
        s = m.get("sparse_layers") or {}
        values = [s.get(k) for k in ("l0", "dead_fraction", "dense_fraction", "interference", "interference_above",
                                     "weight_density")]
        if all(v is None for v in values):
            continue
        rows.append([m["name"], fmt(values[0], 1), fmt(values[1], 3), fmt(values[2], 3), fmt(values[3], 3),
                     fmt(values[4], 4), fmt(values[5], 3), s.get("source", "-")])
    if not rows:
        return None
    threshold = next((m["sparse_layers"]["interference_threshold"] for m in report["models"]
                      if (m.get("sparse_layers") or {}).get("interference_threshold") is not None), None)
    above = f"interference: fraction |cos| > {threshold:g}" if threshold is not None else "interference: fraction"
    return Table("Sparse-layer statistics", ["model", "L0 (active units per token)", "dead fraction",
                                             "dense fraction", "interference: mean |cos|", above, "weight density",
                                             "source"], rows,
                 note="Means over the MLP layers. analysis.json: measured by the analysis on corpus tokens "
                 "(interference: |cos| between pairs of MLP output directions, i.e. neuron or latent decoder "
                 "directions); metrics.csv: the last values logged in training.")


def training_table(report: dict[str, Any]) -> Table:
    rows = []
    for m in report["models"]:
        t = m["training"]
        rows.append([m["name"], str(t.get("steps") if t.get("steps") is not None else "-"),
                     fmt(t.get("train_loss"), 3), fmt(t.get("val_loss"), 3), fmt(t.get("unigram_entropy"), 3),
                     fmt(t.get("tokens_per_sec"), 0), fmt(t.get("wall_seconds"), 0),
                     (t.get("corpus_fingerprint") or "-")[:12]])
    return Table("Training", ["model", "steps", "final train loss", "validation loss", "unigram entropy",
                              "tokens/s", "wall time (s)", "corpus fingerprint"], rows,
                 note="From each model's training.json; models of one sweep share the corpus fingerprint.")


def settings_table(report: dict[str, Any]) -> Table:
    rows = []
    for m in report["models"]:
        for level, a in m["analysis"].items():
            target = (f"task loss <= {a['target_loss']:g}" if a.get("target_loss") is not None
                      else f"task loss <= full model's + {a['target_margin']:g}" if a.get("target_margin") is not None
                      else (m["sizes"].get(level) or {}).get("key", "-"))
            rows.append([m["name"], level, str(a.get("method")), str(a.get("ablation")), str(a.get("n_pairs")),
                         str(a.get("seed")), ", ".join(a.get("controls") or []) or "none",
                         str((m["sizes"].get(level) or {}).get("selection", "-")), target, m["model_dir"]])
    return Table("Analysis settings", ["model", "level", "method", "ablation", "pairs per task", "seed", "controls",
                                       "circuit selection", "target", "model directory"], rows)


def prompt(text: str, tail: int = 70) -> str:
    """The end of a prompt on one line (newlines shown as ↵), where the answer is decided.

    Example:
        >>> prompt("def f(x):\\n    return x", tail=13)
        '…↵    return x'
    """
    flat = text.replace("\n", "↵")
    return flat if len(flat) <= tail else "…" + flat[-tail:]


def task_info_table(report: dict[str, Any]) -> Table | None:
    rows, seen = [], set()
    for m in report["models"]:
        for t in m["tasks"]:
            if t.get("status") != "ok" or t["name"] in seen:
                continue
            seen.add(t["name"])
            ex = t.get("example") or {}
            rows.append([t["name"], t.get("description", ""), prompt(ex.get("clean", "")),
                         f"{ex.get('correct', '')!r} vs {ex.get('alternative', '')!r}", prompt(ex.get("corrupt", ""))])
    if not rows:
        return None
    return Table("Tasks", ["task", "description", "example prompt (its end)", "right answer vs the corrupted one",
                           "corrupted prompt"], rows, note="Each task is a set of minimal pairs; the task metric "
                 "is the logit difference between the two answers at the last position.")


def all_tables(report: dict[str, Any]) -> dict[str, Any]:
    """Every table of the report, by the section that shows it."""
    return {"summary": summary_table(report), "tasks": [task_table(report, lv) for lv in report["levels"]],
            "task_info": task_info_table(report),
            "sparse": sparse_table(report), "training": training_table(report), "settings": settings_table(report)}
