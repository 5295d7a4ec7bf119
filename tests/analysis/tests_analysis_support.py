"""Small models and batches shared by the analysis tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import torch

from glassformer.analysis.tasks import TaskBatch
from glassformer.archs import ModelConfig, build_model

VOCAB = 50


def make_model(**overrides):
    """A seeded 2-layer model, d_model 16, on a 50-token vocabulary."""
    fields = dict(d_vocab=VOCAB, n_ctx=16, d_model=16, n_layers=2, n_heads=2, d_mlp=32)
    fields.update(overrides)
    torch.manual_seed(1)
    return build_model(ModelConfig(**fields)).eval()


def make_batch(B=3, T=7, seed=0):
    """Random pairs differing at position 1, with unequal prompt lengths (right padding)."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, VOCAB, (B, T), generator=gen)
    corrupt = clean.clone()
    corrupt[:, 1] = torch.randint(0, VOCAB, (B,), generator=gen)
    last = torch.tensor([T - 1 - (i % 3) for i in range(B)])
    return TaskBatch("t", clean, corrupt, last, torch.arange(B), torch.arange(B) + 10)


def small_config(**overrides):
    """A 2-layer model for the stdlib tokenizer, small enough that a whole analysis takes a second (46 edges)."""
    fields = dict(d_vocab=4096, n_ctx=64, d_model=32, n_layers=2, n_heads=2, d_mlp=64)
    fields.update(overrides)
    return ModelConfig(**fields)
