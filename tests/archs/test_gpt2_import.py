"""GPT-2 import: parity with ``transformers`` on small random models, and refusal of bad checkpoints.

``transformers`` is a test-only dependency; the whole module skips where it is absent. Everything is built locally:
nothing comes from the hub.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from glassformer.archs import load_model_dir, read_training  # noqa: E402
from glassformer.archs.convert import CheckpointError, convert_gpt2_dir, import_gpt2  # noqa: E402

SHAPE = dict(n_embd=64, n_layer=2, n_head=4, n_positions=32, vocab_size=100)


def make_gpt2(path, save=True, **overrides):
    """A random GPT-2 saved with ``save_pretrained``; every parameter (biases, norms) perturbed off its init."""
    kwargs = {**SHAPE, "bos_token_id": 0, "eos_token_id": 0, **overrides}
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    if save:
        model.save_pretrained(path)
    return model


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


def our_logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    return path, make_gpt2(path)


@pytest.mark.parametrize("overrides", [
    {},
    {"tie_word_embeddings": False},
    {"activation_function": "gelu"},
    {"activation_function": "gelu_pytorch_tanh", "scale_attn_weights": False, "scale_attn_by_inverse_layer_idx": True},
], ids=["tied", "untied", "exact-gelu", "unusual-attention-scale"])
def test_imported_gpt2_matches_transformers_logits_and_hidden_states(tmp_path, overrides):
    hf = make_gpt2(tmp_path, **overrides)
    model, tokenizer_json = import_gpt2(tmp_path)
    assert tokenizer_json is None
    assert model.cfg.tie_embeddings == overrides.get("tie_word_embeddings", True)
    tokens = torch.randint(0, SHAPE["vocab_size"], (3, SHAPE["n_positions"]))
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
        logits, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(logits, out.logits)
    # transformers' hidden_states: the input of each block, then the final output after ln_f.
    assert len(out.hidden_states) == SHAPE["n_layer"] + 1
    for i in range(SHAPE["n_layer"]):
        torch.testing.assert_close(cache[f"blocks.{i}.hook_resid_pre"], out.hidden_states[i])
    torch.testing.assert_close(cache["ln_final.hook_normalized"], out.hidden_states[-1])


def test_sharded_safetensors_import_matches(tmp_path):
    hf = make_gpt2(tmp_path, save=False, tie_word_embeddings=False)
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    model, _ = import_gpt2(tmp_path)
    tokens = torch.randint(0, SHAPE["vocab_size"], (2, 16))
    torch.testing.assert_close(our_logits(model, tokens), hf_logits(hf, tokens))


def test_pytorch_bin_with_bare_keys_and_mask_buffers_loads_with_weights_only(tmp_path):
    hf = make_gpt2(tmp_path, save=False, tie_word_embeddings=False)
    hf.config.save_pretrained(tmp_path)
    # The layout of the original OpenAI release: no "transformer." prefix, causal-mask buffers beside the weights.
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()}
    for i in range(SHAPE["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 32, 32).tril()
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    model, _ = import_gpt2(tmp_path)
    tokens = torch.randint(0, SHAPE["vocab_size"], (2, 32))
    torch.testing.assert_close(our_logits(model, tokens), hf_logits(hf, tokens))


class WritesAFile:
    """A pickled payload that, if ever unpickled, writes ``path`` (standing in for arbitrary code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('ran')",)


def test_pickle_with_arbitrary_object_is_refused_and_never_runs(tmp_path, gpt2_dir):
    src, _ = gpt2_dir
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text((src / "config.json").read_text())
    marker = tmp_path / "ran.txt"
    state = dict(load_file(src / "model.safetensors"))
    state["payload"] = WritesAFile(marker)
    torch.save(state, evil / "pytorch_model.bin")

    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin cannot be loaded with torch\.load\(weights_only"):
        import_gpt2(evil)
    assert not marker.exists()

    # A safetensors file beside the pickle is preferred: the pickle is not even opened.
    (evil / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    import_gpt2(evil)
    assert not marker.exists()

    # The control: the payload is live, so the checks above would have caught it running.
    torch.load(evil / "pytorch_model.bin", weights_only=False)
    assert marker.read_text() == "ran"


def write_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, **changes}))


