"""Weight sparsity (Gao et al. 2025): after every optimizer step keep only the largest-magnitude weights.

Each covered tensor keeps exactly ``kept_count(...)`` entries (ties broken by the kernel, never by keeping extra):

- weight matrices (attention, MLP, transcoder encoder/decoder/skip) anneal to ``fraction``;
- embeddings (token, position, unembedding) and biases anneal to the looser ``embed_fraction`` / ``bias_fraction``,
  as Gao does: a token or a bias losing its last weights costs more than one matrix entry;
- norm gains and biases and JumpReLU thresholds stay dense: zeroing a gain silences a whole channel.

Every row keeps at least ``min_per_neuron`` entries, reserved before the global ranking: a row is one output
neuron of a linear map (its incoming weights), one latent of a transcoder's encoder or decoder, one token of an
embedding.

The anneal has one schedule position shared by all groups (:func:`anneal_progress`): 0 until the ``anneal_start``
fraction of training, then linear to 1 at ``anneal_end``. Each group anneals from dense to its own target at that
position, ``1 - progress * (1 - target)``, so every group reaches its target whatever the others' are, and a group
whose target is 1.0 stays dense. The learning rate may be scaled by ``sqrt(target / current)`` of the matrices.

Training applies it (``glassformer.training.callbacks.WeightSparsityCallback``), which also zeroes the Adam state of
pruned entries (:func:`zero_pruned_state_`) so momentum does not bring them back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from glassformer import kernels
from glassformer.archs.validation import check, check_fraction

GROUPS = ("matrix", "embedding", "bias")


@dataclass
class WeightSparsityConfig:
    """Target kept fractions, their anneal, the per-neuron minimum and the learning-rate scaling.

    Example:
        >>> cfg = WeightSparsityConfig(fraction=0.25, anneal_start=0.0, anneal_end=0.5)
        >>> fraction_at(25, 100, cfg)
        0.625
    """

    fraction: float = 0.25
    """Kept fraction of each weight matrix once annealed, in (0, 1]."""
    embed_fraction: float = 0.5
    """Kept fraction of the token/position embeddings and the unembedding once annealed, in (0, 1]."""
    bias_fraction: float = 0.5
    """Kept fraction of each bias vector once annealed, in (0, 1]; 1.0 leaves biases dense."""
    anneal_start: float = 0.01
    """Fraction of training before which the weights stay dense (Gao: 1%)."""
    anneal_end: float = 0.5
    """Fraction of training at which the targets are reached (Gao: 50%)."""
    min_per_neuron: int = 4
    """Entries every row keeps whatever its magnitudes (Gao: 4), so no neuron is cut off entirely."""
    lr_scaling: bool = True
    """Scale the learning rate by sqrt(target fraction / current fraction), as Gao does: smaller steps while the
    weights are still dense."""
    refresh_every: int = 1
    """Optimizer steps between selections of the kept entries (Gao: 1). In between, the last masks are applied
    again after every step (pruned entries stay exactly zero, their Adam state too); on a CPU the selection costs
    about half a step of a d_model 256 model, re-applying masks about 1% (benchmarks/projection_share.py)."""

    def validate(self, model_cfg: Any = None) -> None:
        for name in ("fraction", "embed_fraction", "bias_fraction"):
            check_fraction(getattr(self, name), f"model.weight_sparsity.{name}")
        for name in ("anneal_start", "anneal_end"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and 0 <= value <= 1, f"model.weight_sparsity.{name}", value,
                  "a fraction of training in [0, 1]")
        check(self.anneal_start <= self.anneal_end, "model.weight_sparsity.anneal_end", self.anneal_end,
              f"a fraction >= anneal_start={self.anneal_start}")
        check(isinstance(self.min_per_neuron, int) and not isinstance(self.min_per_neuron, bool)
              and self.min_per_neuron >= 0, "model.weight_sparsity.min_per_neuron", self.min_per_neuron,
              "a non-negative integer")
        check(isinstance(self.refresh_every, int) and not isinstance(self.refresh_every, bool)
              and self.refresh_every >= 1, "model.weight_sparsity.refresh_every", self.refresh_every,
              "a positive integer (optimizer steps between selections)")

    def __post_init__(self) -> None:
        self.validate()

    def target(self, group: str) -> float:
        """The annealed kept fraction of a parameter group (``matrix``, ``embedding`` or ``bias``)."""
        return {"matrix": self.fraction, "embedding": self.embed_fraction, "bias": self.bias_fraction}[group]


def fraction_at(step: int, max_steps: int, cfg: WeightSparsityConfig) -> float:
    """Kept fraction of the weight matrices at ``step``: 1.0 until ``anneal_start``, then linear to the target.

    Example:
        >>> cfg = WeightSparsityConfig(fraction=0.1, anneal_start=0.1, anneal_end=0.5)
        >>> [round(fraction_at(s, 10, cfg), 3) for s in (0, 1, 3, 5, 9)]
        [1.0, 1.0, 0.55, 0.1, 0.1]
    """
    t = anneal_progress(step, max_steps, cfg)
    if t == 0.0:
        return 1.0
    if t == 1.0:
        return cfg.fraction  # exactly the target, not 1 + (target - 1)
    return 1.0 + (cfg.fraction - 1.0) * t


def lr_scale_at(step: int, max_steps: int, cfg: WeightSparsityConfig) -> float:
    """``sqrt(target / current)`` when ``cfg.lr_scaling``, else 1.0.

    Example:
        >>> lr_scale_at(0, 100, WeightSparsityConfig(fraction=0.25))
        0.5
    """
    if not cfg.lr_scaling:
        return 1.0
    return math.sqrt(cfg.fraction / fraction_at(step, max_steps, cfg))


def anneal_progress(step: int, max_steps: int, cfg: WeightSparsityConfig) -> float:
    """Schedule position at ``step``: 0 (dense) until ``anneal_start``, linear to 1 (every group at its target).

    Every group's kept fraction is ``1 - progress * (1 - its target)`` (see :func:`project_`).

    Example:
        >>> cfg = WeightSparsityConfig(fraction=1.0, bias_fraction=0.5, anneal_start=0.1, anneal_end=0.5)
        >>> [round(anneal_progress(s, 10, cfg), 3) for s in (0, 1, 3, 5, 9)]
        [0.0, 0.0, 0.5, 1.0, 1.0]
    """
    # From the step, never read back off the matrices' fraction: near a matrix target of 1.0 that fraction rounds
    # to 1.0 (a target of 1 - 1e-16 keeps it there all anneal) and would hold every other group dense too.
    progress = step / max(max_steps, 1)
    if progress <= cfg.anneal_start:
        return 0.0
    if progress >= cfg.anneal_end:
        return 1.0
    return (progress - cfg.anneal_start) / (cfg.anneal_end - cfg.anneal_start)


def _progress_from_fraction(fraction: float, cfg: WeightSparsityConfig) -> float:
    # A matrix target of 1.0 pins the matrix fraction at 1.0 for the whole anneal, so it cannot tell the position;
    # the fraction then equals the target, which is what "at the end of the anneal" means for the other targets.
    # Below 1.0 this is the pre-issue-19 arithmetic, so direct callers keep their exact counts.
    if cfg.fraction >= 1:
        return 1.0
    return min(1.0, (1.0 - fraction) / (1.0 - cfg.fraction))


def kept_count(rows: int, cols: int, fraction: float, min_per_row: int) -> int:
    """Entries a (rows, cols) tensor keeps: ``round(fraction * rows * cols)``, at least ``min_per_row`` per row.

    Example:
        >>> kept_count(10, 100, 0.01, 4)
        40
    """
    return min(rows * cols, max(round(fraction * rows * cols), min(min_per_row, cols) * rows))


def prunable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter, str]]:
    """``(name, parameter, group)`` for every tensor the projection covers; shared tensors appear once.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> groups = {g for _, _, g in prunable_parameters(build_model(presets.get("debug")))}
        >>> sorted(groups)
        ['bias', 'embedding', 'matrix']
    """
    dense_ids: set[int] = set()
    embedding_ids: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or type(module).__name__ == "Norm":
            dense_ids.update(id(p) for p in module.parameters(recurse=False))
        if isinstance(module, nn.Embedding) or name == "unembed":
            embedding_ids.update(id(p) for p in module.parameters(recurse=False))
    out = []
    for name, p in model.named_parameters():
        if id(p) in dense_ids:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if id(p) in embedding_ids:
            out.append((name, p, "embedding"))
        elif p.dim() >= 2:
            out.append((name, p, "matrix"))
        elif p.dim() == 1 and (leaf == "bias" or leaf.startswith("b_")):
            out.append((name, p, "bias"))
    return out


@torch.no_grad()
def project_(model: nn.Module, fraction: float | None = None, cfg: WeightSparsityConfig | None = None, *,
             progress: float | None = None) -> dict[str, Tensor]:
    """Prune every covered tensor of ``model`` in place; returns ``{parameter name: kept mask}``.

    Give the anneal's position either as ``progress`` (from :func:`anneal_progress`; 0 dense, 1 at the targets)
    or as ``fraction``, the current kept fraction of the weight matrices (from :func:`fraction_at`), which stands
    for ``(1 - fraction) / (1 - cfg.fraction)``; with a matrix target of 1.0 any fraction means the end of the
    anneal, so project mid-anneal with ``progress`` (the training callback always does). Each group is then
    pruned to ``1 - progress * (1 - its target)``; a group at 1.0 is left alone and has no mask. ``cfg`` defaults
    to ``model.cfg.weight_sparsity``.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> model = build_model(presets.get("debug"))
        >>> masks = project_(model, 0.5, WeightSparsityConfig(fraction=0.5, embed_fraction=0.5, bias_fraction=0.5))
        >>> round(density(model, masks), 2)
        0.5
        >>> masks = project_(model, cfg=WeightSparsityConfig(fraction=1.0, embed_fraction=1.0), progress=1.0)
        >>> sorted({name.rsplit(".", 1)[-1] for name in masks})  # only the biases (target 0.5) are pruned
        ['bias']
    """
    cfg = cfg if cfg is not None else getattr(getattr(model, "cfg", None), "weight_sparsity", None)
    if cfg is None:
        raise ValueError("project_ needs cfg=WeightSparsityConfig(...) or a model whose cfg.weight_sparsity is set")
    if (fraction is None) == (progress is None):
        raise ValueError(f"project_ needs exactly one of fraction (the matrices' kept fraction) or progress "
                         f"(the anneal position in [0, 1]); got fraction={fraction!r}, progress={progress!r}")
    if progress is None:
        check_fraction(fraction, "fraction")
        progress = _progress_from_fraction(fraction, cfg)
    check(isinstance(progress, (int, float)) and not isinstance(progress, bool) and 0 <= progress <= 1,
          "progress", progress, "an anneal position in [0, 1]")
    impl = getattr(getattr(model, "cfg", None), "kernels", "auto")
    masks: dict[str, Tensor] = {}
    for name, p, group in prunable_parameters(model):
        group_fraction = 1.0 - progress * (1.0 - cfg.target(group))
        if group_fraction >= 1.0:
            continue
        W = p.data if p.dim() == 2 else p.data.view(1, -1)  # (rows, cols); a bias is one row
        min_per_row = cfg.min_per_neuron if p.dim() == 2 else 0
        keep = kept_count(W.shape[0], W.shape[1], group_fraction, min_per_row)
        mask = kernels.magnitude_prune_(W, keep, min_per_row=min(min_per_row, W.shape[1]), impl=impl)
        masks[name] = mask.view(p.shape)
    return masks


def density(model: nn.Module, masks: dict[str, Tensor]) -> float:
    """Fraction of the covered entries of ``model`` kept: masked tensors count their mask, the rest count whole.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> density(build_model(presets.get("debug")), {})
        1.0
    """
    kept = total = 0
    for name, p, _ in prunable_parameters(model):
        total += p.numel()
        kept += int(masks[name].sum()) if name in masks else p.numel()
    return kept / total if total else 1.0


@torch.no_grad()
def zero_pruned_state_(optimizer: torch.optim.Optimizer, model: nn.Module, masks: dict[str, Tensor]) -> int:
    """Zero the optimizer state (Adam's exp_avg, exp_avg_sq, ...) of pruned entries; returns tensors touched.

    Without this a pruned weight keeps its momentum and the next step moves it away from zero again.

    Example:
        >>> lin = nn.Linear(2, 2)
        >>> opt = torch.optim.AdamW(lin.parameters())
        >>> zero_pruned_state_(opt, lin, {"weight": torch.ones(2, 2, dtype=torch.bool)})  # no state yet
        0
    """
    params = dict(model.named_parameters())
    touched = 0
    for name, mask in masks.items():
        p = params[name]
        state = optimizer.state.get(p)
        if not state:
            continue
        for value in state.values():
            # Per-entry moments have the parameter's shape; the step counter is a scalar and is left alone.
            if torch.is_tensor(value) and value.shape == p.shape:
                value.masked_fill_(~mask, 0)
                touched += 1
    return touched
