import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from glassformer.archs import ConfigError, ModelConfig, build_model, load_model_dir, save_model_dir
from glassformer.archs.mlp import DeadLatentTracker, Transcoder, TranscoderConfig

D = 8


def model_cfg(**kw) -> ModelConfig:
    base = dict(d_vocab=40, n_ctx=16, d_model=D, n_layers=2, n_heads=2, kernels="reference")
    return ModelConfig(**{**base, **kw})


def transcoder(**kw) -> Transcoder:
    """A transcoder (n_latents = 4 * 8 = 32) with unit-scale random encoder and decoder."""
    tc = Transcoder(TranscoderConfig(**kw), model_cfg())
    with torch.no_grad():
        tc.W_enc.normal_()
        tc.W_dec.normal_()
        tc.b_dec.normal_()
    return tc


def codes_of(tc: Transcoder, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = tc.hook_latents.add_hook(lambda t, hook: seen.append(t))
    tc(x)
    handle.remove()
    return seen[0]


@settings(max_examples=10, deadline=None)
@given(k=st.integers(1, 32), seed=st.integers(0, 10_000))
def test_topk_transcoder_l0_never_exceeds_k_and_the_sparse_path_equals_the_dense_one(k, seed):
    torch.manual_seed(seed)
    tc = transcoder(k=k)
    x = torch.randn(2, 3, D)
    fast = tc(x)
    assert tc.stats()["l0"] <= k
    codes = codes_of(tc, x)  # the hook makes the transcoder build and decode dense codes
    assert codes.shape == (2, 3, 32)
    assert torch.all((codes != 0).sum(-1) <= k)
    torch.testing.assert_close(fast, codes @ tc.W_dec + tc.b_dec, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tc(x), fast, rtol=1e-5, atol=1e-5)


def test_edits_made_by_a_latent_hook_take_effect():
    tc = transcoder(k=4)
    x = torch.randn(2, 3, D)
    handle = tc.hook_latents.add_hook(lambda t, hook: torch.zeros_like(t))
    out = tc(x)
    handle.remove()
    torch.testing.assert_close(out, tc.b_dec.expand(2, 3, D))


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 32), n_tokens=st.integers(1, 12), seed=st.integers(0, 10_000))
@example(k=31, n_tokens=1, seed=0)  # drew a negative pre-activation under the old fixed bias
def test_batchtopk_keeps_exactly_k_times_the_tokens_over_the_batch_in_training(k, n_tokens, seed):
    torch.manual_seed(seed)
    tc = transcoder(activation="batchtopk", k=k).train()
    x = torch.randn(1, n_tokens, D)
    with torch.no_grad():
        # Every pre-activation positive, so the ReLU cannot remove kept latents (a fixed bias of 10 was not always
        # enough: seed 0 with k=31 and one token drew a pre-activation of -3.3).
        tc.b_enc.fill_(float((x @ tc.W_enc.T).abs().max()) + 1.0)
    codes = codes_of(tc, x)
    assert int((codes != 0).sum()) == k * n_tokens
    pre = x @ tc.W_enc.T + tc.b_enc
    expected_kept = torch.zeros(pre.numel(), dtype=torch.bool)
    expected_kept[pre.flatten().topk(k * n_tokens).indices] = True
    assert torch.equal(codes.flatten() != 0, expected_kept)


def test_batchtopk_uses_the_running_mean_of_the_smallest_kept_code_at_inference():
    tc = transcoder(activation="batchtopk", k=3).train()
    smallest = []
    for _ in range(3):
        x = torch.randn(1, 5, D)
        codes = codes_of(tc, x)
        smallest.append(codes[codes > 0].min())
    assert tc.threshold.item() == pytest.approx(torch.stack(smallest).mean().item(), rel=1e-5)
    tc.eval()
    x = torch.randn(1, 5, D)
    pre = x @ tc.W_enc.T + tc.b_enc
    codes = codes_of(tc, x)
    torch.testing.assert_close(codes, torch.where(pre > tc.threshold, pre, torch.zeros_like(pre)))


