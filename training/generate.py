"""Sampling text from a trained model (temperature and top-k)."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    tokens: Tensor,
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = 50,
    generator: torch.Generator | None = None,
    stop_token: int | None = None,
) -> Tensor:
    """Extend ``tokens`` (1, T) by up to ``max_new_tokens``; temperature 0 means greedy decoding.

    The context is cropped to the model's ``n_ctx`` as generation runs past it.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> model = build_model(presets.get("debug")).eval()
        >>> sample(model, torch.zeros(1, 1, dtype=torch.long), 5, temperature=0).shape[1]
        6
    """
    if temperature < 0:
        raise ValueError(f"temperature={temperature} is not allowed: expected a float >= 0 (0 is greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} is not allowed: expected a positive integer or None")
    n_ctx = model.cfg.n_ctx
    for _ in range(max_new_tokens):
        logits = model(tokens[:, -n_ctx:])[:, -1, :].float()  # (1, d_vocab)
        if temperature == 0:
            nxt = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
        tokens = torch.cat([tokens, nxt], dim=1)
        if stop_token is not None and int(nxt) == stop_token:
            break
    return tokens
