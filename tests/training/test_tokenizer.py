"""The byte-level BPE tokenizer: exact round trips, the vocabulary size, the EOT token, caching and loading."""

import os
from pathlib import Path
from types import SimpleNamespace as Doc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.training.corpus import stdlib_files
from glassformer.training.tokenizer import (
    EOT,
    cached_tokenizer,
    load_tokenizer,
    open_token_array,
    tokenizer_hash,
    train_tokenizer,
    write_token_arrays,
)

VOCAB = 512


def _stdlib_texts(n_bytes: int) -> list[str]:
    """The first stdlib files, read independently of corpus.py, up to about ``n_bytes``."""
    texts, total = [], 0
    for _, path in stdlib_files():
        if total > n_bytes:
            break
        texts.append(path.read_bytes().decode("utf-8", errors="replace"))
        total += len(texts[-1])
    return texts


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(_stdlib_texts(200_000), VOCAB)


def test_tokenizer_has_the_requested_vocabulary_and_eot_first(tok):
    assert tok.get_vocab_size() == VOCAB
    assert tok.token_to_id(EOT) == 0


def test_tokenizer_round_trips_real_stdlib_files_exactly(tok):
    files = dict(stdlib_files())
    # Files the tokenizer never saw, including ones with non-ASCII text and replaced non-UTF-8 bytes.
    names = ["os.py", "typing.py", "test/test_unicode.py", "test/encoded_modules/module_koi8_r.py",
             "test/test_source_encoding.py", "encodings/cp1252.py"]
    checked = 0
    for name in names:
        if name not in files:
            continue
        text = files[name].read_bytes().decode("utf-8", errors="replace")
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text, name
        assert len(ids) < len(text.encode("utf-8")), "BPE should compress real code"
        checked += 1
    assert checked >= 3


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_tokenizer_round_trips_any_text(tok, text):
    assert tok.decode(tok.encode(text).ids) == text


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=20), st.text(max_size=20))
def test_literal_endoftext_in_a_document_stays_text(tok, before, after):
    text = before + EOT + after
    ids = tok.encode(text).ids
    assert 0 not in ids
    assert tok.decode(ids) == text


def test_every_byte_is_encodable_even_if_unseen(tok):
    text = bytes(range(256)).decode("latin-1") + "\x00\x7f\u2603\U0001F600"
    assert tok.decode(tok.encode(text).ids) == text


def test_vocab_size_below_the_byte_alphabet_is_refused():
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_tokenizer(["abc"], 100)


def test_training_is_deterministic():
    texts = _stdlib_texts(50_000)
    assert tokenizer_hash(train_tokenizer(texts, 300)) == tokenizer_hash(train_tokenizer(texts, 300))


def test_load_tokenizer_accepts_a_file_or_a_model_directory(tok, tmp_path):
    (tmp_path / "tokenizer.json").write_text(tok.to_str())
    for where in (tmp_path, tmp_path / "tokenizer.json", str(tmp_path)):
        loaded = load_tokenizer(where)
        assert tokenizer_hash(loaded) == tokenizer_hash(tok)
        # The literal separator must still encode as text after a load (the flag is not in the JSON).
        assert 0 not in loaded.encode(f"x{EOT}y").ids


def test_load_tokenizer_names_the_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_tokenizer(tmp_path / "nope")


def test_cached_tokenizer_trains_once_and_is_keyed_by_vocab_size(tmp_path):
    calls = []

    def texts():
        calls.append(1)
        return ["def f(x):\n    return x + 1\n"] * 30

    tok1, path1 = cached_tokenizer(tmp_path, "abc", 300, texts, n_bytes=100)
    mtime = os.stat(path1).st_mtime_ns
    tok2, path2 = cached_tokenizer(tmp_path, "abc", 300, texts, n_bytes=100)
    assert calls == [1]
    assert path1 == path2 and os.stat(path2).st_mtime_ns == mtime
    assert tokenizer_hash(tok1) == tokenizer_hash(tok2)
    _, path3 = cached_tokenizer(tmp_path, "abc", 310, texts, n_bytes=100)
    assert calls == [1, 1] and path3 != path1
    assert not [p for p in Path(tmp_path).iterdir() if p.name.endswith(".tmp")]


def test_token_arrays_hold_each_document_after_an_eot_and_refuse_a_too_small_dtype(tok, tmp_path):
    docs = [Doc(text="import os\n", is_val=False), Doc(text="", is_val=True), Doc(text="x = 1\n", is_val=False),
            Doc(text="y = 'é'\n", is_val=True)]
    paths = {"train": tmp_path / "train.bin", "val": tmp_path / "val.bin"}
    counts = write_token_arrays(docs, tok, paths, np.dtype(np.uint16))
    for split, want in (("train", [docs[0], docs[2]]), ("val", [docs[1], docs[3]])):
        ids = open_token_array(paths[split], np.dtype(np.uint16))
        assert len(ids) == counts[split]
        expected = [i for d in want for i in [0, *tok.encode(d.text).ids]]
        assert ids.tolist() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.bin", "val.bin"]
    with pytest.raises(ValueError, match="dtype=uint8"):
        write_token_arrays(docs, tok, paths, np.dtype(np.uint8))


def test_load_tokenizer_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"version": "1.0", "model": ')  # truncated mid-write by some other tool
    with pytest.raises(ValueError, match=r"tokenizer.json is not a readable tokenizer.json"):
        load_tokenizer(tmp_path)
