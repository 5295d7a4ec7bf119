"""Export of dense glassformer models as Hugging Face GPT-2 folders, so the tools researchers already use open them.

``transformers.AutoModelForCausalLM.from_pretrained(out)`` and ``AutoTokenizer.from_pretrained(out)`` read the
folder offline, and everything built on transformers (TransformerLens, SAELens, circuit-tracer) starts from there.
transformers itself is not needed to export: ``config.json`` is written as plain JSON and the weights with
safetensors.

Only a model that ``GPT2LMHeadModel`` computes exactly is exported: :func:`hf_export_blockers` names every setting
that has no GPT-2 equivalent, and :func:`export_hf` refuses such a model before it writes anything. Weight sparsity
is exported (its zeros are ordinary weights); orthogonality penalties shape training only, not the forward pass.
The tensor names come from :func:`glassformer.archs.convert.gpt2.gpt2_tensor_map`, the table the GPT-2 import reads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torch import Tensor

from glassformer.archs.config import ModelConfig
from glassformer.archs.convert.gpt2 import QKV, gpt2_tensor_map
from glassformer.archs.model_dir import TOKENIZER_FILE, ModelDirError, load_config, load_model_dir

EOT = "<|endoftext|>"
"""glassformer's only special token (document separator), GPT-2's as well; it becomes bos and eos."""

ACTIVATION_NAMES = {"gelu_tanh": "gelu_new", "gelu": "gelu"}
"""``DenseMLPConfig.activation`` -> Hugging Face ``activation_function`` (the import's table, inverted where
transformers has two names for one function: gelu_new is the one every GPT-2 tool knows)."""

# Every ModelConfig field, sorted by what the export does with it. A field added to ModelConfig without a place
# here blocks every export (see hf_export_blockers) until someone decides whether GPT-2 can represent it.
CARRIED_FIELDS = ("d_vocab", "n_ctx", "d_model", "n_layers", "n_heads", "d_mlp", "tie_embeddings", "norm_eps",
                  "init_std")
CHECKED_FIELDS = ("d_head", "norm", "positional", "attn_only", "mlp", "activation_sparsity")
NO_EFFECT_FIELDS = ("rotary_base", "penalties", "weight_sparsity", "kernels", "extra")
"""rotary_base is read only with rotary positions; penalties are training losses; weight-sparse weights are
weights; kernels picks an implementation of the same function; extra is never read by the model."""

_MLP_KINDS = {"topk": "keeps only the k largest hidden activations of each token",
              "solu": "applies a softmax-weighted activation and a LayerNorm inside the MLP",
              "transcoder": "is a sparse encoder/decoder with its own latent activation"}


class ExportError(ModelDirError):
    """A model directory cannot be exported; the message says which setting or file stands in the way."""


def hf_export_blockers(cfg: ModelConfig) -> list[str]:
    """Why transformers' GPT-2 cannot compute what ``cfg`` computes: one message per setting, empty when it can.

    Example:
        >>> from glassformer.archs import presets
        >>> hf_export_blockers(presets.get("debug"))
        []
        >>> hf_export_blockers(presets.get("debug", norm="rmsnorm"))[0][:50]
        "model.norm='rmsnorm': GPT-2 normalises with LayerN"
    """
    out = []
    if cfg.norm != "layernorm":
        out.append(f"model.norm={cfg.norm!r}: GPT-2 normalises with LayerNorm (mean-centred, with a bias); "
                   f"transformers' GPT-2 has no RMSNorm. Exportable: norm='layernorm'")
    if cfg.positional != "learned":
        out.append(f"model.positional={cfg.positional!r}: GPT-2 adds learned absolute position embeddings (wpe) "
                   f"and has no rotary embeddings. Exportable: positional='learned'")
    if cfg.n_heads * cfg.head_dim != cfg.d_model:
        out.append(f"model.d_head={cfg.d_head!r}: GPT-2's heads split the residual stream evenly "
                   f"(d_head = n_embd / n_head), but n_heads * d_head = {cfg.n_heads * cfg.head_dim} != "
                   f"d_model={cfg.d_model}. Exportable: n_heads * d_head = d_model (or d_head=null)")
    if cfg.attn_only:
        out.append("model.attn_only=True: every GPT-2 block has an MLP; transformers' GPT-2 cannot drop them. "
                   "Exportable: attn_only=false")
    kind = getattr(cfg.mlp_config, "kind", None)
    if not cfg.attn_only and kind != "dense":
        what = _MLP_KINDS.get(kind, "computes something else")
        out.append(f"model.mlp.kind={kind!r}: GPT-2's MLP is dense (W_out gelu(W_in x + b_in) + b_out), while a "
                   f"{kind} MLP {what}; transformers' GPT-2 has no equivalent. Exportable: mlp.kind='dense'")
    elif not cfg.attn_only and cfg.mlp_config.activation not in ACTIVATION_NAMES:
        out.append(f"model.mlp.activation={cfg.mlp_config.activation!r}: no GPT-2 activation_function computes "
                   f"it. Exportable: {', '.join(ACTIVATION_NAMES)}")
    if cfg.activation_sparsity is not None:
        sites = ", ".join(cfg.activation_sparsity.sites)
        out.append(f"model.activation_sparsity (AbsTopK at {sites}): GPT-2 has no top-k step inside its forward "
                   f"pass, so its activations would stay dense. Exportable: activation_sparsity=null")
    known = set(CARRIED_FIELDS + CHECKED_FIELDS + NO_EFFECT_FIELDS)
    for name in sorted({f for f in cfg.to_dict()} - known):
        out.append(f"model.{name}: the exporter does not know whether this setting changes the computation "
                   f"(a glassformer bug: please report it)")
    return out


def export_hf(model_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write the model directory ``model_dir`` as a Hugging Face GPT-2 folder ``out`` and return ``out``.

    ``out`` gets ``config.json``, ``model.safetensors`` and, when the model directory has a tokenizer,
    ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``. The folder is written under a
    temporary name beside ``out`` and renamed into place when complete, so ``out`` is never half written. An
    existing non-empty ``out`` is refused unless ``overwrite``, which replaces a folder holding a ``config.json``
    (an earlier export) and nothing else. A model GPT-2 cannot compute is refused before anything is written
    (:func:`hf_export_blockers` says why).

    Example:
        >>> out = export_hf("runs/demo/tiny", "exports/tiny")  # doctest: +SKIP
        >>> from transformers import AutoModelForCausalLM  # doctest: +SKIP
        >>> AutoModelForCausalLM.from_pretrained(out).config.model_type  # doctest: +SKIP
        'gpt2'
    """
    model_dir, out = Path(model_dir), Path(out)
    cfg = load_config(model_dir)
    blockers = hf_export_blockers(cfg)
    if blockers:
        raise ExportError(f"{model_dir} cannot be exported to transformers' GPT-2, which has no equivalent of:\n  - "
                          + "\n  - ".join(blockers))
    _check_destination(model_dir, out, overwrite)
    tokenizer_json = _read_tokenizer(model_dir, cfg)
    model = load_model_dir(model_dir)
    tensors = gpt2_tensors(model)
    special = _special_tokens(tokenizer_json)
    files = {"config.json": _json(gpt2_config(cfg, eot_id=special.get(EOT)))}
    if tokenizer_json is not None:
        files.update(tokenizer_files(tokenizer_json, cfg, special))

    def write(folder: Path) -> None:
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")

    _publish(out, write, replace=out.exists() and any(out.iterdir()))
    return out


