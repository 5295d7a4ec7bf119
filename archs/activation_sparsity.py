"""Activation sparsity: AbsTopK at the sites Gao et al. (2025) use, chosen by config with a kept fraction.

At each chosen site every token keeps only the ``k`` entries of largest magnitude (sign kept) and the rest become
exact zeros; gradient flows only through the kept entries. ``k = max(1, round(fraction * width))`` where the width
is that of the site:

| site | tensor | width |
| --- | --- | --- |
| ``attn_in`` | the normalised input each attention layer reads | d_model |
| ``q``, ``k``, ``v`` | the projections, all heads of a token together (as Gao does) | n_heads * d_head |
| ``attn_out`` | the attention output written to the residual stream | d_model |
| ``mlp_in`` | the normalised input each MLP reads | d_model |
| ``mlp_out`` | the MLP output written to the residual stream | d_model |

The released weight-sparse models keep a fraction of 0.25. A disabled site is an ``nn.Identity`` in the model, so
the forward reads straight through every site; it has no parameters, so the state dict does not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from glassformer import kernels
from glassformer.archs.validation import check, check_fraction

SITES = ("attn_in", "q", "k", "v", "attn_out", "mlp_in", "mlp_out")
MLP_SITES = ("mlp_in", "mlp_out")


@dataclass
class ActivationSparsityConfig:
    """Which sites keep only their largest-magnitude activations, and what fraction of each they keep.

    Example:
        >>> ActivationSparsityConfig(sites=["attn_out", "mlp_out"], fraction=0.25).k_for(128)
        32
    """

    sites: list[Literal["attn_in", "q", "k", "v", "attn_out", "mlp_in", "mlp_out"]] = field(
        default_factory=lambda: list(SITES))
    """Sites to sparsify (see the module docstring); all of Gao et al.'s attention and MLP sites by default."""
    fraction: float = 0.25
    """Kept fraction of each site's width, in (0, 1]; 0.25 as in Gao et al.'s released models."""

    def k_for(self, width: int) -> int:
        """Entries kept per token at a site of this width (at least one)."""
        return max(1, round(self.fraction * width))

    def validate(self, model_cfg: Any) -> None:
        check_fraction(self.fraction, "model.activation_sparsity.fraction")
        check(isinstance(self.sites, list) and len(self.sites) > 0, "model.activation_sparsity.sites", self.sites,
              f"a non-empty list drawn from {', '.join(SITES)}")
        bad = [s for s in self.sites if s not in SITES]
        check(not bad, "model.activation_sparsity.sites", self.sites, f"a list drawn from {', '.join(SITES)}")
        check(len(set(self.sites)) == len(self.sites), "model.activation_sparsity.sites", self.sites,
              "each site at most once")
        mlp_sites = [s for s in self.sites if s in MLP_SITES]
        check(not (model_cfg.attn_only and mlp_sites), "model.activation_sparsity.sites", self.sites,
              f"no MLP site ({', '.join(mlp_sites)}) on an attention-only model")


class AbsTopK(nn.Module):
    """Keep the ``k`` largest-magnitude entries of the last dimension (sign kept), zero the rest.

    ``flatten`` sparsifies the last ``flatten`` dimensions together (q, k, v: all heads of a token at once).

    Example:
        >>> import torch
        >>> AbsTopK(1, impl="reference")(torch.tensor([[0.5, -2.0, 1.0]])).tolist()
        [[0.0, -2.0, 0.0]]
    """

    def __init__(self, k: int, impl: str = "auto", flatten: int = 1):
        super().__init__()
        self.k, self.impl, self.flatten = k, impl, flatten
        self.last_density: Tensor | None = None
        """Non-zero fraction of the last training output, a 0-dim tensor (read as a float only when logged, so a
        GPU step does not wait for it): at most k / width, lower where kept entries are exactly 0. Not measured
        in eval mode, so analysis and generation do not pay for it."""

    def forward(self, x: Tensor) -> Tensor:
        flat = x if self.flatten == 1 else x.flatten(-self.flatten)  # (..., width); q/k/v: all heads of a token
        out = kernels.topk_activation(flat, self.k, use_abs=True, impl=self.impl)
        if self.training:
            self.last_density = torch.count_nonzero(out.detach()) / out.numel()
        return out if self.flatten == 1 else out.view(x.shape)

    def extra_repr(self) -> str:
        return f"k={self.k}"


def site_modules(model_cfg: Any) -> dict[str, nn.Module]:
    """One module per site of a block: :class:`AbsTopK` where the site is on, ``nn.Identity`` where it is off.

    Example:
        >>> from glassformer.archs import ModelConfig
        >>> cfg = ModelConfig(d_model=64, n_heads=4, activation_sparsity={"sites": ["q"], "fraction": 0.5})
        >>> site_modules(cfg)["q"].k, site_modules(cfg)["mlp_out"]
        (32, Identity())
    """
    cfg: ActivationSparsityConfig | None = model_cfg.activation_sparsity
    sites = set(cfg.sites) if cfg is not None else set()
    qkv_width = model_cfg.n_heads * model_cfg.head_dim
    out: dict[str, nn.Module] = {}
    for site in SITES:
        if site not in sites:
            out[site] = nn.Identity()
        elif site in ("q", "k", "v"):
            out[site] = AbsTopK(cfg.k_for(qkv_width), model_cfg.kernels, flatten=2)
        else:
            out[site] = AbsTopK(cfg.k_for(model_cfg.d_model), model_cfg.kernels)
    return out
