"""The corpus: sources, the hash split, the fingerprint, max_bytes, cached token arrays, unigram entropy, what the
tokenizer is trained on, and long documents."""

import collections
import hashlib
import json
import math
import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import glassformer.training.corpus as corpus
import glassformer.training.tokenizer as tokenizer_mod
from glassformer.archs.config import ConfigError
from glassformer.training.config import DataConfig
from glassformer.training.corpus import (
    corpus_fingerprint,
    is_validation_key,
    iter_documents,
    prepare_data,
    stdlib_files,
    stdlib_root,
    unigram_entropy,
    utf8_size,
)
from glassformer.training.tokenizer import EOT, tokenizer_hash

STDLIB_BYTES = 300_000


def files_cfg(tmp_path, *patterns, **kw):
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return DataConfig(source="files", paths=[str(tmp_path / p) for p in patterns], **kw)


def write_files(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (folder / f"mod_{i:03d}.py").write_text(f"def f{i}(x):\n    return x * {i}\n")


def decoded_split(data, tokens) -> str:
    return data.tokenizer.decode(np.asarray(tokens).tolist(), skip_special_tokens=False)


# ---------------------------------------------------------------- python-stdlib


@pytest.fixture(scope="module")
def stdlib_data(tmp_path_factory):
    cfg = DataConfig(max_bytes=STDLIB_BYTES, cache_dir=str(tmp_path_factory.mktemp("cache")))
    return cfg, prepare_data(cfg, 512)


def test_stdlib_files_are_sorted_relative_and_exclude_third_party_packages():
    files = stdlib_files()
    keys = [k for k, _ in files]
    assert keys == sorted(keys)
    assert "os.py" in keys and "json/decoder.py" in keys
    assert not any(k.startswith("/") or "site-packages" in k.split("/") or "dist-packages" in k.split("/")
                   for k in keys)
    # This interpreter keeps third-party packages inside the stdlib folder: make sure there were some to skip.
    site = stdlib_root() / "site-packages"
    if site.is_dir():
        assert any(site.rglob("*.py"))


def test_stdlib_documents_respect_max_bytes_and_keep_sorted_order():
    docs = list(iter_documents(DataConfig(max_bytes=STDLIB_BYTES)))
    keys = [d.key for d in docs]
    files = stdlib_files()
    assert keys == [k for k, _ in files[: len(keys)]]
    sizes = [len(p.read_bytes().decode("utf-8", errors="replace").encode()) for _, p in files[: len(keys) + 1]]
    assert sum(sizes[:-1]) <= STDLIB_BYTES < sum(sizes)
    assert any(d.is_val for d in docs) and not all(d.is_val for d in docs)


def test_non_utf8_stdlib_files_are_read_with_replacement_characters():
    files = dict(stdlib_files())
    name = "test/encoded_modules/module_koi8_r.py"
    if name not in files:
        pytest.skip(f"{name} is not in this interpreter's stdlib")
    cfg = DataConfig()
    doc = next(d for d in iter_documents(cfg) if d.key == name)
    assert "\ufffd" in doc.text


def test_stdlib_token_arrays_decode_to_the_documents_each_after_a_separator(stdlib_data):
    cfg, data = stdlib_data
    docs = list(iter_documents(cfg))
    assert data.eot_id == data.tokenizer.token_to_id(EOT)
    assert data.train_tokens.dtype == np.uint16 and data.train_tokens.ndim == 1
    assert decoded_split(data, data.train_tokens) == "".join(EOT + d.text for d in docs if not d.is_val)
    assert decoded_split(data, data.val_tokens) == "".join(EOT + d.text for d in docs if d.is_val)
    info = data.info
    assert info["source"] == "python-stdlib" and info["python_version"].count(".") == 2
    assert info["n_docs"] == len(docs) == info["n_train_docs"] + info["n_val_docs"]
    assert info["n_val_docs"] >= 1
    assert info["n_bytes"] == sum(len(d.text.encode()) for d in docs) <= STDLIB_BYTES
    assert info["n_train_tokens"] == len(data.train_tokens) and info["n_val_tokens"] == len(data.val_tokens)


def test_second_prepare_reuses_the_cache_without_retraining_or_retokenising(stdlib_data, monkeypatch):
    cfg, first = stdlib_data
    cached = sorted(p for p in cfg.cache_path.iterdir())
    mtimes = {p: p.stat().st_mtime_ns for p in cached}

    def refuse(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(tokenizer_mod, "train_tokenizer", refuse)
    monkeypatch.setattr(corpus, "write_token_arrays", refuse)
    again = prepare_data(cfg, 512)
    assert again.fingerprint == first.fingerprint
    assert np.array_equal(again.train_tokens, first.train_tokens)
    assert sorted(cfg.cache_path.iterdir()) == cached
    assert {p: p.stat().st_mtime_ns for p in cached} == mtimes


def test_unigram_entropy_of_the_stdlib_is_below_the_uniform_bound(stdlib_data):
    _, data = stdlib_data
    h = unigram_entropy(data.train_tokens, 512)
    assert 1.0 < h < math.log(512)


# ---------------------------------------------------------------- split


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1), st.floats(0.001, 0.999), st.floats(0.001, 0.999))
def test_split_by_key_is_deterministic_and_monotone_in_the_fraction(key, f1, f2):
    lo, hi = sorted((f1, f2))
    assert is_validation_key(key, lo) == is_validation_key(key, lo)
    assert not is_validation_key(key, lo) or is_validation_key(key, hi)


