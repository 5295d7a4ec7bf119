"""``finetune``: convert a pretrained model's MLPs by distillation, add constraints, fine-tune, record the lineage.

The parent is a glassformer model directory or a local Hugging Face GPT-2 directory (told apart by its
``config.json``: glassformer's has ``format_version``, Hugging Face's a ``model_type``). The corpus is tokenised
with the parent's tokenizer. When the target MLP kind differs from the parent's, every MLP is replaced by the
target variant, distilled from the parent's (:func:`glassformer.archs.convert.distill.convert_mlps`); the
constraints in the target (activation sparsity, penalties, weight sparsity annealed from the pretrained weights
by ``fit``'s callback) are applied; then the model is trained on the language-model loss plus, optionally,
``kl_coef`` times the KL divergence from the parent's next-token distribution.

The model directory's ``training.json`` records, beside what ``fit`` writes: ``parent`` (path, format, sha256 of
its weight files, its config), ``distillation`` (the conversion report: FVU, L0 and CE loss recovered per layer
and for all layers) and ``finetune`` (settings and the validation loss of the parent, of the converted model
before training and of the fine-tuned model, all on the same validation windows that ``fit`` uses).

This module imports no Lightning at load time: the CLI reads its config classes to build its parser.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from glassformer.archs.activation_sparsity import ActivationSparsityConfig
from glassformer.archs.config import (
    ConfigError,
    ModelConfig,
    build_constraint_fields,
    check,
    check_positive_int,
)
from glassformer.archs.mlp import MLPConfig
from glassformer.archs.model_dir import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, ModelDirError
from glassformer.archs.penalties import PenaltyConfig
from glassformer.archs.weight_sparsity import WeightSparsityConfig
from glassformer.training.checks import check_writable
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig

log = logging.getLogger("glassformer")


@dataclass
class FinetuneModelConfig:
    """What the fine-tuned model changes from its parent; the shape, norms and positions are the parent's.

    A field left null keeps the parent's value (an empty ``penalties`` list removes the parent's penalties).

    Example:
        >>> from glassformer.archs import TranscoderConfig
        >>> FinetuneModelConfig(mlp=TranscoderConfig(k=8)).apply(ModelConfig(d_model=64, n_heads=4)).mlp.k
        8
    """

    mlp: MLPConfig | None = None
    """The target MLP variant (``kind`` from the MLP registry); its MLPs are distilled from the parent's."""
    activation_sparsity: ActivationSparsityConfig | None = None
    """AbsTopK activation sparsity to add (Gao et al. 2025)."""
    penalties: list[PenaltyConfig] | None = None
    """Orthogonality penalties to train with."""
    weight_sparsity: WeightSparsityConfig | None = None
    """Weight sparsity, annealed from the pretrained (dense) weights to its target fraction during fine-tuning."""

    def __post_init__(self) -> None:
        build_constraint_fields(self)

    def apply(self, parent: ModelConfig) -> ModelConfig:
        """The parent's config with these changes, validated (a bad value raises naming ``model.<field>``)."""
        d = parent.to_dict()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                d[f.name] = _plain(value)
        return ModelConfig.from_dict(d)


@dataclass
class DistillConfig:
    """How the replacement MLPs are initialised by distillation before fine-tuning.

    Example:
        >>> DistillConfig().ablation
        'mean'
    """

    steps: int = 300
    """Adam steps per layer."""
    lr: float = 1e-3
    """Adam learning rate (cosine decay to a tenth); low because replacements start from the parent's weights."""
    batch_tokens: int = 4096
    """Activation rows per step (and tokens per forward when collecting activations)."""
    tokens: int = 65536
    """Training-split tokens whose MLP activations are collected (2 * tokens * d_model floats per layer)."""
    eval_tokens: int = 16384
    """Validation-split tokens on which FVU, L0 and CE loss recovered are measured."""
    ablation: Literal["mean", "zero"] = "mean"
    """What CE loss recovered compares against: each MLP's output replaced by its mean, or by zero."""
    seed: int = 0
    """Seeds the replacements' initialisation and the order of activation rows."""
    warm_start: bool = True
    """Start each replacement from the parent MLP's weights where they mean the same thing."""

    def __post_init__(self) -> None:
        check(isinstance(self.steps, int) and self.steps >= 0, "distill.steps", self.steps, "a non-negative integer")
        check(self.lr > 0, "distill.lr", self.lr, "a positive float")
        for name in ("batch_tokens", "tokens", "eval_tokens"):
            check_positive_int(getattr(self, name), f"distill.{name}")
        check(self.ablation in ("mean", "zero"), "distill.ablation", self.ablation, "'mean' or 'zero'")
        check(isinstance(self.seed, int) and self.seed >= 0, "distill.seed", self.seed, "a non-negative integer")


