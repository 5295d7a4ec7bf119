"""The written verdict: for each constraint, the capability it cost and how much smaller its circuits are.

The numbers (``verdict_rows``) are computed once and stored in report.json; the sentences (``verdict_text``) are
formatted from report.json alone, so every number a reader sees in the text is one of report.json's.

Whether a difference in circuit size is real is judged against the controls, a difference-in-differences: the
ratio of geometric-mean circuit sizes (baseline over constrained model, over the tasks where both models' circuits
carry signal) is compared with the same ratio measured on each control (the randomly initialised models, and the
shuffled-label task). If the constraint shrinks the circuits of untrained models or of a meaningless task as much
as those of the trained model on the real task, the shrinkage comes from the architecture or from noise, not from
a mechanism the model learned: the verdict is then "within the controls". It is "real" only when the model's
ratio lies further from 1 than every control's by more than a factor of 1.5 (``MARGIN``, a choice: circuit sizes
from a few dozen pairs move by tens of percent between seeds), over at least 3 tasks (``MIN_TASKS``; fewer
gives "too few tasks").

Example:
    >>> rows = verdict_rows([_m("dense", 5.0, 40.0), _m("sparse", 5.5, 10.0)], "dense")  # 3 tasks each
    >>> c = rows[0]["levels"]["component"]
    >>> round(c["times_smaller"], 6), c["judgement"]
    (4.0, 'real')
"""

from __future__ import annotations

import math
from typing import Any

from glassformer.analysis.common import CONTROLS, geometric_mean

MARGIN = 1.5
MIN_TASKS = 3
CONTROL_WORDS = {"random_init": "random init", "shuffled_labels": "shuffled labels"}


def _tasks(model: dict[str, Any], level: str) -> dict[str, dict[str, Any]]:
    return {t["name"]: t["circuits"][level] for t in model["tasks"]
            if t.get("status") == "ok" and level in t.get("circuits", {})}


def compare_sizes(model: dict[str, Any], base: dict[str, Any], level: str) -> dict[str, Any] | None:
    """Sizes of ``model`` against ``base`` at ``level`` over the tasks where both have signal, with controls."""
    mine, theirs = _tasks(model, level), _tasks(base, level)
    common = [n for n in mine if n in theirs and mine[n]["signal"].get("model") and theirs[n]["signal"].get("model")
              and mine[n]["size"].get("model") is not None and theirs[n]["size"].get("model") is not None]
    out: dict[str, Any] = {"key": model["sizes"][level]["key"], "unit": model["sizes"][level]["unit"],
                           "tasks": common, "n_tasks": len(common)}
    if not common:
        out["judgement"] = "no signal"
        return out
    g_model = geometric_mean([mine[n]["size"]["model"] for n in common])
    g_base = geometric_mean([theirs[n]["size"]["model"] for n in common])
    out.update(size=g_model, base_size=g_base, times_smaller=g_base / g_model, times_larger=g_model / g_base)
    controls = {}
    for c in CONTROLS:
        gm = geometric_mean([mine[n]["size"].get(c) for n in common])
        gb = geometric_mean([theirs[n]["size"].get(c) for n in common])
        if gm is not None and gb is not None:
            controls[c] = {"size": gm, "base_size": gb, "times_smaller": gb / gm}
    out["controls"] = controls
    spread = max((abs(math.log(v["times_smaller"])) for v in controls.values()), default=0.0)
    if len(common) < MIN_TASKS:
        out["judgement"] = "too few tasks"
    elif not controls:
        # Measured but never at the target (a node-level control that no mask brings to the target loss) is not the
        # same as not measured: the model's circuits exist where the controls' do not, yet there is no ratio.
        measured = any(c in mine[n]["size"] and c in theirs[n]["size"] for n in common for c in CONTROLS)
        out["judgement"] = "controls not at the target" if measured else "no controls"
    else:
        real = abs(math.log(out["times_smaller"])) > spread + math.log(MARGIN)
        out["judgement"] = "real" if real else "within the controls"
    return out


def verdict_rows(models: list[dict[str, Any]], baseline: str | None) -> list[dict[str, Any]]:
    """One row per non-baseline model: loss cost against the baseline and size ratios per level."""
    if baseline is None:
        return []
    base = next(m for m in models if m["name"] == baseline)
    rows = []
    for m in models:
        if m["name"] == baseline:
            continue
        row: dict[str, Any] = {"name": m["name"], "constraints": m["constraints"], "baseline": baseline,
                               "val_loss": m["capability"]["val_loss"], "base_val_loss": base["capability"]["val_loss"]}
        if row["val_loss"] is not None and row["base_val_loss"] is not None:
            row["loss_delta"] = row["val_loss"] - row["base_val_loss"]
            row["loss_delta_percent"] = 100 * row["loss_delta"] / row["base_val_loss"]
        row["levels"] = {level: c for level in m["sizes"] if level in base["sizes"]
                         if (c := compare_sizes(m, base, level)) is not None}
        rows.append(row)
    return rows


