"""CE loss recovered: how much of a model's loss a replacement MLP keeps, against an ablation of the MLP.

``ce_recovered = (L_ablated - L_spliced) / (L_ablated - L_clean)`` on next-token windows, for each replacement
spliced alone into the model (``blocks.{i}.mlp`` swapped for it) and for all of them together. The ablation
replaces what ``blocks.{i}.hook_mlp_out`` carries: zeros, or its mean over every position of the windows. The
report names the ablation, since zero ablation makes any replacement look better than mean ablation does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.archs.config import ModelConfig
from glassformer.archs.transformer import Transformer

Ablation = Literal["zero", "mean"]
ABLATIONS = ("zero", "mean")


def check_tokens(tokens: Any, cfg: ModelConfig, name: str) -> None:
    """Refuse, naming ``name``, anything but next-token windows (N, T) of ids the model can read.

    Example:
        >>> from glassformer.archs import presets
        >>> check_tokens(torch.zeros(2, 5, dtype=torch.long), presets.get("debug"), "tokens")
    """
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
        shape = tuple(getattr(tokens, "shape", ()))
        raise ValueError(f"{name} must be a LongTensor of token windows (N, T), got "
                         f"{type(tokens).__name__} {getattr(tokens, 'dtype', '')} {shape}")
    N, T = tokens.shape
    if N < 1 or T < 2 or T - 1 > cfg.n_ctx:
        raise ValueError(f"{name} has shape {(N, T)}: expected at least one window of 2 to n_ctx+1={cfg.n_ctx + 1} "
                         f"tokens (the first T-1 are the input, the last T-1 the next-token targets)")
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= cfg.d_vocab:
        raise ValueError(f"{name} holds token ids in [{low}, {high}], outside the model's vocabulary "
                         f"[0, {cfg.d_vocab})")


def chunks(tokens: Tensor, batch_tokens: int) -> Iterator[Tensor]:
    """Whole windows of ``tokens`` (N, T), about ``batch_tokens`` tokens at a time (at least one window).

    Example:
        >>> [tuple(c.shape) for c in chunks(torch.zeros(5, 4, dtype=torch.long), 8)]
        [(2, 4), (2, 4), (1, 4)]
    """
    per = max(1, batch_tokens // tokens.shape[1])
    for start in range(0, tokens.shape[0], per):
        yield tokens[start:start + per]


@contextmanager
def set_mode(module: nn.Module, training: bool) -> Iterator[None]:
    """Put ``module`` in train or eval mode for a block, restoring the mode of every submodule after.

    Example:
        >>> m = nn.Sequential(nn.Linear(1, 1)).eval()
        >>> with set_mode(m, True):
        ...     m.training
        True
        >>> m.training
        False
    """
    saved = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        yield
    finally:
        for m, mode in saved:
            m.training = mode


@contextmanager
def swapped_mlps(model: Transformer, replacements: dict[int, nn.Module]) -> Iterator[Transformer]:
    """Temporarily put ``replacements[i]`` in place of ``model.blocks[i].mlp``; the originals return afterwards.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> model = build_model(presets.get("debug"))
        >>> with swapped_mlps(model, {0: nn.Identity()}):
        ...     type(model.blocks[0].mlp).__name__
        'Identity'
    """
    saved = {i: model.blocks[i].mlp for i in replacements}
    try:
        for i, mlp in replacements.items():
            model.blocks[i].mlp = mlp
        yield model
    finally:
        for i, mlp in saved.items():
            model.blocks[i].mlp = mlp


@torch.no_grad()
def next_token_loss(model: Transformer, tokens: Tensor, *, batch_tokens: int = 4096) -> float:
    """Mean next-token cross-entropy (nats) of ``model`` over windows ``tokens`` (N, T): inputs ``tokens[:, :-1]``,
    targets ``tokens[:, 1:]``, in the model's current mode, summed in float64.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> 5.5 < next_token_loss(build_model(presets.get("debug")), torch.randint(0, 512, (2, 9))) < 7.0
        True
    """
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for chunk in chunks(tokens, batch_tokens):
        chunk = chunk.to(device)
        logits = model(chunk[:, :-1])
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), chunk[:, 1:].flatten(), reduction="sum",
                                       ).double())
        count += chunk[:, 1:].numel()
    return total / count


def ce_recovered(loss_clean: float, loss_spliced: float, loss_ablated: float) -> float:
    """``(L_ablated - L_spliced) / (L_ablated - L_clean)``; NaN when ablating changes nothing.

    Example:
        >>> ce_recovered(2.0, 2.5, 4.0)
        0.75
    """
    gap = loss_ablated - loss_clean
    return (loss_ablated - loss_spliced) / gap if gap != 0 else float("nan")


@torch.no_grad()
def splice_report(model: Transformer, replacements: dict[int, nn.Module], tokens: Tensor, *,
                  ablation: Ablation = "mean", batch_tokens: int = 4096) -> dict[str, Any]:
    """CE loss recovered by each replacement spliced alone into ``model``, and by all of them together.

    ``tokens`` (N, T) are next-token windows. ``model`` is left as it was (its MLPs are swapped back, its mode
    restored). The ablation replaces what ``blocks.{i}.hook_mlp_out`` carries: zeros, or its mean over every
    position of ``tokens``.

    Example:
        >>> import copy
        >>> from glassformer.archs import build_model, presets
        >>> model = build_model(presets.get("debug"))
        >>> same = {0: copy.deepcopy(model.blocks[0].mlp)}
        >>> splice_report(model, same, torch.randint(0, 512, (2, 9)))["layers"][0]["ce_recovered"]
        1.0
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation={ablation!r} is not allowed: expected one of {', '.join(ABLATIONS)}")
    check_tokens(tokens, model.cfg, "tokens")
    unknown = [i for i in replacements if not (isinstance(i, int) and 0 <= i < len(model.blocks))]
    if unknown or any(model.blocks[i].mlp is None for i in replacements):
        raise ValueError(f"replacements has layers {sorted(replacements)}; expected MLP layers of the model, "
                         f"0 to {len(model.blocks) - 1}")
    layers = sorted(replacements)
    with set_mode(model, False), set_mode(nn.ModuleList(replacements.values()), False):
        means: dict[int, Tensor] = {}
        if ablation == "mean":
            sums = {i: 0.0 for i in layers}
            n = 0

            def add(x: Tensor, hook: Any) -> None:
                i = int(hook.name.split(".")[1])
                sums[i] = sums[i] + x.flatten(0, -2).double().sum(dim=0)

            device = next(model.parameters()).device
            with model.hooks([(f"blocks.{i}.hook_mlp_out", add) for i in layers]):
                for chunk in chunks(tokens, batch_tokens):
                    model(chunk[:, :-1].to(device))
                    n += chunk[:, :-1].numel()
            means = {i: (s / n).float() for i, s in sums.items()}

        def ablate(x: Tensor, hook: Any) -> Tensor:
            if ablation == "zero":
                return torch.zeros_like(x)
            return means[int(hook.name.split(".")[1])].to(x.dtype).expand_as(x)

        def ablated_loss(which: list[int]) -> float:
            with model.hooks([(f"blocks.{i}.hook_mlp_out", ablate) for i in which]):
                return next_token_loss(model, tokens, batch_tokens=batch_tokens)

        def spliced_loss(which: list[int]) -> float:
            with swapped_mlps(model, {i: replacements[i] for i in which}):
                return next_token_loss(model, tokens, batch_tokens=batch_tokens)

        clean = next_token_loss(model, tokens, batch_tokens=batch_tokens)
        per_layer = []
        for i in layers:
            spliced, ablated = spliced_loss([i]), ablated_loss([i])
            per_layer.append({"layer": i, "loss_spliced": spliced, "loss_ablated": ablated,
                              "ce_recovered": ce_recovered(clean, spliced, ablated)})
        spliced, ablated = spliced_loss(layers), ablated_loss(layers)
    return {
        "ablation": ablation,
        "loss_clean": clean,
        "eval_tokens": int(tokens[:, 1:].numel()),
        "layers": per_layer,
        "all_layers": {"layers": layers, "loss_spliced": spliced, "loss_ablated": ablated,
                       "ce_recovered": ce_recovered(clean, spliced, ablated)},
    }
