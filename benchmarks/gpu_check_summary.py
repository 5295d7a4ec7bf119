"""The summary of one ``benchmarks/gpu_check.sh`` run: ``figures.json`` and ``summary.md`` from the steps' files.

    python benchmarks/gpu_check_summary.py --work WORK --out OUT --mode device --command "bash benchmarks/gpu_check.sh"

WORK holds what the steps wrote: ``steps.tsv`` (name, exit status, seconds, time box), ``pytest.xml``,
``kernels.json`` and ``kernels.txt``, ``throughput.json``, ``train.json``, ``device.txt``. A missing file (a step
that failed or ran out of time) leaves its section empty and says so; the summary itself never fails on it.
The issue's targets are judged from the kernel figures by :func:`targets`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when the file is missing or unreadable (its step failed)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_steps(path: Path) -> list[dict[str, Any]]:
    """The rows of ``steps.tsv``: each step's name, exit status, seconds and time box.

    Example:
        >>> import tempfile; p = Path(tempfile.mkdtemp()) / "s.tsv"; _ = p.write_text("tests\\t0\\t12\\t90\\n")
        >>> read_steps(p)
        [{'step': 'tests', 'exit': 0, 'seconds': 12, 'limit': 90}]
    """
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        name, rc, seconds, limit = line.split("\t")
        rows.append({"step": name, "exit": int(rc), "seconds": int(seconds), "limit": int(limit)})
    return rows


def read_pytest(path: Path) -> dict[str, int] | None:
    """Counts from a JUnit XML report: tests, failures, errors, skipped, passed."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def _row(kernels: dict, op: str, variant: str = "triton") -> dict | None:
    return next((r for r in kernels.get("rows", []) if r["op"] == op and r["variant"] == variant), None)


def _target(name: str, row: dict | None, key: str, bound: float, at_least: bool, unit: str) -> dict[str, Any]:
    value = None if row is None or row.get("refused") else row.get(key)
    met = None if value is None else (value >= bound if at_least else value <= bound)
    return {"target": name, "shape": None if row is None else row["shape"], "value": value,
            "bound": f"{'>=' if at_least else '<='} {bound:g}{unit}", "met": met}


