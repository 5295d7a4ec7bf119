"""The report's tables as plain rows of strings, formatted from report.json; report.md and index.html both render
these, so the two show the same numbers.

Sizes are shown with their bootstrap interval where report.json has one, ``12 [9, 16]``, and the controls'
sizes in parentheses beside them; a field an older report lacks (or a one-seed run cannot give) shows as ``-``.

Example:
    >>> size_cell({"model": 12, "random_init": 3, "shuffled_labels": None}, {"model": True, "random_init": False},
    ...           [9, 16])
    '12 [9, 16] (3? | -)'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from glassformer.analysis.common import CONTROLS
from glassformer.analysis.report.checks import CHECKS_NOTE, checks_header, checks_rows
from glassformer.analysis.report.compare import fmt
from glassformer.analysis.report.plots import bounds, task_names


@dataclass
class Table:
    """A titled table: a header and rows of cells, with a note under it."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""


def size(x: float | None) -> str:
    """A circuit size: one decimal, dropped when it is 0 (a bootstrap bound 7.999999999999998 is 8, like 8.0).

    Example:
        >>> size(12), size(7.999999999999998), size(9.8), size(None)
        ('12', '8', '9.8', '-')
    """
    text = fmt(x, 1)
    return text[:-2] if text.endswith(".0") else text


def size_ci(x: float | None, interval: Any = None, mark: str = "") -> str:
    """A size (then ``mark``) with its interval (``[lo, hi]`` or ``{"lo", "hi"}``), or alone when there is none.

    Example:
        >>> size_ci(12, [9, 16.5]), size_ci(12.5, {"geomean": 12.5, "lo": 9.0, "hi": None}), size_ci(None, None)
        ('12 [9, 16.5]', '12.5 [9, -]', '-')
    """
    lo, hi = bounds(interval)
    if lo is None and hi is None:
        return size(x) + mark
    return f"{size(x)}{mark} [{size(lo)}, {size(hi)}]"


def size_cell(values: dict[str, Any], signal: dict[str, bool] | None = None, interval: Any = None) -> str:
    """``model [lo, hi] (random_init | shuffled_labels)``; ``?`` marks a measurement without signal."""
    signal = signal or {}

    def mark(who: str) -> str:
        return "" if signal.get(who, True) else "?"

    controls = " | ".join(size(values.get(c)) + mark(c) for c in CONTROLS)
    return f"{size_ci(values.get('model'), interval, mark('model'))} ({controls})"


def summary_table(report: dict[str, Any]) -> Table:
    levels = report["levels"]
    header = ["model", "constraints", "parameters", "non-zero parameters", "tokens seen", "validation loss"]
    header += [f"geomean {_key(report, lv)} at {lv} level{_ci_words(report)} (random init | shuffled labels)"
               for lv in levels]
    rows = []
    for m in report["models"]:
        row = [m["name"] + (" (baseline)" if m["name"] == report["baseline"] else ""),
               "; ".join(m["constraints"]) or "dense", str(m["n_params"]), str(m["n_nonzero_params"]),
               str(m["training"].get("tokens_seen") if m["training"].get("tokens_seen") is not None else "-"),
               fmt(m["capability"]["val_loss"], 3)]
        row += [size_cell((m["sizes"].get(lv) or {}).get("geomean", {}), None,
                          (m["sizes"].get(lv) or {}).get("interval")) + _gated_in(m["sizes"].get(lv))
                for lv in levels]
        rows.append(row)
    return Table("Models", header, rows, note="Validation loss in nats/token. Circuit sizes are geometric means "
                 "over the tasks where the model passed the capability gate (shown per level as tasks: passed/"
                 "analysed) of the smallest circuit reaching the target, with the same measurement on a randomly "
                 "initialised model and on shuffled labels beside them (in parentheses)." + bootstrap_note(report))


def _ci_words(report: dict[str, Any]) -> str:
    b = report.get("bootstrap")
    return f" [{b.get('confidence')} interval]" if b else ""


