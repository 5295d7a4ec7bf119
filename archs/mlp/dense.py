"""The dense GELU MLP: the baseline every variant is compared against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.archs.hooks import HookPoint
from glassformer.archs.mlp.base import MLP
from glassformer.archs.validation import check


@dataclass
class DenseMLPConfig:
    """``y = W_out gelu(W_in x + b_in) + b_out`` with hidden width ``model.d_mlp``."""

    kind: Literal["dense"] = "dense"
    """Registry key."""
    activation: Literal["gelu", "gelu_tanh"] = "gelu"
    """The GELU form: exact ("gelu", erf-based), or GPT-2's tanh approximation ("gelu_tanh", what Hugging Face
    calls gelu_new), which imported GPT-2 checkpoints need to compute exactly what they were trained with."""

    def validate(self, model_cfg: Any) -> None:
        check(self.activation in ("gelu", "gelu_tanh"), "model.mlp.activation", self.activation,
              "'gelu' or 'gelu_tanh'")


class DenseMLP(MLP):
    """GELU MLP with hook points on the pre- and post-activation.

    Example:
        >>> import torch
        >>> from glassformer.archs import ModelConfig
        >>> mlp = DenseMLP(DenseMLPConfig(), ModelConfig(d_model=8, n_heads=2))
        >>> tuple(mlp(torch.randn(2, 3, 8)).shape)
        (2, 3, 8)
    """

    def __init__(self, cfg: DenseMLPConfig, model_cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.W_in = nn.Linear(model_cfg.d_model, model_cfg.mlp_width)
        self.W_out = nn.Linear(model_cfg.mlp_width, model_cfg.d_model)
        self.hook_pre = HookPoint()  # (B, T, d_mlp)
        self.hook_post = HookPoint()  # (B, T, d_mlp)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(self.W_in(x))
        # "gelu_tanh" maps to torch's approximate="tanh", the same formula as GPT-2's gelu_new.
        approximate = "tanh" if self.cfg.activation == "gelu_tanh" else "none"
        post = self.hook_post(F.gelu(pre, approximate=approximate))
        return self.W_out(post)

    def input_weights(self) -> Tensor:
        """Input directions, one row per hidden unit: (d_mlp, d_model)."""
        return self.W_in.weight

    def output_weights(self) -> Tensor:
        """Output directions, one row per hidden unit: (d_mlp, d_model)."""
        return self.W_out.weight.T
