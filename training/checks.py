"""Checks every command makes before any work: a usable model directory, a folder it may write to.

Example:
    >>> check_writable("runs/new_folder")  # creatable: fine
"""

from __future__ import annotations

import os
from pathlib import Path

from glassformer.archs import ModelDirError, load_config, read_training
from glassformer.training.config import DataConfig


def check_model_dir(model_dir: str | Path, recorded_data: bool = True) -> None:
    """Refuse, naming the file, a model directory whose config, tokenizer or training record cannot be used.

    The weights are checked when the command loads them (``load_model_dir``); this covers the companions, whose
    readers raise errors that do not say which file was wrong. ``recorded_data``: the command will read the corpus
    recorded in training.json, so check it too. Reads JSON only: nothing in the folder is run.

    Example:
        >>> check_model_dir("no/such/dir")
        Traceback (most recent call last):
        ...
        glassformer.archs.model_dir.ModelDirError: no/such/dir is not a model directory (no such folder)
    """
    from tokenizers import Tokenizer

    load_config(model_dir)
    tokenizer = Path(model_dir) / "tokenizer.json"
    if not tokenizer.is_file():
        raise ModelDirError(f"{tokenizer} is missing")
    try:
        Tokenizer.from_file(str(tokenizer))
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        raise ModelDirError(f"{tokenizer} is not a readable tokenizer ({e})") from e
    training = read_training(model_dir)
    if not isinstance(training, dict):
        raise ModelDirError(f"{Path(model_dir) / 'training.json'} must hold a JSON object")
    data = training.get("config", {}).get("data") if isinstance(training.get("config"), dict) else None
    if recorded_data and data is not None:
        try:
            DataConfig(**data)
        except (TypeError, ValueError) as e:
            raise ModelDirError(f"{Path(model_dir) / 'training.json'} records a data config that is not valid "
                                f"({e}); pass --data to choose the corpus") from e


def check_writable(path: str | Path, what: str = "--out") -> None:
    """Refuse, before any work, an output folder that cannot be created or written.

    The folder itself is not created: the nearest existing ancestor must be a writable folder.

    Example:
        >>> check_writable("/dev/null/report")
        Traceback (most recent call last):
        ...
        NotADirectoryError: --out /dev/null/report cannot be written: /dev/null is a file, not a folder
    """
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotADirectoryError(f"{what} {path} cannot be written: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path} cannot be written: {probe} is not writable")


def check_replaceable(path: str | Path, what: str) -> None:
    """Refuse, before any work, a file that cannot be written or atomically replaced: an existing ``path`` must be
    a file (not a folder), and its folder writable (the new content is written beside it, then renamed over it).

    Example:
        >>> check_replaceable("/dev/null/analysis.json", "analysis.json")
        Traceback (most recent call last):
        ...
        NotADirectoryError: analysis.json /dev/null cannot be written: /dev/null is a file, not a folder
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise IsADirectoryError(f"{what} {path} cannot be written: it is a folder, not a file")
    check_writable(path.parent, what=what)
