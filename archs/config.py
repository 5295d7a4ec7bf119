"""Model configuration: typed dataclasses, validated on construction.

Every field has a docstring below it (jsonargparse shows them in ``--help``). A bad value raises
:class:`ConfigError` naming the field, the value and what is allowed, before any work starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from glassformer.archs.activation_sparsity import ActivationSparsityConfig
from glassformer.archs.mlp import MLPConfig
from glassformer.archs.mlp.base import MLP_REGISTRY
from glassformer.archs.mlp.dense import DenseMLPConfig
from glassformer.archs.penalties import PenaltyConfig

# The checks live in a leaf module so variant configs import them without a cycle; they are re-exported here,
# where callers have always imported them from.
from glassformer.archs.validation import ConfigError, check, check_fraction, check_positive_int
from glassformer.archs.weight_sparsity import WeightSparsityConfig

__all__ = [
    "ConfigError", "ModelConfig", "build_constraint_fields", "check", "check_fraction", "check_positive_int",
    "from_dict", "mlp_config_from_dict",
]


@dataclass
class ModelConfig:
    """The whole model: shapes, normalisation, positions, the MLP variant and its constraints.

    Example:
        >>> cfg = ModelConfig(d_model=64, n_heads=4, n_layers=2)
        >>> cfg.head_dim, cfg.mlp_width
        (16, 256)
    """

    d_vocab: int = 4096
    """Vocabulary size; the tokenizer is trained to this size."""
    n_ctx: int = 256
    """Context length in tokens."""
    d_model: int = 256
    """Width of the residual stream."""
    n_layers: int = 4
    """Number of Transformer blocks."""
    n_heads: int = 4
    """Attention heads per block."""
    d_head: int | None = None
    """Width of each head; None means d_model // n_heads (then d_model must be divisible by n_heads)."""
    d_mlp: int | None = None
    """Hidden width of the dense MLP; None means 4 * d_model (GPT-2's ratio)."""
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    """Pre-norm type, applied separately by each reader of the residual stream."""
    positional: Literal["learned", "rotary"] = "learned"
    """Learned absolute position embeddings, or rotary embeddings applied to q and k."""
    rotary_base: float = 10000.0
    """Base of the rotary frequencies."""
    attn_only: bool = False
    """Drop the MLPs entirely (attention-only models for induction-circuit studies)."""
    tie_embeddings: bool = False
    """Share the unembedding with the token embedding. Off by default: an untied unembedding keeps
    the read-out direction of each token separate from its input direction, which analysis prefers."""
    mlp: MLPConfig | None = None
    """The MLP variant, chosen by ``kind``; None means the dense GELU MLP."""
    init_std: float = 0.02
    """Std of the normal initialisation; output projections are scaled by 1/sqrt(2 n_layers) (GPT-2)."""
    norm_eps: float = 1e-5
    """Epsilon of LayerNorm / RMSNorm."""
    activation_sparsity: ActivationSparsityConfig | None = None
    """AbsTopK activation sparsity at chosen sites (Gao et al. 2025); None means dense activations."""
    penalties: list[PenaltyConfig] = field(default_factory=list)
    """Orthogonality penalties on weight directions, each an auxiliary loss named ``ortho``."""
    weight_sparsity: WeightSparsityConfig | None = None
    """Magnitude projection of the weights after every optimizer step (Gao et al. 2025). It lives in the model
    config, though training applies it, so that config.json records that a model is weight-sparse."""
    kernels: Literal["auto", "triton", "reference"] = "auto"
    """Which implementation of fused ops to use: Triton on CUDA when supported ("auto"), or always one."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes carried into config.json (e.g. where the model came from); never read by the model."""

    def __post_init__(self) -> None:
        for name in ("d_vocab", "n_ctx", "d_model", "n_layers", "n_heads"):
            check_positive_int(getattr(self, name), f"model.{name}")
        if self.d_head is None:
            check(self.d_model % self.n_heads == 0, "model.n_heads", self.n_heads,
                  f"a divisor of d_model={self.d_model} (or set d_head explicitly)")
        else:
            check_positive_int(self.d_head, "model.d_head")
        if self.d_mlp is not None:
            check_positive_int(self.d_mlp, "model.d_mlp")
        check(self.norm in ("layernorm", "rmsnorm"), "model.norm", self.norm, "'layernorm' or 'rmsnorm'")
        check(self.positional in ("learned", "rotary"), "model.positional", self.positional, "'learned' or 'rotary'")
        check(self.kernels in ("auto", "triton", "reference"), "model.kernels", self.kernels,
              "'auto', 'triton' or 'reference'")
        check(self.init_std > 0, "model.init_std", self.init_std, "a positive float")
        if self.positional == "rotary":
            check(self.head_dim % 2 == 0, "model.d_head", self.head_dim, "an even width for rotary positions")
        check(isinstance(self.penalties, list), "model.penalties", self.penalties, "a list of penalty configs")
        build_constraint_fields(self)
        check(self.mlp is None or isinstance(self.mlp, MLP_REGISTRY.config_classes()), "model.mlp", self.mlp,
              f"null or the config of a registered MLP kind, one of {', '.join(MLP_REGISTRY.names())}")
        # An MLP variant on a model without MLPs would be silently ignored: refuse it instead.
        check(not (self.attn_only and self.mlp is not None), "model.mlp", self.mlp and self.mlp.kind,
              "null when attn_only is true (an attention-only model has no MLPs)")
        check(self.activation_sparsity is None or isinstance(self.activation_sparsity, ActivationSparsityConfig),
              "model.activation_sparsity", self.activation_sparsity, "null or an ActivationSparsityConfig")
        check(self.weight_sparsity is None or isinstance(self.weight_sparsity, WeightSparsityConfig),
              "model.weight_sparsity", self.weight_sparsity, "null or a WeightSparsityConfig")
        if self.mlp is not None:
            self.mlp.validate(self)
        if self.activation_sparsity is not None:
            self.activation_sparsity.validate(self)
        if self.weight_sparsity is not None:
            self.weight_sparsity.validate(self)
        for i, penalty in enumerate(self.penalties):
            check(isinstance(penalty, PenaltyConfig), f"model.penalties[{i}]", penalty, "a PenaltyConfig")
            penalty.validate(self, f"model.penalties[{i}]")

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def mlp_width(self) -> int:
        return self.d_mlp if self.d_mlp is not None else 4 * self.d_model

    @property
    def mlp_config(self) -> Any:
        """The MLP variant's config (the dense one when ``mlp`` is None)."""
        return self.mlp if self.mlp is not None else DenseMLPConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; ``ModelConfig.from_dict`` inverts it.

        Example:
            >>> ModelConfig.from_dict(ModelConfig(d_model=64).to_dict()) == ModelConfig(d_model=64)
            True
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return from_dict(cls, d, "model")


