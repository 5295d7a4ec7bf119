"""A byte-level BPE tokenizer trained with ``tokenizers`` and cached; tokenising documents into token arrays.

Byte-level means every string is first mapped to bytes, so any text (any Python source, any Unicode) encodes
and decodes back exactly; BPE then merges frequent byte pairs up to the model's ``d_vocab``. The only special
token is ``<|endoftext|>`` (id 0), which separates documents in the token arrays. The literal text
``<|endoftext|>`` inside a document is encoded as ordinary bytes (``encode_special_tokens``), so a file that
talks about GPT-2's separator cannot forge one and still round-trips.

Long documents are trained on and tokenised in pieces (:func:`split_document`), cut only where the byte-level
pre-tokenizer cuts anyway, so the ids and the trained tokenizer are those of the whole document while memory stays
bounded by the piece size rather than by the document's.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

log = logging.getLogger("glassformer")

EOT = "<|endoftext|>"
"""The end-of-text token: separates documents in the token arrays and starts unprompted generation."""

# The first cut of split_document beyond its reach: a newline or space after a non-whitespace character.
_NEXT_BREAK = re.compile(r"(?<=\S)[\n ]")
# 256 byte tokens plus the end-of-text token: the smallest vocabulary that can still encode everything.
MIN_VOCAB = 257
_SHARD_BYTES = 16 * 2**20  # text tokenised per datasets shard (times num_proc): bounds memory on any corpus
# Text per encode_batch_fast call: its Encodings cost about 100-140 bytes per byte of text (measured), ~150 MB here.
_ENCODE_CHARS = 2**20
PIECE_CHARS = 2**16
"""Documents longer than this many characters are split into pieces of at most this size (see split_document)."""


def _empty_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    # No prefix space: it would add a byte to every document and break exact round trips.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _check_vocab_size(vocab_size: int) -> None:
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size={vocab_size!r} is not allowed: expected an integer >= {MIN_VOCAB} "
                         "(256 bytes plus <|endoftext|>); it comes from model.d_vocab")


def _piece_chars(name: str, value: int | None) -> int:
    """``value``, or PIECE_CHARS for None (read at call time, so that tests can lower it for a whole pipeline)."""
    value = PIECE_CHARS if value is None else value
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed: expected a positive integer (characters per piece)")
    return value


def _break_in(text: str, lo: int, hi: int) -> int:
    """The last index in ``(lo, hi]`` where a piece may start (see :func:`split_document`), or -1 if none."""
    for char in "\n ":  # newlines first: pieces that end at a line end are easier to read when debugging
        at = text.rfind(char, lo + 1, hi + 1)
        while at != -1 and text[at - 1].isspace():
            at = text.rfind(char, lo + 1, at)
        if at != -1:
            return at
    return -1


def split_document(text: str, max_chars: int | None = None) -> Iterator[str]:
    """``text`` in consecutive pieces of at most ``max_chars`` characters whose ids, concatenated, are its ids.

    A piece starts only at a newline or space whose preceding character is not whitespace. The byte-level
    pre-tokenizer (the GPT-2 regex) always starts a pre-token there: no pre-token runs from non-whitespace into
    whitespace, and the pre-tokens on either side look at no character across that point (the regex's only
    lookahead, in ``\\s+(?!\\S)``, follows whitespace, and there is none just before the cut). So the pieces
    pre-tokenise, hence encode and train, exactly as the whole text. Python's ``str.isspace`` is a superset of the
    regex's ``\\s`` (it adds \\x1c-\\x1f), so the test errs on the safe side. Text up to ``max_chars`` (default
    :data:`PIECE_CHARS`) is yielded whole; a stretch of more than ``max_chars`` with no such point becomes one
    longer piece.

    Example:
        >>> list(split_document("def f():\\n    return 1\\n", 12))
        ['def f():', '\\n    return', ' 1\\n']
    """
    max_chars = _piece_chars("max_chars", max_chars)
    start = 0
    while len(text) - start > max_chars:
        cut = _break_in(text, start, start + max_chars)
        if cut == -1:  # none in reach: the next one after it, or the whole rest
            found = _NEXT_BREAK.search(text, start + max_chars + 1)
            if found is None:
                break
            cut = found.start()
        yield text[start:cut]
        start = cut
    yield text[start:]


def _pieces(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    for text in texts:
        yield from split_document(text, max_chars)


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, length: int | None = None,
                    max_piece_chars: int | None = None) -> Tokenizer:
    """Train a byte-level BPE tokenizer of at most ``vocab_size`` tokens on ``texts``.

    ``length`` (the number of texts, if known) only feeds the progress bar. The vocabulary can come out smaller
    than asked for when the texts run out of pairs worth merging. Texts longer than ``max_piece_chars`` are fed to
    the trainer in pieces (:func:`split_document`; default :data:`PIECE_CHARS`): BPE training depends only on the
    count of each pre-token, which the pieces leave unchanged, so the tokenizer is the same as from whole texts,
    with memory bounded per piece.

    Example:
        >>> tok = train_tokenizer(["def f(x):\\n    return x\\n"] * 20, 300)
        >>> tok.decode(tok.encode("def g(y): return y").ids)
        'def g(y): return y'
    """
    _check_vocab_size(vocab_size)
    max_piece_chars = _piece_chars("max_piece_chars", max_piece_chars)
    tok = _empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        # The whole byte alphabet, even bytes the corpus never shows, so that any text stays encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=sys.stderr.isatty(),
    )
    tok.train_from_iterator(_pieces(texts, max_piece_chars), trainer, length=length)
    tok.encode_special_tokens = True
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer from a ``tokenizer.json`` file or from a model directory holding one.

    Example:
        >>> tok = load_tokenizer("runs/demo/tiny")  # doctest: +SKIP
        >>> tok.token_to_id(EOT)  # doctest: +SKIP
        0
    """
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer at {file}: expected a tokenizer.json file or a model directory "
                                "holding one")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception for a file it cannot parse
        raise ValueError(f"{file} is not a readable tokenizer.json ({e}); retrain it or copy it from the run "
                         "that wrote the model") from None
    # Not stored in tokenizer.json, so it must be restored on every load (see the module docstring).
    tok.encode_special_tokens = True
    return tok