def targets(kernels: dict | None) -> list[dict[str, Any]]:
    """The issue's kernel targets, each with the measured value and whether it is met (None: not measured).

    Example:
        >>> rows = [{"op": "sparse_decode", "variant": "triton", "shape": "s", "vs_dense": 4.0, "x_floor": 1.5}]
        >>> [t["met"] for t in targets({"rows": rows})][:2]
        [True, True]
    """
    kernels = kernels or {}
    decode, prune, ortho = (_row(kernels, op) for op in ("sparse_decode", "magnitude_prune_", "cos_margin_penalty"))
    out = [
        _target("sparse decode: speed-up over the dense decode", decode, "vs_dense", 3, True, "x"),
        _target("sparse decode: time over its bandwidth floor", decode, "x_floor", 2, False, "x"),
        _target("weight projection: speed-up over a flattened topk", prune, "vs_dense", 5, True, "x"),
        _target("|cos| penalty: speed-up over the reference", ortho, "vs_reference", 2, True, "x"),
    ]
    # Memory independent of M: the kernel's peak must stay far below the M x M float32 Gram matrix it avoids.
    mem = _target("|cos| penalty: peak memory over the M x M Gram matrix", ortho, "peak_mib", 0, False, "")
    found = re.search(r"M=(\d+)", ortho["shape"]) if ortho else None
    mem.update(value=None, bound="<= 0.0625 (a sixteenth)", met=None)
    if found and ortho.get("peak_mib") is not None and not ortho.get("refused"):
        share = ortho["peak_mib"] / (int(found.group(1)) ** 2 * 4 / 2**20)
        mem.update(value=share, met=share <= 1 / 16)
    out.append(mem)
    return out


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)] + [
        "| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]


def markdown(fig: dict[str, Any], kernels_text: str) -> str:
    """``summary.md``: steps, tests, targets, kernel table, throughput and the trained models."""
    lines = [f"# GPU check ({fig['mode']})", "", f"- device: {fig['device']}", f"- date: {fig['date']}",
             f"- commit: {fig['commit']}", f"- command: `{fig['command']}`", ""]
    if fig["mode"] == "dry-run":
        lines += ["Dry run: toy shapes on the CPU through the Triton interpreter. The figures only show that every "
                  "step runs and writes its output; they measure nothing.", ""]
    lines += ["## Steps", ""] + _table(["step", "exit", "seconds", "time box"],
                                       [[s["step"], s["exit"], s["seconds"], s["limit"]] for s in fig["steps"]])
    p = fig["pytest"]
    lines += ["", "## GPU tests (`pytest -m gpu tests/kernels`)", "",
              "no report (the step failed before pytest wrote one)" if p is None else
              f"{p['passed']} passed, {p['failures']} failed, {p['errors']} errors, {p['skipped']} skipped"]
    lines += ["", "## Targets", ""] + _table(
        ["target", "shape", "value", "bound", "met"],
        [[t["target"], t["shape"], t["value"], t["bound"], t["met"]] for t in fig["targets"]])
    lines += ["", "## Kernels (`benchmarks/kernels.py`)", "", kernels_text.strip() or "no output"]
    tp = fig["throughput"]
    lines += ["", "## Training throughput (`benchmarks/train_throughput.py`)", ""]
    if tp:
        lines += [f"{tp['preset']}, {tp['precision']}, batch {tp['batch_size']}, {tp['timed_steps']} timed steps; "
                  f"matmul rate {tp['matmul_tflops']:.4g} TFLOP/s (timed {tp['matmul_size']}^3, same run)", ""]
        lines += _table(["variant", "parameters", "tokens/s", "model FLOP/token", "MFU"],
                        [[v["variant"], v["n_params"], v["lightning"]["tokens_per_sec"], v["flops_per_token"],
                          v["lightning"]["mfu"]] for v in tp["variants"] if "lightning" in v])
    else:
        lines.append("no figures (the step failed)")
    tr = fig["training"]
    lines += ["", "## Short training runs (model directories in models.tar.gz.part-*)", ""]
    if tr:
        lines += [f"{tr['preset']}, {tr['steps']} steps of batch {tr['batch_size']} ({tr['steps_chosen_by']}), "
                  f"{tr['precision']}; corpus fingerprint {tr['corpus']['fingerprint'][:16]}", ""]
        lines += _table(["model", "steps", "tokens", "val loss (nats)", "unigram entropy", "tokens/s", "wall s"],
                        [[name, r["steps"], r["tokens_seen"], r["final"]["loss/val"],
                          r["final"]["unigram_entropy"], r["tokens_per_sec"], r["wall_seconds"]]
                         for name, r in tr["runs"].items()])
        lines += ["", "Unpack: `cat models.tar.gz.part-* | tar xzf - -C runs/gpu_check` (one folder per model)."]
    else:
        lines.append("no models (the step failed)")
    return "\n".join(lines) + "\n"


def summarise(work: Path, out: Path, mode: str, command: str) -> dict[str, Any]:
    """Gather the steps' files from ``work`` into ``out/figures.json`` and ``out/summary.md``."""
    kernels = read_json(work / "kernels.json")
    training = read_json(work / "train.json")
    device_txt = work / "device.txt"
    device = device_txt.read_text().strip() if device_txt.is_file() else (kernels or {}).get("device", "unknown")
    commit_txt = work / "commit.txt"
    commit = commit_txt.read_text().strip() if commit_txt.is_file() else ""
    if not commit and training:
        commit = f"no git checkout here; the corpus was prepared at {training['corpus']['prepared']['commit']}"
    fig = {"mode": mode, "device": device, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit or "-",
           "command": command, "steps": read_steps(work / "steps.tsv"), "pytest": read_pytest(work / "pytest.xml"),
           "targets": targets(kernels), "kernels": kernels, "throughput": read_json(work / "throughput.json"),
           "training": training}
    kernels_txt = work / "kernels.txt"
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures.json").write_text(json.dumps(fig, indent=1))
    (out / "summary.md").write_text(markdown(fig, kernels_txt.read_text() if kernels_txt.is_file() else ""))
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=("device", "dry-run"), required=True)
    parser.add_argument("--command", required=True)
    args = parser.parse_args(argv)
    fig = summarise(Path(args.work), Path(args.out), args.mode, args.command)
    for t in fig["targets"]:
        print(f"target: {t['target']}: {_fmt(t['value'])} ({t['bound']}) met={t['met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
