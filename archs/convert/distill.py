"""Conversion of a model's MLPs to another registered MLP variant, initialised by distillation.

For each layer, the inputs and outputs of the module ``blocks.{i}.mlp`` are collected over corpus token windows
with a forward hook on that module. Its input is what the MLP really reads: ln2's output, after any ``mlp_in``
activation sparsity (``blocks.{i}.hook_mlp_in`` is the residual stream before ln2, so it is not used). Its output
is what ``mlp_out`` sparsity and ``blocks.{i}.hook_mlp_out`` see next. A replacement built from the variant config
is trained to map the one to the other (Adam on the output FVU plus the variant's own auxiliary losses), then
spliced into a new model whose every other weight is the original's.

Measured on held-out tokens, per layer: the FVU ``sum ||y - y_hat||^2 / sum ||y - mean(y)||^2``, the L0 where the
variant reports one, and the CE loss recovered ``(L_ablated - L_spliced) / (L_ablated - L_clean)`` with only that
layer spliced; and the CE loss recovered with every layer spliced at once. The ablation (``zero``, or ``mean``:
each MLP's output replaced by its mean over the evaluation tokens) replaces what ``hook_mlp_out`` carries; the
splicing and the CE measurements live in :mod:`glassformer.archs.convert.splice`.

Memory: activations are collected one layer at a time, ``2 * tokens * d_model`` floats per layer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from glassformer.archs import MLP_REGISTRY, build_model
from glassformer.archs.config import ModelConfig, mlp_config_from_dict
from glassformer.archs.convert.splice import (
    ABLATIONS,
    Ablation,
    check_tokens,
    chunks,
    set_mode,
    splice_report,
)
from glassformer.archs.mlp.base import MLP
from glassformer.archs.transformer import Transformer


def fvu(y: Tensor, y_hat: Tensor) -> Tensor:
    """Fraction of variance unexplained over rows: ``sum ||y - y_hat||^2 / sum ||y - mean(y)||^2``.

    Example:
        >>> y = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
        >>> float(fvu(y, y.mean(dim=0).expand_as(y))), float(fvu(y, y))
        (1.0, 0.0)
    """
    y, y_hat = y.float(), y_hat.float()
    return (y - y_hat).pow(2).sum() / (y - y.mean(dim=0)).pow(2).sum().clamp_min(1e-12)


def check_variant(variant_cfg: Any) -> Any:
    """The config of a registered MLP variant (a dict with ``kind`` is converted), or a ValueError naming the kinds.

    Example:
        >>> check_variant({"kind": "topk", "k": 8}).k
        8
    """
    if isinstance(variant_cfg, dict):
        return mlp_config_from_dict(variant_cfg)
    kind = getattr(variant_cfg, "kind", None)
    if kind not in MLP_REGISTRY or not isinstance(variant_cfg, MLP_REGISTRY[kind].config_cls):
        raise ValueError(f"variant_cfg={variant_cfg!r} is not allowed: expected the config of a registered MLP "
                         f"kind, one of {', '.join(MLP_REGISTRY.names())} (e.g. TranscoderConfig(k=32))")
    return variant_cfg


@torch.no_grad()
def collect_mlp_io(model: Transformer, tokens: Tensor, layer: int, *, batch_tokens: int = 4096
                   ) -> tuple[Tensor, Tensor]:
    """Input and output of ``blocks.{layer}.mlp`` at every position of ``tokens[:, :-1]``: two (N * (T-1), d_model).

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> x, y = collect_mlp_io(build_model(presets.get("debug")), torch.zeros(2, 5, dtype=torch.long), 0)
        >>> tuple(x.shape), tuple(y.shape)
        ((8, 64), (8, 64))
    """
    xs, ys = [], []

    def keep(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        xs.append(inputs[0].detach().flatten(0, -2))
        ys.append(output.detach().flatten(0, -2))

    device = next(model.parameters()).device
    handle = model.blocks[layer].mlp.register_forward_hook(keep)
    try:
        with set_mode(model, False):
            for chunk in chunks(tokens, batch_tokens):
                model(chunk[:, :-1].to(device))
    finally:
        handle.remove()
    return torch.cat(xs).float(), torch.cat(ys).float()


@torch.no_grad()
def mlp_metrics(mlp: nn.Module, x: Tensor, y: Tensor, *, batch_tokens: int = 4096) -> dict[str, float | None]:
    """Held-out ``fvu`` of ``mlp`` on inputs ``x`` and targets ``y`` (N, d_model), and its mean ``l0`` (None if it
    reports none: the ``l0`` of the variant's ``stats()``, averaged over chunks weighted by their size).

    Example:
        >>> mlp_metrics(nn.Identity(), torch.randn(10, 4), torch.randn(10, 4))["l0"] is None
        True
    """
    err = var = 0.0
    l0_sum, l0_count = 0.0, 0
    mean = y.mean(dim=0)
    with set_mode(mlp, False):
        for start in range(0, x.shape[0], batch_tokens):
            xb, yb = x[start:start + batch_tokens], y[start:start + batch_tokens]
            y_hat = mlp(xb).float()
            err += float((yb - y_hat).pow(2).sum(dtype=torch.float64))
            var += float((yb - mean).pow(2).sum(dtype=torch.float64))
            l0 = mlp.stats().get("l0") if isinstance(mlp, MLP) else None  # a plain module reports nothing
            if l0 is not None:
                l0_sum, l0_count = l0_sum + float(l0) * xb.shape[0], l0_count + xb.shape[0]
    return {"fvu": err / max(var, 1e-12), "l0": l0_sum / l0_count if l0_count else None}


def warm_start_(replacement: nn.Module, original: nn.Module) -> list[str]:
    """Start ``replacement`` from ``original``'s weights where they mean the same thing; returns what was copied.

    Every parameter with the same name and shape is copied, so a TopK or SoLU MLP of the dense MLP's width starts
    from the dense weights. A transcoder replacing an MLP with hidden units (``W_in``, ``W_out``) gets those units
    as latents: ``W_enc = W_in``, ``b_enc = b_in``, ``W_dec = W_out^T``, ``b_dec = b_out``; it then starts as the
    MLP with its activation swapped, exactly so when ``n_latents == d_mlp`` (the default 4 * d_model of both).
    With fewer latents than units, the units with the largest ``||w_in|| * ||w_out||`` are kept; extra latents
    keep their fresh encoder rows and zero decoder rows.

    Example:
        >>> warm_start_(nn.Linear(2, 3), nn.Linear(2, 3))
        ['weight', 'bias']
    """
    own = dict(replacement.named_parameters())
    copied = []
    with torch.no_grad():
        for name, p in original.named_parameters():
            if name in own and own[name].shape == p.shape:
                own[name].copy_(p)
                copied.append(name)
        # Units and latents are matched by their state-dict names (W_in/W_out linears against the transcoder's
        # W_enc/b_enc/W_dec/b_dec), the names tests/archs/test_state_dict_keys.py pins down.
        theirs = dict(original.named_parameters())
        W_in, b_in = theirs.get("W_in.weight"), theirs.get("W_in.bias")  # (d_mlp, d_model), (d_mlp,)
        W_out, b_out = theirs.get("W_out.weight"), theirs.get("W_out.bias")  # (d_model, d_mlp), (d_model,)
        if (not copied and W_in is not None and W_out is not None
                and all(n in own for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
                and own["W_enc"].shape[1] == W_in.shape[1]):
            n = min(own["W_enc"].shape[0], W_in.shape[0])
            units = (W_in.norm(dim=1) * W_out.norm(dim=0)).topk(n).indices.sort().values  # (n,)
            own["W_enc"][:n] = W_in[units]
            own["b_enc"][:n] = b_in[units] if b_in is not None else 0.0
            own["W_dec"][:n] = W_out.T[units]
            own["b_dec"].copy_(b_out if b_out is not None else torch.zeros_like(own["b_dec"]))
            copied = [f"W_enc[:{n}]=W_in.weight", f"b_enc[:{n}]=W_in.bias", f"W_dec[:{n}]=W_out.weight^T",
                      "b_dec=W_out.bias"]
    return copied


def distill_mlp(
    mlp: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    steps: int = 300,
    lr: float = 1e-3,
    batch_tokens: int = 4096,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
    layer: int = 0,
) -> list[float]:
    """Train ``mlp`` in place to map ``x`` to ``y`` (N, d_model); returns the loss at each progress report.

    The loss is the batch FVU (the MSE divided by the batch's output variance, so one learning rate suits every
    layer's scale) plus the variant's own ``aux_losses()``. Adam, cosine decay to a tenth of ``lr``; batches of
    ``batch_tokens`` rows drawn with replacement by a generator seeded with ``seed``.

    Example:
        >>> losses = distill_mlp(nn.Linear(4, 4), torch.randn(64, 4), torch.randn(64, 4), steps=5, batch_tokens=16)
        >>> len(losses) >= 1
        True
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(mlp.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0))))
    report_every = max(1, steps // 10)
    losses: list[float] = []
    with set_mode(mlp, True):
        for step in range(steps):
            idx = torch.randint(0, x.shape[0], (batch_tokens,), generator=gen).to(x.device)
            xb, yb = x[idx], y[idx]
            loss = fvu(yb, mlp(xb))
            aux = mlp.aux_losses() if isinstance(mlp, MLP) else {}  # a plain module has no auxiliary terms
            if aux:
                loss = loss + sum(aux.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if (step + 1) % report_every == 0 or step + 1 == steps:
                losses.append(float(loss.detach()))  # the only device sync, once per report
                if progress is not None:
                    progress({"layer": layer, "step": step + 1, "steps": steps, "loss": losses[-1]})
    return losses


def _build_replacement(variant_cfg: Any, model_cfg: ModelConfig, seed: int) -> nn.Module:
    # Seeded without touching the caller's global generator: fork_rng restores it afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP_REGISTRY.build(variant_cfg, model_cfg)


def convert_mlps(
    model: Transformer,
    variant_cfg: Any,
    tokens: Tensor,
    *,
    eval_tokens: Tensor | None = None,
    layers: list[int] | None = None,
    steps: int = 300,
    lr: float = 1e-3,
    batch_tokens: int = 4096,
    seed: int = 0,
    warm_start: bool = True,
    ablation: Ablation = "mean",
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Transformer, dict[str, Any]]:
    """A NEW model whose MLPs are ``variant_cfg`` modules distilled from ``model``'s, and the conversion report.

    ``tokens`` (N, T) are corpus windows whose first T-1 positions give the activations to distil on (and whose
    last T-1 are the targets of the CE measurements); ``eval_tokens`` are held-out windows for the FVU, L0 and CE
    loss recovered (default: the last eighth of ``tokens``, which is then not trained on). ``layers`` are the
    layers to distil (default: all); any other layer must be able to keep its MLP's weights under the new variant
    (same parameter names and shapes, e.g. dense -> TopK at the same width) and is refused otherwise, because a
    model has one MLP variant for every layer. With ``warm_start`` a distilled replacement first copies the
    parameters it shares with the original MLP. ``model`` itself is not changed.

    The report: ``variant``, the settings, and under ``layers`` one entry per layer with ``fvu`` (held out),
    ``fvu_before`` (before training), ``l0`` (None for dense variants), ``loss_spliced`` / ``loss_ablated`` /
    ``ce_recovered`` with that layer alone spliced, and under ``all_layers`` the same with every layer spliced.

    Example:
        >>> from glassformer.archs import TranscoderConfig, build_model, presets
        >>> model = build_model(presets.get("debug"))
        >>> new, report = convert_mlps(model, TranscoderConfig(k=8), torch.randint(0, 512, (16, 33)), steps=20)
        >>> new.cfg.mlp.kind, len(report["layers"])
        ('transcoder', 2)
    """
    variant_cfg = check_variant(variant_cfg)
    cfg: ModelConfig = model.cfg
    if cfg.attn_only:
        raise ValueError("the model is attention-only (model.attn_only=true): it has no MLPs to convert")
    new_cfg = ModelConfig.from_dict({**cfg.to_dict(), "mlp": dataclasses.asdict(variant_cfg)})
    all_layers = list(range(cfg.n_layers))
    layers = all_layers if layers is None else sorted(set(layers))
    if not layers or any(not isinstance(i, int) or not 0 <= i < cfg.n_layers for i in layers):
        raise ValueError(f"layers={layers!r} is not allowed: expected a non-empty list of layers in "
                         f"0..{cfg.n_layers - 1}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} is not allowed: expected a non-negative integer")
    if not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise ValueError(f"batch_tokens={batch_tokens!r} is not allowed: expected a positive integer")
    if not lr > 0:
        raise ValueError(f"lr={lr!r} is not allowed: expected a positive float")
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation={ablation!r} is not allowed: expected one of {', '.join(ABLATIONS)}")
    check_tokens(tokens, cfg, "tokens")
    if eval_tokens is None:
        if tokens.shape[0] < 2:
            raise ValueError("tokens has one window: give at least two (one is held out), or pass eval_tokens")
        held = max(1, tokens.shape[0] // 8)
        tokens, eval_tokens = tokens[:-held], tokens[-held:]
    check_tokens(eval_tokens, cfg, "eval_tokens")

    device = next(model.parameters()).device
    replacements: dict[int, nn.Module] = {}
    # Layers kept as they are go first: a refusal should come before minutes of distillation.
    for i in (j for j in all_layers if j not in layers):
        mlp = _build_replacement(variant_cfg, new_cfg, seed + i)
        try:
            mlp.load_state_dict(model.blocks[i].mlp.state_dict(), strict=True)
        except RuntimeError as e:
            raise ValueError(f"layer {i} is not in layers={layers} and its {cfg.mlp_config.kind} MLP's weights do "
                             f"not fit a {variant_cfg.kind} MLP ({str(e).splitlines()[0]}); a model has one MLP "
                             f"variant for every layer, so distil it too (layers=None)") from e
        replacements[i] = mlp.to(device)

    entries: dict[int, dict[str, Any]] = {}
    for i in layers:
        x, y = collect_mlp_io(model, tokens, i, batch_tokens=batch_tokens)
        x_eval, y_eval = collect_mlp_io(model, eval_tokens, i, batch_tokens=batch_tokens)
        mlp = _build_replacement(variant_cfg, new_cfg, seed + i).to(device)
        copied = warm_start_(mlp, model.blocks[i].mlp) if warm_start else []
        before = mlp_metrics(mlp, x_eval, y_eval, batch_tokens=batch_tokens)["fvu"]
        distill_mlp(mlp, x, y, steps=steps, lr=lr, batch_tokens=batch_tokens, seed=seed + i, progress=progress,
                    layer=i)
        after = mlp_metrics(mlp, x_eval, y_eval, batch_tokens=batch_tokens)
        train_fvu = mlp_metrics(mlp, x[:len(x_eval)], y[:len(y_eval)], batch_tokens=batch_tokens)["fvu"]
        entries[i] = {"layer": i, "distilled": True, "warm_start": copied, "fvu_before": before,
                      "fvu": after["fvu"], "fvu_train": train_fvu, "l0": after["l0"]}
        replacements[i] = mlp
        del x, y, x_eval, y_eval

    for i in all_layers:
        if i not in entries:
            x_eval, y_eval = collect_mlp_io(model, eval_tokens, i, batch_tokens=batch_tokens)
            kept = mlp_metrics(replacements[i], x_eval, y_eval, batch_tokens=batch_tokens)
            entries[i] = {"layer": i, "distilled": False, "warm_start": ["all"], "fvu_before": kept["fvu"],
                          **kept, "fvu_train": None}
    splice = splice_report(model, replacements, eval_tokens, ablation=ablation, batch_tokens=batch_tokens)
    for row in splice["layers"]:
        entries[row["layer"]].update(row)

    new = build_model(new_cfg)
    original = model.state_dict()
    state = {}
    for key in new.state_dict():
        parts = key.split(".")
        if len(parts) > 3 and parts[0] == "blocks" and parts[2] == "mlp":
            state[key] = replacements[int(parts[1])].state_dict()[".".join(parts[3:])]
        else:
            state[key] = original[key]
    new.load_state_dict(state, strict=True)
    new = new.to(device).train(model.training)
    report = {
        "variant": dataclasses.asdict(variant_cfg),
        "parent_mlp": dataclasses.asdict(cfg.mlp_config),
        "settings": {"steps": steps, "lr": lr, "batch_tokens": batch_tokens, "seed": seed, "warm_start": warm_start,
                     "train_tokens": int(tokens[:, :-1].numel()), "eval_tokens": int(eval_tokens[:, 1:].numel())},
        "ablation": ablation,
        "loss_clean": splice["loss_clean"],
        "layers": [entries[i] for i in all_layers],
        "all_layers": splice["all_layers"],
    }
    return new, report