def tokenizer_hash(tok: Tokenizer) -> str:
    """sha256 of the tokenizer's JSON: two tokenizers with the same hash tokenise identically.

    Example:
        >>> tok = train_tokenizer(["abc abc abd"] * 5, 260)
        >>> tokenizer_hash(tok) == tokenizer_hash(Tokenizer.from_str(tok.to_str()))
        True
    """
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it, so readers never see half a file.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.json"
        >>> atomic_write_text(p, "{}"); p.read_text()
        '{}'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cached_tokenizer(cache_dir: Path, key: str, vocab_size: int, texts: Callable[[], Iterable[str]], *,
                     n_bytes: int, length: int | None = None) -> tuple[Tokenizer, Path]:
    """The tokenizer cached under ``key`` and ``vocab_size`` in ``cache_dir``, trained on ``texts()`` if absent.

    ``key`` identifies the training text (the corpus fingerprint and its split); ``n_bytes`` is only reported.

    Example:
        >>> import tempfile
        >>> tok, path = cached_tokenizer(Path(tempfile.mkdtemp()), "k", 260, lambda: ["a b c"] * 3, n_bytes=15)
        >>> path.name
        'tokenizer-k-v260.json'
    """
    _check_vocab_size(vocab_size)
    path = Path(cache_dir) / f"tokenizer-{key}-v{vocab_size}.json"
    if path.is_file():
        log.info("cached tokenizer found at %s", path)
        return load_tokenizer(path), path
    log.info("training tokenizer on %.1f MB (vocabulary %d)...", n_bytes / 1e6, vocab_size)
    tok = train_tokenizer(texts(), vocab_size, length=length)
    atomic_write_text(path, tok.to_str())
    log.info("tokenizer (%d tokens) written to %s", tok.get_vocab_size(), path)
    return tok, path


