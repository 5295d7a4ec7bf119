"""The analysis.json file: every run kept, keyed by everything that changes its numbers; ``latest`` the newest.

The layout is documented in ``glassformer.analysis.analyze``. A run's key is ``level/method/ablation/<hash>``,
the hash taken over the run's whole analysis config (tasks, pairs, seed, controls, mask settings, ...), so a run
with another task list or seed is added beside the earlier ones instead of replacing them; only a run made with
exactly the same settings replaces its predecessor. :func:`read_analysis` reads version 1, 2 and 3 files into the
version-3 layout (older keys, ``level/method/ablation``, are kept as they are); :func:`merge_run` adds one run.

Example:
    >>> run = {"config": {"level": "node"}, "settings": {"level": "node", "method": "mask", "ablation": "mean"},
    ...        "graph": {}, "tasks": {}, "summary": [], "capability": {}}
    >>> merged = merge_run(None, run, {"kind": "glassformer.analysis", "model_dir": "m", "model": {}})
    >>> merged["latest"] == run_key(run) == list(merged["results"])[0], run_key(run)[:15]
    (True, 'node/mask/mean/')
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 3
RUN_FIELDS = ("settings", "graph", "capability", "tasks", "summary")
"""What one run holds; the latest run's are also repeated at the top level (the version-1 layout)."""


def run_key(run: dict[str, Any]) -> str:
    """``level/method/ablation/<8 hex digits>`` of a run: the ablation used (after any fallback) and a hash of the
    run's analysis config. A run from an older glassformer (no config recorded) keeps ``level/method/ablation``.

    Example:
        >>> run_key({"settings": {"level": "component", "method": "eap-ig", "ablation": "mean"}})
        'component/eap-ig/mean'
    """
    s = run["settings"]
    key = f"{s['level']}/{s['method']}/{s['ablation']}"
    if run.get("config") is None:
        return key
    digest = hashlib.sha256(json.dumps(run["config"], sort_keys=True).encode()).hexdigest()[:8]
    return f"{key}/{digest}"


def runs_matching(analysis: dict[str, Any], **settings: Any) -> list[tuple[str, dict[str, Any]]]:
    """The (key, run) pairs of ``analysis`` whose settings have the given values, oldest first.

    Example:
        >>> a = {"results": {"node/mask/mean": {"settings": {"level": "node", "seed": 0}},
        ...                  "component/eap/mean": {"settings": {"level": "component", "seed": 0}}}}
        >>> [k for k, _ in runs_matching(a, level="node")]
        ['node/mask/mean']
    """
    return [(k, r) for k, r in (analysis.get("results") or {}).items()
            if all(r.get("settings", {}).get(f) == v for f, v in settings.items())]


def read_analysis(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The content of an analysis.json (a path to the file or to its model directory, or the parsed dict) in the
    version-3 layout; a version-1 file becomes one entry of ``results``. A file from a newer glassformer raises.

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
    if version == 2:  # same layout; keys without a config hash
        return {**data, "schema_version": SCHEMA_VERSION, "upgraded_from": 2}
    if version == 1:
        run = {k: data[k] for k in RUN_FIELDS if k in data}
        key = run_key(run)
        out = {k: v for k, v in data.items() if k not in ("schema_version",)}
        return {"schema_version": SCHEMA_VERSION, "upgraded_from": 1, **out, "results": {key: run},
                "latest": key}
    raise ModelDirError(f"{where} has schema_version {version}; this glassformer reads 1 to {SCHEMA_VERSION}")


def existing_analysis(path: Path, model: dict[str, Any] | None = None, set_aside: bool = True
                      ) -> dict[str, Any] | None:
    """The analysis already at ``path`` in the version-3 layout, or None when there is none. A file that is not
    an analysis, or one made for another model (a different ``model`` record), is moved aside to
    ``analysis.replaced-<UTC time>.json`` with a warning naming it, so nothing is lost; a file from a newer
    glassformer raises rather than be overwritten. ``set_aside=False`` only checks (nothing is moved).

    Example:
        >>> existing_analysis(Path("no/such/analysis.json")) is None
        True
    """
    from glassformer.archs.model_dir import ModelDirError

    if not path.is_file():
        return None
    try:
        data = read_analysis(path)
    except ModelDirError as e:
        if "this glassformer reads" in str(e):
            raise
        if set_aside:
            warnings.warn(f"{e}: moved to {_set_aside(path)}", stacklevel=3)
        return None
    if set_aside and model is not None and data.get("model") not in (None, model):
        warnings.warn(f"{path} describes another model ({data.get('model')}): moved to {_set_aside(path)}",
                      stacklevel=3)
        return None
    return data


def _set_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.stem}.replaced-{stamp}{path.suffix}")
    path.replace(target)
    return target


def merge_run(existing: dict[str, Any] | None, run: dict[str, Any], header: dict[str, Any],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The file content with ``run`` added under its key (replacing only a run made with the very same settings;
    ``results`` stays in the order the runs finished), ``header`` (kind, model_dir, model) and ``extra`` top-level
    entries (e.g. ``sparse_layers``) updated, and the run's fields repeated at the top level for version-1
    readers."""
    results = dict(existing.get("results", {})) if existing else {}
    key = run_key(run)
    results.pop(key, None)
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
