"""The model directory: the unit everything passes around, safe to share.

``config.json`` (the full model config), ``model.safetensors`` (weights, never pickle), ``tokenizer.json``,
``training.json`` and, after analysis, ``analysis.json``. Loading a directory never executes code from it. Every
file is written to a temporary name and renamed, so an interrupted writer leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from glassformer.archs.config import ConfigError, ModelConfig
from glassformer.archs.transformer import build_model

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"
TRAINING_FILE, ANALYSIS_FILE = "training.json", "analysis.json"


class ModelDirError(ValueError):
    """A path is not a usable model directory; the message says which file is missing or wrong."""


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` only when the ``with`` block ends without error (temporary file in the
    same folder, fsync, atomic rename); on error the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
        >>> with atomic_writer(p) as f:
        ...     _ = f.write(b"hello")
        >>> p.read_bytes()
        b'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the destination, so os.replace is a rename within one file system (atomic on POSIX).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> atomic_write_bytes(p, b"hello"); p.read_bytes()
        b'hello'
    """
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    """Read a JSON file, with an error that names the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ModelDirError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{path} is not valid JSON: {e}") from e


def save_model_dir(
    path: str | Path,
    model: torch.nn.Module,
    *,
    tokenizer_json: str | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (a :class:`Transformer`) and its companions to the model directory ``path``.

    Example:
        >>> import tempfile
        >>> from glassformer.archs import build_model, presets, load_model_dir
        >>> d = save_model_dir(tempfile.mkdtemp(), build_model(presets.get("debug")))
        >>> load_model_dir(d).cfg.d_model
        64
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg: ModelConfig = model.cfg
    fd, tmp = tempfile.mkstemp(dir=path, prefix=f".{WEIGHTS_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        save_model(model, tmp, metadata={"format": "pt", "glassformer_format": str(FORMAT_VERSION)})
        os.replace(tmp, path / WEIGHTS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_json(path / CONFIG_FILE, {"format_version": FORMAT_VERSION, **cfg.to_dict()})
    if tokenizer_json is not None:
        atomic_write_bytes(path / TOKENIZER_FILE, tokenizer_json.encode())
    if training is not None:
        atomic_write_json(path / TRAINING_FILE, training)
    return path


def publish_model_dir(
    path: str | Path,
    model: torch.nn.Module,
    *,
    tokenizer_json: str | None = None,
    training: dict[str, Any] | None = None,
) -> bool:
    """Write a whole model directory at ``path`` at once, or not at all; False (nothing written) if it exists.

    The files go to a hidden temporary folder beside ``path`` (``.<name>.<random>.tmp``), which is renamed to
    ``path`` when complete: a reader never sees a directory without its training.json, and a writer killed midway
    leaves only the temporary folder (:func:`remove_stale_model_dirs` deletes those).

    Example:
        >>> import tempfile
        >>> from glassformer.archs import build_model, presets
        >>> d = Path(tempfile.mkdtemp()) / "step-000010"
        >>> publish_model_dir(d, build_model(presets.get("debug")), training={"step": 10})
        True
        >>> publish_model_dir(d, build_model(presets.get("debug")), training={"step": 10}), sorted(os.listdir(d))
        (False, ['config.json', 'model.safetensors', 'training.json'])
    """
    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        save_model_dir(tmp, model, tokenizer_json=tokenizer_json, training=training)
        try:
            os.rename(tmp, path)  # atomic; refuses (OSError) when another writer put a non-empty ``path`` first
        except OSError:
            if not path.is_dir():
                raise
            _remove_tree(tmp)
            return False
    except BaseException:
        _remove_tree(tmp)
        raise
    return True


def remove_stale_model_dirs(folder: str | Path) -> list[Path]:
    """Delete the temporary folders that a killed :func:`publish_model_dir` left in ``folder``; return them.

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / ".step-000010.abc.tmp").mkdir()
        >>> [p.name for p in remove_stale_model_dirs(d)]
        ['.step-000010.abc.tmp']
    """
    folder = Path(folder)
    stale = sorted(p for p in folder.glob(".*.tmp") if p.is_dir()) if folder.is_dir() else []
    for p in stale:
        _remove_tree(p)
    return stale


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def load_config(path: str | Path) -> ModelConfig:
    """Read ``config.json`` of a model directory into a validated :class:`ModelConfig`."""
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"{path} is not a model directory (no such folder)")
    raw = read_json(path / CONFIG_FILE)
    if not isinstance(raw, dict):
        raise ModelDirError(f"{path / CONFIG_FILE} must hold a JSON object, got {type(raw).__name__}")
    version = raw.pop("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ModelDirError(f"{path / CONFIG_FILE} has format_version {version}; this glassformer reads {FORMAT_VERSION}")
    try:
        return ModelConfig.from_dict(raw)
    except (ConfigError, TypeError) as e:
        raise ModelDirError(f"{path / CONFIG_FILE} is not a valid model config: {e}") from e


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the model described by ``config.json`` and load ``model.safetensors`` into it (strictly).

    Example:
        >>> model = load_model_dir("runs/demo/tiny")  # doctest: +SKIP
    """
    path = Path(path)
    cfg = load_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = f" (found {pickles}: pickle files are never loaded)" if pickles else ""
        raise ModelDirError(f"{weights} is missing{hint}")
    model = build_model(cfg)
    try:
        missing, unexpected = load_model(model, weights, strict=False, device=str(device))
    except SafetensorError as e:
        raise ModelDirError(f"{weights} is not a readable safetensors file: {e}") from e
    except RuntimeError as e:
        raise ModelDirError(f"{weights} does not match config.json: {e}") from e
    if missing or unexpected:
        raise ModelDirError(f"{weights} does not match config.json: missing tensors {sorted(missing)[:5]}, "
                            f"unexpected tensors {sorted(unexpected)[:5]}")
    return model.to(device)


def read_training(path: str | Path) -> dict[str, Any]:
    """``training.json`` of a model directory, or an empty dict when there is none."""
    p = Path(path) / TRAINING_FILE
    return read_json(p) if p.exists() else {}


def software_versions(packages: Iterable[str]) -> dict[str, str]:
    """The Python version and the installed version of each of ``packages`` (those not installed are left out):
    what training.json and a report record of the software that produced them.

    Example:
        >>> sorted(software_versions(["torch", "no-such-package"]))
        ['python', 'torch']
    """
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
