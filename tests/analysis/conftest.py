"""Fixtures for the analysis tests: a Python-trained BPE tokenizer (cached), small model directories.

Torch runs on one thread here: under ``pytest -n 2`` on two shared cores, OpenMP threads of two workers spin
against each other and a 25 ms step can take a second.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
import torch

BPE_VOCAB = 4096
BPE_BYTES = 3_000_000


def cache_dir() -> Path:
    root = os.environ.get("GLASSFORMER_TEST_CACHE") or os.path.join(tempfile.gettempdir(), "glassformer-test-cache")
    path = Path(root) / "analysis"
    path.mkdir(parents=True, exist_ok=True)
    return path


def stdlib_texts(limit: int = BPE_BYTES) -> list[str]:
    """The first ``limit`` characters of the standard library's .py files, sorted by path (no site-packages)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text)
        if total >= limit:
            break
    return texts


def train_bpe(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return tok


@pytest.fixture(scope="session")
def stdlib_bpe():
    """A byte-level BPE (vocabulary 4096) trained on ~3 MB of the standard library, cached across runs."""
    from tokenizers import Tokenizer

    key = hashlib.sha256(f"{sys.version}|{sysconfig.get_paths()['stdlib']}|{BPE_VOCAB}|{BPE_BYTES}".encode())
    path = cache_dir() / f"stdlib-bpe-{key.hexdigest()[:12]}.json"
    if not path.is_file():
        tok = train_bpe(stdlib_texts(), BPE_VOCAB)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two xdist workers may train at once
        tok.save(str(tmp))
        os.replace(tmp, path)
    return Tokenizer.from_file(str(path))


@pytest.fixture(scope="session")
def byte_bpe():
    """A byte-level tokenizer with almost no merges: words like ' elif' are several tokens."""
    return train_bpe(["x = 1\n"] * 10, 260)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Module-scoped so that module fixtures (trained models, analysed directories) run under it too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory, stdlib_bpe):
    """A randomly initialised small model with the stdlib tokenizer, saved as a model directory."""
    from tests_analysis_support import small_config

    from glassformer.archs import build_model, save_model_dir

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small_model")
    save_model_dir(path, build_model(small_config()), tokenizer_json=stdlib_bpe.to_str())
    return path
