"""Training text: the sources, the validation split, the fingerprint, and the cached token arrays.

Documents come in a fixed order (sorted paths, then line or row order), each with a stable key: the path
relative to the stdlib root, the matched path, ``path:line`` for JSONL, or the row index for ``hf``. A document is
held out for validation when a hash of its key falls below ``val_fraction``, so the split of one document does
not depend on the others (save the fallback that guarantees one document of each split). The fingerprint is a sha256 over the source kind and every key and text in order.

Each split becomes one flat memory-mapped token array (see :func:`~glassformer.training.tokenizer.write_token_arrays`)
in which every document is preceded by the ``<|endoftext|>`` id: ``EOT doc_1 EOT doc_2 ...``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from glassformer.archs.config import ConfigError
from glassformer.training.config import DataConfig
from glassformer.training.tokenizer import (
    EOT,
    atomic_write_text,
    cached_tokenizer,
    open_token_array,
    tokenizer_hash,
    write_token_arrays,
)

log = logging.getLogger("glassformer")

# Goes into every cache key: bump it when the split rule, the token layout or the tokenizer recipe changes.
FORMAT = "glassformer-corpus-1"
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_UTF8_CHARS = 2**20  # characters encoded at a time: a long document is never copied whole to measure or hash it


@dataclass(frozen=True)
class Document:
    """One training text: its stable ``key``, its ``text``, and whether it is held out for validation."""

    key: str
    text: str
    is_val: bool


@dataclass
class PreparedData:
    """Everything training needs from the corpus; built by :func:`prepare_data`."""

    tokenizer: Tokenizer
    train_tokens: np.ndarray
    """1-D memory-mapped array of token ids (uint16 when the vocabulary fits, else uint32)."""
    val_tokens: np.ndarray
    fingerprint: str
    """sha256 over the source kind and every document's key and text, in order."""
    eot_id: int
    info: dict[str, Any] = field(default_factory=dict)


def stdlib_root() -> Path:
    """The running interpreter's standard library folder.

    Example:
        >>> (stdlib_root() / "os.py").is_file()
        True
    """
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[tuple[str, Path]]:
    """``(relative posix path, path)`` of every stdlib ``.py`` file outside site-/dist-packages, sorted.

    Example:
        >>> "os.py" in dict(stdlib_files())
        True
    """
    root = stdlib_root()
    found = []
    for folder, dirs, files in os.walk(root):
        # Third-party packages live inside the stdlib folder; they are not the stdlib.
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        for name in files:
            if name.endswith(".py"):
                path = Path(folder) / name
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def _read_text(path: Path) -> str:
    # A few stdlib test files are deliberately not UTF-8; replacing their odd bytes keeps them readable.
    return path.read_bytes().decode("utf-8", errors="replace")


def matched_files(cfg: DataConfig) -> list[str]:
    """The files matched by ``cfg.paths`` (``**`` recurses), without duplicates, sorted.

    Example:
        >>> matched_files(DataConfig(source="files", paths=["no/such/*.py"]))
        Traceback (most recent call last):
        ...
        glassformer.archs.config.ConfigError: data.paths=['no/such/*.py'] matched no files ...
    """
    found = {p for pattern in cfg.paths for p in glob.glob(os.path.expanduser(pattern), recursive=True)
             if os.path.isfile(p)}
    if not found:
        raise ConfigError(f"data.paths={cfg.paths!r} matched no files (patterns are relative to {os.getcwd()}; "
                          "use '**' to recurse): expected glob patterns that match at least one file")
    return sorted(found, key=lambda p: Path(p).as_posix())


def _text_of(record: Any, cfg: DataConfig, where: str) -> str:
    if not isinstance(record, dict) or cfg.text_field not in record:
        fields = sorted(record) if isinstance(record, dict) else f"a {type(record).__name__}, not an object"
        raise ConfigError(f"data.text_field={cfg.text_field!r} is missing at {where}: the fields there are {fields}")
    text = record[cfg.text_field]
    if not isinstance(text, str):
        raise ConfigError(f"data.text_field={cfg.text_field!r} at {where} holds {type(text).__name__}, expected text")
    return text


