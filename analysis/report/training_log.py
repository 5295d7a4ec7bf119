"""What training left in a model directory, read for the report: the loss curves of ``logs/metrics.csv`` (with a
resumed run's earlier files), the parameter counts of ``model.safetensors`` and the sparse-layer statistics.

Only CSV, JSON records and safetensors are read; nothing in the folder is executed.

Example:
    >>> training_curve([{"step": "10", "loss/train": "5.5"}, {"step": "20", "loss/val": "5.1"}])
    {'train': [[10.0, 5.5]], 'val': [[20.0, 5.1]]}
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

CURVE_POINTS = 200


def finite(x: Any) -> float | None:
    """A finite float, or None (JSON has no NaN).

    Example:
        >>> finite(2), finite(float("nan")), finite(True)
        (2.0, None, None)
    """
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def read_metrics(model_dir: Path) -> list[dict[str, str]]:
    """Rows of ``logs/metrics.csv``, after those of any ``metrics.until-resume-<i>.csv`` (a resumed run's past).

    Example:
        >>> read_metrics(Path("no/such/model"))
        []
    """
    logs = model_dir / "logs"
    files = sorted(logs.glob("metrics.until-resume-*.csv"),
                   key=lambda p: int(re.sub(r"\D", "", p.stem.rsplit("-", 1)[-1]) or 0))
    rows: list[dict[str, str]] = []
    for path in [*files, logs / "metrics.csv"]:
        if path.is_file():
            with path.open(newline="") as f:
                rows.extend(csv.DictReader(f))
    return rows


def training_curve(rows: list[dict[str, str]]) -> dict[str, list[list[float]]] | None:
    """``{"train": [[step, loss], ...], "val": [...]}`` from metrics rows, thinned to at most 200 points each.

    Example:
        >>> training_curve([{"step": "1", "loss/train": "7.0"}]), training_curve([])
        ({'train': [[1.0, 7.0]], 'val': []}, None)
    """
    out: dict[str, list[list[float]]] = {"train": [], "val": []}
    for row in rows:
        for series, col in (("train", "loss/train"), ("val", "loss/val")):
            step, value = _num(row.get("step")), _num(row.get(col))
            if step is not None and value is not None:
                out[series].append([step, value])
    if not out["train"] and not out["val"]:
        return None
    for series, pts in out.items():
        if len(pts) > CURVE_POINTS:
            stride = math.ceil(len(pts) / CURVE_POINTS)
            out[series] = pts[::stride] + ([pts[-1]] if (len(pts) - 1) % stride else [])
    return out


def _num(s: Any) -> float | None:
    try:
        return finite(float(s))
    except (TypeError, ValueError):
        return None


def _last(rows: list[dict[str, str]], col: str) -> float | None:
    for row in reversed(rows):
        v = _num(row.get(col))
        if v is not None:
            return v
    return None


def parameter_counts(model_dir: Path) -> tuple[int, int]:
    """(parameters, non-zero parameters) of model.safetensors (weight sparsity shows in the second).

    Example:
        >>> parameter_counts(Path("runs/demo/weight_sparse"))  # doctest: +SKIP
        (1071232, 279104)
    """
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(model_dir / "model.safetensors"))
    return (sum(t.numel() for t in tensors.values()), sum(int(torch.count_nonzero(t)) for t in tensors.values()))


def _mean(values: list[Any]) -> float | None:
    vals = [v for v in (finite(x) for x in values) if v is not None]
    return sum(vals) / len(vals) if vals else None


def sparse_stats(analysis: dict[str, Any], rows: list[dict[str, str]]) -> dict[str, Any]:
    """L0, dead and dense fractions and interference per layer and averaged over layers, and the weight density.

    From analysis.json's ``sparse_layers`` (measured on corpus tokens) when it has them; otherwise L0 and dead
    fraction are the last values logged in training (logs/metrics.csv). ``source`` says which.

    Example:
        >>> stats = sparse_stats({}, [{"step": "20", "sparsity/l0": "12.5"}])
        >>> stats["source"], stats["l0"]
        ('metrics.csv', 12.5)
    """
    sparse = analysis.get("sparse_layers") or {}
    layers = []
    for r in sparse.get("layers") or []:
        inter = r.get("interference") or {}
        layers.append({"layer": r.get("layer"), "l0": finite(r.get("l0")),
                       "dead_fraction": finite(r.get("dead_fraction")),
                       "dense_fraction": finite(r.get("dense_fraction")),
                       "interference": finite(inter.get("mean_abs_cos")),
                       "interference_above": finite(inter.get("fraction_above")),
                       "interference_threshold": finite(inter.get("threshold"))})
    density = finite((sparse.get("weight_density") or {}).get("overall"))
    if layers:
        return {"source": "analysis.json", "l0": _mean([r["l0"] for r in layers]),
                "dead_fraction": _mean([r["dead_fraction"] for r in layers]),
                "dense_fraction": _mean([r["dense_fraction"] for r in layers]),
                "interference": _mean([r["interference"] for r in layers]),
                "interference_above": _mean([r["interference_above"] for r in layers]),
                "interference_threshold": next((r["interference_threshold"] for r in layers
                                                if r["interference_threshold"] is not None), None),
                "weight_density": density, "layers": layers}
    return {"source": "metrics.csv", "l0": _last(rows, "sparsity/l0"), "dead_fraction": _last(rows,
            "sparsity/dead_fraction"), "dense_fraction": None, "interference": None, "interference_above": None,
            "interference_threshold": None,
            "weight_density": density if density is not None else _last(rows, "weights/density"), "layers": []}
