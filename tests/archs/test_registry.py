import typing
from pathlib import Path

import pytest
import torch
import yaml

from glassformer.archs import MLP_REGISTRY, ModelConfig, Registry, build_model
from glassformer.archs.mlp import MLPConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
VARIANT_YAMLS = ["topk", "solu", "transcoder", "transcoder_relu", "transcoder_jumprelu", "transcoder_batchtopk",
                 "act_sparsity", "ortho", "weight_sparse"]

SMALL = dict(d_vocab=30, n_ctx=8, d_model=16, n_layers=2, n_heads=2, d_mlp=32, kernels="reference")
VARIANTS = {
    "dense": {},
    "topk": {"mlp": {"kind": "topk", "k": 5, "activation": "gelu"}},
    "solu": {"mlp": {"kind": "solu"}},
    "transcoder_topk_skip": {"mlp": {"kind": "transcoder", "k": 4, "skip": True, "k_aux": 3}},
    "transcoder_relu": {"mlp": {"kind": "transcoder", "activation": "relu", "l1_coef": 0.01}},
    "transcoder_jumprelu": {"mlp": {"kind": "transcoder", "activation": "jumprelu", "expansion_factor": 2}},
    "transcoder_batchtopk": {"mlp": {"kind": "transcoder", "activation": "batchtopk", "k": 3}},
    "act_sparsity": {"activation_sparsity": {"sites": ["q", "mlp_out"], "fraction": 0.5}},
    "penalties": {"mlp": {"kind": "transcoder"}, "penalties": [
        {"target": "transcoder_decoder", "kind": "cos_margin", "margin": 0.2},
        {"target": "embed", "coef": 0.01, "warmup": 0.0}]},
    "weight_sparsity": {"weight_sparsity": {"fraction": 0.1, "min_per_neuron": 2, "lr_scaling": False}},
}


def test_the_mlp_config_union_lists_exactly_the_registered_config_classes():
    union = set(typing.get_args(MLPConfig))
    registered = {entry.config_cls for entry in MLP_REGISTRY.entries()}
    assert union == registered
    for entry in MLP_REGISTRY.entries():
        kind_type = typing.get_type_hints(entry.config_cls)["kind"]
        assert typing.get_args(kind_type) == (entry.name,)  # each config's kind is its registry key
        assert entry.config_cls().kind == entry.name
        assert entry.formula


def test_registering_a_name_twice_raises():
    registry = Registry("thing")
    registry.register("a", dict, dict)
    with pytest.raises(ValueError, match="'a' is already registered"):
        registry.register("a", dict, dict)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_config_round_trips_through_a_dict_and_builds(name):
    cfg = ModelConfig(**SMALL, **VARIANTS[name])
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    model = build_model(cfg).train()
    logits = model(torch.randint(0, 30, (2, 6)))
    loss = logits.logsumexp(-1).mean() + sum(model.aux_losses().values())
    loss.backward()
    assert all(isinstance(v, float) for v in model.stats().values())


def test_every_registered_mlp_kind_is_covered_by_the_variants():
    covered = {v.get("mlp", {}).get("kind", "dense") for v in VARIANTS.values()}
    assert covered == set(MLP_REGISTRY.names())


@pytest.mark.parametrize("name", VARIANT_YAMLS)
def test_each_variant_yaml_model_section_loads_and_builds(name):
    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    tiny = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    assert {k: raw[k] for k in ("data", "optim", "trainer")} == {k: tiny[k] for k in ("data", "optim", "trainer")}
    cfg = ModelConfig.from_dict(raw["model"])
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    build_model(cfg)


def test_readme_table_of_variants_is_the_generated_one():
    from pathlib import Path

    from glassformer.archs import MLP_REGISTRY, variants_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("<!-- variants:start -->\n")[1].split("\n<!-- variants:end -->")[0]
    assert section == variants_markdown()
    for name in MLP_REGISTRY.names():
        assert f"`model.mlp.kind: {name}`" in section
