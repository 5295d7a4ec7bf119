"""Circuit checks: what an analysis records about a circuit beyond its size, read into report.json and shown as
the report's "Circuit checks" table and as the lines ``glassformer analyze`` prints at the end of a run.

Three records of an analysis.json circuit entry (:mod:`glassformer.analysis.analyze` describes them) are read:

- ``by_ablation``: the model's N_0.8 and N_0.9 under each ablation, the primary one first, with ``signal`` (f
  clearly above the empty circuit's) under the second;
- ``ood``: the circuit scored on the task's shifted variant: the shifted task's own capability gate, and at
  component level the faithfulness f of the N_0.8 circuit there (None when the model fails that gate);
- ``faithfulness_checks``: the completeness (incompleteness ``|f(C \\ K) - f(M \\ K)|`` over random and greedy
  knockout sets K) and minimality (the fraction of members whose removal alone drops f by less than
  ``min_drop``) of the N_0.8 circuit.

Any of them may be missing (analyses made before them, node-level entries, tasks that were never sized): the
record then holds None (or no ablations) there and every cell shows ``—``.

Example:
    >>> rec = circuit_checks({"by_ablation": {"mean": {"N_0.8": {"edges": 6}}, "corrupt": {"N_0.8": {"edges": 8},
    ...                                                                         "signal": False}}})
    >>> [ablation_cell(rec, a) for a in ablations([rec])], rec["ood"], rec["completeness"]
    (['6', '8?'], None, None)
"""

from __future__ import annotations

import math
from typing import Any

from glassformer.analysis.report.plots import task_names

DASH = "—"
SIZE = "N_0.8"
"""The circuit every check is about: the smallest reaching 80% normalised faithfulness."""
NO_CAPABILITY = "no capability on the shifted task"


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _bool(x: Any) -> bool | None:
    return x if isinstance(x, bool) else None


def _size(v: Any) -> int | None:
    v = _dict(v)
    return _int(v.get("edges", v.get("nodes")))


