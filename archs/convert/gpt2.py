"""Import of GPT-2 family checkpoints from a local Hugging Face directory: same computation, tokenizer included.

Nothing is downloaded and no code from the checkpoint runs: ``config.json`` is read as JSON, weights come from
``model.safetensors`` (or its sharded index), and a ``pytorch_model.bin`` is opened only when no safetensors file
exists, and only with ``torch.load(weights_only=True)``, which refuses any pickled object other than tensors and
plain containers.

How the GPT-2 tensors land in the glassformer model (``transformer.`` prefix optional; Conv1D weights are stored
(in, out), the transpose of ``nn.Linear``; :func:`gpt2_tensor_map` is the table the import and the export read):

| GPT-2 | glassformer |
| --- | --- |
| ``wte.weight``, ``wpe.weight`` | ``embed.weight``, ``pos_embed.weight`` |
| ``h.{i}.ln_1``, ``h.{i}.ln_2``, ``ln_f`` | ``blocks.{i}.ln1``, ``blocks.{i}.ln2``, ``ln_final`` |
| ``h.{i}.attn.c_attn`` (q, k, v side by side) | ``blocks.{i}.attn.W_Q``, ``W_K``, ``W_V`` |
| ``h.{i}.attn.c_proj`` | ``blocks.{i}.attn.W_O`` |
| ``h.{i}.mlp.c_fc``, ``h.{i}.mlp.c_proj`` | ``blocks.{i}.mlp.W_in``, ``blocks.{i}.mlp.W_out`` |
| ``lm_head.weight`` (or ``wte.weight`` when tied) | ``unembed.weight`` |
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from torch import Tensor

from glassformer.archs.config import ConfigError, ModelConfig
from glassformer.archs.mlp.dense import DenseMLPConfig
from glassformer.archs.model_dir import ModelDirError, read_json, save_model_dir
from glassformer.archs.transformer import Transformer, build_model

SUPPORTED_MODEL_TYPES = ("gpt2",)
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
"""Hugging Face ``activation_function`` -> ``DenseMLPConfig.activation``."""

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLE, PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
# Causal-mask buffers that older GPT-2 checkpoints (the OpenAI release among them) save beside the weights; they
# are constants of the architecture, which glassformer's attention applies itself.
_MASK_BUFFERS = ("attn.bias", "attn.masked_bias")


class CheckpointError(ModelDirError):
    """A Hugging Face directory cannot be imported; the message names the file or tensor and what was expected."""


def import_gpt2(path: str | Path) -> tuple[Transformer, str | None]:
    """Read a local GPT-2 family checkpoint into a glassformer :class:`Transformer` computing the same logits.

    Returns ``(model, tokenizer_json)``: the model in eval mode on the CPU in float32, and the tokenizer
    serialised as a ``tokenizer.json`` string (None when the directory has no tokenizer files).

    Example:
        >>> model, tokenizer_json = import_gpt2("checkpoints/gpt2")  # doctest: +SKIP
        >>> model.cfg.n_layers, model.cfg.mlp.activation  # doctest: +SKIP
        (12, 'gelu_tanh')
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a Hugging Face model directory (no such folder)")
    hf = read_gpt2_config(path)
    cfg = gpt2_model_config(hf)
    tensors, _ = read_checkpoint(path)
    state = gpt2_state_dict(tensors, hf, cfg)
    model = build_model(cfg)
    # Every glassformer parameter must come from the checkpoint, none left at its random init.
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"the mapped GPT-2 weights do not fit the glassformer model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]} (a glassformer bug; please report it)")
    tokenizer_json = read_gpt2_tokenizer(path, d_vocab=cfg.d_vocab)
    return model.eval(), tokenizer_json


