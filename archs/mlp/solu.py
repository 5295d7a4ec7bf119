"""The SoLU MLP (Anthropic 2022): ``x * softmax(x)`` over the hidden units, then a LayerNorm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.archs.hooks import HookPoint
from glassformer.archs.mlp.base import MLP


@dataclass
class SoLUMLPConfig:
    """``y = W_out LN(h * softmax(h)) + b_out`` with ``h = W_in x + b_in`` and hidden width ``model.d_mlp``.

    The softmax makes the units compete, so a token's output concentrates on few of them; the LayerNorm after it
    restores the scale the softmax took away (Anthropic reports SoLU at little to no loss cost).

    Example:
        >>> SoLUMLPConfig().kind
        'solu'
    """

    kind: Literal["solu"] = "solu"
    """Registry key."""

    def validate(self, model_cfg: Any) -> None:
        """Nothing to check: SoLU has no settings of its own."""


class SoLUMLP(MLP):
    """SoLU MLP with TransformerLens's hook points: ``hook_pre``, ``hook_mid`` (before the LayerNorm), ``hook_post``.

    Example:
        >>> import torch
        >>> from glassformer.archs import ModelConfig
        >>> mlp = SoLUMLP(SoLUMLPConfig(), ModelConfig(d_model=8, n_heads=2, d_mlp=16))
        >>> tuple(mlp(torch.randn(2, 3, 8)).shape)
        (2, 3, 8)
    """

    def __init__(self, cfg: SoLUMLPConfig, model_cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.W_in = nn.Linear(model_cfg.d_model, model_cfg.mlp_width)
        self.ln = nn.LayerNorm(model_cfg.mlp_width, eps=model_cfg.norm_eps)
        self.W_out = nn.Linear(model_cfg.mlp_width, model_cfg.d_model)
        self.hook_pre = HookPoint()  # (B, T, d_mlp)
        self.hook_mid = HookPoint()  # (B, T, d_mlp), h * softmax(h)
        self.hook_post = HookPoint()  # (B, T, d_mlp), after the LayerNorm

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(self.W_in(x))
        mid = self.hook_mid(pre * F.softmax(pre, dim=-1))
        post = self.hook_post(self.ln(mid))
        return self.W_out(post)

    def input_weights(self) -> Tensor:
        """Input directions, one row per hidden unit: (d_mlp, d_model)."""
        return self.W_in.weight

    def output_weights(self) -> Tensor:
        """Output directions, one row per hidden unit: (d_mlp, d_model)."""
        return self.W_out.weight.T