def test_jumprelu_threshold_receives_gradient_from_the_output_and_from_the_l0_term():
    tc = transcoder(activation="jumprelu", bandwidth=0.5, threshold_init=0.5, l0_coef=1.0).train()
    x = torch.randn(4, 6, D)
    tc(x).pow(2).sum().backward()
    assert tc.log_threshold.grad is not None and tc.log_threshold.grad.abs().sum() > 0
    tc.zero_grad()
    tc(x)
    tc.aux_losses()["l0"].backward()
    grad = tc.log_threshold.grad
    assert grad.abs().sum() > 0
    assert torch.all(grad <= 0)  # raising a threshold can only lower the L0


def test_jumprelu_codes_are_the_pre_activations_above_their_threshold():
    tc = transcoder(activation="jumprelu", threshold_init=0.3)
    x = torch.randn(3, 4, D)
    pre = x @ tc.W_enc.T + tc.b_enc
    torch.testing.assert_close(codes_of(tc, x), torch.where(pre > 0.3, pre, torch.zeros_like(pre)))


def test_relu_l1_term_weights_each_code_by_its_decoder_norm():
    tc = transcoder(activation="relu", l1_coef=0.5, auxk_coef=0.0).train()
    x = torch.randn(2, 3, D)
    codes = codes_of(tc, x).reshape(6, 32).detach()
    expected = 0.5 * sum(float(codes[n, i]) * float(tc.W_dec[i].detach().norm()) for n in range(6) for i in range(32)) / 6
    assert tc.aux_losses()["l1"].item() == pytest.approx(expected, rel=1e-5)


def test_skip_transcoder_with_a_zero_decoder_reproduces_its_skip_map():
    tc = Transcoder(TranscoderConfig(skip=True, k=4), model_cfg())
    A = torch.randn(D, D)
    with torch.no_grad():
        tc.W_skip.copy_(A)
        tc.W_dec.zero_()
    x = torch.randn(3, 5, D)
    torch.testing.assert_close(tc(x), x @ A.T)


def test_decoder_and_skip_start_at_zero_in_a_built_model():
    model = build_model(model_cfg(mlp={"kind": "transcoder", "skip": True}))
    for block in model.blocks:
        assert torch.all(block.mlp.W_dec == 0) and torch.all(block.mlp.W_skip == 0)
        assert block.mlp.W_enc.std() > 0


def test_dead_tracker_counts_a_window_in_tokens():
    tracker = DeadLatentTracker(3, window_tokens=10)
    tracker.update(6, torch.tensor([True, True, False]))
    assert not tracker.dead().any() and not tracker.may_have_dead()
    tracker.update(4, torch.tensor([True, False, False]))
    assert tracker.dead().tolist() == [False, False, True]  # latent 2: 10 silent tokens
    tracker.update(5, torch.tensor([False, False, True]))
    assert tracker.dead().tolist() == [False, False, False]  # latent 1: 9 silent tokens; latent 2 fired
    assert tracker.dead_fraction() == 0.0


def test_auxk_is_zero_when_no_latent_is_dead():
    tc = transcoder(k=4, dead_window_tokens=6).train()
    tc.tracker.tokens_seen = 100  # long past the window, yet every latent fired recently
    tc(torch.randn(1, 2, D))
    assert tc.aux_losses()["auxk"].item() == 0.0


def test_auxk_follows_gao_et_al_when_latents_are_dead():
    torch.manual_seed(1)
    tc = transcoder(k=2, k_aux=3, auxk_coef=0.5, dead_window_tokens=10).double().train()
    dead = torch.zeros(32, dtype=torch.bool)
    dead[[1, 4, 5, 9, 20]] = True
    tc.tracker.tokens_seen = 100
    with torch.no_grad():
        tc.tracker.tokens_since_fired.copy_(torch.where(dead, 50, 0))
    x = torch.randn(1, 4, D, dtype=torch.float64)
    # Latents that fire in this forward come back to life before the loss is computed: read them off first.
    pre = (x @ tc.W_enc.T + tc.b_enc).reshape(4, 32)
    fired = torch.zeros(32, dtype=torch.bool)
    fired[pre.topk(2, dim=-1).indices[pre.topk(2, dim=-1).values > 0]] = True
    still_dead = dead & ~fired
    out = tc(x).reshape(4, D)
    e = out - tc.b_dec  # what the live latents wrote
    e_hat = torch.zeros(4, D, dtype=torch.float64)
    for n in range(4):
        candidates = sorted(still_dead.nonzero().flatten().tolist(), key=lambda i: -pre[n, i].item())[:3]
        for i in candidates:
            e_hat[n] += max(pre[n, i].item(), 0.0) * tc.W_dec[i]
    scale = min(int(still_dead.sum()) / 3, 1.0)
    expected = 0.5 * scale * ((e_hat - e) ** 2).sum() / ((e - e.mean(0)) ** 2).sum()
    loss = tc.aux_losses()["auxk"]
    assert loss.item() > 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)
    loss.backward()
    live_rows = ~still_dead
    assert torch.all(tc.W_enc.grad[live_rows] == 0)  # AuxK trains only the dead latents' encoders