def convert_gpt2_dir(src: str | Path, dst: str | Path) -> Path:
    """Import the GPT-2 checkpoint in ``src`` and write it as a glassformer model directory ``dst``.

    ``training.json`` records the parent (source path, format, model type, the files read), so a fine-tuned
    descendant can be traced back to it.

    Example:
        >>> from glassformer.archs import load_model_dir
        >>> out = convert_gpt2_dir("checkpoints/gpt2", "runs/gpt2")  # doctest: +SKIP
        >>> load_model_dir(out).cfg.d_model  # doctest: +SKIP
        768
    """
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"destination {dst} is the source directory; writing there would overwrite its "
                              f"config.json and model.safetensors: choose another folder")
    model, tokenizer_json = import_gpt2(src)
    _, weight_files = read_checkpoint(src, names_only=True)
    if (src / "tokenizer.json").is_file():
        tokenizer_source = "tokenizer.json"
    else:
        tokenizer_source = "vocab.json + merges.txt" if tokenizer_json is not None else None
    parent = {
        "path": str(src.resolve()),
        "format": "huggingface",
        "model_type": "gpt2",
        "weights": weight_files,
        "tokenizer": tokenizer_source,
    }
    return save_model_dir(dst, model, tokenizer_json=tokenizer_json, training={"parent": parent})


