"""The transcoder MLP: a wide sparse dictionary from the MLP's input to its output (Dunefsky et al. 2024).

``f = act(W_enc x + b_enc)``, ``y = W_dec^T f + b_dec`` (+ ``W_skip x`` for a skip transcoder, Paulo et al. 2025),
with ``n_latents = expansion_factor * d_model`` latents whose codes pass through ``hook_latents``.
"""

from __future__ import annotations

import math
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

ACTIVATIONS = ("relu", "topk", "batchtopk", "jumprelu")


@dataclass
class TranscoderConfig:
    """A transcoder in place of each MLP: activation, width, skip path, sparsity penalties and AuxK.

    Decoder norms: **folded into the sparsity penalty**, never renormalised. The decoder rows are free parameters;
    the ReLU transcoder's L1 term weights each code by its decoder row's norm, ``sum_i f_i ||W_dec[i]||``
    (Anthropic's April 2024 update), so shrinking codes while growing the decoder buys nothing; JumpReLU's L0 and
    the TopK / BatchTopK selections need no such weighting to be well posed. Why not unit-norm rows renormalised
    after each step: that needs a hook after every optimizer step outside the model, and it fights the other
    constraints that act on the same weights there (weight decay, the weight-sparsity projection, orthogonality
    penalties); folding keeps the model self-contained and every constraint's target unchanged. Analyses that
    want comparable codes multiply ``hook_latents`` by the decoder norms.

    AuxK (Gao et al. 2024): the top ``k_aux`` dead latents reconstruct a residual ``e``; the loss is
    ``auxk_coef * min(n_dead / k_aux, 1) * ||e_hat - e||^2 / ||e - mean(e)||^2`` and ``e_hat`` has no decoder bias
    (the double-bias bug of sparsify PR 134). Trained as part of a language model the layer has no reconstruction
    target, so ``e`` is the (detached) output the live latents write, ``W_dec^T f``: dead latents are pulled
    towards what the layer does until their pre-activations win a place among the live ones, after which the
    language-model loss trains them.

    Example:
        >>> TranscoderConfig(activation="jumprelu").n_latents(d_model=128)
        512
    """

    kind: Literal["transcoder"] = "transcoder"
    """Registry key."""
    activation: Literal["relu", "topk", "batchtopk", "jumprelu"] = "topk"
    """``relu`` (+ L1 penalty), ``topk`` (k largest per token), ``batchtopk`` (k * tokens largest over the batch in
    training, a learned threshold at inference) or ``jumprelu`` (learned per-latent threshold, + L0 penalty)."""
    expansion_factor: int = 4
    """Latents per residual dimension: ``n_latents = expansion_factor * d_model``."""
    k: int = 32
    """Latents kept per token (``topk``) or per token on average over the batch (``batchtopk``)."""
    skip: bool = False
    """Add the linear skip path ``W_skip x`` (starts at zero, as the decoder does; EleutherAI sparsify)."""
    l1_coef: float = 1e-3
    """``relu`` only: coefficient of the L1 term ``mean over tokens of sum_i f_i ||W_dec[i]||`` (loss ``l1``)."""
    l0_coef: float = 1e-3
    """``jumprelu`` only: coefficient of the L0 term ``mean over tokens of sum_i H(z_i - theta_i)`` (loss ``l0``)."""
    threshold_init: float = 0.05
    """``jumprelu`` only: initial threshold of every latent (pre-activations start at about 0.2 in scale)."""
    bandwidth: float = 0.01
    """``jumprelu`` only: width of the rectangle kernel of the straight-through threshold gradient."""
    threshold_momentum: float = 0.01
    """``batchtopk`` only: the inference threshold is a running mean of the smallest kept code per training batch
    (an exact mean over the first 1/momentum batches, exponential after)."""
    auxk_coef: float = 1 / 32
    """Coefficient of the AuxK dead-latent loss (Gao et al.: 1/32); 0 disables it."""
    k_aux: int | None = None
    """Dead latents used by AuxK; None means d_model // 2 (Gao et al.)."""
    dead_window_tokens: int = 1_000_000
    """A latent that has not fired for this many training tokens is dead (Gao et al. use 10M on large runs)."""

    def n_latents(self, d_model: int) -> int:
        return self.expansion_factor * d_model

    def k_aux_for(self, d_model: int) -> int:
        return self.k_aux if self.k_aux is not None else max(1, d_model // 2)

    def validate(self, model_cfg: Any) -> None:
        check(self.activation in ACTIVATIONS, "model.mlp.activation", self.activation, f"one of {ACTIVATIONS}")
        check_positive_int(self.expansion_factor, "model.mlp.expansion_factor")
        n = self.n_latents(model_cfg.d_model)
        check_positive_int(self.k, "model.mlp.k")
        check(self.k <= n, "model.mlp.k", self.k,
              f"at most the number of latents, expansion_factor * d_model = {n}")
        if self.k_aux is not None:
            check_positive_int(self.k_aux, "model.mlp.k_aux")
            check(self.k_aux <= n, "model.mlp.k_aux", self.k_aux, f"at most the number of latents {n}")
        for name in ("l1_coef", "l0_coef", "auxk_coef"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and value >= 0, f"model.mlp.{name}", value, "a non-negative float")
        for name in ("threshold_init", "bandwidth"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and value > 0, f"model.mlp.{name}", value, "a positive float")
        check(isinstance(self.threshold_momentum, (int, float)) and 0 < self.threshold_momentum <= 1,
              "model.mlp.threshold_momentum", self.threshold_momentum, "a fraction in (0, 1]")
        check_positive_int(self.dead_window_tokens, "model.mlp.dead_window_tokens")


class Transcoder(MLP):
    """Transcoder MLP; codes pass through ``hook_latents`` (B, T, n_latents), pre-activations through ``hook_pre``.

    The TopK fast path never builds dense codes: it decodes the kept (index, value) pairs with
    ``glassformer.kernels.sparse_decode``. While ``hook_latents`` has a hook, dense codes are built, passed through
    it and decoded densely, so the hook's edits take effect.

    Example:
        >>> from glassformer.archs import ModelConfig
        >>> model_cfg = ModelConfig(d_model=8, n_heads=2, kernels="reference")
        >>> tc = Transcoder(TranscoderConfig(k=4), model_cfg)
        >>> tuple(tc(torch.randn(2, 3, 8)).shape)
        (2, 3, 8)
    """

    hidden_hook = "hook_latents"

    def __init__(self, cfg: TranscoderConfig, model_cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.impl = model_cfg.kernels
        D, M = model_cfg.d_model, cfg.n_latents(model_cfg.d_model)
        self.d_model, self.n_latents, self.k_aux = D, M, cfg.k_aux_for(D)
        self.W_enc = nn.Parameter(torch.empty(M, D).normal_(std=model_cfg.init_std))  # (n_latents, d_model)
        self.b_enc = nn.Parameter(torch.zeros(M))
        self.W_dec = nn.Parameter(torch.zeros(M, D))  # (n_latents, d_model): row i is latent i's direction
        self.b_dec = nn.Parameter(torch.zeros(D))
        # No b_pre: W_enc (x - b_pre) + b_enc only re-parametrises b_enc when the encoder is linear.
        self.W_skip = nn.Parameter(torch.zeros(D, D)) if cfg.skip else None  # (d_model_out, d_model_in)
        if cfg.activation == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((M,), math.log(cfg.threshold_init)))
        if cfg.activation == "batchtopk":
            self.register_buffer("threshold", torch.zeros(()))
            self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))
        self.tracker = DeadLatentTracker(M, cfg.dead_window_tokens)
        self.hook_pre = HookPoint()  # (B, T, n_latents)
        self.hook_latents = HookPoint()  # (B, T, n_latents)
        self._aux: dict[str, Tensor] = {}

    def reset_variant_parameters(self) -> None:
        """Decoder and skip start at zero (EleutherAI sparsify): the layer starts as the constant ``b_dec``."""
        with torch.no_grad():
            self.W_dec.zero_()
            if self.W_skip is not None:
                self.W_skip.zero_()
            if self.cfg.activation == "jumprelu":
                self.log_threshold.fill_(math.log(self.cfg.threshold_init))

    def thresholds(self) -> Tensor:
        """JumpReLU thresholds (n_latents,), positive by construction."""
        return self.log_threshold.exp()

    def _dense_codes(self, pre: Tensor) -> Tensor:
        """Codes (N, n_latents) for the activations without a sparse fast path."""
        act = self.cfg.activation
        if act == "relu":
            return F.relu(pre)
        if act == "jumprelu":
            return kernels.jumprelu(pre, self.thresholds(), self.cfg.bandwidth, impl=self.impl)
        if act == "batchtopk":
            if not self.training:
                return torch.where(pre > self.threshold, pre, torch.zeros_like(pre))
            N = pre.shape[0]
            flat = F.relu(pre).reshape(1, -1)  # (1, N * n_latents): one top-k over the whole batch
            codes = kernels.topk_activation(flat, min(self.cfg.k * N, flat.shape[1]), impl=self.impl)
            codes = codes.view_as(pre)
            self._update_threshold(codes.detach())
            return codes
        # topk with a hook attached: the same selection as the fast path, made dense for the hook.
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))

    @torch.no_grad()
    def _update_threshold(self, codes: Tensor) -> None:
        smallest = torch.where(codes > 0, codes, torch.full_like(codes, float("inf"))).min()
        self.threshold_updates += 1
        rate = (1.0 / self.threshold_updates.float()).clamp(min=self.cfg.threshold_momentum)
        moved = self.threshold + rate * (smallest - self.threshold)
        self.threshold.copy_(torch.where(torch.isfinite(smallest), moved, self.threshold))

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x_flat = x.reshape(-1, self.d_model)  # (N, d_model)
        pre = self.hook_pre(F.linear(x, self.W_enc, self.b_enc))  # (B, T, n_latents)
        pre_flat = pre.reshape(-1, self.n_latents)  # (N, n_latents)
        W_dec = self.W_dec
        codes: Tensor | None = None
        if self.cfg.activation == "topk" and not self.hook_latents.active:
            vals, idx = pre_flat.topk(self.cfg.k, dim=-1, sorted=False)  # (N, k)
            vals = F.relu(vals)
            if W_dec.dtype != vals.dtype:  # under autocast the codes are half precision
                W_dec = W_dec.to(vals.dtype)
            y_latent = kernels.sparse_decode(idx, vals, W_dec, impl=self.impl)  # (N, d_model)
            with torch.no_grad():
                live = (vals > 0).to(pre.dtype)  # (N, k)
                n_fired = live.sum()
                # index_add rather than boolean indexing, which would wait for the device every step.
                counts = torch.zeros(self.n_latents, dtype=pre.dtype, device=x.device)
                fired = counts.index_add_(0, idx.flatten(), live.flatten()) > 0
        else:
            codes = self._dense_codes(pre_flat)
            codes = self.hook_latents(codes.view(*shape[:-1], self.n_latents)).reshape(-1, self.n_latents)
            y_latent = codes @ W_dec.to(codes.dtype)  # (N, d_model)
            with torch.no_grad():
                nonzero = codes.detach() != 0
                n_fired = nonzero.sum()
                fired = nonzero.any(dim=0)
        self.tracker.last_l0 = n_fired.float() / x_flat.shape[0]
        y = y_latent + self.b_dec
        if self.W_skip is not None:
            y = y + F.linear(x_flat, self.W_skip)
        if self.training:
            self.tracker.update(x_flat.shape[0], fired)
            self._aux = self._aux_terms(pre_flat, codes, y_latent)
        else:
            self._aux = {}
        return y.view(shape)

    def _aux_terms(self, pre: Tensor, codes: Tensor | None, y_latent: Tensor) -> dict[str, Tensor]:
        cfg, terms = self.cfg, {}
        if cfg.activation == "relu" and cfg.l1_coef > 0:
            terms["l1"] = cfg.l1_coef * (codes.abs() @ self.W_dec.norm(dim=1).to(codes.dtype)).mean()
        if cfg.activation == "jumprelu" and cfg.l0_coef > 0:
            steps = kernels.heaviside_step(pre, self.thresholds(), cfg.bandwidth, impl=self.impl)  # (N, n_latents)
            terms["l0"] = cfg.l0_coef * steps.sum(dim=-1).mean()
        if cfg.auxk_coef > 0:
            terms["auxk"] = cfg.auxk_coef * self.auxk_loss(pre, y_latent.detach())
        return terms

    def auxk_loss(self, pre: Tensor, e: Tensor) -> Tensor:
        """Gao et al.'s AuxK: the top ``k_aux`` dead latents of ``pre`` (N, n_latents) reconstruct ``e`` (N, d_model).

        ``min(n_dead / k_aux, 1) * ||e_hat - e||^2 / ||e - mean(e)||^2``; exactly zero while no latent is dead.
        """
        if not self.tracker.may_have_dead():
            return pre.new_zeros(())
        dead = self.tracker.dead()  # (n_latents,)
        # Live latents are pushed to -inf so the top k_aux are dead ones; relu turns any -inf left over into 0
        # when fewer than k_aux are dead. Kept on the device: no sync to count the dead.
        masked = pre.masked_fill(~dead, float("-inf"))
        vals, idx = masked.topk(self.k_aux, dim=-1, sorted=False)  # (N, k_aux)
        vals = F.relu(vals)
        W_dec = self.W_dec if self.W_dec.dtype == vals.dtype else self.W_dec.to(vals.dtype)
        e_hat = kernels.sparse_decode(idx, vals, W_dec, impl=self.impl)  # (N, d_model), no decoder bias
        dtype = torch.promote_types(e.dtype, torch.float32)  # half-precision sums of squares would overflow
        e, e_hat = e.to(dtype), e_hat.to(dtype)
        scale = (dead.sum().to(dtype) / self.k_aux).clamp(max=1.0)
        total_variance = (e - e.mean(dim=0)).pow(2).sum().clamp_min(1e-12)
        return scale * (e_hat - e).pow(2).sum() / total_variance

    def input_weights(self) -> Tensor:
        """Encoder directions, one row per latent: (n_latents, d_model)."""
        return self.W_enc

    def output_weights(self) -> Tensor:
        """Output directions, one row per latent: (n_latents, d_model)."""
        return self.W_dec

    def skip_weights(self) -> Tensor | None:
        """``W_skip`` (d_model_out, d_model_in) of a skip transcoder, else None."""
        return self.W_skip

    def aux_losses(self) -> dict[str, Tensor]:
        """Named terms of the last training forward, coefficients included: ``l1``, ``l0``, ``auxk``."""
        return dict(self._aux)

    def stats(self) -> dict[str, float]:
        """``l0`` (mean non-zero latents per token, last forward) and ``dead_fraction``."""
        return self.tracker.stats()