def _shards(documents: Iterable[Any], shard_chars: int, piece_chars: int) -> Iterator[dict[str, list[Any]]]:
    """The documents' pieces in groups of about ``shard_chars`` of text, as columns for ``Dataset.from_dict``.

    ``first`` marks the first piece of each document: the place of its EOT in the token arrays.
    """
    columns: dict[str, list[Any]] = {"text": [], "is_val": [], "first": []}
    size = 0
    for doc in documents:
        for i, piece in enumerate(split_document(doc.text, piece_chars)):
            columns["text"].append(piece)
            columns["is_val"].append(doc.is_val)
            columns["first"].append(i == 0)
            size += len(piece)
            if size >= shard_chars:
                yield columns
                columns, size = {"text": [], "is_val": [], "first": []}, 0
    if columns["text"]:
        yield columns


class _Encoder:
    """The ``datasets.map`` function: a picklable holder of the tokenizer's JSON, built once per process."""

    def __init__(self, tokenizer_json: str):
        self.tokenizer_json, self._tok = tokenizer_json, None

    def __getstate__(self) -> dict[str, Any]:
        return {"tokenizer_json": self.tokenizer_json, "_tok": None}

    def __call__(self, texts: list[str], is_val: list[bool], first: list[bool]) -> Any:
        import pyarrow as pa

        if self._tok is None:
            self._tok = Tokenizer.from_str(self.tokenizer_json)
            self._tok.encode_special_tokens = True
        lengths: list[int] = []
        parts = [np.zeros(0, dtype=np.int32)]
        start = 0
        while start < len(texts):
            # A few texts per call, so that only about _ENCODE_CHARS of Encodings exist at once.
            end, size = start + 1, len(texts[start])
            while end < len(texts) and size + len(texts[end]) <= _ENCODE_CHARS:
                size += len(texts[end])
                end += 1
            # encode_batch_fast skips the offsets, which nothing here needs.
            ids = [e.ids for e in self._tok.encode_batch_fast(texts[start:end], add_special_tokens=False)]
            lengths += [len(x) for x in ids]
            parts.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=sum(lengths[start:])))
            start = end
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(parts)
        # An Arrow table, not nested lists: datasets would otherwise inspect every id in Python (seconds per MB).
        return pa.table({"ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)),
                         "is_val": pa.array(is_val, type=pa.bool_()), "first": pa.array(first, type=pa.bool_())})


def _write_split(table: Any, f: Any, eot_id: int, dtype: np.dtype) -> int:
    """Append the pieces of an Arrow table to ``f``, each document's first preceded by EOT; return the tokens written."""
    if table.num_rows == 0:
        return 0
    ids = table.column("ids").combine_chunks()
    values = ids.flatten().to_numpy(zero_copy_only=False)
    offsets = ids.offsets.to_numpy()
    first = table.column("first").to_numpy().astype(bool, copy=False)
    starts = (offsets[:-1] - offsets[0])[first]
    out = np.insert(values.astype(dtype, copy=False), starts, eot_id)
    out.tofile(f)
    return len(out)