def build_constraint_fields(cfg: Any) -> None:
    """Turn the dict-valued constraint fields of ``cfg`` (``mlp``, ``activation_sparsity``, ``weight_sparsity``,
    ``penalties``: as they come from YAML or JSON) into their config dataclasses, in place; None stays None.

    Shared by :class:`ModelConfig` and the fine-tuning config, whose fields have the same names and meaning.

    Example:
        >>> cfg = ModelConfig(d_model=64, n_heads=4)
        >>> cfg.mlp = {"kind": "topk", "k": 8}
        >>> build_constraint_fields(cfg); type(cfg.mlp).__name__
        'TopKMLPConfig'
    """
    if isinstance(cfg.mlp, dict):
        cfg.mlp = mlp_config_from_dict(cfg.mlp)
    if isinstance(cfg.activation_sparsity, dict):
        cfg.activation_sparsity = from_dict(ActivationSparsityConfig, cfg.activation_sparsity,
                                            "model.activation_sparsity")
    if isinstance(cfg.weight_sparsity, dict):
        cfg.weight_sparsity = from_dict(WeightSparsityConfig, cfg.weight_sparsity, "model.weight_sparsity")
    if cfg.penalties is not None:
        check(isinstance(cfg.penalties, list), "model.penalties", cfg.penalties, "a list of penalty configs")
        cfg.penalties = [from_dict(PenaltyConfig, p, f"model.penalties[{i}]") if isinstance(p, dict) else p
                         for i, p in enumerate(cfg.penalties)]


def mlp_config_from_dict(d: dict[str, Any]) -> Any:
    """Build an MLP variant config from a dict with a ``kind`` key, through the registry.

    Example:
        >>> mlp_config_from_dict({"kind": "topk", "k": 8}).k
        8
    """
    check(isinstance(d, dict) and "kind" in d, "model.mlp", d, "a mapping with a 'kind' key")
    kind = d["kind"]
    check(kind in MLP_REGISTRY, "model.mlp.kind", kind, f"one of {MLP_REGISTRY.names()}")
    return from_dict(MLP_REGISTRY[kind].config_cls, d, "model.mlp")


def from_dict(cls: type, d: dict[str, Any], prefix: str) -> Any:
    """Construct dataclass ``cls`` from a plain dict, recursing into nested dataclass fields.

    Unknown keys are refused with a message listing the allowed ones.

    Example:
        >>> from_dict(ModelConfig, {"d_model": 64, "n_heads": 2}, "model").head_dim
        32
    """
    check(isinstance(d, dict), prefix, d, f"a mapping of {cls.__name__} fields")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    check(not unknown, f"{prefix}.{unknown[0]}" if unknown else prefix, d.get(unknown[0]) if unknown else None,
          f"one of the fields of {cls.__name__}: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        kwargs[key] = _convert(hints[key], value, f"{prefix}.{key}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, prefix: str) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if isinstance(value, dict) and "kind" in value and prefix.endswith(".mlp"):
            return mlp_config_from_dict(value)
        dataclass_options = [a for a in options if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(dataclass_options) == 1:
            return from_dict(dataclass_options[0], value, prefix)
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, prefix)
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(tp) or (Any,)
        return [_convert(item, v, f"{prefix}[{i}]") for i, v in enumerate(value)]
    return value
