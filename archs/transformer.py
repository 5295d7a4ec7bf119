"""The one Transformer: pre-norm, learned or rotary positions, SDPA attention, a pluggable MLP, hook points.

Variants never copy this file: an MLP replacement is chosen through the MLP registry and talks to the model only
through the :class:`~glassformer.archs.mlp.base.MLP` contract, and a constraint is a function that rewrites the
config or the built model (docs/architecture.md, docs/adding-a-variant.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.archs.activation_sparsity import AbsTopK, site_modules
from glassformer.archs.config import ModelConfig
from glassformer.archs.hooks import HookedModule, HookPoint
from glassformer.archs.mlp.base import MLP, MLP_REGISTRY
from glassformer.archs.penalties import Penalties


class Norm(nn.Module):
    """LayerNorm or RMSNorm over the last dimension, with ``hook_normalized`` on its output."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.norm
        self.eps = cfg.norm_eps
        self.weight = nn.Parameter(torch.ones(cfg.d_model))
        self.bias = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.norm == "layernorm" else None
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "layernorm":
            out = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        else:
            out = F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return self.hook_normalized(out)


class Rotary(nn.Module):
    """Rotary position embedding (RoFormer), applied to q and k of shape (B, T, H, d_head)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.head_dim
        inv_freq = 1.0 / (cfg.rotary_base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        angles = torch.outer(torch.arange(cfg.n_ctx, dtype=torch.float32), inv_freq)  # (n_ctx, d/2)
        # Buffers are recomputed from the config, never saved: the model directory stays weights-only.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        cos = self.cos[:T, None, :].to(x.dtype)  # (T, 1, d/2)
        sin = self.sin[:T, None, :].to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    """Causal multi-head attention through ``scaled_dot_product_attention``.

    The pattern (``hook_pattern``) and the per-head outputs (``hook_result``) are computed only while a hook is
    attached to them, so training pays nothing for them. With activation sparsity at ``q``/``k``/``v`` the
    projections keep their largest-magnitude entries (all heads of a token together) before their hooks.
    """

    def __init__(self, cfg: ModelConfig, sparsify: dict[str, nn.Module] | None = None):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.head_dim
        inner = cfg.n_heads * cfg.head_dim
        self.W_Q = nn.Linear(cfg.d_model, inner)
        self.W_K = nn.Linear(cfg.d_model, inner)
        self.W_V = nn.Linear(cfg.d_model, inner)
        self.W_O = nn.Linear(inner, cfg.d_model)
        self.rotary = Rotary(cfg) if cfg.positional == "rotary" else None
        # Without a site dict no site is sparsified (Block passes the config's sites).
        sparsify = sparsify if sparsify is not None else {s: nn.Identity() for s in ("q", "k", "v")}
        self.sparsify_q, self.sparsify_k, self.sparsify_v = sparsify["q"], sparsify["k"], sparsify["v"]
        self.hook_q = HookPoint()  # (B, T, n_heads, d_head)
        self.hook_k = HookPoint()  # (B, T, n_heads, d_head)
        self.hook_v = HookPoint()  # (B, T, n_heads, d_head)
        self.hook_pattern = HookPoint()  # (B, n_heads, T_query, T_key), only when hooked
        self.hook_z = HookPoint()  # (B, T, n_heads, d_head)
        self.hook_result = HookPoint()  # (B, T, n_heads, d_model), only when hooked

    def project(self, x: Tensor, linear: nn.Linear) -> Tensor:
        """Project a normalised input to per-head vectors.

        ``x`` is (B, T, d_model), or (B, T, n_heads, d_model) when each head reads its own input.
        """
        if x.dim() == 3:
            return linear(x).unflatten(-1, (self.n_heads, self.d_head))
        W = linear.weight.view(self.n_heads, self.d_head, -1)  # (H, d_head, d_model)
        b = linear.bias.view(self.n_heads, self.d_head)
        return torch.einsum("bthd,hed->bthe", x, W) + b

    def forward(self, x_q: Tensor, x_k: Tensor, x_v: Tensor) -> Tensor:
        q, k, v = self.project(x_q, self.W_Q), self.project(x_k, self.W_K), self.project(x_v, self.W_V)
        q, k, v = self.sparsify_q(q), self.sparsify_k(k), self.sparsify_v(v)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)  # (B, T, n_heads, d_head)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, d_head)
        if self.hook_pattern.active:
            T = q.shape[-2]
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # (B, H, T, T)
            causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
            pattern = self.hook_pattern(scores.softmax(dim=-1))
            z = pattern @ v
        else:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        z = self.hook_z(z.transpose(1, 2))  # (B, T, H, d_head)
        if self.hook_result.active:
            W_O = self.W_O.weight.view(-1, self.n_heads, self.d_head)  # (d_model, H, d_head)
            result = self.hook_result(torch.einsum("bthe,dhe->bthd", z, W_O))  # (B, T, H, d_model)
            return result.sum(dim=2) + self.W_O.bias
        return self.W_O(z.flatten(-2))


class Block(nn.Module):
    """Pre-norm block: ``resid_mid = resid_pre + attn(ln1(.))``, ``resid_post = resid_mid + mlp(ln2(.))``.

    Each reader applies its own norm, so when ``hook_q_input``/``hook_k_input``/``hook_v_input`` are hooked every
    head reads a separate copy of the residual stream (B, T, n_heads, d_model) and edges into q, k and v can be
    patched one at a time.

    Activation sparsity (AbsTopK) sits after each norm (``attn_in``, ``mlp_in``) and on what each sublayer writes
    (``attn_out``, ``mlp_out``, before ``hook_attn_out`` / ``hook_mlp_out``); a site that is off is an identity.
    """

    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        self.index = index
        self.n_heads = cfg.n_heads
        self.hook_resid_pre = HookPoint()
        self.ln1 = Norm(cfg)
        self.hook_q_input = HookPoint()  # (B, T, n_heads, d_model), only when hooked
        self.hook_k_input = HookPoint()
        self.hook_v_input = HookPoint()
        sparsify = site_modules(cfg)
        self.sparsify_attn_in, self.sparsify_attn_out = sparsify["attn_in"], sparsify["attn_out"]
        self.attn = Attention(cfg, sparsify)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.mlp: MLP | None = None
        if not cfg.attn_only:
            self.hook_mlp_in = HookPoint()
            self.ln2 = Norm(cfg)
            self.sparsify_mlp_in, self.sparsify_mlp_out = sparsify["mlp_in"], sparsify["mlp_out"]
            self.mlp = MLP_REGISTRY.build(cfg.mlp_config, cfg)
            self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def attn_input(self, resid: Tensor) -> Tensor:
        """What attention reads: the normalised residual stream, sparsified when ``attn_in`` is on."""
        return self.sparsify_attn_in(self.ln1(resid))

    def forward(self, resid: Tensor) -> Tensor:
        resid = self.hook_resid_pre(resid)
        if self.hook_q_input.active or self.hook_k_input.active or self.hook_v_input.active:
            per_head = resid.unsqueeze(2).expand(-1, -1, self.n_heads, -1)
            x_q = self.attn_input(self.hook_q_input(per_head))
            x_k = self.attn_input(self.hook_k_input(per_head))
            x_v = self.attn_input(self.hook_v_input(per_head))
            attn_out = self.attn(x_q, x_k, x_v)
        else:
            x = self.attn_input(resid)
            attn_out = self.attn(x, x, x)
        attn_out = self.sparsify_attn_out(attn_out)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(attn_out))
        if self.mlp is not None:  # attention-only blocks have no MLP, and none of its norms or hooks
            x = self.sparsify_mlp_in(self.ln2(self.hook_mlp_in(resid)))
            mlp_out = self.sparsify_mlp_out(self.mlp(x))
            resid = resid + self.hook_mlp_out(mlp_out)
        return self.hook_resid_post(resid)


class Transformer(HookedModule):
    """Decoder-only Transformer; build it with :func:`glassformer.archs.build_model`.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> model = build_model(presets.get("debug"))
        >>> tuple(model(torch.zeros(2, 5, dtype=torch.long)).shape)
        (2, 5, 512)
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.hook_embed = HookPoint()  # (B, T, d_model)
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model) if cfg.positional == "learned" else None
        self.hook_pos_embed = HookPoint()  # (B, T, d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.ln_final = Norm(cfg)
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        self.penalties = Penalties(cfg.penalties, self.penalty_matrices, cfg.kernels) if cfg.penalties else None
        self.reset_parameters()
        if cfg.tie_embeddings:
            self.unembed.weight = self.embed.weight
        self.setup_hooks()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() == 1:
                continue  # norms keep ones/zeros, biases start at zero below
            nn.init.normal_(p, std=std)
            if name.endswith("W_O.weight") or name.endswith("W_out.weight"):
                # GPT-2: each residual writer scaled so the stream's variance does not grow with depth.
                p.data /= math.sqrt(2 * self.cfg.n_layers)
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for mlp in self._mlps():
            mlp.reset_variant_parameters()

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) int64 -> logits (B, T, d_vocab)."""
        B, T = tokens.shape
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence length {T} exceeds the model's context n_ctx={self.cfg.n_ctx}")
        resid = self.hook_embed(self.embed(tokens))
        if self.pos_embed is not None:
            positions = torch.arange(T, device=tokens.device)
            resid = resid + self.hook_pos_embed(self.pos_embed(positions).expand(B, T, -1))
        for block in self.blocks:
            resid = block(resid)
        return self.unembed(self.ln_final(resid))

    def aux_losses(self) -> dict[str, Tensor]:
        """Named auxiliary losses of the last forward, summed over layers (e.g. ``{"l1": ..., "auxk": ...}``).

        Each term already carries its coefficient; the training loss adds them all. The MLPs' terms come first,
        layer by layer, then the penalties' (the order fixes the order of the floating-point sums).

        Example:
            >>> from glassformer.archs import build_model, presets
            >>> build_model(presets.get("debug")).aux_losses()
            {}
        """
        terms = [mlp.aux_losses() for mlp in self._mlps()]
        if self.penalties is not None:
            terms.append(self.penalties.aux_losses())
        total: dict[str, Tensor] = {}
        for named in terms:
            for name, value in named.items():
                total[name] = total[name] + value if name in total else value
        return total

    def on_train_step(self, step: int, max_steps: int) -> None:
        """Tell every MLP and the penalties (their warmup) where training stands.

        The training loop calls this once per optimizer step, before the forward.

        Example:
            >>> from glassformer.archs import build_model, presets
            >>> build_model(presets.get("debug")).on_train_step(0, 100)
        """
        for mlp in self._mlps():
            mlp.on_train_step(step, max_steps)
        if self.penalties is not None:
            self.penalties.on_train_step(step, max_steps)

    def stats(self) -> dict[str, float]:
        """What the constraints control, as floats for logging.

        Each MLP's ``stats()`` (e.g. ``l0``, ``dead_fraction``) becomes ``sparsity/<name>/layer{i}`` plus the mean
        over layers ``sparsity/<name>``; the penalties add ``ortho/max_cos`` and ``ortho/max_cos/<target>``.

        Example:
            >>> from glassformer.archs import build_model, presets
            >>> build_model(presets.get("debug")).stats()
            {}
        """
        out: dict[str, float] = {}
        per_layer: dict[str, list[float]] = {}
        for i, block in enumerate(self.blocks):
            for name, value in (block.mlp.stats() if block.mlp is not None else {}).items():
                out[f"sparsity/{name}/layer{i}"] = value
                per_layer.setdefault(name, []).append(value)
        for name, values in per_layer.items():
            out[f"sparsity/{name}"] = sum(values) / len(values)
        # Activation sparsity: the measured non-zero fraction at each AbsTopK site, averaged over layers.
        by_site: dict[str, list[float]] = {}
        for name, module in self.named_modules():
            if isinstance(module, AbsTopK) and module.last_density is not None:
                by_site.setdefault(name.rsplit("sparsify_", 1)[-1], []).append(float(module.last_density))
        for site, values in by_site.items():
            out[f"sparsity/act_density/{site}"] = sum(values) / len(values)
        if by_site:
            out["sparsity/act_density"] = sum(sum(v) for v in by_site.values()) / sum(len(v) for v in by_site.values())
        if self.penalties is not None:
            out.update(self.penalties.stats())
        return out

    def _mlps(self) -> list[MLP]:
        return [block.mlp for block in self.blocks if block.mlp is not None]

    def penalty_matrices(self, target: str) -> list[Tensor]:
        """The (M, D) matrices whose rows an orthogonality penalty on ``target`` acts on, one per layer.

        Example:
            >>> from glassformer.archs import build_model, presets
            >>> [tuple(W.shape) for W in build_model(presets.get("debug")).penalty_matrices("W_O")]
            [(64, 64), (64, 64)]
        """
        if target == "embed":
            return [self.embed.weight]  # (d_vocab, d_model)
        if target == "unembed":
            return [self.unembed.weight]  # (d_vocab, d_model)
        if target == "W_O":
            return [block.attn.W_O.weight.T for block in self.blocks]  # (n_heads * d_head, d_model)
        if target == "mlp_out":
            return [mlp.output_weights() for mlp in self._mlps()]  # (d_mlp or n_latents, d_model)
        if target == "transcoder_decoder":  # config validation allows it only for transcoders: W_dec itself
            return [mlp.output_weights() for mlp in self._mlps()]  # (n_latents, d_model)
        raise ValueError(f"target={target!r} is not allowed: expected transcoder_decoder, W_O, mlp_out, embed, "
                         "or unembed")

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count (shared tensors counted once).

        Example:
            >>> from glassformer.archs import build_model, presets
            >>> build_model(presets.get("debug")).num_params() > 0
            True
        """
        seen, n = set(), 0
        for name, p in self.named_parameters():
            if id(p) in seen or (exclude_embeddings and name.split(".")[0] in ("embed", "pos_embed", "unembed")):
                continue
            seen.add(id(p))
            n += p.numel()
        return n


def build_model(cfg: ModelConfig) -> Transformer:
    """The only way a model is constructed: from a validated :class:`ModelConfig`.

    Example:
        >>> from glassformer.archs import presets
        >>> build_model(presets.get("debug")).num_params() > 0
        True
    """
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"build_model needs a ModelConfig, got {type(cfg).__name__}")
    return Transformer(cfg)