@dataclass
class ParentInfo:
    """A parent model as found on disk, before its weights are read."""

    path: Path
    format: Literal["glassformer", "huggingface"]
    config: ModelConfig
    weight_files: list[str]


def _not_a_parent(path: Path, why: str) -> ModelDirError:
    return ModelDirError(f"--from {path} is not a parent model: {why}. Expected a glassformer model directory "
                         f"({CONFIG_FILE} with format_version, {WEIGHTS_FILE}, {TOKENIZER_FILE}) or a local Hugging "
                         f"Face GPT-2 directory ({CONFIG_FILE} with model_type 'gpt2', model.safetensors, "
                         f"tokenizer files)")


def inspect_parent(path: str | Path) -> ParentInfo:
    """Tell what kind of parent ``path`` is and read its config, without reading any weights.

    Example:
        >>> inspect_parent("runs/demo/tiny").format  # doctest: +SKIP
        'glassformer'
    """
    from glassformer.archs.convert.gpt2 import gpt2_model_config, read_checkpoint, read_gpt2_config
    from glassformer.archs.model_dir import load_config, read_json

    path = Path(path)
    if not path.is_dir():
        raise _not_a_parent(path, "no such folder")
    if not (path / CONFIG_FILE).is_file():
        raise _not_a_parent(path, f"it has no {CONFIG_FILE}")
    raw = read_json(path / CONFIG_FILE)
    if isinstance(raw, dict) and "format_version" in raw:
        if not (path / WEIGHTS_FILE).is_file():
            raise _not_a_parent(path, f"it has no {WEIGHTS_FILE}")
        if not (path / TOKENIZER_FILE).is_file():
            raise _not_a_parent(path, f"it has no {TOKENIZER_FILE} (fine-tuning tokenises the corpus with the "
                                      "parent's tokenizer)")
        return ParentInfo(path, "glassformer", load_config(path), [WEIGHTS_FILE])
    if isinstance(raw, dict) and "model_type" in raw:
        hf = read_gpt2_config(path)  # refuses model types other than GPT-2, naming them
        _, files = read_checkpoint(path, names_only=True)
        if not ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()):
            raise _not_a_parent(path, "it has no tokenizer.json nor vocab.json + merges.txt (fine-tuning "
                                      "tokenises the corpus with the parent's tokenizer)")
        return ParentInfo(path, "huggingface", gpt2_model_config(hf), files)
    raise _not_a_parent(path, f"its {CONFIG_FILE} has neither format_version (glassformer) nor model_type "
                              "(Hugging Face)")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"abc")
        >>> sha256_file(p)[:16]
        'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_parent(info: ParentInfo) -> tuple[Any, Any]:
    """The parent model (eval mode, CPU) and its ``tokenizers.Tokenizer``.

    Example:
        >>> model, tok = load_parent(inspect_parent("runs/demo/tiny"))  # doctest: +SKIP
    """
    from tokenizers import Tokenizer

    from glassformer.archs import load_model_dir
    from glassformer.archs.convert import import_gpt2
    from glassformer.training.tokenizer import load_tokenizer

    if info.format == "glassformer":
        return load_model_dir(info.path).eval(), load_tokenizer(info.path)
    model, tokenizer_json = import_gpt2(info.path)
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.encode_special_tokens = True  # as glassformer's own tokenizers: a document cannot forge a separator
    return model, tokenizer


def parent_record(info: ParentInfo) -> dict[str, Any]:
    """What training.json records about the parent: path, format, sha256 of each weight file, config."""
    from glassformer.archs import read_training

    record: dict[str, Any] = {
        "path": str(info.path.resolve()),
        "format": info.format,
        "weights_sha256": {name: sha256_file(info.path / name) for name in info.weight_files},
        "config": info.config.to_dict(),
    }
    if info.format == "huggingface":
        record["model_type"] = "gpt2"
    else:
        corpus = read_training(info.path).get("corpus", {})
        if "fingerprint" in corpus:
            record["corpus_fingerprint"] = corpus["fingerprint"]
    return record


def _device(trainer_cfg: TrainerConfig) -> str:
    import torch

    wants_gpu = trainer_cfg.accelerator in ("auto", "gpu", "cuda")
    return "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"


