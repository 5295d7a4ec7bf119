"""Capability: next-token loss on held-out corpus tokens, and loss/accuracy on each task.

Example:
    >>> from glassformer.archs import build_model, presets
    >>> model = build_model(presets.get("debug"))
    >>> abs(validation_loss(model, torch.randint(0, 512, (2, 9)))["loss"] - math.log(512)) < 0.5  # at init
    True
"""

from __future__ import annotations

import math  # noqa: F401  (used by the docstring example)
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from glassformer.analysis.common import check_tokens
from glassformer.analysis.tasks.base import TaskBatch, task_metrics


@torch.no_grad()
def validation_loss(model: Any, val_tokens: Tensor, batch_size: int = 16) -> dict[str, float]:
    """Mean next-token cross-entropy (nats) over windows ``val_tokens`` (N, T): each window predicts its
    tokens 1..T-1 from the ones before (windows longer than n_ctx + 1 are cut).
    """
    check_tokens(val_tokens, "val_tokens", model.cfg)
    if val_tokens.shape[1] < 2:
        raise ValueError(f"val_tokens has windows of {val_tokens.shape[1]} token: expected at least 2")
    device = next(model.parameters()).device
    tokens = val_tokens[:, : model.cfg.n_ctx + 1].to(device)
    total, count = 0.0, 0
    for start in range(0, tokens.shape[0], batch_size):
        window = tokens[start:start + batch_size]
        logits = model(window[:, :-1])  # (b, T-1, d_vocab)
        total += F.cross_entropy(logits.flatten(0, 1).float(), window[:, 1:].flatten(), reduction="sum").item()
        count += window[:, 1:].numel()
    return {"loss": total / count, "tokens": count}


@torch.no_grad()
def task_capability(model: Any, batch: TaskBatch) -> dict[str, float]:
    """Task loss (BCE over the two answers), accuracy and mean logit difference on the clean prompts.

    Example:
        >>> task_capability(model, TASKS["induction"].generate(tokenizer, 16))["accuracy"]  # doctest: +SKIP
        0.9375
    """
    return task_metrics(model(batch.clean), batch)