def test_split_rate_is_close_to_the_fraction():
    rate = np.mean([is_validation_key(f"pkg/module_{i}.py", 0.02) for i in range(20_000)])
    assert 0.015 < rate < 0.025


def test_split_is_deterministic_disjoint_and_stable_when_files_are_added(tmp_path):
    write_files(tmp_path / "src", 60)
    cfg = files_cfg(tmp_path, "src/*.py", val_fraction=0.2)
    first = {d.key: d.is_val for d in iter_documents(cfg)}
    assert first == {d.key: d.is_val for d in iter_documents(cfg)}
    val = {k for k, v in first.items() if v}
    train = set(first) - val
    assert val and train and not val & train and len(first) == 60
    write_files(tmp_path / "src", 40, start=60)
    after = {d.key: d.is_val for d in iter_documents(cfg)}
    assert len(after) == 100
    assert {k: after[k] for k in first} == first


@pytest.mark.parametrize("fraction, want_val", [(1e-9, True), (1 - 1e-9, False)])
def test_two_documents_always_give_one_of_each_split(tmp_path, fraction, want_val):
    write_files(tmp_path / "src", 2)
    docs = list(iter_documents(files_cfg(tmp_path, "src/*.py", val_fraction=fraction)))
    assert sorted(d.is_val for d in docs) == [False, True]
    assert docs[-1].is_val == want_val  # the last document is the one that changes sides


# ---------------------------------------------------------------- files source


def test_files_source_reads_plain_files_and_jsonl_lines(tmp_path):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.py").write_text("print('a')\n")
    (tmp_path / "data" / "sub" / "b.txt").write_text("plain text\n")
    records = [{"text": "first", "id": 1}, None, {"text": "third\nline", "id": 3}]
    (tmp_path / "data" / "c.jsonl").write_text("\n".join(json.dumps(r) if r else "" for r in records) + "\n")
    cfg = files_cfg(tmp_path, "data/**/*.py", "data/**/*.txt", "data/*.jsonl", "data/a.py")
    docs = list(iter_documents(cfg))
    base = (tmp_path / "data").as_posix()
    assert [(d.key, d.text) for d in docs] == [
        (f"{base}/a.py", "print('a')\n"),
        (f"{base}/c.jsonl:1", "first"),
        (f"{base}/c.jsonl:3", "third\nline"),
        (f"{base}/sub/b.txt", "plain text\n"),
    ]


def test_relative_patterns_give_relative_keys_and_a_machine_independent_fingerprint(tmp_path, monkeypatch):
    prints = []
    for where in ("one", "two"):
        write_files(tmp_path / where / "src", 5)
        monkeypatch.chdir(tmp_path / where)
        cfg = DataConfig(source="files", paths=["src/*.py"])
        assert [d.key for d in iter_documents(cfg)][0] == "src/mod_000.py"
        prints.append(corpus_fingerprint(cfg))
    assert prints[0] == prints[1]


def test_jsonl_without_the_text_field_names_the_field_and_the_fields_present(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"content": "x", "id": 1}) + "\n")
    with pytest.raises(ConfigError, match=r"data.text_field='text'.*\['content', 'id'\]"):
        list(iter_documents(files_cfg(tmp_path, "d.jsonl")))


def test_a_pattern_matching_nothing_is_a_config_error_naming_data_paths(tmp_path):
    with pytest.raises(ConfigError, match=r"data.paths=.*nothing_here/\*\*/\*.py"):
        list(iter_documents(files_cfg(tmp_path, "nothing_here/**/*.py")))


def test_max_bytes_smaller_than_the_first_document_names_data_max_bytes(tmp_path):
    write_files(tmp_path / "src", 2)
    with pytest.raises(ConfigError, match="data.max_bytes=5"):
        list(iter_documents(files_cfg(tmp_path, "src/*.py", max_bytes=5)))


