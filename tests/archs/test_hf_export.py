"""Hugging Face export: transformers opens the folder offline and computes the same logits and token ids; models
GPT-2 cannot compute are refused before anything is written.

``transformers`` is a test-only dependency; the module skips where it is absent. Nothing comes from the hub: the
tokenizer is trained here and the models are random.
"""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

from glassformer.archs import ModelConfig, build_model, presets, save_model_dir  # noqa: E402
from glassformer.archs.convert import ExportError, export_hf, hf_export_blockers  # noqa: E402
from glassformer.archs.convert import hf_export as hf_export_module  # noqa: E402
from glassformer.archs.convert.gpt2 import gpt2_model_config, gpt2_state_dict  # noqa: E402
from glassformer.archs.convert.hf_export import gpt2_config, gpt2_tensors  # noqa: E402
from glassformer.training.tokenizer import EOT, load_tokenizer, train_tokenizer  # noqa: E402

PYTHON = ["def add(a, b):\n    return a + b\n", "class Point:\n    def __init__(self, x):\n        self.x = x\n",
          "for i in range(10):\n    print(i, end=' ')\n", "import os\nprint(os.path.join('a', 'b'))\n"]
TEXTS = ["def mul(x, y):\n    return x * y  # naïve\n", "if x:\n\tpass\nelse :  y = [1 ,2]\n",
         'doc = "<|endoftext|>"  # the separator as text', "日本語 🙂  trailing  ", ""]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(PYTHON * 30, 400)


def perturbed_model(cfg):
    """A model whose every parameter (biases and norm gains included) is moved off its initial value."""
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def make_model_dir(path, cfg, tokenizer=None):
    model = perturbed_model(cfg)
    save_model_dir(path, model, tokenizer_json=tokenizer.to_str() if tokenizer is not None else None)
    return model


def load_hf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()


CASES = {
    "exact-gelu-untied": {"mlp": {"kind": "dense", "activation": "gelu"}},
    "tanh-gelu-tied": {"mlp": {"kind": "dense", "activation": "gelu_tanh"}, "tie_embeddings": True},
    "explicit-d-head-and-eps": {"d_head": 16, "norm_eps": 1e-6, "d_mlp": 96},
}


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_transformers_computes_the_same_logits_and_hidden_states(tmp_path, one_thread, tokenizer, overrides):
    cfg = presets.get("debug", **overrides)
    ours = make_model_dir(tmp_path / "model", cfg, tokenizer)
    out = export_hf(tmp_path / "model", tmp_path / "hf")
    hf = load_hf(out)
    assert type(hf).__name__ == "GPT2LMHeadModel"
    assert hf.config.tie_word_embeddings == cfg.tie_embeddings
    for length in (cfg.n_ctx, 7, 1):
        tokens = torch.randint(0, cfg.d_vocab, (3, length))
        with torch.no_grad():
            theirs = hf(tokens, output_hidden_states=True)
            logits, cache = ours.run_with_cache(tokens)
        # float32 defaults (rtol 1.3e-6, atol 1e-5); measured: 0.0 with exact GELU, 1.4e-6 with tanh GELU, whose
        # transformers form (gelu_new) spells out the formula that torch's approximate="tanh" fuses.
        torch.testing.assert_close(theirs.logits, logits)
        for i in range(cfg.n_layers):
            torch.testing.assert_close(theirs.hidden_states[i], cache[f"blocks.{i}.hook_resid_pre"])


def test_weight_sparse_model_exports_its_zeros(tmp_path, one_thread):
    cfg = presets.get("debug", weight_sparsity={"fraction": 0.25}, penalties=[{"target": "W_O"}])
    model = perturbed_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(torch.rand_like(p) < 0.25)
    save_model_dir(tmp_path / "model", model)
    hf = load_hf(export_hf(tmp_path / "model", tmp_path / "hf"))
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    assert sum(int((p == 0).sum()) for p in hf.parameters()) == zeros > 0
    tokens = torch.randint(0, cfg.d_vocab, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model(tokens))


