"""Evaluation of a model directory on a corpus, and corpus windows for the analysis commands."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from glassformer.archs import load_config, load_model_dir, read_training
from glassformer.training.config import DataConfig
from glassformer.training.windows import FixedWindows, RandomWindows


def recorded_data_config(model_dir: str | Path) -> DataConfig:
    """The DataConfig a model directory was trained on (from training.json), or the default corpus.

    Example:
        >>> recorded_data_config("runs/demo/tiny").source  # doctest: +SKIP
        'python-stdlib'
    """
    from glassformer.archs.config import from_dict

    data = read_training(model_dir).get("config", {}).get("data")
    # Through from_dict: a hand-edited or newer training.json names the bad field instead of a TypeError.
    return from_dict(DataConfig, data, "training.json: config.data") if data else DataConfig()


def prepare_for(model_dir: str | Path, data: DataConfig | None = None) -> Any:
    """Tokenise ``data`` (default: the model's own corpus) with the model directory's tokenizer."""
    from glassformer.training.corpus import prepare_data
    from glassformer.training.tokenizer import load_tokenizer

    cfg = load_config(model_dir)
    return prepare_data(data or recorded_data_config(model_dir), cfg.d_vocab, tokenizer=load_tokenizer(model_dir))


@torch.no_grad()
def evaluate_model_dir(model_dir: str | Path, data: DataConfig | None = None, *, batches: int = 50,
                       batch_size: int = 16) -> dict[str, float]:
    """Mean next-token loss (nats) and perplexity over fixed validation windows.

    Example:
        >>> evaluate_model_dir("runs/demo/tiny")["perplexity"] > 1  # doctest: +SKIP
        True
    """
    from glassformer.training.corpus import unigram_entropy

    model = load_model_dir(model_dir).eval()
    prepared = prepare_for(model_dir, data)
    windows = FixedWindows(prepared.val_tokens, model.cfg.n_ctx, batches * batch_size)
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = torch.stack([windows[i] for i in range(start, min(start + batch_size, len(windows)))])
        logits = model(batch[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum").item()
        count += batch[:, 1:].numel()
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": count,
            "unigram_entropy": unigram_entropy(prepared.train_tokens, prepared.tokenizer.get_vocab_size())}


def corpus_windows_for(model_dir: str | Path, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random training windows (n, n_ctx) for mean ablation and ``n`` validation windows (n, n_ctx + 1).

    Example:
        >>> corpus, val = corpus_windows_for("runs/demo/tiny", 8)  # doctest: +SKIP
    """
    cfg = load_config(model_dir)
    prepared = prepare_for(model_dir)
    train = RandomWindows(np.asarray(prepared.train_tokens), cfg.n_ctx - 1, n, seed)
    val = FixedWindows(prepared.val_tokens, cfg.n_ctx, n)
    corpus = torch.stack([train[i] for i in range(len(train))])
    return corpus, torch.stack([val[i] for i in range(len(val))])