def test_fingerprint_changes_with_one_byte_and_not_with_mtime(tmp_path):
    write_files(tmp_path / "src", 4)
    cfg = files_cfg(tmp_path, "src/*.py")
    target = tmp_path / "src" / "mod_002.py"
    base = corpus_fingerprint(cfg)
    original = target.read_bytes()
    os.utime(target, (1, 1))
    assert corpus_fingerprint(cfg) == base
    target.write_bytes(original[:-2] + b"8" + original[-1:])
    assert corpus_fingerprint(cfg) != base
    target.write_bytes(original)
    assert corpus_fingerprint(cfg) == base
    (tmp_path / "src" / "mod_002.py").rename(tmp_path / "src" / "mod_002b.py")
    assert corpus_fingerprint(cfg) != base


def test_files_prepare_decodes_back_and_honours_a_given_tokenizer(tmp_path):
    write_files(tmp_path / "src", 30)
    cfg = files_cfg(tmp_path, "src/*.py", val_fraction=0.1)
    data = prepare_data(cfg, 300)
    docs = list(iter_documents(cfg))
    assert decoded_split(data, data.train_tokens) == "".join(EOT + d.text for d in docs if not d.is_val)
    assert decoded_split(data, data.val_tokens) == "".join(EOT + d.text for d in docs if d.is_val)
    assert Path(data.info["tokenizer_path"]).is_file()
    given = prepare_data(cfg, 300, tokenizer=data.tokenizer)
    assert given.info["tokenizer_path"] is None
    assert np.array_equal(given.train_tokens, data.train_tokens)
    assert not [p for p in cfg.cache_path.iterdir() if p.name.startswith(".")]


def test_tokenising_in_two_processes_gives_the_same_arrays(tmp_path):
    write_files(tmp_path / "src", 12)
    one = prepare_data(files_cfg(tmp_path, "src/*.py", cache_dir=str(tmp_path / "c1")), 300)
    two = prepare_data(files_cfg(tmp_path, "src/*.py", cache_dir=str(tmp_path / "c2"), num_proc=2), 300)
    assert np.array_equal(one.train_tokens, two.train_tokens)
    assert np.array_equal(one.val_tokens, two.val_tokens)


# ---------------------------------------------------------------- hf source


def test_hf_offline_and_uncached_fails_at_once_without_touching_the_hub(monkeypatch):
    import datasets

    def no_hub(*args, **kwargs):
        raise AssertionError("load_dataset should not be tried for a dataset that is not cached")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    with pytest.raises(ConfigError, match=r"data.name='nobody/no-such-dataset'.*not cached.*HF_DATASETS_OFFLINE"):
        list(iter_documents(DataConfig(source="hf", name="nobody/no-such-dataset")))


def test_hf_online_but_unreachable_and_uncached_fails_at_once(monkeypatch):
    import datasets

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the hub should not be tried"))
    with pytest.raises(ConfigError, match="not cached.*cannot be reached"):
        list(iter_documents(DataConfig(source="hf", name="nobody/no-such-dataset")))