def finetune(
    parent: str | Path,
    model: FinetuneModelConfig | None = None,
    data_cfg: DataConfig | None = None,
    optim_cfg: OptimConfig | None = None,
    trainer_cfg: TrainerConfig | None = None,
    out: str | Path = "runs/finetune",
    *,
    kl_coef: float = 0.0,
    distill: DistillConfig | None = None,
) -> Path:
    """Convert, constrain and fine-tune the parent at ``parent``; write the model directory ``out``.

    Every check (the parent, the target config against the parent's shape, ``kl_coef``, ``out``) runs before the
    corpus is read. A config left None takes its defaults.

    Example:
        >>> from glassformer.archs import TranscoderConfig
        >>> finetune("runs/demo/tiny", FinetuneModelConfig(mlp=TranscoderConfig(k=32)),
        ...          out="runs/demo/tiny_transcoder", kl_coef=1.0)  # doctest: +SKIP
    """
    import torch

    from glassformer.archs.convert import next_token_loss
    from glassformer.training.corpus import prepare_data
    from glassformer.training.finetune_module import FinetuneModule
    from glassformer.training.module import optim_dict
    from glassformer.training.train import fit
    from glassformer.training.windows import FixedWindows

    model, distill = model or FinetuneModelConfig(), distill or DistillConfig()
    data_cfg, optim_cfg = data_cfg or DataConfig(), optim_cfg or OptimConfig()
    trainer_cfg = trainer_cfg or TrainerConfig()
    info, new_cfg = _check_finetune(parent, model, out, kl_coef)
    parent_model, tokenizer = load_parent(info)
    n_tok = tokenizer.get_vocab_size()
    if n_tok > new_cfg.d_vocab:
        raise ModelDirError(f"the parent's tokenizer has {n_tok} tokens but its model only {new_cfg.d_vocab} "
                            "embeddings")
    parent_kind, target_kind = info.config.mlp_config.kind, new_cfg.mlp_config.kind
    module = FinetuneModule(new_cfg.to_dict(), optim_dict(optim_cfg), trainer_cfg.max_steps, trainer_cfg.log_every,
                            kl_coef=float(kl_coef))
    if parent_kind == target_kind:
        try:
            module.model.load_state_dict(parent_model.state_dict(), strict=True)
        except RuntimeError as e:
            raise ConfigError(f"model.mlp keeps the parent's kind {target_kind!r} but its weights do not fit the "
                              f"new settings ({str(e).splitlines()[0]}): expected settings that keep every shape, "
                              "or another kind (which is distilled)") from e

    # The checks are done: from here on, work.
    prepared = prepare_data(data_cfg, new_cfg.d_vocab, tokenizer=tokenizer)
    val = FixedWindows(prepared.val_tokens, new_cfg.n_ctx, trainer_cfg.val_batches * trainer_cfg.batch_size)
    val_windows = torch.stack([val[i] for i in range(len(val))])  # the windows fit() validates on
    device = _device(trainer_cfg)
    parent_model = parent_model.to(device)
    if parent_kind != target_kind:
        report = _distill(parent_model, module, new_cfg, prepared, distill, parent_kind)
    else:
        report = {"skipped": f"the parent's MLPs are already of kind {target_kind!r}"}
    if kl_coef > 0:
        module.set_teacher(parent_model)
    loss_parent = next_token_loss(parent_model, val_windows, batch_tokens=distill.batch_tokens)
    loss_converted = next_token_loss(module.model.to(device).eval(), val_windows, batch_tokens=distill.batch_tokens)
    module.train()  # Lightning keeps the modes it is given; trackers and auxiliary losses run in train mode
    log.info("validation loss: parent %.4f, converted %.4f", loss_parent, loss_converted)
    if kl_coef == 0:
        del parent_model

    settings = {"kl_coef": float(kl_coef), "distill": dataclasses.asdict(distill),
                "model": {f.name: _plain(getattr(model, f.name)) for f in dataclasses.fields(model)}}
    fit(new_cfg, data_cfg, optim_cfg, trainer_cfg, out, module=module, tokenizer=tokenizer,
        extra_training_info={"parent": parent_record(info), "distillation": report, "finetune": settings})
    loss_after = next_token_loss(module.model.eval(), val_windows, batch_tokens=distill.batch_tokens)
    _record_val_losses(out, val_windows, parent=loss_parent, converted=loss_converted, finetuned=loss_after)
    return out


def _record_val_losses(out: str | Path, val_windows: Any, **losses: float) -> None:
    """Add the validation losses of the parent, the converted and the fine-tuned model to training.json."""
    from glassformer.archs import read_training
    from glassformer.archs.model_dir import atomic_write_json

    training = read_training(out)
    if training:  # absent on every rank but the first of a distributed run
        training["finetune"]["val_loss"] = {**losses, "windows": len(val_windows),
                                            "tokens": int(val_windows[:, 1:].numel())}
        atomic_write_json(Path(out) / "training.json", training)