def _file_records(cfg: DataConfig) -> Iterator[tuple[str, str]]:
    for name in matched_files(cfg):
        key = Path(name).as_posix()
        if not name.endswith(".jsonl"):
            yield key, _read_text(Path(name))
            continue
        with open(name, "rb") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{key}:{line_no}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where} is not valid JSON ({e.msg}): expected one JSON object per line") from e
                yield where, _text_of(record, cfg, where)


def _hf_cache_dirs(name: str) -> list[Path]:
    """Where ``datasets`` and ``huggingface_hub`` would keep a copy of hub dataset ``name``."""
    import datasets
    from datasets.naming import camelcase_to_snakecase
    from huggingface_hub import constants

    parts = name.split("/")
    snake = [*parts[:-1], camelcase_to_snakecase(parts[-1])]
    return [Path(datasets.config.HF_DATASETS_CACHE) / "___".join(p) for p in (parts, snake)] + [
        Path(constants.HF_HUB_CACHE) / ("datasets--" + name.replace("/", "--"))]


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hf(cfg: DataConfig) -> Any:
    """The ``hf`` dataset: a folder saved by ``save_to_disk``, a local data folder, or a hub name."""
    import datasets

    folder = Path(os.path.expanduser(cfg.name or ""))
    if folder.is_dir() and any((folder / f).is_file() for f in ("state.json", "dataset_dict.json")):
        ds = datasets.load_from_disk(str(folder))
        if isinstance(ds, datasets.DatasetDict):
            if cfg.split not in ds:
                raise ConfigError(f"data.split={cfg.split!r} is not a split of {cfg.name!r}: it has {list(ds)}")
            ds = ds[cfg.split]
        return ds
    # Checked before load_dataset because an unreachable hub costs ~23 s of its retries.
    reachable = folder.is_dir() or datasets.config.HF_HUB_OFFLINE or _hub_reachable()
    if not folder.is_dir() and not any(p.is_dir() for p in _hf_cache_dirs(cfg.name or "")):
        why = ("HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set, which prevents the download"
               if datasets.config.HF_HUB_OFFLINE else "" if reachable else
               "the Hugging Face Hub cannot be reached from this machine")
        if why:
            raise ConfigError(f"data.name={cfg.name!r}: the dataset is not cached (looked in "
                              f"{datasets.config.HF_DATASETS_CACHE}) and {why}: expected a cached dataset, a "
                              "folder saved with save_to_disk, or network access")
    elif not reachable:
        log.warning("the Hugging Face Hub cannot be reached: datasets will retry it (~20 s) before using the cache; "
                    "set HF_DATASETS_OFFLINE=1 to skip that")
    try:
        return datasets.load_dataset(cfg.name, cfg.config_name, split=cfg.split)
    except ConnectionError as e:
        raise ConfigError(f"data.name={cfg.name!r}: the dataset could not be loaded from the cache or the "
                          f"Hugging Face Hub ({e})") from e


def _hf_records(cfg: DataConfig) -> Iterator[tuple[str, str]]:
    ds = _load_hf(cfg)
    if cfg.text_field not in ds.column_names:
        raise ConfigError(f"data.text_field={cfg.text_field!r} is not a field of dataset {cfg.name!r}: "
                          f"its fields are {ds.column_names}")
    index = 0
    for batch in ds.select_columns([cfg.text_field]).iter(batch_size=1000):
        for text in batch[cfg.text_field]:
            where = f"row {index} of {cfg.name!r}"
            yield str(index), _text_of({cfg.text_field: text}, cfg, where)
            index += 1


def _records(cfg: DataConfig) -> Iterator[tuple[str, str]]:
    if cfg.source == "python-stdlib":
        return ((key, _read_text(path)) for key, path in stdlib_files())
    if cfg.source == "files":
        return _file_records(cfg)
    return _hf_records(cfg)


