"""Named model shapes: small functions in a dict. ``debug`` trains on a CPU in seconds.

Example:
    >>> from glassformer.archs import presets
    >>> presets.get("tiny").n_layers
    4
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from glassformer.archs.config import ConfigError, ModelConfig


def debug() -> ModelConfig:
    """2 layers, d_model 64: a few seconds of CPU training; for tests and smoke runs."""
    return ModelConfig(d_vocab=512, n_ctx=64, d_model=64, n_layers=2, n_heads=4, d_mlp=256)


def tiny() -> ModelConfig:
    """4 layers, d_model 128: a few minutes on a laptop CPU learns real Python structure."""
    return ModelConfig(d_vocab=4096, n_ctx=128, d_model=128, n_layers=4, n_heads=4, d_mlp=512)


def small() -> ModelConfig:
    """Gao et al. (2025)'s smallest weight-sparse shape: 8 layers, d_model 256, d_head 16, context 256, vocab 2048."""
    return ModelConfig(d_vocab=2048, n_ctx=256, d_model=256, n_layers=8, n_heads=16, d_head=16, d_mlp=1024)


def gpt2_small() -> ModelConfig:
    """GPT-2 small's shape (124M parameters with its 50257-token vocabulary and tied embeddings)."""
    return ModelConfig(d_vocab=50257, n_ctx=1024, d_model=768, n_layers=12, n_heads=12, d_mlp=3072,
                       tie_embeddings=True)


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "debug": debug,
    "tiny": tiny,
    "small": small,
    "gpt2-small": gpt2_small,
}


def get(name: str, **overrides: Any) -> ModelConfig:
    """The preset ``name`` with fields replaced by ``overrides``.

    Example:
        >>> get("debug", n_layers=1).n_layers
        1
    """
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is not allowed: expected one of {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    return ModelConfig.from_dict({**cfg.to_dict(), **overrides}) if overrides else cfg