def write_token_arrays(documents: Iterable[Any], tok: Tokenizer, paths: dict[str, Path], dtype: np.dtype, *,
                       num_proc: int = 1, max_piece_chars: int | None = None) -> dict[str, int]:
    """Tokenise ``documents`` (objects with ``.text`` and ``.is_val``) through ``datasets`` into two flat files.

    ``paths["train"]`` and ``paths["val"]`` receive ``EOT doc EOT doc ...`` as raw ``dtype`` ids; they appear
    only when complete (written in a temporary folder beside them, then renamed). Documents go through
    ``datasets`` a shard at a time, so memory stays bounded whatever their total size, and documents longer than
    ``max_piece_chars`` go in pieces (:func:`split_document`, same ids), so it stays bounded whatever their size
    too, beyond the document's own text. Returns the token count of each split.

    Example:
        >>> import tempfile; from types import SimpleNamespace as Doc
        >>> tok = train_tokenizer(["x = 1\\n"] * 5, 260); d = Path(tempfile.mkdtemp())
        >>> paths = {"train": d / "train.bin", "val": d / "val.bin"}
        >>> write_token_arrays([Doc(text="x = 1", is_val=False)], tok, paths, np.dtype(np.uint16))["val"]
        0
    """
    import datasets
    import pyarrow.compute as pc

    if tok.get_vocab_size() > np.iinfo(dtype).max + 1:
        raise ValueError(f"dtype={np.dtype(dtype).name} cannot hold the ids of a {tok.get_vocab_size()}-token "
                         "vocabulary: expected uint32")
    max_piece_chars = _piece_chars("max_piece_chars", max_piece_chars)
    eot_id = tok.token_to_id(EOT)
    encoder = _Encoder(tok.to_str())
    columns = ["text", "is_val", "first"]
    features = datasets.Features({"text": datasets.Value("string"), "is_val": datasets.Value("bool"),
                                  "first": datasets.Value("bool")})
    counts = {"train": 0, "val": 0}
    # Beside the destination, so that the final rename never crosses file systems.
    with tempfile.TemporaryDirectory(dir=Path(paths["train"]).parent, prefix=".tmp-tokens-") as tmp:
        tmp_paths = {split: Path(tmp) / f"{split}.bin" for split in counts}
        with open(tmp_paths["train"], "wb") as f_train, open(tmp_paths["val"], "wb") as f_val:
            for i, shard in enumerate(_shards(documents, _SHARD_BYTES * num_proc, max_piece_chars)):
                # Each shard's Arrow files are deleted once written out, so memory and disk stay bounded.
                shard_dir = Path(tmp) / f"shard-{i}"
                shard_dir.mkdir()
                ds = datasets.Dataset.from_dict(shard, features=features).map(
                    encoder, batched=True, batch_size=64, writer_batch_size=64, input_columns=columns,
                    remove_columns=columns, num_proc=num_proc if num_proc > 1 else None,
                    cache_file_name=str(shard_dir / "ids.arrow"), new_fingerprint=f"ids-{uuid.uuid4().hex}",
                    desc=f"tokenising shard {i + 1}")
                for batch in ds.with_format("arrow").iter(batch_size=256):
                    is_val = batch.column("is_val")
                    counts["train"] += _write_split(batch.filter(pc.invert(is_val)), f_train, eot_id, dtype)
                    counts["val"] += _write_split(batch.filter(is_val), f_val, eot_id, dtype)
                del ds, shard
                shutil.rmtree(shard_dir)
        for split, path in tmp_paths.items():
            os.replace(path, paths[split])
    return counts


def open_token_array(path: Path, dtype: np.dtype) -> np.ndarray:
    """A read-only memory map of a token file written by :func:`write_token_arrays` (empty files allowed).

    Example:
        >>> import tempfile; p = Path(tempfile.mkdtemp()) / "t.bin"; np.arange(3, dtype=np.uint16).tofile(p)
        >>> open_token_array(p, np.dtype(np.uint16)).tolist()
        [0, 1, 2]
    """
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)  # mmap refuses empty files
    return np.memmap(path, dtype=dtype, mode="r")


__all__ = ["EOT", "MIN_VOCAB", "PIECE_CHARS", "atomic_write_text", "cached_tokenizer", "load_tokenizer",
           "open_token_array", "split_document", "tokenizer_hash", "train_tokenizer", "write_token_arrays"]