def copy_checkpoint(src, dst):
    dst.mkdir()
    for name in ("config.json", "model.safetensors"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_unsupported_architecture_is_named_with_what_is_supported(tmp_path, gpt2_dir):
    path = copy_checkpoint(gpt2_dir[0], tmp_path / "m")
    write_config(path, model_type="llama")
    with pytest.raises(CheckpointError, match=r"model_type='llama'.*supported: gpt2"):
        import_gpt2(path)


def test_unknown_activation_is_refused(tmp_path, gpt2_dir):
    path = copy_checkpoint(gpt2_dir[0], tmp_path / "m")
    write_config(path, activation_function="relu")
    with pytest.raises(CheckpointError, match=r"activation_function='relu'.*supported: gelu_new"):
        import_gpt2(path)


def test_shape_disagreeing_with_config_names_tensor_shape_and_expected(tmp_path, gpt2_dir):
    path = copy_checkpoint(gpt2_dir[0], tmp_path / "m")
    write_config(path, n_positions=48)
    with pytest.raises(CheckpointError, match=r"'transformer\.wpe\.weight' has shape \(32, 64\).*\(48, 64\)"):
        import_gpt2(path)

    write_config(path, n_positions=32)
    state = load_file(path / "model.safetensors")
    state["transformer.h.1.attn.c_attn.weight"] = state["transformer.h.1.attn.c_attn.weight"][:, :190].clone()
    save_file(state, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"'transformer\.h\.1\.attn\.c_attn\.weight' has shape \(64, 190\)"
                                              r".*\(64, 192\)"):
        import_gpt2(path)


def test_missing_weights_are_named(tmp_path, gpt2_dir):
    path = copy_checkpoint(gpt2_dir[0], tmp_path / "m")
    state = load_file(path / "model.safetensors")
    del state["transformer.h.1.mlp.c_proj.bias"]
    save_file(state, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"lacks tensor 'transformer\.h\.1\.mlp\.c_proj\.bias'"):
        import_gpt2(path)

    write_config(path, tie_word_embeddings=False)
    state = load_file(gpt2_dir[0] / "model.safetensors")
    save_file(state, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"lacks tensor 'lm_head\.weight'"):
        import_gpt2(path)

    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"holds no weights: expected model\.safetensors"):
        import_gpt2(path)


def test_unexpected_tensors_are_refused(tmp_path, gpt2_dir):
    path = copy_checkpoint(gpt2_dir[0], tmp_path / "m")
    state = load_file(path / "model.safetensors")
    state["score.weight"] = torch.zeros(2, 64)
    save_file(state, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"does not use, e\.g\. \['score\.weight'\]"):
        import_gpt2(path)


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory):
    """GPT-2 style vocab.json + merges.txt from a byte-level BPE trained locally (no hub)."""
    from tokenizers import ByteLevelBPETokenizer

    texts = ["def add(a, b):\n    return a + b\n", "Hello world! Héllo wörld, naïve café.", "for i in range(9): x"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts * 10, vocab_size=300, min_frequency=2, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    path = tmp_path_factory.mktemp("bpe")
    bpe.save_model(str(path))
    return path, bpe.get_vocab_size()


TEXTS = ["def add(x, y):\n    return x+y", " Hello  world<|endoftext|>next", "naïve 日本語 🙂\t\ttabs", ""]


def test_tokenizer_from_vocab_and_merges_matches_transformers_and_round_trips(tmp_path, gpt2_dir, bpe_files):
    from tokenizers import Tokenizer

    bpe_dir, n_tokens = bpe_files
    path = tmp_path / "m"
    make_gpt2(path, vocab_size=n_tokens)
    for name in ("vocab.json", "merges.txt"):
        (path / name).write_bytes((bpe_dir / name).read_bytes())
    _, tokenizer_json = import_gpt2(path)
    ours = Tokenizer.from_str(tokenizer_json)
    reference = transformers.GPT2Tokenizer(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"))
    for text in TEXTS:
        ids = ours.encode(text).ids
        assert ids == reference.encode(text), text
        assert ours.decode(ids, skip_special_tokens=False) == text
    assert ours.encode("<|endoftext|>").ids == [ours.token_to_id("<|endoftext|>")]

    # A tokenizer whose ids run past the model's vocabulary would index outside the embedding.
    small = copy_checkpoint(gpt2_dir[0], tmp_path / "small")
    for name in ("vocab.json", "merges.txt"):
        (small / name).write_bytes((bpe_dir / name).read_bytes())
    with pytest.raises(CheckpointError, match=rf"has {n_tokens} tokens but the model's vocab_size is 100"):
        import_gpt2(small)
    (small / "merges.txt").unlink()
    with pytest.raises(CheckpointError, match="has vocab.json but not merges.txt"):
        import_gpt2(small)


def test_convert_gpt2_dir_writes_a_loadable_model_dir_with_its_parent(tmp_path, gpt2_dir):
    src, hf = gpt2_dir
    tokenizer_text = '{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}}'
    (src / "tokenizer.json").write_text(tokenizer_text)
    try:
        out = convert_gpt2_dir(src, tmp_path / "out")
    finally:
        (src / "tokenizer.json").unlink()
    model = load_model_dir(out)
    assert model.cfg.mlp.activation == "gelu_tanh"
    tokens = torch.randint(0, SHAPE["vocab_size"], (2, 32))
    torch.testing.assert_close(our_logits(model, tokens), hf_logits(hf, tokens))
    assert (out / "tokenizer.json").read_text() == tokenizer_text
    parent = read_training(out)["parent"]
    assert parent["path"] == str(src.resolve())
    assert (parent["format"], parent["model_type"], parent["weights"]) == ("huggingface", "gpt2",
                                                                          ["model.safetensors"])
    with pytest.raises(CheckpointError, match="is the source directory"):
        convert_gpt2_dir(src, src)