def _by_ablation(c: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, (ablation, v) in enumerate(_dict(c.get("by_ablation")).items()):
        v = _dict(v)
        # The primary ablation's entry holds only its sizes: its signal is the circuit's own.
        signal = v.get("signal") if i else _dict(c.get("signal")).get("model")
        skipped = v.get("skipped")
        out.append({"ablation": str(ablation), "N_0.8": _size(v.get("N_0.8")), "N_0.9": _size(v.get("N_0.9")),
                    "signal": _bool(signal), "skipped": None if skipped is None else str(skipped)})
    return out


def _ood(c: dict[str, Any]) -> dict[str, Any] | None:
    ood = c.get("ood")
    if not isinstance(ood, dict):
        return None
    if "skipped" in ood:
        return {"task": None, "capable": None, "f": None, "size": None, "skipped": str(ood["skipped"])}
    circuits = _dict(ood.get("circuits"))
    # Component entries score each size under its name; a node entry scores the model's circuit as "model".
    scored = _dict(circuits.get(SIZE) if SIZE in circuits else circuits.get("model"))
    capable = _bool(ood.get("capable"))
    if capable is None and isinstance(ood.get("gate"), dict):
        capable = _bool(ood["gate"].get("passed"))
    task = ood.get("task")
    return {"task": task if isinstance(task, str) else None, "capable": capable, "f": _num(scored.get("f")),
            "size": _size(scored), "skipped": None}


def _completeness(checks: dict[str, Any]) -> dict[str, Any] | None:
    done = checks.get("completeness")
    if not isinstance(done, dict):
        return None
    random, greedy = _dict(done.get("random")), _dict(done.get("greedy"))
    return {"random_mean": _num(random.get("mean")), "random_max": _num(random.get("max")),
            "greedy_incompleteness": _num(greedy.get("incompleteness"))}


def _minimality(checks: dict[str, Any]) -> dict[str, Any] | None:
    mini = checks.get("minimality")
    if not isinstance(mini, dict):
        return None
    drops = mini.get("drops")
    return {"fraction_below": _num(mini.get("fraction_below")), "min_drop": _num(mini.get("min_drop")),
            "members": len(drops) if isinstance(drops, list) else None}


def circuit_checks(c: dict[str, Any]) -> dict[str, Any]:
    """The checks of one analysis.json circuit entry as report.json keeps them (a circuit's ``checks``)::

        {"by_ablation": [{ablation, N_0.8, N_0.9, signal, skipped}, ...],   # the primary ablation first
         "ood": {task, capable, f, size, skipped} | None,
         "completeness": {random_mean, random_max, greedy_incompleteness} | None,
         "minimality": {fraction_below, min_drop, members} | None}

    Example:
        >>> circuit_checks({"ood": {"task": "t@shifted", "capable": False, "circuits": {"N_0.8": {"edges": 5,
        ...                                                                                "f": None}}}})["ood"]
        {'task': 't@shifted', 'capable': False, 'f': None, 'size': 5, 'skipped': None}
    """
    checks = _dict(c.get("faithfulness_checks"))
    return {"by_ablation": _by_ablation(c), "ood": _ood(c), "completeness": _completeness(checks),
            "minimality": _minimality(checks)}


def has_checks(rec: dict[str, Any] | None) -> bool:
    """Whether a ``checks`` record holds anything at all (an analysis made before the checks holds nothing).

    Example:
        >>> has_checks(circuit_checks({})), has_checks(circuit_checks({"faithfulness_checks": {"minimality": {}}}))
        (False, True)
    """
    rec = rec or {}
    return bool(rec.get("by_ablation")) or any(rec.get(k) is not None for k in ("ood", "completeness", "minimality"))


def ablations(records: list[dict[str, Any] | None]) -> list[str]:
    """Every ablation the records were sized under, in the order they first appear (the primary first).

    Example:
        >>> ablations([{"by_ablation": [{"ablation": "mean"}]}, None, {"by_ablation": [{"ablation": "mean"},
        ...                                                                              {"ablation": "corrupt"}]}])
        ['mean', 'corrupt']
    """
    out: list[str] = []
    for rec in records:
        for v in (rec or {}).get("by_ablation") or []:
            if v["ablation"] not in out:
                out.append(v["ablation"])
    return out


def number(x: float | None, digits: int = 2) -> str:
    """A check's number at ``digits`` decimals, or ``—`` when it was not recorded.

    Example:
        >>> number(0.41892), number(None)
        ('0.42', '—')
    """
    return DASH if x is None else f"{x:.{digits}f}"


def ablation_cell(rec: dict[str, Any] | None, ablation: str) -> str:
    """The model's N_0.8 under ``ablation``; ``?`` marks a size without signal, ``skipped`` an ablation the analysis
    could not run.

    Example:
        >>> rec = {"by_ablation": [{"ablation": "corrupt", "N_0.8": 8, "signal": False, "skipped": None}]}
        >>> ablation_cell(rec, "corrupt"), ablation_cell(rec, "mean")
        ('8?', '—')
    """
    v = next((v for v in (rec or {}).get("by_ablation") or [] if v["ablation"] == ablation), None)
    if v is None:
        return DASH
    if v.get("skipped") is not None:
        return "skipped"
    if v.get("N_0.8") is None:
        return DASH
    return f"{v['N_0.8']}" + ("?" if v.get("signal") is False else "")


def ood_gate_cell(rec: dict[str, Any] | None) -> str:
    """The shifted task's capability gate: ``passed``, ``no capability on the shifted task``, or why it was not
    scored.

    Example:
        >>> ood_gate_cell({"ood": {"capable": False, "skipped": None}}), ood_gate_cell({"ood": None})
        ('no capability on the shifted task', '—')
    """
    ood = (rec or {}).get("ood")
    if ood is None:
        return DASH
    if ood.get("skipped") is not None:
        return f"not scored: {ood['skipped']}"
    return {True: "passed", False: NO_CAPABILITY}.get(ood.get("capable"), DASH)


def ood_f_cell(rec: dict[str, Any] | None) -> str:
    """The faithfulness f of the N_0.8 circuit on the shifted task (``—`` where the model has no capability there).

    Example:
        >>> ood_f_cell({"ood": {"f": 0.9469}}), ood_f_cell({"ood": None})
        ('0.95', '—')
    """
    return number(((rec or {}).get("ood") or {}).get("f"))


def completeness_cells(rec: dict[str, Any] | None) -> list[str]:
    """[random knockouts: mean, max; greedy knockouts] of the incompleteness.

    Example:
        >>> completeness_cells({"completeness": {"random_mean": 0.313, "random_max": 0.409,
        ...                                      "greedy_incompleteness": None}})
        ['0.31', '0.41', '—']
    """
    done = (rec or {}).get("completeness") or {}
    return [number(done.get("random_mean")), number(done.get("random_max")), number(done.get("greedy_incompleteness"))]


def minimality_cell(rec: dict[str, Any] | None) -> str:
    """The fraction of members whose removal alone drops f by less than ``min_drop``, of how many members.

    Example:
        >>> minimality_cell({"minimality": {"fraction_below": 0.25, "members": 8, "min_drop": 0.01}})
        '0.25 of 8 (drop < 0.01)'
    """
    mini = (rec or {}).get("minimality")
    if not mini or mini.get("fraction_below") is None:
        return DASH
    of = "" if mini.get("members") is None else f" of {mini['members']}"
    below = "" if mini.get("min_drop") is None else f" (drop < {mini['min_drop']:g})"
    return f"{number(mini['fraction_below'])}{of}{below}"


def capable(circuit: dict[str, Any]) -> bool:
    """Whether a report task circuit is of a task the model can do: it passed the capability gate (an analysis
    made before the gate cannot tell, and counts every task in, as its sizes do).

    Example:
        >>> capable({"gate": {"model": {"passed": False}}}), capable({"gate": {}})
        (False, True)
    """
    gate = (circuit.get("gate") or {}).get("model")
    return gate is None or bool(gate.get("passed"))


def checks_rows(report: dict[str, Any], level: str) -> tuple[list[str], list[list[str]]]:
    """(ablations, rows) of the Circuit checks table at ``level``: per task, per model where the model passed the
    capability gate; no rows when no circuit holds any check.

    Example:
        >>> checks_rows({"models": []}, "component")
        ([], [])
    """
    entries = []
    for name in task_names(report, level):
        for m in report["models"]:
            t = next((t for t in m["tasks"] if t["name"] == name and t.get("status") == "ok"), None)
            c = (t or {}).get("circuits", {}).get(level)
            if c is not None and capable(c):
                entries.append((m["name"], name, c.get("checks")))
    if not any(has_checks(rec) for _, _, rec in entries):
        return [], []
    names = ablations([rec for _, _, rec in entries])
    rows = [[model, task, *[ablation_cell(rec, a) for a in names], ood_gate_cell(rec), ood_f_cell(rec),
             *completeness_cells(rec), minimality_cell(rec)] for model, task, rec in entries]
    return names, rows


CHECKS_NOTE = (
    "Per task the model passed the capability gate on: N_0.8 (smallest circuit reaching normalised faithfulness "
    "f >= 0.8) under each ablation the analysis sized it with (? = f not clearly above the empty circuit's). "
    "OOD: the in-distribution N_0.8 circuit run on the task's shifted variant (held-out identifiers, other "
    "wording, distractor code); its f there is shown only where the model passes the capability gate on the "
    "shifted task. Incompleteness |f(C\\K) - f(M\\K)| of the N_0.8 circuit C against the model M under "
    "knockouts K: mean and max over random K, and the largest over K grown greedily; near 0 means the circuit "
    "behaves like the model. Minimality: the fraction of the circuit's members whose removal alone lowers f by "
    "less than min_drop. — = not recorded (an analysis made before these checks, or a node-level circuit).")


def checks_header(names: list[str]) -> list[str]:
    """The table's columns, one N_0.8 column per ablation.

    Example:
        >>> checks_header(["mean"])[:3]
        ['model', 'task', 'N_0.8, mean ablation']
    """
    return ["model", "task", *[f"N_0.8, {a} ablation" for a in names], "OOD: shifted task's capability gate",
            "OOD: f of N_0.8", "incompleteness, random K: mean", "incompleteness, random K: max",
            "incompleteness, greedy K", "minimality: fraction of members dropping f < min_drop"]


def headline_circuit(task: dict[str, Any]) -> dict[str, Any] | None:
    """The circuit entry of an analysis.json task the report headlines: greedy before top-n, else the first.

    Example:
        >>> headline_circuit({"circuits": [{"selection": "topn"}, {"selection": "greedy"}]})
        {'selection': 'greedy'}
    """
    # collect imports this module: its preference is read here, when called.
    from glassformer.analysis.report.collect import SELECTION_PREFERENCE

    circuits = [c for c in task.get("circuits") or [] if isinstance(c, dict)]
    order = {s: i for i, s in enumerate(SELECTION_PREFERENCE)}
    return min(circuits, key=lambda c: order.get(c.get("selection"), len(order)), default=None)


def check_summary(result: dict[str, Any]) -> list[str]:
    """The lines ``glassformer analyze`` prints at the end of a run (``result``: the run, as analysis.json's top
    level holds the latest): one per task the model passed the capability gate on, with the numbers of the
    report's Circuit checks table; none when no task passed.

    Example:
        >>> lines = check_summary({"tasks": {"t": {"status": "ok", "capable": True, "circuits": [
        ...     {"selection": "greedy", "ood": {"task": "t@shifted", "capable": True,
        ...                                     "circuits": {"N_0.8": {"edges": 6, "f": 0.9469}}}}]}}})
        >>> print(lines[-1].replace("; ", ";\\n"))
          t: N_0.8 by ablation —;
        OOD f 0.95 (shifted task: passed);
        incompleteness random mean — max —, greedy —;
        minimality —
    """
    out = []
    for name, t in (result.get("tasks") or {}).items():
        c = headline_circuit(t) if t.get("status") == "ok" and t.get("capable") else None
        if c is None:
            continue
        rec = circuit_checks(c)
        sizes = ", ".join(f"{a} {ablation_cell(rec, a)}" for a in ablations([rec])) or DASH
        mean, top, greedy = completeness_cells(rec)
        out.append(f"  {name}: N_0.8 by ablation {sizes}; OOD f {ood_f_cell(rec)} (shifted task: "
                   f"{ood_gate_cell(rec)}); incompleteness random mean {mean} max {top}, greedy {greedy}; "
                   f"minimality {minimality_cell(rec)}")
    if not out:
        return []
    return ["", f"circuit checks of the {SIZE} circuit, per task that passed the gate (as in the report's Circuit "
            "checks table):", *out]