def _check_finetune(parent: str | Path, model: FinetuneModelConfig, out: str | Path, kl_coef: float
                    ) -> tuple[Any, Any]:
    """The parent's record and the new model config, with ``kl_coef`` and ``out`` checked (nothing is loaded)."""
    info = inspect_parent(parent)
    new_cfg = model.apply(info.config)
    check(isinstance(kl_coef, (int, float)) and kl_coef >= 0 and math.isfinite(kl_coef), "kl_coef", kl_coef,
          "a non-negative float (0 turns the KL term off)")
    if Path(out).resolve() == info.path.resolve():
        raise ConfigError(f"out={str(out)!r} is the parent's own folder; writing there would overwrite it: "
                          "expected another folder")
    check_writable(out, "out")
    return info, new_cfg


def _distill(parent_model: Any, module: Any, new_cfg: Any, prepared: Any, distill: DistillConfig,
             parent_kind: str) -> dict[str, Any]:
    """Distil each of the parent's MLPs into the new kind on corpus windows; load them into ``module``'s model and
    return the per-layer report (FVU, L0, CE loss recovered)."""
    import torch

    from glassformer.archs.convert import convert_mlps
    from glassformer.training.windows import FixedWindows, RandomWindows

    n_ctx = new_cfg.n_ctx
    train = RandomWindows(prepared.train_tokens, n_ctx, math.ceil(distill.tokens / n_ctx), distill.seed)
    held = FixedWindows(prepared.val_tokens, n_ctx, math.ceil(distill.eval_tokens / n_ctx))
    log.info("distilling %d %s MLPs into %s (%d steps each)", new_cfg.n_layers, parent_kind,
             new_cfg.mlp_config.kind, distill.steps)
    converted, report = convert_mlps(
        parent_model, new_cfg.mlp_config, torch.stack([train[i] for i in range(len(train))]),
        eval_tokens=torch.stack([held[i] for i in range(len(held))]), steps=distill.steps, lr=distill.lr,
        batch_tokens=distill.batch_tokens, seed=distill.seed, warm_start=distill.warm_start,
        ablation=distill.ablation, progress=_log_progress)
    module.model.load_state_dict(converted.state_dict(), strict=True)
    return report


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _log_progress(event: dict[str, Any]) -> None:
    log.info("distill layer %d: step %d/%d, loss %.4f", event["layer"], event["step"], event["steps"], event["loss"])


def format_report(report: dict[str, Any]) -> str:
    """The per-layer table of a conversion report, as plain text for a terminal or a closing note.

    Example:
        >>> print(format_report({"ablation": "zero", "layers": [{"layer": 0, "fvu": 0.1, "l0": 8.0,
        ...     "ce_recovered": 0.9}], "all_layers": {"ce_recovered": 0.85}}))
        layer  FVU     L0      CE recovered (zero ablation)
        0      0.1000  8.0     0.900
        all                    0.850
    """
    lines = [f"layer  FVU     L0      CE recovered ({report['ablation']} ablation)"]
    for row in report["layers"]:
        l0 = "-" if row.get("l0") is None else f"{row['l0']:.1f}"
        lines.append(f"{row['layer']:<6} {row['fvu']:<7.4f} {l0:<7} {row['ce_recovered']:.3f}")
    lines.append(f"{'all':<6} {'':<7} {'':<7} {report['all_layers']['ce_recovered']:.3f}")
    return "\n".join(lines)


def summary(out: str | Path) -> str:
    """The closing lines of ``glassformer finetune``: distillation table and validation losses, from training.json.

    Example:
        >>> print(summary("runs/demo/tiny_transcoder"))  # doctest: +SKIP
    """
    from glassformer.archs import read_training

    training = read_training(out)
    lines = [f"model directory: {out}"]
    report = training.get("distillation", {})
    lines.append(format_report(report) if "layers" in report else f"distillation: {report.get('skipped', 'none')}")
    val = training.get("finetune", {}).get("val_loss", {})
    if val:
        lines.append(f"validation loss: parent {val['parent']:.4f}, converted {val['converted']:.4f}, "
                     f"fine-tuned {val['finetuned']:.4f} nats/token over {val['tokens']} tokens")
    return "\n".join(lines)


__all__ = ["DistillConfig", "FinetuneModelConfig", "ParentInfo", "finetune", "format_report", "inspect_parent",
           "load_parent", "parent_record", "sha256_file", "summary"]
