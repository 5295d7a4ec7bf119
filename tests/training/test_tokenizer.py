"""The byte-level BPE tokenizer: exact round trips, the vocabulary size, the EOT token, caching and loading, and
long documents in pieces with the ids and the tokenizer of the whole."""

import os
from pathlib import Path
from types import SimpleNamespace as Doc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import glassformer.training.tokenizer as tokenizer_mod
from glassformer.training.corpus import stdlib_files
from glassformer.training.tokenizer import (
    EOT,
    cached_tokenizer,
    load_tokenizer,
    open_token_array,
    split_document,
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


# ---------------------------------------------------------------- long documents in pieces

# Characters around the pre-tokenizer's decisions: each kind of whitespace (\x1c-\x1f are whitespace to Python but
# not to the pre-tokenizer's regex), contractions, letters, digits, punctuation, a non-ASCII letter.
_TRICKY = list(" \n\t\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000'sdtlmrve!(1_.\u00e9")
# Code-like text: words and runs of whitespace, so that long stretches without a cut come up too.
_RUNS = ["\n", " ", "  ", "\n\n", "\n    ", "\t", "\r\n", "\x1c", "\u3000", "ab", "x", "'s", "12", "((", ").", "\u00e9"]
_TEXTS = st.one_of(st.text(st.one_of(st.sampled_from(_TRICKY), st.characters()), max_size=200),
                   st.lists(st.sampled_from(_RUNS), max_size=80).map("".join))


def _ids(tok, pieces) -> list[int]:
    return [i for piece in pieces for i in tok.encode(piece).ids]


def _cut_allowed(before: str, after: str) -> bool:
    """The rule, restated for the test: a piece starts with a newline or space that follows a non-whitespace."""
    return after[:1] in ("\n", " ") and before != "" and not before[-1].isspace()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_TEXTS, st.integers(1, 40))
def test_pieces_of_any_text_give_the_ids_of_the_whole_text(tok, text, max_chars):
    pieces = list(split_document(text, max_chars))
    assert "".join(pieces) == text
    assert _ids(tok, pieces) == tok.encode(text).ids
    for i, piece in enumerate(pieces):
        if i:
            assert _cut_allowed(pieces[i - 1], piece)
        # Longer than max_chars only when there was nowhere to cut within reach.
        if len(piece) > max_chars:
            assert not any(_cut_allowed(piece[:j], piece[j:]) for j in range(1, max_chars + 1))


def test_pieces_of_real_python_source_give_its_ids_and_respect_the_size(tok):
    text = "".join(_stdlib_texts(300_000))
    whole = tok.encode(text).ids
    for max_chars in (200, 1000, 4096):
        pieces = list(split_document(text, max_chars))
        assert len(pieces) > len(text) // max_chars
        assert max(len(p) for p in pieces) <= max_chars
        assert "".join(pieces) == text
        assert _ids(tok, pieces) == whole, max_chars


def test_short_text_is_one_piece_and_a_text_with_nowhere_to_cut_stays_whole():
    text = "x = 1\n"
    assert list(split_document(text, len(text))) == [text]
    assert list(split_document("")) == [""]
    for nowhere in ("ab(" * 20, "\n \t" * 20):
        assert list(split_document(nowhere, 10)) == [nowhere]
    # Beyond reach, the first cut after it.
    assert list(split_document("a" * 50 + "\n\nb c", 10)) == ["a" * 50, "\n\nb c"]
    with pytest.raises(ValueError, match="max_chars=0"):
        list(split_document("abc", 0))


def test_training_on_pieces_gives_the_tokenizer_of_whole_documents():
    texts = ["".join(_stdlib_texts(100_000))] + _stdlib_texts(20_000)
    whole = train_tokenizer(texts, 400, max_piece_chars=10**9)
    assert tokenizer_hash(train_tokenizer(texts, 400, max_piece_chars=300)) == tokenizer_hash(whole)
    with pytest.raises(ValueError, match="max_piece_chars=-1"):
        train_tokenizer(texts, 400, max_piece_chars=-1)


def test_long_documents_are_written_in_pieces_with_one_eot_and_their_whole_ids(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer_mod, "_ENCODE_CHARS", 700)  # a batch of pieces is encoded in several calls
    long_doc = "".join(_stdlib_texts(60_000))
    docs = [Doc(text="import os\n", is_val=False), Doc(text=long_doc, is_val=False), Doc(text=long_doc, is_val=True),
            Doc(text="x = 1\n", is_val=False)]
    paths = {"train": tmp_path / "train.bin", "val": tmp_path / "val.bin"}
    write_token_arrays(docs, tok, paths, np.dtype(np.uint16), max_piece_chars=500)
    for split, want in (("train", [docs[0], docs[1], docs[3]]), ("val", [docs[2]])):
        expected = [i for d in want for i in [0, *tok.encode(d.text).ids]]
        assert open_token_array(paths[split], np.dtype(np.uint16)).tolist() == expected