def read_gpt2_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a Hugging Face directory, checked to describe a supported (GPT-2) architecture.

    Example:
        >>> read_gpt2_config("checkpoints/gpt2")["n_layer"]  # doctest: +SKIP
        12
    """
    path = Path(path)
    try:
        hf = read_json(path / "config.json")
    except ModelDirError as e:
        raise CheckpointError(str(e)) from e
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path / 'config.json'} must hold a JSON object, got {type(hf).__name__}")
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        hint = ""
        if "format_version" in hf:
            hint = " (this looks like a glassformer model directory: open it with load_model_dir)"
        raise CheckpointError(f"{path / 'config.json'} has model_type={model_type!r}, which glassformer cannot "
                              f"import; supported: {', '.join(SUPPORTED_MODEL_TYPES)}{hint}")
    return hf


def gpt2_model_config(hf: dict[str, Any]) -> ModelConfig:
    """The glassformer :class:`ModelConfig` computing what a GPT-2 ``config.json`` describes.

    Fields missing from ``config.json`` take ``transformers.GPT2Config``'s defaults, as Hugging Face itself would;
    the shape fields are required.

    Example:
        >>> cfg = gpt2_model_config({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
        ...                          "n_positions": 32, "vocab_size": 100})
        >>> cfg.d_mlp, cfg.tie_embeddings, cfg.mlp.activation
        (256, True, 'gelu_tanh')
    """
    for name in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size"):
        value = hf.get(name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise CheckpointError(f"config.json field {name}={value!r} is not allowed: expected a positive integer")
    if hf["n_embd"] % hf["n_head"]:
        raise CheckpointError(f"config.json has n_embd={hf['n_embd']} not divisible by n_head={hf['n_head']}, "
                              f"which GPT-2 requires")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise CheckpointError(f"config.json has activation_function={activation!r}, which glassformer's dense MLP "
                              f"does not compute; supported: {', '.join(ACTIVATIONS)}")
    if hf.get("add_cross_attention", False):
        raise CheckpointError("config.json has add_cross_attention=true (a GPT-2 used as a decoder of an "
                              "encoder-decoder model); glassformer imports only decoder-only language models")
    n_inner = hf.get("n_inner")
    d_mlp = n_inner if n_inner is not None else 4 * hf["n_embd"]
    try:
        return ModelConfig(
            d_vocab=hf["vocab_size"],
            n_ctx=hf["n_positions"],
            d_model=hf["n_embd"],
            n_layers=hf["n_layer"],
            n_heads=hf["n_head"],
            d_mlp=d_mlp,
            norm="layernorm",
            positional="learned",
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            mlp=DenseMLPConfig(activation=ACTIVATIONS[activation]),
            norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            extra={"imported_from": {"format": "huggingface", "model_type": hf["model_type"]}},
        )
    except ConfigError as e:
        raise CheckpointError(f"config.json does not give a valid glassformer model: {e}") from e


def read_checkpoint(path: str | Path, names_only: bool = False) -> tuple[dict[str, Tensor], list[str]]:
    """All tensors of a Hugging Face directory's weights and the files they came from, never unpickling objects.

    Looks, in this order, for ``model.safetensors``, ``model.safetensors.index.json`` (sharded),
    ``pytorch_model.bin`` and ``pytorch_model.bin.index.json``; a pickle file is read only when no safetensors
    form exists, and only through ``torch.load(weights_only=True)``. With ``names_only`` no file is read:
    the tensors dict is empty and only the file names are returned.

    Example:
        >>> tensors, files = read_checkpoint("checkpoints/gpt2")  # doctest: +SKIP
        >>> files  # doctest: +SKIP
        ['model.safetensors']
    """
    path = Path(path)
    for single, index in ((SAFETENSORS, SAFETENSORS_INDEX), (PICKLE, PICKLE_INDEX)):
        if (path / single).is_file():
            files, listed = [path / single], None
        elif (path / index).is_file():
            files, listed = _shards(path / index)
        else:
            continue
        names = [f.name for f in files]
        if names_only:
            return {}, names
        tensors: dict[str, Tensor] = {}
        for f in files:
            tensors.update(_read_safetensors(f) if single == SAFETENSORS else _read_pickle(f))
        absent = sorted(set(listed or ()) - set(tensors))
        if absent:
            raise CheckpointError(f"{path / index} lists tensors that its shards lack: {absent[:5]}")
        return tensors, names
    present = sorted(p.name for p in path.iterdir())
    raise CheckpointError(f"{path} holds no weights: expected {SAFETENSORS}, {SAFETENSORS_INDEX}, {PICKLE} or "
                          f"{PICKLE_INDEX}; found {present}")


def _shards(index: Path) -> tuple[list[Path], list[str]]:
    """The shard files an index names (each checked to lie inside its folder) and the tensor names it lists."""
    try:
        raw = read_json(index)
    except ModelDirError as e:
        raise CheckpointError(str(e)) from e
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index} has no 'weight_map' object naming the shard of each tensor")
    folder = index.parent.resolve()
    shards = []
    for name in sorted(set(map(str, weight_map.values()))):
        shard = (folder / name).resolve()
        # The index is data from the checkpoint: it may only point at files inside the directory.
        if shard.parent != folder:
            raise CheckpointError(f"{index} names shard {name!r} outside the checkpoint directory")
        if not shard.is_file():
            raise CheckpointError(f"{index} names shard {name!r}, which is missing")
        shards.append(shard)
    return shards, list(weight_map)


def _read_safetensors(file: Path) -> dict[str, Tensor]:
    try:
        return load_file(file, device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file: {e}") from e


def _read_pickle(file: Path) -> dict[str, Tensor]:
    try:
        # weights_only=True: the unpickler accepts tensors and plain containers only, so a file that would run
        # code (or build any other object) fails here before anything executes.
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types; every one means "not loadable safely"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{file} cannot be loaded with torch.load(weights_only=True), the only way glassformer opens pickle "
            f"files (anything else could run code from the file): {reason}. Convert it to safetensors with a "
            f"tool you trust, or ask its publisher for model.safetensors") from e
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{file} does not hold a state dict (a mapping of names to tensors): "
                              f"got {type(obj).__name__}")
    return obj


QKV = ("W_Q", "W_K", "W_V")
"""The order of the three projections side by side in GPT-2's ``c_attn`` (its output columns are [q | k | v], each
n_heads blocks of d_head: the same head order glassformer unflattens to)."""


def gpt2_tensor_map(cfg: ModelConfig) -> list[tuple[str, str, tuple[int, ...], bool]]:
    """Every GPT-2 tensor that maps one-to-one onto a glassformer tensor: ``(GPT-2 name without the
    "transformer." prefix, glassformer name, GPT-2 shape, transposed)``.

    The one home of the name mapping, read by the import (:func:`gpt2_state_dict`) and the export
    (``glassformer.archs.convert.hf_export``). ``transposed`` marks Conv1D weights, stored (in, out), the
    transpose of ``nn.Linear``. Not listed, because they are not one-to-one: ``attn.c_attn`` (W_Q, W_K, W_V side by
    side, in :data:`QKV` order) and ``lm_head.weight`` (the unembedding, absent when tied to ``wte``).

    Example:
        >>> from glassformer.archs import presets
        >>> gpt2_tensor_map(presets.get("debug"))[0]
        ('wte.weight', 'embed.weight', (512, 64), False)
    """
    D, F, V, P = cfg.d_model, cfg.mlp_width, cfg.d_vocab, cfg.n_ctx
    rows = [("wte.weight", "embed.weight", (V, D), False), ("wpe.weight", "pos_embed.weight", (P, D), False)]
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        for ln, ours in (("ln_1", "ln1"), ("ln_2", "ln2")):
            rows += [(f"{h}{ln}.weight", f"{b}{ours}.weight", (D,), False),
                     (f"{h}{ln}.bias", f"{b}{ours}.bias", (D,), False)]
        for theirs, ours, (n_in, n_out) in (("attn.c_proj", "attn.W_O", (D, D)), ("mlp.c_fc", "mlp.W_in", (D, F)),
                                             ("mlp.c_proj", "mlp.W_out", (F, D))):
            rows += [(f"{h}{theirs}.weight", f"{b}{ours}.weight", (n_in, n_out), True),
                     (f"{h}{theirs}.bias", f"{b}{ours}.bias", (n_out,), False)]
    rows += [("ln_f.weight", "ln_final.weight", (D,), False), ("ln_f.bias", "ln_final.bias", (D,), False)]
    return rows


def gpt2_state_dict(tensors: dict[str, Tensor], hf: dict[str, Any], cfg: ModelConfig) -> dict[str, Tensor]:
    """Map GPT-2 checkpoint tensors (either key layout) to a glassformer state dict, checking every shape.

    Example:
        >>> tensors, _ = read_checkpoint("checkpoints/gpt2")  # doctest: +SKIP
        >>> hf = read_gpt2_config("checkpoints/gpt2")  # doctest: +SKIP
        >>> state = gpt2_state_dict(tensors, hf, gpt2_model_config(hf))  # doctest: +SKIP
    """
    prefix = "transformer." if any(k.startswith("transformer.") for k in tensors) else ""
    D, F, V, P = cfg.d_model, cfg.mlp_width, cfg.d_vocab, cfg.n_ctx
    used: set[str] = set()

    def take(name: str, shape: tuple[int, ...], top_level: bool = False) -> Tensor:
        key = name if top_level else prefix + name
        if key not in tensors:
            raise CheckpointError(f"the checkpoint lacks tensor {key!r} (expected shape {shape} from config.json); "
                                  f"a GPT-2 checkpoint needs every weight of every layer")
        t = tensors[key]
        if tuple(t.shape) != shape:
            raise CheckpointError(f"tensor {key!r} has shape {tuple(t.shape)} but config.json implies {shape} "
                                  f"(n_embd={D}, d_mlp={F}, vocab_size={V}, n_positions={P})")
        if not t.is_floating_point():
            raise CheckpointError(f"tensor {key!r} has dtype {t.dtype}; expected floating point weights")
        used.add(key)
        # glassformer computes in float32; half-precision checkpoints are widened, which loses nothing.
        return t.to(torch.float32)

    state: dict[str, Tensor] = {}
    for theirs, ours, shape, transposed in gpt2_tensor_map(cfg):
        t = take(theirs, shape)
        state[ours] = t.T.contiguous() if transposed else t
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        qkv_w = take(f"{h}attn.c_attn.weight", (D, 3 * D)).T.contiguous()
        qkv_b = take(f"{h}attn.c_attn.bias", (3 * D,))
        scale = _query_scale(hf, i, cfg.head_dim)
        for j, name in enumerate(QKV):
            w, bias = qkv_w[j * D:(j + 1) * D].clone(), qkv_b[j * D:(j + 1) * D].clone()
            if name == "W_Q" and scale != 1.0:
                w, bias = w * scale, bias * scale
            state[f"{b}attn.{name}.weight"], state[f"{b}attn.{name}.bias"] = w, bias
    if cfg.tie_embeddings:
        # Tied, Hugging Face reads out through wte and ignores any saved lm_head.weight; so do we.
        state["unembed.weight"] = state["embed.weight"]
        used.add("lm_head.weight")
    else:
        state["unembed.weight"] = take("lm_head.weight", (V, D), top_level=True)
    unexpected = sorted(k for k in tensors if k not in used and not k.endswith(_MASK_BUFFERS))
    if unexpected:
        raise CheckpointError(f"the checkpoint holds {len(unexpected)} tensor(s) a GPT-2 language model does not "
                              f"use, e.g. {unexpected[:5]}; refusing to import a model that may compute something "
                              f"else")
    return state


def _query_scale(hf: dict[str, Any], layer: int, d_head: int) -> float:
    """Factor folded into W_Q so glassformer's fixed 1/sqrt(d_head) score scale gives GPT-2's configured one."""
    scale = 1.0
    if not hf.get("scale_attn_weights", True):
        scale *= math.sqrt(d_head)
    if hf.get("scale_attn_by_inverse_layer_idx", False):
        scale /= layer + 1
    return scale


def read_gpt2_tokenizer(path: str | Path, d_vocab: int | None = None) -> str | None:
    """The tokenizer of a Hugging Face directory as a ``tokenizer.json`` string, or None when it has none.

    ``tokenizer.json`` is returned as it is; otherwise GPT-2's ``vocab.json`` + ``merges.txt`` are built into a
    byte-level BPE ``tokenizers.Tokenizer``. With ``d_vocab``, a tokenizer that can emit ids past the model's
    vocabulary is refused.

    Example:
        >>> from tokenizers import Tokenizer
        >>> tok = Tokenizer.from_str(read_gpt2_tokenizer("checkpoints/gpt2"))  # doctest: +SKIP
        >>> tok.encode("Hello world").ids  # doctest: +SKIP
        [15496, 995]
    """
    path = Path(path)
    vocab_file, merges_file = path / "vocab.json", path / "merges.txt"
    if (path / "tokenizer.json").is_file():
        text = (path / "tokenizer.json").read_text(encoding="utf-8")
        try:
            tokenizer = Tokenizer.from_str(text)
        except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception type
            raise CheckpointError(f"{path / 'tokenizer.json'} is not a readable tokenizers file: {e}") from e
    elif vocab_file.is_file() and merges_file.is_file():
        tokenizer = _byte_level_bpe(path)
        text = tokenizer.to_str()
    elif vocab_file.is_file() or merges_file.is_file():
        have, lack = (vocab_file, merges_file) if vocab_file.is_file() else (merges_file, vocab_file)
        raise CheckpointError(f"{path} has {have.name} but not {lack.name}; GPT-2's tokenizer needs both "
                              f"(or a tokenizer.json)")
    else:
        return None
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if d_vocab is not None and size > d_vocab:
        raise CheckpointError(f"the tokenizer in {path} has {size} tokens but the model's vocab_size is {d_vocab}: "
                              f"some token ids would have no embedding")
    return text


def _byte_level_bpe(path: Path) -> Any:
    vocab = _read_vocab(path / "vocab.json")
    merges = []
    for lineno, line in enumerate((path / "merges.txt").read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or (lineno == 1 and line.startswith("#version")):
            continue
        pair = line.split(" ")
        if len(pair) != 2:
            raise CheckpointError(f"{path / 'merges.txt'} line {lineno} is {line!r}; expected two symbols "
                                  f"separated by one space")
        merges.append((pair[0], pair[1]))
    try:
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception type
        raise CheckpointError(f"{path / 'vocab.json'} and merges.txt do not form a BPE model: {e}") from e
    # GPT-2: the regex split and byte-to-unicode map, with no space added before the text.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # Affects only character offsets (kept on the spaces), as in transformers' GPT2TokenizerFast.
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    special = _special_tokens(path)
    absent = [t for t in special if t not in vocab]
    if absent:
        raise CheckpointError(f"{path} names special tokens {absent} that vocab.json lacks; glassformer would have "
                              f"to guess their ids: provide a tokenizer.json instead")
    # Special tokens are matched whole before BPE runs, so "<|endoftext|>" in text is one token, as in GPT-2.
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    return tokenizer


def _read_vocab(file: Path) -> dict[str, int]:
    try:
        vocab = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from e
    if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
        raise CheckpointError(f"{file} must map token strings to integer ids")
    return vocab


def _special_tokens(path: Path) -> list[str]:
    """GPT-2's end-of-text token (when in the vocabulary) plus any named by the directory's tokenizer configs."""
    names: list[str] = []
    vocab_has_eot = "<|endoftext|>" in _read_vocab(path / "vocab.json")
    if vocab_has_eot:
        names.append("<|endoftext|>")
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        if not (path / file).is_file():
            continue
        try:
            raw = json.loads((path / file).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path / file} is not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            continue
        keys = ("bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens")
        values = [raw.get(k) for k in keys] + list((raw.get("added_tokens_decoder") or {}).values())
        values = [x for v in values for x in (v if isinstance(v, list) else [v])]
        for v in values:
            content = v.get("content") if isinstance(v, dict) else v
            if isinstance(content, str) and content not in names:
                names.append(content)
    return names
