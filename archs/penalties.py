"""Orthogonality penalties on weight directions, as auxiliary losses named ``ortho``.

Each penalty normalises the rows of a weight matrix ``W`` (M, D) (one direction per latent, head output dimension,
neuron or token) and penalises their overlap:

- ``frobenius``: the mean squared cosine over pairs, ``||offdiag(W W^T)||_F^2 / (M (M - 1))``, computed through the
  exact identity ``||offdiag(W W^T)||_F^2 = ||W^T W||_F^2 - sum_i ||w_i||^4`` with a D x D buffer: the M x M Gram
  matrix is never built (1 GB in fp32 at M = 16384). With M > D the minimum is ``(M / D - 1) / (M - 1)``, reached by
  a tight frame, not zero.
- ``cos_margin``: the mean over pairs of ``relu(|cos_ij| - margin)^2``, which leaves pairs alone below the margin;
  it has no such identity, so it runs through the tiled kernel ``glassformer.kernels.cos_margin_penalty``.

The coefficient rises linearly from zero over the first ``warmup`` fraction of training (the Transformer forwards
the progress through ``on_train_step``), so the penalty does not fight the first steps that shape the directions.
Each penalty averages over the matrices of its target (one per layer), so a coefficient does not scale with depth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from glassformer import kernels
from glassformer.archs.validation import check

TARGETS = ("transcoder_decoder", "W_O", "mlp_out", "embed", "unembed")
KINDS = ("frobenius", "cos_margin")


@dataclass
class PenaltyConfig:
    """One orthogonality penalty: its form, the weight directions it acts on, its coefficient and warmup.

    Example:
        >>> PenaltyConfig(target="W_O", coef=0.1).kind
        'frobenius'
    """

    target: Literal["transcoder_decoder", "W_O", "mlp_out", "embed", "unembed"] = "mlp_out"
    """Rows penalised: ``transcoder_decoder`` the decoder direction of each latent (transcoder MLPs only);
    ``W_O`` the n_heads * d_head per-head output directions of each attention layer, so heads are pushed apart
    from each other as well as within; ``mlp_out`` the output direction of each MLP hidden unit (the decoder for a
    transcoder); ``embed`` / ``unembed`` one row per token."""
    kind: Literal["frobenius", "cos_margin"] = "frobenius"
    """``frobenius``: mean squared cosine over pairs through the D x D identity; ``cos_margin``: mean of
    ``relu(|cos| - margin)^2`` over pairs."""
    coef: float = 0.1
    """Coefficient after warmup; the loss term carries it."""
    margin: float = 0.1
    """``cos_margin`` only: |cos| at or below this is free, in [0, 1)."""
    warmup: float = 0.1
    """Fraction of training over which the coefficient rises linearly from 0, in [0, 1]."""

    def validate(self, model_cfg: Any, prefix: str = "model.penalties[0]") -> None:
        check(self.target in TARGETS, f"{prefix}.target", self.target, f"one of {', '.join(TARGETS)}")
        check(self.kind in KINDS, f"{prefix}.kind", self.kind, f"one of {', '.join(KINDS)}")
        check(isinstance(self.coef, (int, float)) and self.coef >= 0, f"{prefix}.coef", self.coef,
              "a non-negative float")
        check(isinstance(self.margin, (int, float)) and 0 <= self.margin < 1, f"{prefix}.margin", self.margin,
              "a float in [0, 1)")
        check(isinstance(self.warmup, (int, float)) and 0 <= self.warmup <= 1, f"{prefix}.warmup", self.warmup,
              "a fraction in [0, 1]")
        if self.target in ("mlp_out", "transcoder_decoder"):
            check(not model_cfg.attn_only, f"{prefix}.target", self.target,
                  "a site the model has: an attention-only model has no MLP (use W_O, embed or unembed)")
        if self.target == "transcoder_decoder":
            kind = model_cfg.mlp_config.kind
            check(kind == "transcoder", f"{prefix}.target", self.target,
                  f"a site the model has: model.mlp.kind is {kind!r}, not 'transcoder' (use mlp_out)")


def frobenius_offdiag(W: Tensor, normalize: bool = True, eps: float = 1e-8) -> Tensor:
    """``||offdiag(W W^T)||_F^2`` for W (M, D), through ``||W^T W||_F^2 - sum_i ||w_i||^4`` (a D x D buffer).

    With ``normalize`` the rows are first scaled to unit length (a zero row stays zero and adds nothing), so the
    result is the sum of squared cosines over ordered pairs ``i != j``. Computed in at least float32.

    Example:
        >>> W = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> round(frobenius_offdiag(W).item(), 4)  # 2 * cos(45 deg)^2
        1.0
    """
    if W.dim() != 2:
        raise ValueError(f"W must be a matrix (M, D), got shape {tuple(W.shape)}")
    W = W.float() if W.dtype in (torch.float16, torch.bfloat16) else W
    if normalize:
        W = W / W.norm(dim=1, keepdim=True).clamp_min(eps)  # (M, D)
    row_sq = (W * W).sum(dim=1)  # (M,)
    gram_t = W.T @ W  # (D, D)
    # Rounding can leave a tiny negative value when the rows are (nearly) orthonormal; the true value is >= 0.
    return ((gram_t * gram_t).sum() - (row_sq * row_sq).sum()).clamp_min(0)


def frobenius_penalty(W: Tensor) -> Tensor:
    """Mean squared cosine between distinct rows of W (M, D): :func:`frobenius_offdiag` / (M (M - 1)).

    Example:
        >>> frobenius_penalty(torch.eye(3)).item()
        0.0
    """
    M = W.shape[0]
    if M < 2:
        return W.new_zeros((), dtype=torch.float32)
    return frobenius_offdiag(W) / (M * (M - 1))


class Penalties(nn.Module):
    """The model's orthogonality penalties, computed on its weights whenever ``aux_losses()`` is called.

    ``matrices(target)`` returns the (M, D) matrices of a target, one per layer; the Transformer passes its own
    ``penalty_matrices``. Holds no parameters, so a model's weights do not depend on whether it is penalised.

    Example:
        >>> W = nn.Parameter(torch.eye(2) + 0.5)
        >>> p = Penalties([PenaltyConfig(target="embed", coef=1.0, warmup=0.0)], lambda target: [W], "reference")
        >>> sorted(p.aux_losses())
        ['ortho']
    """

    def __init__(self, cfgs: list[PenaltyConfig], matrices: Callable[[str], list[Tensor]], impl: str = "auto"):
        super().__init__()
        self.cfgs = list(cfgs)
        self.impl = impl
        # A plain callable, not a submodule: it points back into the model that owns this module.
        self._matrices = matrices
        self.progress = 1.0  # outside a training loop the full coefficient applies

    def on_train_step(self, step: int, max_steps: int) -> None:
        self.progress = step / max(max_steps, 1)

    def coef_at(self, cfg: PenaltyConfig) -> float:
        """The coefficient at the current training progress (linear warmup from zero)."""
        if cfg.warmup <= 0:
            return cfg.coef
        return cfg.coef * min(1.0, self.progress / cfg.warmup)

    def penalty(self, cfg: PenaltyConfig) -> Tensor:
        """The penalty of one config before its coefficient, averaged over its matrices."""
        values = []
        for W in self._matrices(cfg.target):
            if cfg.kind == "frobenius":
                values.append(frobenius_penalty(W))
            else:
                values.append(kernels.cos_margin_penalty(W, cfg.margin, impl=self.impl))
        return torch.stack(values).mean()

    def aux_losses(self) -> dict[str, Tensor]:
        total: Tensor | None = None
        for cfg in self.cfgs:
            coef = self.coef_at(cfg)
            if coef == 0:
                continue
            term = coef * self.penalty(cfg)
            total = term if total is None else total + term
        return {} if total is None else {"ortho": total}

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        """``ortho/max_cos/<target>`` per penalised target and their maximum ``ortho/max_cos``."""
        out: dict[str, float] = {}
        for target in dict.fromkeys(cfg.target for cfg in self.cfgs):
            out[f"ortho/max_cos/{target}"] = max(float(kernels.max_abs_cos(W)) for W in self._matrices(target))
        if out:
            out["ortho/max_cos"] = max(out.values())
        return out
