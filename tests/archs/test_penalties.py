import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.archs import ConfigError, ModelConfig, build_model
from glassformer.archs.penalties import frobenius_offdiag, frobenius_penalty


def small_cfg(**kw) -> ModelConfig:
    base = dict(d_vocab=30, n_ctx=8, d_model=16, n_layers=2, n_heads=2, d_mlp=24, kernels="reference")
    return ModelConfig(**{**base, **kw})


def explicit_offdiag(W: torch.Tensor, normalize: bool) -> torch.Tensor:
    """The definition, through the M x M Gram matrix."""
    if normalize:
        W = W / W.norm(dim=1, keepdim=True)
    gram = W @ W.T  # (M, M)
    return (gram - torch.diag(torch.diag(gram))).pow(2).sum()


def explicit_cos(W: torch.Tensor) -> torch.Tensor:
    Wn = W / W.norm(dim=1, keepdim=True)
    return Wn @ Wn.T


@settings(max_examples=40, deadline=None)
@given(M=st.integers(1, 40), D=st.integers(1, 40), seed=st.integers(0, 10_000), normalize=st.booleans(),
       scale=st.floats(0.01, 100.0))
def test_frobenius_identity_equals_the_explicit_gram_computation_in_float64(M, D, seed, normalize, scale):
    torch.manual_seed(seed)
    W = torch.randn(M, D, dtype=torch.float64) * scale
    expected = explicit_offdiag(W, normalize)
    # The identity subtracts two sums of size up to ||W||_F^4, so its rounding error scales with that, not with
    # the (possibly tiny) result: float64 leaves about 1e-16 of it per operation.
    Wn = W / W.norm(dim=1, keepdim=True) if normalize else W
    terms = float(Wn.pow(2).sum()) ** 2
    torch.testing.assert_close(frobenius_offdiag(W, normalize=normalize), expected, rtol=1e-9, atol=1e-13 * terms)


@settings(max_examples=25, deadline=None)
@given(M=st.integers(1, 24), extra=st.integers(0, 16), seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0))
def test_frobenius_penalty_is_zero_for_orthogonal_rows(M, extra, seed, scale):
    torch.manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(M + extra, M, dtype=torch.float64))  # (M + extra, M), orthonormal columns
    rows = Q.T * scale  # M orthogonal rows in M + extra dimensions
    assert frobenius_offdiag(rows).item() == pytest.approx(0.0, abs=1e-10)
    assert frobenius_offdiag(rows / scale, normalize=False).item() == pytest.approx(0.0, abs=1e-10)


def test_frobenius_gradient_equals_the_gradient_of_the_explicit_gram_form():
    W = torch.randn(13, 7, dtype=torch.float64, requires_grad=True)
    (g_identity,) = torch.autograd.grad(frobenius_offdiag(W), W)
    (g_explicit,) = torch.autograd.grad(explicit_offdiag(W, normalize=True), W)
    torch.testing.assert_close(g_identity, g_explicit, rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(frobenius_penalty, (W,))


def test_frobenius_penalty_is_the_mean_squared_cosine_over_pairs():
    W = torch.randn(9, 4, dtype=torch.float64)
    cos = explicit_cos(W)
    pairs = [cos[i, j] ** 2 for i, j in itertools.permutations(range(9), 2)]
    assert frobenius_penalty(W).item() == pytest.approx(torch.stack(pairs).mean().item(), rel=1e-12)


def test_penalty_warms_up_linearly_and_is_named_ortho():
    model = build_model(small_cfg(penalties=[{"target": "W_O", "coef": 0.4, "warmup": 0.2}]))
    full = 0.4 * torch.stack([frobenius_penalty(W) for W in model.penalty_matrices("W_O")]).mean()
    model.on_train_step(0, 100)
    assert model.aux_losses() == {}  # coefficient 0 at the first step
    model.on_train_step(10, 100)
    torch.testing.assert_close(model.aux_losses()["ortho"], full / 2)
    model.on_train_step(50, 100)
    torch.testing.assert_close(model.aux_losses()["ortho"], full)


def test_several_penalties_sum_into_ortho_and_cos_margin_matches_its_definition():
    model = build_model(small_cfg(penalties=[
        {"target": "embed", "kind": "cos_margin", "margin": 0.2, "coef": 2.0, "warmup": 0.0},
        {"target": "mlp_out", "kind": "frobenius", "coef": 0.5, "warmup": 0.0},
    ]))
    cos = explicit_cos(model.embed.weight.detach().double())
    M = cos.shape[0]
    margin_terms = [torch.relu(cos[i, j].abs() - 0.2) ** 2 for i in range(M) for j in range(i + 1, M)]
    expected_embed = 2.0 * torch.stack(margin_terms).mean()
    outs = [block.mlp.W_out.weight.T.detach().double() for block in model.blocks]  # (d_mlp, d_model) each
    expected_mlp = 0.5 * torch.stack([explicit_offdiag(W, True) / (24 * 23) for W in outs]).mean()
    ortho = model.aux_losses()["ortho"]
    assert ortho.item() == pytest.approx((expected_embed + expected_mlp).item(), rel=1e-4)
    ortho.backward()
    assert model.embed.weight.grad.abs().sum() > 0 and model.blocks[0].mlp.W_out.weight.grad.abs().sum() > 0


def test_stats_report_the_largest_absolute_cosine_per_target():
    model = build_model(small_cfg(penalties=[{"target": "W_O"}, {"target": "unembed"}]))
    stats = model.stats()
    cos = explicit_cos(model.unembed.weight.detach().double())
    expected = (cos - torch.eye(cos.shape[0], dtype=cos.dtype)).abs().max().item()
    assert stats["ortho/max_cos/unembed"] == pytest.approx(expected, rel=1e-5)
    assert stats["ortho/max_cos"] == max(stats["ortho/max_cos/unembed"], stats["ortho/max_cos/W_O"])


def test_penalty_matrices_have_one_row_per_direction():
    model = build_model(small_cfg(mlp={"kind": "transcoder", "expansion_factor": 2}))
    shapes = {t: [tuple(W.shape) for W in model.penalty_matrices(t)]
              for t in ("W_O", "mlp_out", "transcoder_decoder", "embed", "unembed")}
    assert shapes == {"W_O": [(16, 16)] * 2, "mlp_out": [(32, 16)] * 2, "transcoder_decoder": [(32, 16)] * 2,
                      "embed": [(30, 16)], "unembed": [(30, 16)]}


@pytest.mark.parametrize("kw, penalty, match", [
    ({}, {"target": "transcoder_decoder"}, r"model\.penalties\[0\]\.target='transcoder_decoder'.*'dense'"),
    ({"attn_only": True}, {"target": "mlp_out"}, r"model\.penalties\[0\]\.target='mlp_out'.*attention-only"),
    ({}, {"target": "W_Q"}, r"model\.penalties\[0\]\.target='W_Q'"),
    ({}, {"coef": -1.0}, r"model\.penalties\[0\]\.coef=-1\.0"),
    ({}, {"warmup": 1.5}, r"model\.penalties\[0\]\.warmup=1\.5"),
    ({}, {"kind": "cos_margin", "margin": 1.0}, r"model\.penalties\[0\]\.margin=1\.0"),
])
def test_bad_penalties_fail_naming_the_field(kw, penalty, match):
    with pytest.raises(ConfigError, match=match):
        small_cfg(penalties=[penalty], **kw)
