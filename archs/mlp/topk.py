"""The TopK MLP: a dense MLP whose hidden units keep only the k largest pre-activations per token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer import kernels
from glassformer.archs.hooks import HookPoint
from glassformer.archs.mlp.base import MLP
from glassformer.archs.mlp.dead_latents import DeadLatentTracker
from glassformer.archs.validation import check, check_positive_int


@dataclass
class TopKMLPConfig:
    """``y = W_out act(topk_k(W_in x + b_in)) + b_out`` with hidden width ``model.d_mlp``.

    The top k are chosen on the pre-activations, then the activation is applied (Gao et al. 2024's
    ``ReLU(TopK(z))``), so at most k hidden units are non-zero per token and only they receive gradient.

    Example:
        >>> TopKMLPConfig(k=32).activation
        'relu'
    """

    kind: Literal["topk"] = "topk"
    """Registry key."""
    k: int = 64
    """Hidden units kept per token; at most ``model.d_mlp``."""
    activation: Literal["relu", "gelu"] = "relu"
    """Applied to the kept pre-activations. ReLU can leave fewer than k non-zero (a kept negative becomes 0);
    GELU keeps exactly k non-zero."""
    dead_window_tokens: int = 1_000_000
    """A hidden unit that has not fired for this many training tokens counts as dead (logged, not penalised)."""

    def validate(self, model_cfg: Any) -> None:
        check_positive_int(self.k, "model.mlp.k")
        check(self.k <= model_cfg.mlp_width, "model.mlp.k", self.k,
              f"at most the MLP width d_mlp={model_cfg.mlp_width}")
        check(self.activation in ("relu", "gelu"), "model.mlp.activation", self.activation, "'relu' or 'gelu'")
        check_positive_int(self.dead_window_tokens, "model.mlp.dead_window_tokens")


class TopKMLP(MLP):
    """Dense MLP with a per-token TopK on its hidden units; ``hook_pre`` / ``hook_post`` as in the dense MLP.

    Example:
        >>> from glassformer.archs import ModelConfig
        >>> mlp = TopKMLP(TopKMLPConfig(k=3), ModelConfig(d_model=8, n_heads=2, d_mlp=16, kernels="reference"))
        >>> tuple(mlp(torch.randn(2, 3, 8)).shape)
        (2, 3, 8)
    """

    def __init__(self, cfg: TopKMLPConfig, model_cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.impl = model_cfg.kernels
        self.W_in = nn.Linear(model_cfg.d_model, model_cfg.mlp_width)
        self.W_out = nn.Linear(model_cfg.mlp_width, model_cfg.d_model)
        self.tracker = DeadLatentTracker(model_cfg.mlp_width, cfg.dead_window_tokens)
        self.hook_pre = HookPoint()  # (B, T, d_mlp), dense pre-activations
        self.hook_post = HookPoint()  # (B, T, d_mlp), at most k non-zero per token

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(self.W_in(x))  # (B, T, d_mlp)
        kept = kernels.topk_activation(pre, self.cfg.k, use_abs=False, impl=self.impl)
        act = F.relu(kept) if self.cfg.activation == "relu" else F.gelu(kept)
        post = self.hook_post(act)  # (B, T, d_mlp)
        with torch.no_grad():
            fired = post.detach().flatten(0, -2) != 0  # (N, d_mlp)
            self.tracker.last_l0 = fired.sum(dim=-1).float().mean()
            if self.training:
                self.tracker.update(fired.shape[0], fired.any(dim=0))
        return self.W_out(post)

    def input_weights(self) -> Tensor:
        """Input directions, one row per hidden unit: (d_mlp, d_model)."""
        return self.W_in.weight

    def output_weights(self) -> Tensor:
        """Output directions, one row per hidden unit: (d_mlp, d_model)."""
        return self.W_out.weight.T

    def stats(self) -> dict[str, float]:
        """``l0`` (mean non-zero hidden units per token, last forward) and ``dead_fraction``."""
        return self.tracker.stats()