def gpt2_config(cfg: ModelConfig, eot_id: int | None = None) -> dict[str, Any]:
    """The ``config.json`` of the ``GPT2LMHeadModel`` computing what ``cfg`` computes (check
    :func:`hf_export_blockers` first). ``eot_id`` becomes bos and eos; without it generation has no stop token.

    Example:
        >>> from glassformer.archs import presets
        >>> c = gpt2_config(presets.get("debug"), eot_id=0)
        >>> c["n_embd"], c["n_inner"], c["activation_function"], c["eos_token_id"]
        (64, 256, 'gelu', 0)
    """
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.d_vocab,
        "n_positions": cfg.n_ctx,
        # An older name of n_positions, which transformers ignores but TransformerLens 2.x reads.
        "n_ctx": cfg.n_ctx,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": cfg.mlp_width,
        "activation_function": ACTIVATION_NAMES[cfg.mlp_config.activation],
        "layer_norm_epsilon": cfg.norm_eps,
        "initializer_range": cfg.init_std,
        # glassformer trains without dropout; GPT-2's default of 0.1 would change fine-tuning in transformers.
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        # glassformer's attention: scores scaled by 1/sqrt(d_head), the same in every layer, computed in the
        # model's dtype.
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        # Stated even when None: GPT2Config's default, 50256, is past the end of a small vocabulary.
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "use_cache": True,
        "torch_dtype": "float32",
        "glassformer": {"exported_from": cfg.to_dict()},
    }