def _f(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def verdict_text(report: dict[str, Any]) -> list[str]:
    """The verdict as sentences, formatted from report.json's numbers only.

    Example:
        >>> verdict_text({"baseline": None, "models": [], "verdict": {"rows": []}})
        ['No dense baseline among the models: the report compares them without a verdict.']
    """
    base = report.get("baseline")
    if base is None:
        return ["No dense baseline among the models: the report compares them without a verdict."]
    base_model = next(m for m in report["models"] if m["name"] == base)
    lines = []
    loss = base_model["capability"]["val_loss"]
    lines.append(f"Baseline: {base} (no constraints), validation loss "
                 f"{'unknown' if loss is None else _f(loss, 3) + ' nats/token'}.")
    for row in report["verdict"]["rows"]:
        parts = [f"{row['name']} ({'; '.join(row['constraints']) or 'dense'}):"]
        if row.get("loss_delta") is not None:
            parts.append(f"validation loss {_f(row['val_loss'], 3)} against {_f(row['base_val_loss'], 3)} "
                         f"({row['loss_delta']:+.3f} nats, {row['loss_delta_percent']:+.1f}%);")
        for level, c in row["levels"].items():
            if c["judgement"] == "no signal":
                parts.append(f"at {level} level no task has circuits with signal in both models (the model must "
                             f"also pass the capability gate), so circuit sizes cannot be compared;")
                continue
            ratio = (f"{_f(c['times_smaller'], 2)}x smaller" if c["times_smaller"] >= 1
                     else f"{_f(c['times_larger'], 2)}x larger")
            ctrl = ", ".join(f"{CONTROL_WORDS[k]} {_f(v['times_smaller'], 2)}x" for k, v in c["controls"].items())
            why = {"real": "so the difference is real",
                   "within the controls": "so the difference is within what the controls show",
                   "too few tasks": "but too few tasks carry signal to call the difference real",
                   "no controls": "no controls were measured, so whether it is real is not known",
                   "controls not at the target": "the controls were measured but never reached the target, so there "
                                                 "is no control ratio to judge it by"}[c["judgement"]]
            tasks = f"{c['n_tasks']} task" + ("" if c["n_tasks"] == 1 else "s")
            parts.append(f"{level} circuits {ratio} (geometric mean {c['key']} {_f(c['size'], 1)} against "
                         f"{_f(c['base_size'], 1)} {c['unit']} over {tasks} with signal in both)"
                         + (f"; the controls' ratios are {ctrl}, {why};" if ctrl else f"; {why};"))
        lines.append(" ".join(parts).rstrip(";") + ".")
    lines += sanity_lines(report["models"])
    for level, names in report.get("pareto", {}).items():
        if names:
            lines.append(f"Pareto frontier of validation loss against {level} circuit size: {', '.join(names)}.")
    return lines


def sanity_lines(models: list[dict[str, Any]]) -> list[str]:
    """Sentences on the controls as sanity checks: each control that passed the capability gate somewhere (it
    must not: a random model or shuffled labels carry no capability), or one line saying none did.

    Example:
        >>> m = {"name": "dense", "sizes": {"node": {"controls_passing_gate": {"random_init": ["induction"]}}}}
        >>> sanity_lines([m])
        ['Sanity check failed: in dense at node level the random init control passed the capability gate on induction.']
    """
    lines, checked = [], False
    for m in models:
        for level, sizes in m["sizes"].items():
            passing = sizes.get("controls_passing_gate")
            if passing is None:
                continue
            checked = True
            for who, names in passing.items():
                if names:
                    lines.append(f"Sanity check failed: in {m['name']} at {level} level the "
                                 f"{CONTROL_WORDS.get(who, who)} control passed the capability gate on "
                                 f"{', '.join(names)}.")
    if checked and not lines:
        lines.append("Sanity check: the controls found no capability on any task (none passed the capability gate).")
    return lines


def _m(name: str, loss: float, size: float) -> dict[str, Any]:
    """A minimal model record (for the doctest)."""
    circ = {"size": {"model": size, "random_init": 5.0, "shuffled_labels": 5.0}, "signal": {"model": True}}
    return {"name": name, "constraints": [], "capability": {"val_loss": loss},
            "sizes": {"component": {"key": "N_0.8", "unit": "edges"}},
            "tasks": [{"name": t, "status": "ok", "circuits": {"component": circ}} for t in "abc"]}