def test_auto_tokenizer_gives_glassformer_ids_and_decodes_back(tmp_path, tokenizer):
    cfg = presets.get("debug")
    make_model_dir(tmp_path / "model", cfg, tokenizer)
    out = export_hf(tmp_path / "model", tmp_path / "hf")
    ours = load_tokenizer(tmp_path / "model")
    theirs = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    for text in TEXTS:
        ids = theirs(text)["input_ids"]
        assert ids == ours.encode(text).ids, text
        assert theirs.decode(ids) == text
    eot = ours.token_to_id(EOT)
    # The text of the separator inside a document stays text, as in glassformer (checked: TEXTS[2] holds it).
    assert eot not in theirs(TEXTS[2])["input_ids"]
    assert theirs.eos_token_id == theirs.bos_token_id == eot
    assert load_hf(out).config.eos_token_id == eot
    assert theirs.model_max_length == cfg.n_ctx


def test_model_without_tokenizer_exports_weights_only(tmp_path):
    make_model_dir(tmp_path / "model", presets.get("debug"))
    out = export_hf(tmp_path / "model", tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert load_hf(out).config.eos_token_id is None


BLOCKED = {
    "rmsnorm": ({"norm": "rmsnorm"}, r"model\.norm='rmsnorm': GPT-2 normalises with LayerNorm.*no RMSNorm"),
    "rotary": ({"positional": "rotary"}, r"model\.positional='rotary': GPT-2 adds learned absolute position"),
    "attn-only": ({"attn_only": True}, r"model\.attn_only=True: every GPT-2 block has an MLP"),
    "topk-mlp": ({"mlp": {"kind": "topk", "k": 8}}, r"model\.mlp\.kind='topk': GPT-2's MLP is dense.*keeps only the k largest"),
    "solu-mlp": ({"mlp": {"kind": "solu"}}, r"model\.mlp\.kind='solu': GPT-2's MLP is dense.*softmax"),
    "transcoder": ({"mlp": {"kind": "transcoder", "k": 8}},
                   r"model\.mlp\.kind='transcoder': GPT-2's MLP is dense.*sparse encoder/decoder"),
    "act-sparsity": ({"activation_sparsity": {"sites": ["q", "mlp_out"]}},
                     r"model\.activation_sparsity \(AbsTopK at q, mlp_out\): GPT-2 has no top-k step"),
    "d-head": ({"d_head": 8}, r"model\.d_head=8: GPT-2's heads split the residual stream evenly.*32 != d_model=64"),
}


@pytest.mark.parametrize("overrides,message", BLOCKED.values(), ids=BLOCKED.keys())
def test_model_gpt2_cannot_compute_is_refused_and_nothing_written(tmp_path, tokenizer, overrides, message):
    make_model_dir(tmp_path / "model", presets.get("debug", **overrides), tokenizer)
    (tmp_path / "exports").mkdir()
    with pytest.raises(ExportError, match=r"cannot be exported to transformers' GPT-2(.|\n)*" + message):
        export_hf(tmp_path / "model", tmp_path / "exports" / "hf")
    assert list((tmp_path / "exports").iterdir()) == []


def test_every_blocker_is_listed_at_once():
    cfg = presets.get("debug", norm="rmsnorm", positional="rotary", attn_only=True,
                      activation_sparsity={"sites": ["q"]})
    fields = [m.split("=")[0].split(" ")[0] for m in hf_export_blockers(cfg)]
    assert fields == ["model.norm", "model.positional", "model.attn_only", "model.activation_sparsity"]


def test_every_config_field_has_a_decision(monkeypatch):
    fields = set(ModelConfig().to_dict())
    decided = hf_export_module.CARRIED_FIELDS + hf_export_module.CHECKED_FIELDS + hf_export_module.NO_EFFECT_FIELDS
    assert sorted(decided) == sorted(fields)
    # A field without a decision blocks the export rather than being silently dropped.
    monkeypatch.setattr(hf_export_module, "NO_EFFECT_FIELDS", ("rotary_base", "penalties", "kernels", "extra"))
    assert hf_export_blockers(presets.get("debug")) == [
        "model.weight_sparsity: the exporter does not know whether this setting changes the computation "
        "(a glassformer bug: please report it)"]


def test_a_dense_activation_without_a_gpt2_name_is_refused(monkeypatch):
    monkeypatch.setattr(hf_export_module, "ACTIVATION_NAMES", {"gelu_tanh": "gelu_new"})
    assert hf_export_blockers(presets.get("debug")) == [
        "model.mlp.activation='gelu': no GPT-2 activation_function computes it. Exportable: gelu_tanh"]


@st.composite
def configs(draw):
    n_heads = draw(st.sampled_from([1, 2, 4]))
    return ModelConfig(
        d_vocab=draw(st.integers(2, 40)), n_ctx=draw(st.integers(1, 12)), d_model=8 * n_heads,
        n_layers=draw(st.integers(1, 3)), n_heads=n_heads, d_head=draw(st.sampled_from([None, 8])),
        d_mlp=draw(st.sampled_from([None, 4, 24])), tie_embeddings=draw(st.booleans()),
        mlp={"kind": "dense", "activation": draw(st.sampled_from(["gelu", "gelu_tanh"]))},
        norm_eps=draw(st.sampled_from([1e-5, 1e-6])))


@settings(max_examples=20, deadline=None, derandomize=True)
@given(cfg=configs())
def test_the_gpt2_import_inverts_the_export_exactly(cfg):
    """export then import gives back every tensor bit for bit, and the configs agree."""
    assert hf_export_blockers(cfg) == []
    model = build_model(cfg)
    hf = json.loads(json.dumps(gpt2_config(cfg)))
    back = gpt2_model_config(hf)
    assert (back.d_vocab, back.n_ctx, back.d_model, back.n_layers, back.n_heads, back.mlp_width, back.tie_embeddings,
            back.mlp.activation, back.norm_eps) == (cfg.d_vocab, cfg.n_ctx, cfg.d_model, cfg.n_layers, cfg.n_heads,
                                                    cfg.mlp_width, cfg.tie_embeddings, cfg.mlp.activation, cfg.norm_eps)
    state = gpt2_state_dict(gpt2_tensors(model), hf, back)
    expected = model.state_dict()
    assert sorted(state) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name


def test_existing_destination_is_kept_unless_overwrite_and_then_replaced_whole(tmp_path):
    make_model_dir(tmp_path / "model", presets.get("debug"))
    out = tmp_path / "hf"
    out.mkdir()
    export_hf(tmp_path / "model", out)  # an empty folder is fine
    (out / "stale.bin").write_text("from an older export")
    with pytest.raises(ExportError, match=r"exists and is not empty; pass overwrite=True"):
        export_hf(tmp_path / "model", out)
    assert (out / "stale.bin").exists()
    export_hf(tmp_path / "model", out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "model"]  # no temporary folder left behind

    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"holds no config\.json, so it is not an earlier export"):
        export_hf(tmp_path / "model", other, overwrite=True)
    assert (other / "todo.txt").read_text() == "mine"
    with pytest.raises(ExportError, match=r"is \(or contains\) the model directory"):
        export_hf(tmp_path / "model", tmp_path, overwrite=True)


