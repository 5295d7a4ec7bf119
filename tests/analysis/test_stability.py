"""Decomposition stability: the matching finds a permuted dictionary exactly and random dictionaries at chance."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.analysis.stability import dictionary_stability, matched_cosines, stability_against_chance
from glassformer.archs import build_model, presets

TRANSCODER = {"kind": "transcoder", "activation": "topk", "k": 4, "expansion_factor": 2}


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(1, 12), st.integers(2, 9), st.integers(0, 2**16))
def test_a_permuted_copy_is_matched_exactly(n, d, seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen)
    perm = torch.randperm(n, generator=gen)
    cos = matched_cosines(a, a[perm] * 3.0)  # the scale of a direction does not matter
    assert torch.allclose(cos, torch.ones(n), atol=1e-6)


def test_the_matching_is_one_to_one_and_optimal_not_greedy():
    # Greedy would pair a0 with b0 (0.9) and leave a1 with b1 (0.0): sum 0.9. The optimum pairs a0-b1 (0.8) and
    # a1-b0 (0.8): sum 1.6, which is what is reported.
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a = torch.stack([torch.tensor([0.9, 0.8]) / 1.0, torch.tensor([0.8, -0.6])])
    got = matched_cosines(a, b)
    unit = torch.nn.functional.normalize(a, dim=1)
    assert torch.allclose(got, torch.tensor([unit[0, 1].item(), unit[1, 0].item()]), atol=1e-6)


def test_a_model_with_its_latents_permuted_is_perfectly_stable_and_random_dictionaries_are_not():
    torch.manual_seed(0)
    cfg = presets.get("debug", mlp=TRANSCODER)
    a = build_model(cfg)
    with torch.no_grad():  # a transcoder's decoder starts at zero; give it directions, as training would
        for block in a.blocks:
            block.mlp.W_dec.normal_()
    b = build_model(cfg)
    b.load_state_dict(a.state_dict())
    perm = torch.randperm(b.blocks[0].mlp.W_dec.shape[0])
    with torch.no_grad():  # permute layer 0's latents: encoder rows, biases and decoder rows together
        mlp = b.blocks[0].mlp
        mlp.W_enc.copy_(mlp.W_enc[perm])
        mlp.b_enc.copy_(mlp.b_enc[perm])
        mlp.W_dec.copy_(mlp.W_dec[perm])
    same = dictionary_stability(a, b)
    assert same["mean_cosine"] == pytest.approx(1.0, abs=1e-6) and same["fraction_above"] == 1.0
    out = stability_against_chance(a, b)
    chance = out["chance"]
    assert chance["fraction_above"] == 0.0 and 0.0 < chance["mean_cosine"] < 0.6
    assert out["trained"] == same
    assert stability_against_chance(a, b, seed=1)["chance"]["mean_cosine"] != chance["mean_cosine"]


def test_models_of_different_configs_or_without_mlps_are_refused():
    a = build_model(presets.get("debug"))
    with pytest.raises(ValueError, match="same config"):
        dictionary_stability(a, build_model(presets.get("debug", mlp=TRANSCODER)))
    attn = build_model(presets.get("debug", attn_only=True, d_mlp=None))
    with pytest.raises(ValueError, match="no MLP layers"):
        dictionary_stability(attn, attn)