def bootstrap_note(report: dict[str, Any]) -> str:
    """The sentence saying how the intervals were made, or "" for a report without them.

    Example:
        >>> bootstrap_note({"bootstrap": {"n_boot": 1000, "resampled": "pairs", "confidence": 0.95, "seed": 0}})
        ' Intervals [lo, hi]: 0.95 bootstrap intervals from 1000 resamples of pairs (seed 0).'
    """
    b = report.get("bootstrap")
    if not b:
        return ""
    return (f" Intervals [lo, hi]: {b.get('confidence', '-')} bootstrap intervals from {b.get('n_boot', '-')} "
            f"resamples of {b.get('resampled', '-')} (seed {b.get('seed', '-')}).")


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
        f"{m['name']}: controls found no capability" for m in models] + [
        f"{m['name']}: {_key(report, level)}{_ci_words(report)}" for m in models]
    rows = []
    for name in task_names(report, level):
        accs, gates, sanity, sizes = [], [], [], []
        for m in models:
            t = next((t for t in m["tasks"] if t["name"] == name and t.get("status") == "ok"), None)
            c = t["circuits"].get(level) if t else None
            accs.append(fmt((t or {}).get("capability", {}).get("model", {}).get("accuracy"), 2))
            gates.append(gate_cell((c or {}).get("gate")))
            sanity.append(controls_cell((c or {}).get("gate")))
            sizes.append(size_cell(c["size"], c["signal"], c.get("interval")) if c else "-")
        rows.append([name, *accs, *gates, *sanity, *sizes])
    skipped = sorted({f"{t['name']} ({m['name']}: {t['reason']})" for m in models for t in m["tasks"]
                      if t.get("status") != "ok"})
    note = ("Each size: model (random init | shuffled labels). ? = the logit difference is not clearly above the "
            "empty circuit's, or the model failed the capability gate, so the size measures noise. Gate: in = the "
            "model's logit difference is above the empty circuit's (one-sided test), its accuracy above chance, and "
            "the gap (model minus empty circuit, logits) at least the minimum; out = no capability: never sized "
            "and never in a geometric mean. The controls must find no capability.")
    if skipped:
        note += " Skipped: " + "; ".join(skipped) + "."
    note += bootstrap_note(report)
    return Table(f"Circuit size per task, {level} level", header, rows, note)


def checks_table(report: dict[str, Any], level: str) -> Table | None:
    """The Circuit checks of ``level`` (:mod:`.checks`); None when no circuit there holds any check.

    Example:
        >>> checks_table({"models": [], "levels": ["component"]}, "component") is None
        True
    """
    names, rows = checks_rows(report, level)
    return Table(f"Circuit checks, {level} level", checks_header(names), rows, CHECKS_NOTE) if rows else None


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


def signed(x: Any, digits: int) -> str:
    """A difference with its sign, or "-" when it is missing.

    Example:
        >>> signed(0.0123, 3), signed(-0.5, 2), signed(None, 3)
        ('+0.012', '-0.50', '-')
    """
    return "-" if fmt(x, digits) == "-" else f"{x:+.{digits}f}"


def ratio_ci(x: Any, lo: Any, hi: Any) -> str:
    """A size ratio with its interval at two decimals.

    Example:
        >>> ratio_ci(0.5, 0.4, 0.61), ratio_ci(0.5, None, None)
        ('0.50 [0.40, 0.61]', '0.50 [-, -]')
    """
    return f"{fmt(x, 2)} [{fmt(lo, 2)}, {fmt(hi, 2)}]"


def _point(p: dict[str, Any] | None, models: list[str] | None = None) -> str:
    """The baseline point; ``models``: every baseline model it stands for (one per seed, when the comparison
    lists them), whose mean validation loss it carries."""
    if not p:
        return "-"
    step = f"step {p['step']}, " if p.get("step") is not None else ""
    names = ", ".join(models) if models and len(models) > 1 else p.get("model", "-")
    return f"{names} ({step}validation loss {fmt(p.get('val_loss'), 3)})"


def _ints(xs: Any) -> str:
    return ", ".join(str(x) for x in xs) if xs else "-"


def comparisons_table(report: dict[str, Any]) -> Table | None:
    """Each variant against the baseline, matched by training steps and by validation loss, with intervals."""
    rows = []
    for c in report.get("comparisons") or []:
        tasks = c.get("tasks") or []
        spread = c.get("seed_spread")
        rows.append([str(c.get("variant", "-")), str(c.get("level", "-")), str(c.get("matched", "-")),
                     _point(c.get("baseline_point"), c.get("baseline_models")), signed(c.get("loss_gap"), 3),
                     ratio_ci(c.get("ratio"), c.get("lo"), c.get("hi")),
                     f"{len(tasks)}: {', '.join(tasks)}" if tasks else "-", _ints(c.get("seeds")),
                     f"[{fmt(spread[0], 2)}, {fmt(spread[1], 2)}]" if spread else "-", str(c.get("call", "-"))])
    if not rows:
        return None
    return Table("Comparisons", ["variant", "level", "matched by", "baseline point", "loss gap (nats)",
                                 "size ratio variant / baseline [lo, hi]", "tasks", "seeds",
                                 "baseline seed-to-seed ratio [lo, hi]", "call"], rows,
                 note="Matched by steps: the baseline after the same training; by loss: the baseline checkpoint "
                 "whose validation loss is nearest the variant's. Loss gap: the variant's validation loss minus the "
                 "baseline point's. Size ratio: geometric mean over the tasks of the paired per-task ratio of "
                 "circuit sizes; below 1 the variant's circuits are smaller. Baseline seed-to-seed: the same ratio "
                 "between the baseline's own seeds (- with one seed). Call: the verdict, reasoned above."
                 + bootstrap_note(report))