def test_failed_write_leaves_no_half_export_and_keeps_the_old_one(tmp_path, monkeypatch):

    make_model_dir(tmp_path / "model", presets.get("debug"))
    out = export_hf(tmp_path / "model", tmp_path / "hf")
    before = (out / "model.safetensors").read_bytes()

    def half_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(hf_export_module, "save_file", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export_hf(tmp_path / "model", tmp_path / "new")
    with pytest.raises(OSError, match="disk full"):
        export_hf(tmp_path / "model", out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "model"]
    assert (out / "model.safetensors").read_bytes() == before


def test_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path, tokenizer):
    n_tokens = tokenizer.get_vocab_size()
    make_model_dir(tmp_path / "model", presets.get("debug", d_vocab=n_tokens - 1), tokenizer)
    with pytest.raises(ExportError, match=rf"has {n_tokens} tokens but the model's d_vocab is {n_tokens - 1}"):
        export_hf(tmp_path / "model", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# TransformerLens: not a glassformer dependency. The slow tests run where it is installed (either API generation);
# docs/export.md shows the same routes.
SHARED_HOOKS = ("blocks.{i}.hook_resid_pre", "blocks.{i}.attn.hook_pattern", "blocks.{i}.hook_attn_out",
                "blocks.{i}.mlp.hook_post", "blocks.{i}.hook_mlp_out", "blocks.{i}.hook_resid_post")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer):
    """A tied, tanh-GELU model whose d_mlp is not 4 * d_model (TransformerLens 2.x assumes it is)."""
    path = tmp_path_factory.mktemp("tl")
    torch.manual_seed(0)
    model = make_model_dir(path / "model", presets.get("debug", d_mlp=96, tie_embeddings=True,
                                                        mlp={"kind": "dense", "activation": "gelu_tanh"}), tokenizer)
    return model, export_hf(path / "model", path / "hf")