def test_hf_dataset_found_in_the_local_cache_is_loaded_through_datasets(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    (tmp_path / "somebody___small_code" / "default" / "0.0.0" / "abc").mkdir(parents=True)
    calls = []

    def fake_load(name, config_name, split):
        calls.append((name, config_name, split))
        return datasets.Dataset.from_dict({"text": ["a = 1\n", "b = 2\n"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    docs = list(iter_documents(DataConfig(source="hf", name="somebody/SmallCode", config_name="python",
                                          split="train")))
    assert calls == [("somebody/SmallCode", "python", "train")]
    assert [d.text for d in docs] == ["a = 1\n", "b = 2\n"]


def test_hf_saved_dataset_folder_gives_rows_in_order(tmp_path):
    import datasets

    texts = [f"x = {i}\n" for i in range(10)]
    datasets.Dataset.from_dict({"code": texts, "n": list(range(10))}).save_to_disk(str(tmp_path / "ds"))
    docs = list(iter_documents(DataConfig(source="hf", name=str(tmp_path / "ds"), text_field="code")))
    assert [(d.key, d.text) for d in docs] == [(str(i), t) for i, t in enumerate(texts)]
    with pytest.raises(ConfigError, match=r"data.text_field='text'.*\['code', 'n'\]"):
        list(iter_documents(DataConfig(source="hf", name=str(tmp_path / "ds"))))


# ---------------------------------------------------------------- unigram entropy


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=300))
def test_unigram_entropy_matches_the_counted_distribution(ids):
    counts = collections.Counter(ids)
    n = len(ids)
    expected = -sum(c / n * math.log(c / n) for c in counts.values())
    assert unigram_entropy(np.array(ids, dtype=np.uint16), 16) == pytest.approx(expected, abs=1e-9)


def test_unigram_entropy_refuses_ids_beyond_the_vocabulary_and_empty_input():
    with pytest.raises(ValueError, match="vocab_size=4"):
        unigram_entropy(np.array([0, 7], dtype=np.uint16), 4)
    with pytest.raises(ValueError, match="empty"):
        unigram_entropy(np.array([], dtype=np.uint16), 4)


# ---------------------------------------------------------------- what the tokenizer is trained on


def test_the_tokenizer_is_trained_on_training_documents_only(tmp_path, monkeypatch):
    write_files(tmp_path / "src", 12)
    cfg = files_cfg(tmp_path, "src/*.py", val_fraction=0.3)
    docs = list(iter_documents(cfg))
    val = [Path(d.key) for d in docs if d.is_val]
    assert val and len(val) < len(docs)
    # A word no training document holds, often enough in the validation documents to be merged if they leaked.
    planted = "qxqzjqxqzj"
    for path in val:
        path.write_text(f"{planted} = {planted}({planted})\n" * 100)
    seen: list[str] = []
    real = tokenizer_mod.train_tokenizer

    def recording(texts, *args, **kwargs):
        texts = list(texts)
        seen.extend(texts)
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(tokenizer_mod, "train_tokenizer", recording)
    data = prepare_data(cfg, 400)
    docs = list(iter_documents(cfg))
    assert seen == [d.text for d in docs if not d.is_val]
    # Byte-level tokens spell ASCII letters as themselves.
    assert [t for t in data.tokenizer.get_vocab() if "qx" in t or "zj" in t] == []
    assert planted in decoded_split(data, data.val_tokens)


# ---------------------------------------------------------------- long documents


def test_fingerprint_is_the_documented_hash_for_long_non_ascii_documents(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "_UTF8_CHARS", 7)  # hashed in many slices, some cutting between multi-byte chars
    (tmp_path / "src").mkdir()
    texts = {"a.py": "π = 3.14159  # ½ τ\n" * 40, "b.py": "x = 1\n", "c.py": ""}
    for name, text in texts.items():
        (tmp_path / "src" / name).write_text(text, encoding="utf-8")
    cfg = files_cfg(tmp_path, "src/*.py")
    want = hashlib.sha256(b"source=files\n")
    for name, text in texts.items():
        key, data = (tmp_path / "src" / name).as_posix().encode(), text.encode("utf-8")
        want.update(f"{len(key)}:{len(data)}:".encode() + key + data)
    assert corpus_fingerprint(cfg) == want.hexdigest()
    # max_bytes counts UTF-8 bytes: b.py's 6 bytes no longer fit (they would if a.py's characters were counted).
    docs = list(iter_documents(replace(cfg, max_bytes=len(texts["a.py"].encode()) + 5)))
    assert [Path(d.key).name for d in docs] == ["a.py"]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.text(), st.integers(1, 9))
def test_utf8_size_is_the_encoded_length(text, chunk):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(corpus, "_UTF8_CHARS", chunk)
        assert utf8_size(text) == len(text.encode("utf-8"))


def test_long_documents_in_pieces_give_the_tokenizer_and_token_arrays_of_whole_ones(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    for i, (_, path) in enumerate(stdlib_files()[:8]):
        (tmp_path / "src" / f"m{i}.py").write_bytes(path.read_bytes())
    (tmp_path / "src" / "long.py").write_text("".join(_read(p) for _, p in stdlib_files()[8:40]))
    whole = prepare_data(files_cfg(tmp_path, "src/*.py", val_fraction=0.3, cache_dir=str(tmp_path / "c1")), 400)
    monkeypatch.setattr(tokenizer_mod, "PIECE_CHARS", 300)
    pieces = prepare_data(files_cfg(tmp_path, "src/*.py", val_fraction=0.3, cache_dir=str(tmp_path / "c2")), 400)
    assert tokenizer_hash(pieces.tokenizer) == tokenizer_hash(whole.tokenizer)
    assert np.array_equal(pieces.train_tokens, whole.train_tokens)
    assert np.array_equal(pieces.val_tokens, whole.val_tokens)
    # And both are the documents encoded whole, each after one EOT.
    docs = list(iter_documents(files_cfg(tmp_path, "src/*.py", val_fraction=0.3)))
    assert any(len(d.text) > 300 for d in docs if not d.is_val) and any(d.is_val for d in docs)
    for split, tokens in (("train", pieces.train_tokens), ("val", pieces.val_tokens)):
        want = [i for d in docs if d.is_val == (split == "val") for i in [0, *whole.tokenizer.encode(d.text).ids]]
        assert tokens.tolist() == want, split
    assert sorted(p.name for p in (tmp_path / "c1").iterdir()) == sorted(p.name for p in (tmp_path / "c2").iterdir())


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")