def variants_table(report: dict[str, Any]) -> Table | None:
    """Per variant: its seeds, the spread of validation loss over them, and the geometric-mean size per level."""
    variants = report.get("variants") or []
    if not variants:
        return None
    levels = list(report.get("levels") or [])
    levels += sorted({lv for v in variants for lv in v.get("levels") or {}} - set(levels))
    rows = []
    for v in variants:
        loss = v.get("val_loss") or {}
        row = [str(v.get("variant", "-")), _ints(v.get("seeds")), ", ".join(v.get("models") or []) or "-",
               f"{fmt(loss.get('mean'), 3)} [{fmt(loss.get('min'), 3)}, {fmt(loss.get('max'), 3)}]"]
        for lv in levels:
            g = (v.get("levels") or {}).get(lv)
            n = (g or {}).get("n_tasks")
            row.append(size_ci((g or {}).get("geomean"), g) + ("" if n is None else f", tasks: {n}"))
        rows.append(row)
    header = ["variant", "seeds", "models", "validation loss mean [min, max]"]
    header += [f"geomean {_key(report, lv)} at {lv} level [lo, hi]" for lv in levels]
    return Table("Variants", header, rows, note="Validation loss in nats/token over the variant's seeds. "
                 "Sizes: geometric mean over the tasks, with seeds and held-out pairs resampled."
                 + bootstrap_note(report))


def stability_table(report: dict[str, Any]) -> Table | None:
    """How alike the dictionaries of two seeds of a variant are, against chance."""
    rows = []
    for variant, s in (report.get("stability") or {}).items():
        rows.append([variant, str(s.get("site", "-")), _ints(s.get("seeds")), fmt(s.get("mean_best_cosine"), 3),
                     fmt(s.get("chance_mean_best_cosine"), 3), fmt(s.get("frac_above_0.9"), 3),
                     fmt(s.get("chance_frac_above_0.9"), 3)])
    if not rows:
        return None
    return Table("Stability across seeds", ["variant", "site", "seeds compared", "mean best cosine",
                                            "chance: mean best cosine", "fraction above 0.9",
                                            "chance: fraction above 0.9"], rows,
                 note="For each dictionary direction of one seed, the largest |cosine| with any direction of the "
                 "other seed; chance: the same between random directions of the same shape.")


def controls_sanity_table(report: dict[str, Any]) -> Table | None:
    """Per model and level, what each control found: it must find no capability."""
    rows = [[model, level, str(v.get("random_init", "-")), str(v.get("shuffled_labels", "-"))]
            for model, levels in (report.get("controls_sanity") or {}).items()
            for level, v in (levels or {}).items()]
    if not rows:
        return None
    return Table("Controls sanity check", ["model", "level", "random init", "shuffled labels"], rows,
                 note="A randomly initialised model and shuffled labels carry no capability: a control that passes "
                 "the capability gate on a task means the gate or the task is broken there.")


def verdict_paragraphs(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, reason) per comparison: the verdict's reasoning, one paragraph each.

    Example:
        >>> verdict_paragraphs({"comparisons": [{"variant": "ws", "baseline": "dense", "level": "component",
        ...                                      "matched": "loss", "reason": "Smaller."}]})
        [('ws against dense, component level, matched by loss', 'Smaller.')]
    """
    return [(f"{c.get('variant', '-')} against {c.get('baseline', '-')}, {c.get('level', '-')} level, matched by "
             f"{c.get('matched', '-')}", str(c.get("reason") or "-")) for c in report.get("comparisons") or []]


def all_tables(report: dict[str, Any]) -> dict[str, Any]:
    """Every table of the report, by the section that shows it (None: the report has nothing for it)."""
    return {"summary": summary_table(report), "tasks": [task_table(report, lv) for lv in report["levels"]],
            "circuit_checks": [checks_table(report, lv) for lv in report["levels"]],
            "task_info": task_info_table(report), "comparisons": comparisons_table(report),
            "variants": variants_table(report), "stability": stability_table(report),
            "controls_sanity": controls_sanity_table(report),
            "sparse": sparse_table(report), "training": training_table(report), "settings": settings_table(report)}
