import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.archs import AbsTopK, ConfigError, ModelConfig, build_model
from glassformer.archs.activation_sparsity import SITES


def small_cfg(**kw) -> ModelConfig:
    base = dict(d_vocab=50, n_ctx=16, d_model=32, n_layers=2, n_heads=4, d_mlp=64, kernels="reference")
    return ModelConfig(**{**base, **kw})


def site_module(model, layer: int, site: str) -> AbsTopK:
    block = model.blocks[layer]
    return getattr(block.attn, f"sparsify_{site}") if site in ("q", "k", "v") else getattr(block, f"sparsify_{site}")


@settings(max_examples=12, deadline=None)
@given(site=st.sampled_from(SITES), fraction=st.floats(0.05, 1.0), seed=st.integers(0, 1000))
def test_each_site_keeps_exactly_its_largest_magnitude_fraction_per_token(site, fraction, seed):
    torch.manual_seed(seed)
    model = build_model(small_cfg(activation_sparsity={"sites": [site], "fraction": fraction}))
    width = 32  # d_model, and n_heads * d_head for q, k, v
    k = max(1, round(fraction * width))
    seen = []
    module = site_module(model, 1, site)
    handle = module.register_forward_hook(lambda mod, inputs, out: seen.append((inputs[0], out)))
    model(torch.randint(0, 50, (2, 7)))
    handle.remove()
    x, out = (t.flatten(2) if t.dim() == 4 else t for t in seen[0])  # (B, T, width)
    assert torch.all((out != 0).sum(-1) == k)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept])
    # Every kept |value| is at least every dropped one.
    smallest_kept = x.abs().masked_fill(~kept, float("inf")).min(-1).values
    largest_dropped = x.abs().masked_fill(kept, -1.0).max(-1).values
    assert torch.all(smallest_kept >= largest_dropped)


def test_sparsity_keeps_every_hook_name_and_shape():
    tokens = torch.randint(0, 50, (2, 6))
    dense = build_model(small_cfg())
    sparse = build_model(small_cfg(activation_sparsity={"fraction": 0.25}))
    assert sparse.hook_names() == dense.hook_names()
    _, dense_cache = dense.run_with_cache(tokens)
    _, sparse_cache = sparse.run_with_cache(tokens)
    assert {n: t.shape for n, t in sparse_cache.items()} == {n: t.shape for n, t in dense_cache.items()}
    q = sparse_cache["blocks.0.attn.hook_q"].flatten(2)  # hooks see what the model uses: the sparse q
    assert torch.all((q != 0).sum(-1) == 8)
    assert torch.all((sparse_cache["blocks.1.hook_mlp_out"] != 0).sum(-1) == 8)


def test_hooked_paths_compute_the_same_logits_as_the_fast_path_with_sparsity_on():
    model = build_model(small_cfg(activation_sparsity={"fraction": 0.5}))
    tokens = torch.randint(0, 50, (2, 9))
    fast = model(tokens)
    slow, _ = model.run_with_cache(tokens, names=lambda n: True)
    torch.testing.assert_close(slow, fast, rtol=1e-5, atol=1e-5)


def test_fraction_one_computes_the_dense_model():
    dense = build_model(small_cfg())
    full = build_model(small_cfg(activation_sparsity={"fraction": 1.0}))
    full.load_state_dict(dense.state_dict())
    tokens = torch.randint(0, 50, (2, 8))
    torch.testing.assert_close(full(tokens), dense(tokens))


def test_disabled_sites_are_absent_and_add_no_state():
    dense = build_model(small_cfg())
    assert not any(isinstance(m, AbsTopK) for m in dense.modules())
    some = build_model(small_cfg(activation_sparsity={"sites": ["attn_out"], "fraction": 0.5}))
    assert sum(isinstance(m, AbsTopK) for m in some.modules()) == 2  # one per layer
    assert some.state_dict().keys() == dense.state_dict().keys()


@pytest.mark.parametrize("bad, match", [
    ({"fraction": 0.0}, r"model\.activation_sparsity\.fraction=0\.0 .*\(0, 1\]"),
    ({"fraction": 1.5}, r"model\.activation_sparsity\.fraction=1\.5"),
    ({"sites": ["mlp_neurons"]}, r"model\.activation_sparsity\.sites=\['mlp_neurons'\]"),
    ({"sites": []}, r"model\.activation_sparsity\.sites=\[\]"),
])
def test_bad_activation_sparsity_configs_fail_naming_the_field(bad, match):
    with pytest.raises(ConfigError, match=match):
        small_cfg(activation_sparsity=bad)


def test_an_mlp_site_on_an_attention_only_model_is_refused():
    with pytest.raises(ConfigError, match=r"model\.activation_sparsity\.sites.*attention-only"):
        small_cfg(attn_only=True, activation_sparsity={"sites": ["attn_out", "mlp_out"]})
    small_cfg(attn_only=True, activation_sparsity={"sites": ["attn_out", "q"]})  # attention sites are fine


def test_stats_report_the_measured_density_of_each_site():
    model = build_model(small_cfg(activation_sparsity={"sites": ["q", "mlp_out"], "fraction": 0.25}))
    assert model.stats() == {}  # nothing measured before a forward
    seen = {}
    hooks = [site_module(model, layer, site).register_forward_hook(
        lambda mod, inputs, out, key=(layer, site): seen.__setitem__(key, (out != 0).float().mean().item()))
        for layer in range(2) for site in ("q", "mlp_out")]
    model(torch.randint(0, 50, (2, 7)))
    for h in hooks:
        h.remove()
    stats = model.stats()
    for site in ("q", "mlp_out"):
        assert stats[f"sparsity/act_density/{site}"] == pytest.approx((seen[0, site] + seen[1, site]) / 2)
        assert stats[f"sparsity/act_density/{site}"] <= 0.25 + 1e-6
    assert "sparsity/act_density/k" not in stats
    assert stats["sparsity/act_density"] == pytest.approx(sum(seen.values()) / 4)
