import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.archs import ConfigError, ModelConfig, build_model
from glassformer.archs.mlp import SoLUMLP, SoLUMLPConfig, TopKMLP, TopKMLPConfig


def model_cfg(**kw) -> ModelConfig:
    base = dict(d_vocab=50, n_ctx=16, d_model=16, n_layers=2, n_heads=2, d_mlp=24, kernels="reference")
    return ModelConfig(**{**base, **kw})


def run_topk(mlp: TopKMLP, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pre-activations with their gradient retained, post-activations, output)."""
    seen = []

    def keep(t, hook):
        t.retain_grad()
        seen.append(t)

    handles = [mlp.hook_pre.add_hook(keep), mlp.hook_post.add_hook(keep)]
    out = mlp(x)
    for h in handles:
        h.remove()
    pre, post = seen
    return pre, post, out


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 24), n=st.integers(1, 6), seed=st.integers(0, 10_000), act=st.sampled_from(["relu", "gelu"]))
def test_topk_mlp_keeps_k_units_per_token_and_passes_gradient_only_through_them(k, n, seed, act):
    torch.manual_seed(seed)
    mlp = TopKMLP(TopKMLPConfig(k=k, activation=act), model_cfg())
    x = torch.randn(n, 3, 16)
    pre, post, out = run_topk(mlp, x)
    kept = torch.zeros_like(pre, dtype=torch.bool).scatter(-1, pre.topk(k, dim=-1).indices, True)
    if act == "gelu":
        assert torch.all((post != 0).sum(-1) == k)
    else:  # a kept negative pre-activation becomes 0 after the ReLU
        assert torch.equal((post != 0).sum(-1), (kept & (pre > 0)).sum(-1))
    assert torch.all(post[~kept] == 0)
    out.pow(2).sum().backward()
    assert torch.all(pre.grad[~kept] == 0)
    if act == "gelu":
        assert torch.all(pre.grad[kept] != 0)


def test_topk_mlp_equals_dense_relu_mlp_when_k_is_the_width():
    cfg = model_cfg()
    topk = TopKMLP(TopKMLPConfig(k=24), cfg)
    x = torch.randn(2, 5, 16)
    expected = topk.W_out(F.relu(topk.W_in(x)))
    torch.testing.assert_close(topk(x), expected)


def test_topk_mlp_logs_l0_and_dead_fraction_in_the_model():
    model = build_model(model_cfg(mlp={"kind": "topk", "k": 3, "dead_window_tokens": 4}))
    model.train()
    model(torch.randint(0, 50, (2, 8)))
    stats = model.stats()
    assert 0 < stats["sparsity/l0/layer0"] <= 3 and 0 < stats["sparsity/l0/layer1"] <= 3
    # 16 tokens with at most 3 of 24 units firing each: at most 48 units fired, and a unit silent for 16 >= 4
    # tokens is dead.
    assert 0 < stats["sparsity/dead_fraction"] < 1
    assert stats["sparsity/dead_fraction"] == pytest.approx(
        (stats["sparsity/dead_fraction/layer0"] + stats["sparsity/dead_fraction/layer1"]) / 2)


def test_solu_is_layernorm_of_x_times_softmax_x():
    cfg = model_cfg()
    mlp = SoLUMLP(SoLUMLPConfig(), cfg)
    with torch.no_grad():
        mlp.ln.weight.uniform_(0.5, 1.5)
        mlp.ln.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 4, 16)
    h = x @ mlp.W_in.weight.T + mlp.W_in.bias
    mid = h * torch.exp(h) / torch.exp(h).sum(-1, keepdim=True)
    normed = (mid - mid.mean(-1, keepdim=True)) / torch.sqrt(mid.var(-1, unbiased=False, keepdim=True) + 1e-5)
    expected = (normed * mlp.ln.weight + mlp.ln.bias) @ mlp.W_out.weight.T + mlp.W_out.bias
    torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-5)


def test_solu_and_topk_keep_the_dense_mlp_hook_names_and_shapes():
    for mlp in ({"kind": "topk", "k": 4}, {"kind": "solu"}):
        model = build_model(model_cfg(mlp=mlp))
        _, cache = model.run_with_cache(torch.randint(0, 50, (2, 7)))
        assert cache["blocks.1.mlp.hook_pre"].shape == (2, 7, 24)
        assert cache["blocks.1.mlp.hook_post"].shape == (2, 7, 24)


def test_topk_mlp_k_larger_than_the_width_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"model\.mlp\.k=25 .*d_mlp=24"):
        model_cfg(mlp={"kind": "topk", "k": 25})
    with pytest.raises(ConfigError, match=r"model\.mlp\.k=0"):
        model_cfg(mlp={"kind": "topk", "k": 0})


def test_topk_mlp_gradients_match_finite_differences_in_float64():
    mlp = TopKMLP(TopKMLPConfig(k=5, activation="gelu"), model_cfg()).double()
    x = torch.randn(1, 2, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: mlp(x), (x,))