def test_aux_losses_are_named_summed_over_layers_and_absent_in_eval():
    model = build_model(model_cfg(mlp={"kind": "transcoder", "activation": "relu"}))
    for block in model.blocks:
        with torch.no_grad():
            block.mlp.W_dec.normal_()
    model.train()
    model(torch.randint(0, 40, (2, 5)))
    aux = model.aux_losses()
    assert set(aux) == {"l1", "auxk"}
    per_layer = [block.mlp.aux_losses()["l1"] for block in model.blocks]
    torch.testing.assert_close(aux["l1"], per_layer[0] + per_layer[1])
    stats = model.stats()
    assert {"sparsity/l0/layer0", "sparsity/l0/layer1", "sparsity/dead_fraction", "sparsity/l0"} <= set(stats)
    model.eval()
    model(torch.randint(0, 40, (2, 5)))
    assert model.aux_losses() == {}


@pytest.mark.parametrize("activation", ["topk", "relu", "jumprelu", "batchtopk"])
def test_transcoder_gradients_match_finite_differences_in_float64(activation):
    # Not the JumpReLU threshold: its straight-through gradient is by design not the (zero) true derivative.
    tc = transcoder(activation=activation, k=3, skip=True, expansion_factor=2).double().train()
    params = {name: tc.get_parameter(name).detach().clone().requires_grad_(True)
              for name in ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip")}
    x = torch.randn(1, 3, D, dtype=torch.float64, requires_grad=True)

    def f(x, *values):
        return torch.func.functional_call(tc, dict(zip(params, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params.values()), fast_mode=True)


def test_batchtopk_threshold_and_weights_survive_a_model_directory(tmp_path):
    model = build_model(model_cfg(mlp={"kind": "transcoder", "activation": "batchtopk", "k": 2}))
    model.train()
    model(torch.randint(0, 40, (2, 6)))
    model.eval()
    loaded = load_model_dir(save_model_dir(tmp_path, model))
    assert loaded.blocks[0].mlp.threshold.item() == model.blocks[0].mlp.threshold.item() > 0
    tokens = torch.randint(0, 40, (2, 6))
    torch.testing.assert_close(loaded.eval()(tokens), model(tokens))


@pytest.mark.parametrize("bad, field", [
    ({"k": 33}, r"model\.mlp\.k=33"),
    ({"k_aux": 40}, r"model\.mlp\.k_aux=40"),
    ({"expansion_factor": 0}, r"model\.mlp\.expansion_factor=0"),
    ({"l1_coef": -1.0}, r"model\.mlp\.l1_coef=-1\.0"),
    ({"bandwidth": 0.0}, r"model\.mlp\.bandwidth=0\.0"),
    ({"threshold_momentum": 1.5}, r"model\.mlp\.threshold_momentum=1\.5"),
])
def test_bad_transcoder_configs_fail_naming_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        model_cfg(mlp={"kind": "transcoder", **bad})


def test_a_transcoder_on_an_attention_only_model_is_refused():
    with pytest.raises(ConfigError, match=r"model\.mlp='transcoder'.*attn_only"):
        model_cfg(attn_only=True, mlp={"kind": "transcoder"})


@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_a_model_with_every_hook_attached_computes_the_fast_path_logits(activation):
    model = build_model(model_cfg(mlp={"kind": "transcoder", "activation": activation, "k": 3, "skip": True}))
    for block in model.blocks:
        with torch.no_grad():
            block.mlp.W_dec.normal_()
    model.eval()
    tokens = torch.randint(0, 40, (2, 7))
    fast = model(tokens)
    slow, cache = model.run_with_cache(tokens, names=lambda n: True)
    torch.testing.assert_close(slow, fast, rtol=1e-5, atol=1e-5)
    assert cache["blocks.1.mlp.hook_latents"].shape == (2, 7, 32)
    assert cache["blocks.1.mlp.hook_pre"].shape == (2, 7, 32)
