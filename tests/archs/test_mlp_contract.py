"""Every registered MLP kind honours the MLP contract (glassformer.archs.mlp.base.MLP); the registry refuses
classes that do not."""

import dataclasses
import typing

import pytest
import torch
from mlp_contract_checks import check_contract
from torch import Tensor, nn

from glassformer.archs import MLP, MLP_REGISTRY, ModelConfig, Registry, build_model
from glassformer.archs.hooks import HookPoint
from glassformer.archs.mlp import DenseMLPConfig, Transcoder, TranscoderConfig

# Wide enough for every variant's default config (TopK k=64 <= d_mlp, transcoder k=32 <= 4 * d_model).
SMALL = dict(d_vocab=30, n_ctx=8, d_model=16, n_layers=2, n_heads=2, d_mlp=64, kernels="reference")
KINDS = MLP_REGISTRY.names()


@pytest.mark.parametrize("kind", KINDS)
def test_every_registered_kind_implements_the_contract(kind, one_thread):
    entry = MLP_REGISTRY[kind]
    cfg = entry.config_cls()
    model_cfg = ModelConfig(**SMALL, mlp=cfg)
    check_contract(MLP_REGISTRY.build(cfg, model_cfg), model_cfg)


@pytest.mark.parametrize("kind", KINDS)
def test_every_registered_config_names_its_kind_and_validates(kind):
    cls = MLP_REGISTRY[kind].config_cls
    assert dataclasses.is_dataclass(cls)
    assert typing.get_args(typing.get_type_hints(cls)["kind"]) == (kind,)
    assert cls().kind == kind
    assert cls().validate(ModelConfig(**SMALL)) is None


@pytest.mark.parametrize("kind", KINDS)
def test_the_model_reads_each_layer_through_the_contract(kind, one_thread):
    model = build_model(ModelConfig(**SMALL, mlp=MLP_REGISTRY[kind].config_cls())).train()
    _, cache = model.run_with_cache(torch.randint(0, 30, (2, 5)))
    for i, block in enumerate(model.blocks):
        assert isinstance(block.mlp, MLP)
        assert cache[f"blocks.{i}.mlp.{block.mlp.hidden_hook}"].shape == (2, 5, block.mlp.hidden_width)
    assert [t.data_ptr() for t in model.penalty_matrices("mlp_out")] == [
        b.mlp.output_weights().data_ptr() for b in model.blocks]


def test_the_hidden_width_and_weights_have_the_documented_shapes_per_kind():
    # Written out per kind (not derived from the code): neurons are d_mlp wide, latents expansion_factor * d_model.
    expected = {"dense": 64, "topk": 64, "solu": 64, "transcoder": 4 * 16}
    assert set(expected) == set(KINDS)
    for kind, width in expected.items():
        mlp = MLP_REGISTRY.build(MLP_REGISTRY[kind].config_cls(), ModelConfig(**SMALL))
        assert mlp.hidden_width == width
        assert tuple(mlp.input_weights().shape) == (width, 16) == tuple(mlp.output_weights().shape)
        assert mlp.hidden_hook == ("hook_latents" if kind == "transcoder" else "hook_post")


def test_the_skip_transcoder_exposes_its_skip_weights_and_others_none():
    model_cfg = ModelConfig(**SMALL)
    skip = Transcoder(TranscoderConfig(skip=True), model_cfg)
    assert skip.skip_weights() is skip.W_skip and tuple(skip.skip_weights().shape) == (16, 16)
    check_contract(skip, model_cfg)
    assert Transcoder(TranscoderConfig(), model_cfg).skip_weights() is None


class _DuckTypedMLP(nn.Module):
    """Has every method of the contract but does not subclass MLP: refused, the contract is declared."""

    hidden_hook = "hook_post"

    def __init__(self, cfg, model_cfg):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(4, model_cfg.d_model))
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return x

    def input_weights(self) -> Tensor:
        return self.W

    def output_weights(self) -> Tensor:
        return self.W

    def aux_losses(self):
        return {}

    def stats(self):
        return {}


class _NoInputWeights(MLP):
    """Subclasses MLP but leaves an abstract method unwritten."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def output_weights(self) -> Tensor:
        return torch.zeros(4, 4)


def test_the_registry_refuses_a_class_that_does_not_subclass_the_contract():
    before = MLP_REGISTRY.names()
    with pytest.raises(TypeError, match=r"MLP kind 'duck': module class _DuckTypedMLP .*subclass of MLP"):
        MLP_REGISTRY.register("duck", DenseMLPConfig, _DuckTypedMLP)
    with pytest.raises(TypeError, match=r"'partial'.*does not implement input_weights"):
        MLP_REGISTRY.register("partial", DenseMLPConfig, _NoInputWeights)
    assert MLP_REGISTRY.names() == before


def test_a_registry_with_a_base_accepts_its_subclasses_and_one_without_accepts_anything():
    registry = Registry("MLP kind", base=MLP)
    registry.register("dense", DenseMLPConfig, MLP_REGISTRY["dense"].module_cls)
    assert registry.names() == ["dense"]
    Registry("thing").register("duck", dict, _DuckTypedMLP)
