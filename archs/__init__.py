"""glassformer.archs: configs, the one Transformer with hook points, MLP variants, constraints, model directories.

Imports nothing beyond torch and safetensors (no Lightning, datasets or tokenizers), so the kernels and models can
be used where the training stack is absent.

Registration of every variant happens here, in one visible place.

Example:
    >>> from glassformer.archs import build_model, presets
    >>> model = build_model(presets.get("debug"))
    >>> model.cfg.n_layers
    2
"""

from glassformer.archs import presets
from glassformer.archs.activation_sparsity import AbsTopK, ActivationSparsityConfig
from glassformer.archs.config import ConfigError, ModelConfig
from glassformer.archs.hooks import HookedModule, HookPoint
from glassformer.archs.mlp import (
    MLP,
    MLP_REGISTRY,
    DeadLatentTracker,
    DenseMLP,
    DenseMLPConfig,
    SoLUMLP,
    SoLUMLPConfig,
    TopKMLP,
    TopKMLPConfig,
    Transcoder,
    TranscoderConfig,
)
from glassformer.archs.model_dir import (
    ModelDirError,
    load_config,
    load_model_dir,
    read_training,
    save_model_dir,
)
from glassformer.archs.penalties import Penalties, PenaltyConfig, frobenius_offdiag, frobenius_penalty
from glassformer.archs.registry import Registry
from glassformer.archs.transformer import Transformer, build_model
from glassformer.archs.weight_sparsity import WeightSparsityConfig, fraction_at, lr_scale_at, project_

# Every MLP variant is registered here and nowhere else; the registry refuses a module class that does not
# subclass the MLP contract (glassformer.archs.mlp.base.MLP). docs/adding-a-variant.md shows how to add one.
MLP_REGISTRY.register("dense", DenseMLPConfig, DenseMLP, "y = W_out gelu(W_in x + b_in) + b_out (exact or tanh GELU)")
MLP_REGISTRY.register("topk", TopKMLPConfig, TopKMLP, "y = W_out act(topk_k(W_in x + b_in)) + b_out")
MLP_REGISTRY.register("solu", SoLUMLPConfig, SoLUMLP, "y = W_out LN(h * softmax(h)) + b_out, h = W_in x + b_in")
MLP_REGISTRY.register("transcoder", TranscoderConfig, Transcoder,
                      "y = W_dec^T act(W_enc x + b_enc) + b_dec [+ W_skip x]; act in relu/topk/batchtopk/jumprelu")

CONSTRAINTS: dict[str, tuple[type, str]] = {
    "model.activation_sparsity": (ActivationSparsityConfig,
                                  "x -> AbsTopK(x): keep the fraction of largest |x| per token at chosen sites"),
    "model.penalties": (PenaltyConfig, "coef * mean offdiag cos^2 (Frobenius, via W^T W) or relu(|cos| - margin)^2"),
    "model.weight_sparsity": (WeightSparsityConfig,
                              "after each step keep the largest-|w| entries of each matrix (annealed fraction)"),
}
"""Constraints that are not MLP variants: config key -> (config class, formula), for the README's table."""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def variants_markdown() -> str:
    """The README's table of variants, generated from the MLP registry and the constraints above.

    Example:
        >>> "| `transcoder` |" in variants_markdown()
        True
    """
    rows = ["| variant | config key | formula |", "| --- | --- | --- |"]
    for entry in MLP_REGISTRY.entries():
        rows.append(f"| `{entry.name}` | `model.mlp.kind: {entry.name}` ({entry.config_cls.__name__}) | "
                    f"{_cell(entry.formula)} |")
    for key, (cls, formula) in CONSTRAINTS.items():
        rows.append(f"| `{key.split('.')[-1]}` | `{key}` ({cls.__name__}) | {_cell(formula)} |")
    return "\n".join(rows)


__all__ = [
    "ConfigError", "ModelConfig", "MLP_REGISTRY", "Registry", "HookPoint", "HookedModule", "Transformer",
    "build_model", "presets", "save_model_dir", "load_model_dir", "load_config", "read_training", "ModelDirError",
    "DenseMLPConfig", "TopKMLPConfig", "SoLUMLPConfig", "TranscoderConfig", "ActivationSparsityConfig",
    "PenaltyConfig", "WeightSparsityConfig", "AbsTopK", "Penalties", "frobenius_offdiag", "frobenius_penalty",
    "fraction_at", "lr_scale_at", "project_", "variants_markdown", "CONSTRAINTS", "MLP", "DenseMLP", "TopKMLP",
    "SoLUMLP", "Transcoder", "DeadLatentTracker",
]
