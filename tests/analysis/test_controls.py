"""The random-init control carries the model's constraints: weight sparsity's kept counts, activation sparsity and
the MLP kind (issue 14)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.analysis import random_init_control
from glassformer.analysis.analyze import kept_counts
from glassformer.archs import (
    ActivationSparsityConfig,
    ModelConfig,
    TopKMLPConfig,
    WeightSparsityConfig,
    build_model,
    project_,
)
from glassformer.archs.weight_sparsity import prunable_parameters


def _config(**overrides) -> ModelConfig:
    fields = dict(d_vocab=40, n_ctx=8, d_model=16, n_layers=2, n_heads=2, d_mlp=24)
    fields.update(overrides)
    return ModelConfig(**fields)


def _trained_sparse(ws: WeightSparsityConfig, **overrides):
    """A model as weight-sparse training leaves it: every covered tensor (biases too) non-zero, then projected."""
    torch.manual_seed(3)
    model = build_model(_config(weight_sparsity=ws, **overrides))
    with torch.no_grad():
        for _, p, group in prunable_parameters(model):
            if group == "bias":  # a fresh model's biases are zero; training moves them
                p.normal_(std=0.02)
    project_(model, progress=1.0)
    return model.eval()


def _nonzero(model) -> dict[str, tuple[int, str, torch.Tensor]]:
    return {name: (int(p.count_nonzero()), group, p.detach()) for name, p, group in prunable_parameters(model)}


def _check_same_density(model, ws: WeightSparsityConfig) -> None:
    control = random_init_control(model, seed=0)
    trained, ctl = _nonzero(model), _nonzero(control)
    assert trained.keys() == ctl.keys()
    pruned = 0
    for name, (count, group, p) in trained.items():
        ctl_count, _, ctl_p = ctl[name]
        if group == "bias":
            # A random init starts its biases at zero, so it can only hold fewer non-zeros, never more.
            assert ctl_count <= count, name
            continue
        assert ctl_count == count, f"{name}: control keeps {ctl_count} entries, the model {count}"
        pruned += count < p.numel()
        if ctl_p.dim() == 2 and ws.min_per_neuron:
            per_row = ctl_p.ne(0).sum(dim=1)
            assert int(per_row.min()) >= min(ws.min_per_neuron, ctl_p.shape[1]), name
    assert pruned > 0  # the case really is weight-sparse
    assert not torch.equal(control.blocks[0].attn.W_Q.weight, model.blocks[0].attn.W_Q.weight)


def test_a_weight_sparse_models_control_has_its_per_matrix_kept_counts():
    ws = WeightSparsityConfig(fraction=0.25, embed_fraction=0.5, bias_fraction=0.5, min_per_neuron=2)
    _check_same_density(_trained_sparse(ws), ws)


@settings(max_examples=6, derandomize=True, deadline=None)
@given(fraction=st.sampled_from([0.05, 0.2, 0.6]), embed=st.sampled_from([0.1, 0.5, 1.0]),
       min_per_neuron=st.integers(0, 6))
def test_the_kept_counts_match_for_any_weight_sparsity(fraction, embed, min_per_neuron):
    ws = WeightSparsityConfig(fraction=fraction, embed_fraction=embed, bias_fraction=0.5,
                              min_per_neuron=min_per_neuron)
    _check_same_density(_trained_sparse(ws), ws)


def test_a_dense_models_control_stays_dense():
    torch.manual_seed(3)
    model = build_model(_config()).eval()
    control = random_init_control(model, seed=0)
    for name, (count, group, p) in _nonzero(control).items():
        if group != "bias":
            assert count == p.numel(), name


def test_the_control_keeps_activation_sparsity_and_the_mlp_kind():
    ws = WeightSparsityConfig(fraction=0.25, min_per_neuron=1)
    model = _trained_sparse(ws, mlp=TopKMLPConfig(k=4),
                            activation_sparsity=ActivationSparsityConfig(sites=["attn_out", "mlp_out"], fraction=0.5))
    control = random_init_control(model, seed=0)
    assert control.cfg == model.cfg
    assert [type(m).__name__ for m in control.modules()] == [type(m).__name__ for m in model.modules()]
    assert type(control.blocks[0].mlp) is type(model.blocks[0].mlp)
    assert control.blocks[1].sparsify_attn_out is not None and control.blocks[1].sparsify_mlp_out is not None
    assert kept_counts(control).keys() == kept_counts(model).keys()


def test_a_config_is_refused_with_the_reason():
    with pytest.raises(TypeError, match="takes the trained model"):
        random_init_control(_config(), seed=0)
