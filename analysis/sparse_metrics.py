"""Interpretability metrics of sparse layers (docs/methods.md), for any model that has MLPs, neurons or latents.

Per layer, on corpus tokens, at the hidden site (``hook_post`` for neurons, ``hook_latents`` for transcoders):

- ``l0``: mean number of non-zero units per token;
- firing frequency of each unit (fraction of tokens on which it is non-zero), its histogram by decade, the
  ``dead_fraction`` (never non-zero on the sampled tokens: a sample, not the training-time window) and the
  ``dense_fraction`` (non-zero on more than ``dense_threshold`` of the tokens);
- ``interference``: |cos| between every pair of distinct unit output directions (rows of ``output_weights()``;
  all-zero rows are left out and counted), its mean, max, histogram and the fraction above ``cos_threshold``.

Per model: ``weight_density``, the non-zero fraction of each weight matrix, embedding and bias that weight
sparsity covers. With a parent (a fine-tuned model whose ``training.json`` names one, of the same shape): each
layer's ``fvu`` (``sum ||y - y_hat||^2 / sum ||y - mean(y)||^2`` with y the parent MLP's output and y_hat this
model's MLP on the same input) and ``ce_loss_recovered`` (``(L_ablated - L_spliced) / (L_ablated - L_clean)``, this
model's MLP spliced into the parent alone and all together, against mean or zero ablation of the parent's MLP).

Example:
    >>> l0(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))
    1.5
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

DEFAULT_DENSE_THRESHOLD = 0.1
"""A unit firing on more than this fraction of tokens is dense (a choice: no single published threshold)."""
DEFAULT_COS_THRESHOLD = 0.5
FREQUENCY_EDGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def l0(codes: Tensor) -> float:
    """Mean non-zero entries per row of ``codes`` (N, M)."""
    return float((codes != 0).sum(dim=-1).double().mean())


def firing_frequency(codes: Tensor) -> Tensor:
    """(N, M) codes -> (M,) fraction of rows on which each unit is non-zero.

    Example:
        >>> firing_frequency(torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0], [1.0, 5.0]])).tolist()
        [0.75, 0.25]
    """
    return (codes != 0).double().mean(dim=0)


def frequency_summary(freq: Tensor, dense_threshold: float = DEFAULT_DENSE_THRESHOLD) -> dict[str, Any]:
    """Dead and dense fractions of units with firing frequencies ``freq`` (M,), and the histogram by decade:
    ``never`` (exactly 0), then ``(lo, hi]`` for the decades of :data:`FREQUENCY_EDGES`.

    Example:
        >>> s = frequency_summary(torch.tensor([0.0, 0.0, 0.5, 0.05]), dense_threshold=0.1)
        >>> s["dead_fraction"], s["dense_fraction"], s["histogram"][0]
        (0.5, 0.25, {'lo': 0.0, 'hi': 0.0, 'count': 2})
    """
    freq = freq.double().cpu()
    hist = [{"lo": 0.0, "hi": 0.0, "count": int((freq == 0).sum())}]
    lo = 0.0
    for hi in FREQUENCY_EDGES:
        hist.append({"lo": lo, "hi": hi, "count": int(((freq > lo) & (freq <= hi)).sum())})
        lo = hi
    return {"n_units": len(freq), "dead_fraction": float((freq == 0).double().mean()),
            "dense_fraction": float((freq > dense_threshold).double().mean()), "dense_threshold": dense_threshold,
            "histogram": hist}


def interference(W: Tensor, threshold: float = DEFAULT_COS_THRESHOLD, bins: int = 20,
                 chunk: int = 2048) -> dict[str, Any]:
    """|cos| between every pair of distinct rows of ``W`` (M, D) that are not all zero (computed in chunks, so
    M can be large): mean, max, the fraction above ``threshold`` and a histogram of ``bins`` equal bins on [0, 1].

    Example:
        >>> W = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
        >>> r = interference(W, threshold=0.5, bins=2)
        >>> r["pairs"], round(r["mean_abs_cos"], 4), round(r["fraction_above"], 4), r["zero_directions"]
        (3, 0.4714, 0.6667, 1)
    """
    W = W.detach().double().cpu()
    norms = W.norm(dim=1)
    U = W[norms > 0] / norms[norms > 0, None]  # (M', D)
    M = U.shape[0]
    counts = torch.zeros(bins, dtype=torch.long)
    total, above, top = 0.0, 0, 0.0
    for start in range(0, M, chunk):
        block = (U[start:start + chunk] @ U.T).abs().clamp(max=1.0)  # (c, M')
        rows = torch.arange(start, start + block.shape[0])
        upper = rows[:, None] < torch.arange(M)[None, :]  # each unordered pair once, never a row with itself
        vals = block[upper]
        if vals.numel():
            total += float(vals.sum())
            above += int((vals > threshold).sum())
            top = max(top, float(vals.max()))
            counts += torch.bincount((vals * bins).long().clamp(max=bins - 1), minlength=bins)
    pairs = M * (M - 1) // 2
    return {"directions": M, "zero_directions": int((norms == 0).sum()), "pairs": pairs,
            "mean_abs_cos": total / pairs if pairs else None, "max_abs_cos": top if pairs else None,
            "threshold": threshold, "fraction_above": above / pairs if pairs else None,
            "histogram": {"edges": [i / bins for i in range(bins + 1)], "counts": counts.tolist()}}


def weight_density(model: Any) -> dict[str, Any]:
    """Non-zero fraction of every tensor weight sparsity covers (matrices, embeddings, biases), by group, overall.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> weight_density(build_model(presets.get("debug")))["overall"] > 0.5  # biases start at zero
        True
    """
    from glassformer.archs.weight_sparsity import prunable_parameters

    per: dict[str, float] = {}
    groups: dict[str, list[int]] = {}
    for name, p, group in prunable_parameters(model):
        nz = int((p.detach() != 0).sum())
        per[name] = nz / p.numel()
        kept, total = groups.setdefault(group, [0, 0])
        groups[group] = [kept + nz, total + p.numel()]
    kept = sum(k for k, _ in groups.values())
    total = sum(t for _, t in groups.values())
    return {"matrices": per, "by_group": {g: k / t for g, (k, t) in groups.items()},
            "overall": kept / total if total else 1.0}


def fvu(y: Tensor, y_hat: Tensor) -> float:
    """Fraction of variance unexplained: ``sum ||y - y_hat||^2 / sum ||y - mean(y)||^2`` over rows (N, D).

    Example:
        >>> fvu(torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]]))
        1.0
    """
    y, y_hat = y.double(), y_hat.double()
    var = float((y - y.mean(dim=0)).pow(2).sum())
    return float((y - y_hat).pow(2).sum()) / var if var > 0 else float("nan")


@torch.no_grad()
def hidden_activity(model: Any, tokens: Tensor, hook: str, batch_size: int = 16,
                    dense_threshold: float = DEFAULT_DENSE_THRESHOLD) -> list[dict[str, Any]]:
    """Per layer: ``l0`` and the firing-frequency summary of the units at ``blocks.{l}.mlp.{hook}`` over every
    position of ``tokens`` (N, T)."""
    device = next(model.parameters()).device
    tokens = tokens[:, : model.cfg.n_ctx].to(device)
    L = model.cfg.n_layers
    fired: list[Tensor | int] = [0] * L
    nonzero_sum = [0.0] * L

    def count(layer: int):
        def fn(x: Tensor, h: Any) -> None:
            nz = x.reshape(-1, x.shape[-1]) != 0  # (N, M)
            fired[layer] = fired[layer] + nz.sum(dim=0).double().cpu()
            nonzero_sum[layer] += float(nz.sum())
        return fn

    with model.hooks([(f"blocks.{l}.mlp.{hook}", count(l)) for l in range(L)]):
        for start in range(0, tokens.shape[0], batch_size):
            model(tokens[start:start + batch_size])
    n = tokens.numel()
    return [{"layer": l, "site": f"blocks.{l}.mlp.{hook}", "tokens": n, "l0": nonzero_sum[l] / n,
             **frequency_summary(fired[l] / n, dense_threshold)} for l in range(L)]


@torch.no_grad()
def parent_fidelity(model: Any, parent: Any, tokens: Tensor, ablation: str = "mean") -> dict[str, Any]:
    """FVU of each of ``model``'s MLPs against the ``parent``'s on the parent's MLP inputs, and CE loss recovered
    with ``model``'s MLPs spliced into the parent; ``tokens`` (N, T) are next-token windows (T <= n_ctx + 1).

    Example:
        >>> import copy
        >>> from glassformer.archs import build_model, presets
        >>> m = build_model(presets.get("debug"))
        >>> parent_fidelity(m, copy.deepcopy(m), torch.randint(0, 512, (2, 9)))["layers"][0]["fvu"]
        0.0
    """
    from glassformer.archs.convert import splice_report

    if model.cfg.n_layers != parent.cfg.n_layers or model.cfg.d_model != parent.cfg.d_model:
        raise ValueError(f"the parent has {parent.cfg.n_layers} layers of d_model {parent.cfg.d_model}, the model "
                         f"{model.cfg.n_layers} of {model.cfg.d_model}: MLPs can only be compared at equal shape")
    device = next(parent.parameters()).device
    layers = []
    for l, block in enumerate(parent.blocks):
        io: list[tuple[Tensor, Tensor]] = []

        def keep(mod: Any, inp: tuple[Tensor, ...], out: Tensor, io: list = io) -> None:
            io.append((inp[0].detach(), out.detach()))

        # A forward hook on the parent's MLP module sees exactly what it reads and returns (after any
        # activation sparsity at mlp_in, before any at mlp_out), which no hook point carries in every config.
        handle = block.mlp.register_forward_hook(keep)
        try:
            for start in range(0, tokens.shape[0], 16):
                parent(tokens[start:start + 16, :-1].to(device))
        finally:
            handle.remove()
        x = torch.cat([a.reshape(-1, a.shape[-1]) for a, _ in io])  # (N, d_model)
        y = torch.cat([b.reshape(-1, b.shape[-1]) for _, b in io])
        y_hat = model.blocks[l].mlp(x.to(next(model.parameters()).device)).to(y.device)
        layers.append({"layer": l, "fvu": fvu(y, y_hat)})
    report = splice_report(parent, {l: model.blocks[l].mlp for l in range(len(layers))}, tokens,
                           ablation=ablation)
    for row, spliced in zip(layers, report["layers"], strict=True):
        row.update(loss_spliced=spliced["loss_spliced"], loss_ablated=spliced["loss_ablated"],
                   ce_loss_recovered=spliced["ce_recovered"])
    every = report["all_layers"]
    return {"ablation": ablation, "loss_clean": report["loss_clean"], "tokens": int(tokens[:, 1:].numel()),
            "layers": layers,
            "all_layers": {"loss_spliced": every["loss_spliced"], "loss_ablated": every["loss_ablated"],
                           "ce_loss_recovered": every["ce_recovered"]}}


def load_parent(model_dir: str | Path) -> tuple[Any | None, str]:
    """The parent named by ``training.json`` (loaded on the CPU, eval mode) and a note saying which, or
    (None, why not): no parent recorded, the folder is gone, or its shape differs.

    Example:
        >>> load_parent("runs/demo/tiny")  # doctest: +SKIP
        (None, 'training.json names no parent')
    """
    from glassformer.archs import load_model_dir, read_training

    record = read_training(model_dir).get("parent")
    if not isinstance(record, dict) or not record.get("path"):
        return None, "training.json names no parent"
    path = Path(record["path"])
    if not path.is_dir():
        return None, f"the parent {path} named by training.json is not there"
    if record.get("format", "glassformer") == "huggingface":
        from glassformer.archs.convert import import_gpt2

        return import_gpt2(path)[0].eval(), f"Hugging Face GPT-2 parent {path}"
    return load_model_dir(path).eval(), f"parent {path}"


def sparse_layer_report(model: Any, tokens: Tensor, *, parent: Any = None, parent_note: str = "",
                        eval_tokens: Tensor | None = None, ablation: str = "mean",
                        dense_threshold: float = DEFAULT_DENSE_THRESHOLD,
                        cos_threshold: float = DEFAULT_COS_THRESHOLD) -> dict[str, Any]:
    """Every metric of this module for ``model`` on corpus windows ``tokens`` (N, T); the parent comparison on
    ``eval_tokens`` (next-token windows, default ``tokens``) when a ``parent`` is given.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> r = sparse_layer_report(build_model(presets.get("debug")), torch.randint(0, 512, (2, 8)))
        >>> r["layers"][0]["site"], r["parent"]
        ('blocks.0.mlp.hook_post', None)
    """
    from glassformer.analysis.node.graph import hidden_site

    out: dict[str, Any] = {"weight_density": weight_density(model), "layers": [], "parent": None,
                           "parent_note": parent_note or "no parent given"}
    if model.cfg.attn_only:
        out["parent_note"] = "attention-only model: no MLP layers"
        return out
    hook, _ = hidden_site(model.cfg)
    layers = hidden_activity(model, tokens, hook, dense_threshold=dense_threshold)
    for row, block in zip(layers, model.blocks, strict=True):
        row["interference"] = interference(block.mlp.output_weights(), cos_threshold)
    out["layers"] = layers
    if parent is not None:
        out["parent"] = parent_fidelity(model, parent, eval_tokens if eval_tokens is not None else tokens, ablation)
    return out


def format_sparse_table(sparse: dict[str, Any]) -> list[str]:
    """Lines of the sparse-layer table: per layer L0, dead and dense fractions, interference, and FVU and CE loss
    recovered against the parent when there is one."""
    cos = sparse["layers"][0]["interference"]["threshold"]
    lines = [f"sparse layers: weight density {sparse['weight_density']['overall']:.3f}; {sparse['parent_note']}",
             f"layer  {'L0':>8} {'dead':>6} {'dense':>6}  |cos|>{cos:g}  {'FVU':>7} {'CE rec.':>7}"]
    parent = {row["layer"]: row for row in (sparse.get("parent") or {}).get("layers", [])}
    for row in sparse["layers"]:
        p = parent.get(row["layer"], {})
        frac = row["interference"]["fraction_above"]
        lines.append(f"{row['layer']:<6} {row['l0']:>8.1f} {row['dead_fraction']:>6.3f} {row['dense_fraction']:>6.3f}"
                     f"  {'-' if frac is None else f'{frac:.4f}':>9}  {_fmt(p.get('fvu'), 7, 4)} "
                     f"{_fmt(p.get('ce_loss_recovered'), 7, 3)}")
    return lines


def _fmt(v: Any, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"