def is_validation_key(key: str, val_fraction: float) -> bool:
    """Whether the document with this key is held out: a hash of the key, read as a fraction, below ``val_fraction``.

    Example:
        >>> is_validation_key("os.py", 0.02) == is_validation_key("os.py", 0.02)
        True
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def _utf8_chunks(text: str) -> Iterator[bytes]:
    """``text`` encoded as UTF-8 a slice at a time; the slices join to ``text.encode("utf-8")``."""
    for start in range(0, len(text), _UTF8_CHARS):
        yield text[start : start + _UTF8_CHARS].encode("utf-8")


def utf8_size(text: str) -> int:
    """``len(text.encode("utf-8"))`` without making that copy (which for a 200 MB document is 200 MB more).

    Example:
        >>> utf8_size("abc"), utf8_size("é☃")
        (3, 5)
    """
    return len(text) if text.isascii() else sum(len(chunk) for chunk in _utf8_chunks(text))


def iter_documents(cfg: DataConfig) -> Iterator[Document]:
    """The corpus's documents in their fixed order, cut at ``cfg.max_bytes``, each marked train or validation.

    With two or more documents there is always at least one of each split: if the hash gives none, the last
    document changes sides (the only case where a document's split depends on the others).

    Example:
        >>> docs = list(iter_documents(DataConfig(max_bytes=100_000)))
        >>> docs[0].key, any(d.is_val for d in docs)
        ('__future__.py', True)
    """
    used, count, seen = 0, 0, set()
    pending: Document | None = None
    for key, text in _records(cfg):
        size = utf8_size(text)
        if cfg.max_bytes is not None and used + size > cfg.max_bytes:
            if count == 0:
                raise ConfigError(f"data.max_bytes={cfg.max_bytes} is smaller than the first document ({key}, "
                                  f"{size} bytes): expected at least {size}")
            break
        used += size
        count += 1
        if pending is not None:
            seen.add(pending.is_val)
            yield pending
        pending = Document(key, text, is_validation_key(key, cfg.val_fraction))
    if pending is not None:
        if count >= 2 and seen == {pending.is_val}:
            pending = replace(pending, is_val=not pending.is_val)
        yield pending


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def _scan(cfg: DataConfig) -> dict[str, Any]:
    """One pass over the corpus: fingerprint, a digest of the split, and sizes."""
    fingerprint = hashlib.sha256(f"source={cfg.source}\n".encode())
    split = hashlib.sha256()
    stats = dict(n_docs=0, n_train_docs=0, n_val_docs=0, n_bytes=0, n_train_bytes=0)
    for doc in iter_documents(cfg):
        key, size = doc.key.encode("utf-8"), utf8_size(doc.text)
        # Lengths first, so that no two different (key, text) sequences hash the same bytes.
        fingerprint.update(f"{len(key)}:{size}:".encode())
        fingerprint.update(key)
        for chunk in _utf8_chunks(doc.text):  # hashing the pieces in order hashes the whole text
            fingerprint.update(chunk)
        split.update(b"v" if doc.is_val else b"t")
        stats["n_docs"] += 1
        stats["n_val_docs" if doc.is_val else "n_train_docs"] += 1
        stats["n_bytes"] += size
        stats["n_train_bytes"] += 0 if doc.is_val else size
    if stats["n_train_docs"] == 0:
        raise ConfigError(f"data.source={cfg.source!r} gave no training documents ({stats['n_docs']} in all): "
                          "expected at least one non-empty document")
    return dict(stats, fingerprint=fingerprint.hexdigest(), split=split.hexdigest()[:16])


def corpus_fingerprint(cfg: DataConfig) -> str:
    """The corpus fingerprint alone (one read of the data, no tokenising): what ``training.json`` records.

    Example:
        >>> len(corpus_fingerprint(DataConfig(max_bytes=50_000)))
        64
    """
    return _scan(cfg)["fingerprint"]


def prepare_data(cfg: DataConfig, vocab_size: int, tokenizer: Tokenizer | None = None) -> PreparedData:
    """Read, split, fingerprint and tokenise the corpus, training (or reusing) a tokenizer of ``vocab_size``.

    The tokenizer and the token arrays are cached in ``cfg.cache_path``, so a second call with the same data is
    quick. Pass ``tokenizer`` to tokenise with an existing one (a model directory's) instead of training.

    Example:
        >>> data = prepare_data(DataConfig(max_bytes=300_000), 512)  # doctest: +SKIP
        >>> data.tokenizer.decode(data.train_tokens[:50].tolist())  # doctest: +SKIP
    """
    cache = cfg.cache_path
    cache.mkdir(parents=True, exist_ok=True)
    scan = _scan(cfg)
    corpus_key = _digest(FORMAT, scan["fingerprint"], scan["split"])[:24]
    if tokenizer is None:
        train_texts = lambda: (d.text for d in iter_documents(cfg) if not d.is_val)  # noqa: E731
        tokenizer, tok_path = cached_tokenizer(cache, corpus_key, vocab_size, train_texts,
                                               n_bytes=scan["n_train_bytes"], length=scan["n_train_docs"])
        tokenizer_path: str | None = str(tok_path)
    else:
        tokenizer_path = None
    eot_id = tokenizer.token_to_id(EOT)
    if eot_id is None:
        raise ValueError(f"the tokenizer has no {EOT} token: expected one (it separates documents)")
    dtype = np.dtype(np.uint16 if tokenizer.get_vocab_size() <= 2**16 else np.uint32)
    key = _digest(corpus_key, tokenizer_hash(tokenizer))[:24]
    paths = {split: cache / f"tokens-{key}.{split}.{dtype.name}" for split in ("train", "val")}
    meta_path = cache / f"tokens-{key}.json"
    if meta_path.is_file() and all(p.is_file() for p in paths.values()):
        log.info("cached tokens found at %s", meta_path)
        counts = json.loads(meta_path.read_text())["n_tokens"]
    else:
        log.info("tokenising %d documents (%.1f MB)...", scan["n_docs"], scan["n_bytes"] / 1e6)
        counts = write_token_arrays(iter_documents(cfg), tokenizer, paths, dtype, num_proc=cfg.num_proc)
        # Written last: its presence means both token files are complete.
        atomic_write_text(meta_path, json.dumps({"n_tokens": counts, "fingerprint": scan["fingerprint"]}))
        log.info("tokens written to %s (%d train, %d validation)", meta_path, counts["train"], counts["val"])
    info: dict[str, Any] = {k: scan[k] for k in ("n_docs", "n_train_docs", "n_val_docs", "n_bytes")}
    info.update(source=cfg.source, n_train_tokens=counts["train"], n_val_tokens=counts["val"],
                vocab_size=tokenizer.get_vocab_size(), tokenizer_path=tokenizer_path)
    if cfg.source == "python-stdlib":
        info["python_version"] = ".".join(map(str, sys.version_info[:3]))
    return PreparedData(tokenizer=tokenizer, train_tokens=open_token_array(paths["train"], dtype),
                        val_tokens=open_token_array(paths["val"], dtype), fingerprint=scan["fingerprint"],
                        eot_id=eot_id, info=info)


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats) of the token frequencies: the loss of the best model that ignores all context.

    Example:
        >>> round(unigram_entropy(np.array([0, 1, 0, 1], dtype=np.uint16), 4), 4)  # two equally likely tokens
        0.6931
    """
    if len(tokens) == 0:
        raise ValueError("tokens is empty: the unigram entropy needs at least one token")
    counts = np.zeros(vocab_size, dtype=np.int64)
    chunk = 1 << 22  # a memmap of billions of tokens is counted a slice at a time
    for start in range(0, len(tokens), chunk):
        part = np.asarray(tokens[start : start + chunk])
        top = int(part.max())
        if top >= vocab_size:
            raise ValueError(f"vocab_size={vocab_size} is too small: the tokens include id {top}")
        counts += np.bincount(part, minlength=vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


__all__ = ["Document", "PreparedData", "corpus_fingerprint", "is_validation_key", "iter_documents", "matched_files",
           "prepare_data", "stdlib_files", "stdlib_root", "unigram_entropy", "utf8_size"]
