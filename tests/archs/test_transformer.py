import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.archs import ModelConfig, build_model, presets


def small_cfg(**kw) -> ModelConfig:
    base = dict(d_vocab=50, n_ctx=16, d_model=32, n_layers=2, n_heads=4, d_mlp=64)
    return ModelConfig(**{**base, **kw})


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_hook_names_and_shapes(norm, positional):
    cfg = small_cfg(norm=norm, positional=positional)
    model = build_model(cfg)
    B, T, H, D, dh = 3, 7, cfg.n_heads, cfg.d_model, cfg.head_dim
    tokens = torch.randint(0, cfg.d_vocab, (B, T))
    _, cache = model.run_with_cache(tokens)
    expected = {
        "hook_embed": (B, T, D),
        "blocks.0.hook_resid_pre": (B, T, D),
        "blocks.0.attn.hook_q": (B, T, H, dh),
        "blocks.0.attn.hook_k": (B, T, H, dh),
        "blocks.0.attn.hook_v": (B, T, H, dh),
        "blocks.0.attn.hook_z": (B, T, H, dh),
        "blocks.0.attn.hook_pattern": (B, H, T, T),
        "blocks.0.attn.hook_result": (B, T, H, D),
        "blocks.0.hook_q_input": (B, T, H, D),
        "blocks.0.hook_attn_out": (B, T, D),
        "blocks.0.hook_resid_mid": (B, T, D),
        "blocks.1.mlp.hook_pre": (B, T, cfg.mlp_width),
        "blocks.1.mlp.hook_post": (B, T, cfg.mlp_width),
        "blocks.1.hook_mlp_out": (B, T, D),
        "blocks.1.hook_resid_post": (B, T, D),
        "ln_final.hook_normalized": (B, T, D),
    }
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    if positional == "learned":
        assert tuple(cache["hook_pos_embed"].shape) == (B, T, D)


def test_pattern_rows_are_causal_distributions():
    model = build_model(small_cfg())
    _, cache = model.run_with_cache(torch.randint(0, 50, (2, 9)), names=lambda n: n.endswith("hook_pattern"))
    pattern = cache["blocks.1.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 4, 9))
    assert torch.all(pattern.triu(diagonal=1) == 0)


def test_hooked_paths_compute_the_same_logits_as_the_fast_path():
    """The explicit pattern, per-head result and split q/k/v inputs are the same maths as the SDPA path."""
    model = build_model(small_cfg())
    tokens = torch.randint(0, 50, (2, 11))
    fast = model(tokens)
    everything = lambda n: True  # noqa: E731
    slow, _ = model.run_with_cache(tokens, names=everything)
    torch.testing.assert_close(slow, fast, rtol=1e-5, atol=1e-5)


def test_hooks_context_removes_hooks_even_when_the_block_raises():
    model = build_model(small_cfg())
    tokens = torch.randint(0, 50, (1, 5))
    clean = model(tokens)
    with pytest.raises(RuntimeError):
        with model.hooks([("blocks.0.hook_attn_out", lambda x, h: torch.zeros_like(x))]):
            assert not torch.equal(model(tokens), clean)
            raise RuntimeError("boom")
    assert not any(hp.active for hp in model.hook_dict.values())
    assert torch.equal(model(tokens), clean)


def test_unknown_hook_name_is_a_clear_error():
    model = build_model(small_cfg())
    with pytest.raises(KeyError, match="blocks.9.hook_resid_pre"):
        model.run_with_cache(torch.zeros(1, 2, dtype=torch.long), names=["blocks.9.hook_resid_pre"])


@settings(max_examples=25, deadline=None)
@given(
    t=st.integers(1, 11),
    seed=st.integers(0, 2**16),
    positional=st.sampled_from(["learned", "rotary"]),
)
def test_changing_future_tokens_leaves_past_logits_unchanged(t, seed, positional):
    torch.manual_seed(seed)
    model = build_model(small_cfg(positional=positional)).eval()
    a = torch.randint(0, 50, (2, 12))
    b = a.clone()
    b[:, t:] = torch.randint(0, 50, (2, 12 - t))
    torch.testing.assert_close(model(a)[:, :t], model(b)[:, :t], rtol=0, atol=1e-6)


def test_tied_embeddings_share_one_tensor():
    model = build_model(small_cfg(tie_embeddings=True))
    assert model.unembed.weight is model.embed.weight
    assert model.num_params() < build_model(small_cfg()).num_params()


def test_attention_only_model_has_no_mlp():
    model = build_model(small_cfg(attn_only=True))
    assert all(block.mlp is None for block in model.blocks)
    assert not any("mlp" in name for name in model.hook_names())


def test_sequence_longer_than_context_is_refused():
    model = build_model(small_cfg())
    with pytest.raises(ValueError, match="n_ctx=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_gpt2_small_preset_has_gpt2_small_parameter_count():
    # 124,439,808 is GPT-2 small's published count (tied embeddings, learned positions, biased linears).
    assert build_model(presets.get("gpt2-small")).num_params() == 124_439_808


def test_small_preset_is_gao_et_al_smallest_shape():
    cfg = presets.get("small")
    assert (cfg.n_layers, cfg.d_model, cfg.head_dim, cfg.n_ctx, cfg.d_vocab) == (8, 256, 16, 256, 2048)
