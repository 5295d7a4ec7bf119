"""The analysis.json file: one result per (level, method, ablation), added to what is there, never replacing it.

The layout is documented in ``glassformer.analysis.analyze``. :func:`read_analysis` reads version 1 and 2 files
into the version-2 layout; :func:`merge_run` adds one run to a file's content.

Example:
    >>> run = {"settings": {"level": "node", "method": "mask", "ablation": "mean"}, "graph": {}, "tasks": {},
    ...        "summary": [], "capability": {}}
    >>> merged = merge_run(None, run, {"kind": "glassformer.analysis", "model_dir": "m", "model": {}})
    >>> list(merged["results"]), merged["latest"]
    (['node/mask/mean'], 'node/mask/mean')
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
RUN_FIELDS = ("settings", "graph", "capability", "tasks", "summary")
"""What one run holds; the latest run's are also repeated at the top level (the version-1 layout)."""


def run_key(settings: dict[str, Any]) -> str:
    """``level/method/ablation`` of a run's settings (the ablation used, after any fallback).

    Example:
        >>> run_key({"level": "component", "method": "eap-ig", "ablation": "mean"})
        'component/eap-ig/mean'
    """
    return f"{settings['level']}/{settings['method']}/{settings['ablation']}"


def read_analysis(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The content of an analysis.json (a path to the file or to its model directory, or the parsed dict) in the
    version-2 layout; a version-1 file becomes one entry of ``results``. A file from a newer glassformer raises.

    Example:
        >>> v1 = {"schema_version": 1, "kind": "glassformer.analysis", "model_dir": "m", "model": {},
        ...       "settings": {"level": "component", "method": "eap-ig", "ablation": "mean"}, "graph": {},
        ...       "capability": {}, "tasks": {}, "summary": []}
        >>> list(read_analysis(v1)["results"])
        ['component/eap-ig/mean']
    """
    from glassformer.archs.model_dir import ANALYSIS_FILE, ModelDirError, read_json

    if isinstance(source, dict):
        data, where = source, "the analysis"
    else:
        path = Path(source)
        path = path / ANALYSIS_FILE if path.is_dir() else path
        data, where = read_json(path), str(path)
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ModelDirError(f"{where} is not a glassformer analysis (no schema_version)")
    version = data["schema_version"]
    if version == SCHEMA_VERSION:
        return data
    if version == 1:
        run = {k: data[k] for k in RUN_FIELDS if k in data}
        key = run_key(data["settings"])
        out = {k: v for k, v in data.items() if k not in ("schema_version",)}
        return {"schema_version": SCHEMA_VERSION, "upgraded_from": 1, **out, "results": {key: run},
                "latest": key}
    raise ModelDirError(f"{where} has schema_version {version}; this glassformer reads 1 and {SCHEMA_VERSION}")


def existing_analysis(path: Path, model: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The analysis already at ``path`` in the version-2 layout, or None when there is none. A file that is not
    an analysis, or one made for another model (a different ``model`` record), is set aside with a warning;
    a file from a newer glassformer raises rather than be overwritten.
    """
    from glassformer.archs.model_dir import ModelDirError

    if not path.is_file():
        return None
    try:
        data = read_analysis(path)
    except ModelDirError as e:
        if "this glassformer reads" in str(e):
            raise
        warnings.warn(f"{e}: it will be replaced", stacklevel=3)
        return None
    if model is not None and data.get("model") not in (None, model):
        warnings.warn(f"{path} describes another model ({data.get('model')}); its results are replaced",
                      stacklevel=3)
        return None
    return data


def merge_run(existing: dict[str, Any] | None, run: dict[str, Any], header: dict[str, Any],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The file content with ``run`` added under its key (replacing only a run of the same key), ``header``
    (kind, model_dir, model) and ``extra`` top-level entries (e.g. ``sparse_layers``) updated, and the run's
    fields repeated at the top level for version-1 readers."""
    results = dict(existing.get("results", {})) if existing else {}
    key = run_key(run["settings"])
    results[key] = run
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **header}
    if existing:
        for k, v in existing.items():
            if k not in out and k not in RUN_FIELDS and k not in ("results", "latest", "upgraded_from"):
                out[k] = v
    out.update(extra or {})
    out.update({k: run[k] for k in RUN_FIELDS})
    out.update(results=results, latest=key)
    return out