@pytest.mark.slow
def test_transformer_lens_bridge_opens_the_export_offline(exported, tokenizer, one_thread):
    pytest.importorskip("transformer_lens")
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        pytest.skip("this TransformerLens (< 3) has no TransformerBridge")
    ours, out = exported
    bridge = TransformerBridge.boot_transformers(str(out), device="cpu")
    tokens = bridge.to_tokens(TEXTS[0], prepend_bos=False)
    assert tokens[0].tolist() == tokenizer.encode(TEXTS[0]).ids
    tokens = torch.randint(0, ours.cfg.d_vocab, (3, ours.cfg.n_ctx))
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens)
        expected, our_cache = ours.run_with_cache(tokens)
    torch.testing.assert_close(logits, expected)
    for i in range(ours.cfg.n_layers):
        for name in (h.format(i=i) for h in SHARED_HOOKS):
            torch.testing.assert_close(cache[name], our_cache[name], msg=name)
    # HookedTransformer's weight processing (LayerNorm folded, unembedding centred) shifts each position's logits
    # by a constant; the log-probabilities stay.
    bridge.enable_compatibility_mode()
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens).log_softmax(-1), expected.log_softmax(-1))


@pytest.mark.slow
def test_hooked_transformer_opens_the_export_offline(exported, tokenizer, one_thread):
    pytest.importorskip("transformer_lens")
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:
        pytest.skip("TransformerLens >= 4.0 removed HookedTransformer; the bridge test covers it")
    from transformer_lens.loading_from_pretrained import convert_hf_model_config
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    ours, out = exported
    hf = load_hf(out)
    tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    tokens = torch.randint(0, ours.cfg.d_vocab, (3, ours.cfg.n_ctx))
    with torch.no_grad():
        expected = ours(tokens)
    for fold in (False, True):
        cfg_dict = convert_hf_model_config(str(out))
        cfg_dict["d_mlp"] = hf.config.n_inner  # TransformerLens 2.x takes 4 * n_embd for every GPT-2
        if fold:
            cfg_dict["normalization_type"] = "LNPre"
        cfg = HookedTransformerConfig(**cfg_dict, default_prepend_bos=False, device="cpu")
        model = HookedTransformer(cfg, tokenizer=tok)
        model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=fold, center_writing_weights=fold,
                                          center_unembed=fold, fold_value_biases=fold)
        assert model.to_tokens(TEXTS[0])[0].tolist() == tokenizer.encode(TEXTS[0]).ids
        with torch.no_grad():
            logits = model(tokens)
        if fold:
            torch.testing.assert_close(logits.log_softmax(-1), expected.log_softmax(-1))
        else:
            torch.testing.assert_close(logits, expected)