def gpt2_tensors(model: torch.nn.Module) -> dict[str, Tensor]:
    """The ``GPT2LMHeadModel`` state dict (``save_pretrained``'s names) holding ``model``'s weights.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> tensors = gpt2_tensors(build_model(presets.get("debug")))
        >>> tuple(tensors["transformer.h.0.attn.c_attn.weight"].shape)
        (64, 192)
    """
    cfg: ModelConfig = model.cfg
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    out = {}
    for theirs, name, _, transposed in gpt2_tensor_map(cfg):
        t = ours[name].T if transposed else ours[name]
        out[f"transformer.{theirs}"] = t.contiguous().clone()
    for i in range(cfg.n_layers):
        attn = f"blocks.{i}.attn."
        # Conv1D (in, out): the three (out, in) projections stacked on out, then transposed.
        out[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat([ours[f"{attn}{p}.weight"] for p in QKV]).T.contiguous()
        out[f"transformer.h.{i}.attn.c_attn.bias"] = torch.cat([ours[f"{attn}{p}.bias"] for p in QKV])
    if not cfg.tie_embeddings:
        # Tied, transformers reads out through wte; safetensors cannot hold one tensor under two names anyway.
        out["lm_head.weight"] = ours["unembed.weight"].contiguous().clone()
    return out


def tokenizer_files(tokenizer_json: str, cfg: ModelConfig, special: dict[str, int] | None = None) -> dict[str, str]:
    """``tokenizer.json`` as it is, plus the ``tokenizer_config.json`` and ``special_tokens_map.json`` with which
    ``AutoTokenizer`` encodes exactly as glassformer does.

    Example:
        >>> from tokenizers import Tokenizer, models
        >>> files = tokenizer_files(Tokenizer(models.BPE()).to_str(), ModelConfig(d_model=64))
        >>> sorted(files)
        ['special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']
    """
    special = _special_tokens(tokenizer_json) if special is None else special
    names = {"bos_token": EOT, "eos_token": EOT} if EOT in special else {}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": cfg.n_ctx,
        # glassformer encodes the text "<|endoftext|>" inside a document as plain bytes (a document cannot
        # forge a separator); transformers does the same only when told.
        "split_special_tokens": True,
        # Decoding must give back the exact text, spaces before punctuation included (transformers 4.x would
        # otherwise turn " ," into ","; 5.x no longer cleans up byte-level BPE output).
        "clean_up_tokenization_spaces": False,
        **names,
    }
    return {TOKENIZER_FILE: tokenizer_json, "tokenizer_config.json": _json(config),
            "special_tokens_map.json": _json(names)}


def _special_tokens(tokenizer_json: str | None) -> dict[str, int]:
    """Special added tokens of a ``tokenizer.json`` string: content -> id."""
    if tokenizer_json is None:
        return {}
    added = json.loads(tokenizer_json).get("added_tokens") or []
    return {t["content"]: t["id"] for t in added if t.get("special")}


def _read_tokenizer(model_dir: Path, cfg: ModelConfig) -> str | None:
    path = model_dir / TOKENIZER_FILE
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    try:
        size = Tokenizer.from_str(text).get_vocab_size(with_added_tokens=True)
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for a file it cannot parse
        raise ExportError(f"{path} is not a readable tokenizer.json: {e}") from e
    if size > cfg.d_vocab:
        raise ExportError(f"{path} has {size} tokens but the model's d_vocab is {cfg.d_vocab}: some token ids "
                          f"would have no embedding")
    return text


def _check_destination(model_dir: Path, out: Path, overwrite: bool) -> None:
    src, dst = model_dir.resolve(), out.resolve()
    if dst == src or dst in src.parents:
        raise ExportError(f"destination {out} is (or contains) the model directory {model_dir}; choose another "
                          f"folder")
    if out.exists() and not out.is_dir():
        raise ExportError(f"destination {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportError(f"destination {out} exists and is not empty; pass overwrite=True (--overwrite) to replace "
                          f"an earlier export, or choose another folder")
    if not (out / "config.json").is_file():
        raise ExportError(f"destination {out} holds no config.json, so it is not an earlier export; refusing to "
                          f"replace it even with overwrite: remove it yourself or choose another folder")


def _publish(out: Path, write: Callable[[Path], None], replace: bool) -> None:
    """Run ``write`` into a temporary folder beside ``out``, flush it to disk, then rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = None
    try:
        write(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if replace:
            # Two renames: a reader sees the old export, briefly nothing, then the new one; never a mixture.
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old)
        os.replace(tmp, out)  # onto a missing or empty folder: an atomic rename on POSIX
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"
