"""Sparse-layer metrics against values computed by hand on small hand-built cases."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from glassformer.analysis.sparse_metrics import (
    firing_frequency,
    frequency_summary,
    fvu,
    hidden_activity,
    interference,
    l0,
    load_parent,
    parent_fidelity,
    sparse_layer_report,
    weight_density,
)
from glassformer.archs import ModelConfig, TopKMLPConfig, build_model, save_model_dir
from glassformer.archs.convert import ce_recovered


def test_l0_and_firing_frequency_by_hand():
    codes = torch.tensor([[0.0, 1.0, 0.0, 2.0],
                          [0.0, 0.0, 0.0, 1.0],
                          [0.0, 3.0, 0.0, -1.0]])
    assert l0(codes) == pytest.approx((2 + 1 + 2) / 3)
    assert firing_frequency(codes).tolist() == pytest.approx([0.0, 2 / 3, 0.0, 1.0])


def test_dead_and_dense_fractions_and_the_decade_histogram_by_hand():
    freq = torch.tensor([0.0, 5e-7, 3e-3, 0.05, 0.5, 1.0])
    s = frequency_summary(freq, dense_threshold=0.1)
    assert s["dead_fraction"] == pytest.approx(1 / 6) and s["dense_fraction"] == pytest.approx(2 / 6)
    counts = [b["count"] for b in s["histogram"]]
    # never | (0, 1e-6] | (1e-6, 1e-5] | (1e-5, 1e-4] | (1e-4, 1e-3] | (1e-3, 1e-2] | (1e-2, 0.1] | (0.1, 1]
    assert counts == [1, 1, 0, 0, 0, 1, 1, 2]
    assert sum(counts) == s["n_units"] == 6


def test_interference_of_hand_built_directions():
    orthogonal = interference(torch.eye(4) * 3.0)
    assert orthogonal["pairs"] == 6 and orthogonal["mean_abs_cos"] == 0.0 and orthogonal["fraction_above"] == 0.0
    # Rows at 0, 60 and 180 degrees (and a zero row): |cos| = 0.5, 1, 0.5.
    W = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [-2.0, 0.0], [0.0, 0.0]])
    r = interference(W, threshold=0.6, bins=5, chunk=1)
    assert r["directions"] == 3 and r["zero_directions"] == 1 and r["pairs"] == 3
    assert r["mean_abs_cos"] == pytest.approx(2 / 3) and r["max_abs_cos"] == pytest.approx(1.0)
    assert r["fraction_above"] == pytest.approx(1 / 3)
    assert r["histogram"]["counts"] == [0, 0, 2, 0, 1]  # 0.5 lands in [0.4, 0.6), 1.0 in the last bin


def test_weight_density_counts_zeros_per_matrix():
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_vocab=10, n_ctx=4, d_model=4, n_layers=1, n_heads=1, d_mlp=8))
    with torch.no_grad():
        model.blocks[0].mlp.W_in.weight[:4] = 0.0  # half of its 8 x 4 entries
        model.blocks[0].attn.W_Q.weight[0, 0] = 0.0  # one of 16
    d = weight_density(model)
    assert d["matrices"]["blocks.0.mlp.W_in.weight"] == 0.5
    assert d["matrices"]["blocks.0.attn.W_Q.weight"] == 15 / 16
    assert d["matrices"]["blocks.0.attn.W_Q.bias"] == 0.0  # biases start at zero
    assert d["matrices"]["embed.weight"] == 1.0


def test_fvu_and_ce_loss_recovered_by_hand():
    y = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # mean (2, 1): total variance 4
    assert fvu(y, y) == 0.0
    assert fvu(y, torch.tensor([[1.0, 1.0], [3.0, 2.0]])) == pytest.approx(1 / 4)
    assert ce_recovered(2.0, 2.5, 4.0) == pytest.approx(0.75)
    assert math.isnan(ce_recovered(2.0, 2.5, 2.0))


def dense_model(**kw):
    torch.manual_seed(0)
    fields = dict(d_vocab=30, n_ctx=8, d_model=8, n_layers=2, n_heads=2, d_mlp=16, kernels="reference")
    fields.update(kw)
    return build_model(ModelConfig(**fields)).eval()


def test_hidden_activity_of_a_topk_gelu_mlp_has_l0_exactly_k():
    model = dense_model(mlp=TopKMLPConfig(k=3, activation="gelu"))
    tokens = torch.randint(0, 30, (4, 8), generator=torch.Generator().manual_seed(0))
    layers = hidden_activity(model, tokens, "hook_post", batch_size=3)
    assert [row["l0"] for row in layers] == [3.0, 3.0]
    _, cache = model.run_with_cache(tokens, names="blocks.1.mlp.hook_post")
    never = (cache["blocks.1.mlp.hook_post"].reshape(-1, 16) != 0).sum(0) == 0
    assert layers[1]["dead_fraction"] == pytest.approx(never.float().mean().item())
    assert layers[1]["tokens"] == 32


def test_parent_fidelity_of_an_identical_and_a_halved_mlp():
    parent = dense_model()
    tokens = torch.randint(0, 30, (3, 9), generator=torch.Generator().manual_seed(1))
    same = parent_fidelity(copy.deepcopy(parent), parent, tokens)
    assert [row["fvu"] for row in same["layers"]] == [0.0, 0.0]
    assert all(row["ce_loss_recovered"] == pytest.approx(1.0) for row in same["layers"])
    assert same["all_layers"]["ce_loss_recovered"] == pytest.approx(1.0)
    half = copy.deepcopy(parent)
    with torch.no_grad():
        half.blocks[0].mlp.W_out.weight.mul_(0.5)
        half.blocks[0].mlp.W_out.bias.mul_(0.5)
    # y_hat = y / 2 on the parent's own inputs: FVU = sum ||y / 2||^2 / sum ||y - mean(y)||^2.
    _, cache = parent.run_with_cache(tokens[:, :-1], names="blocks.0.hook_mlp_out")
    y = cache["blocks.0.hook_mlp_out"].reshape(-1, 8).double()
    expected = (0.25 * y.pow(2).sum() / (y - y.mean(0)).pow(2).sum()).item()
    out = parent_fidelity(half, parent, tokens, ablation="zero")
    assert out["layers"][0]["fvu"] == pytest.approx(expected, rel=1e-5) and out["layers"][1]["fvu"] == 0.0
    assert out["ablation"] == "zero"


def test_the_parent_named_in_training_json_is_loaded_and_compared(tmp_path):
    parent = dense_model()
    child = dense_model(mlp=TopKMLPConfig(k=4))
    save_model_dir(tmp_path / "parent", parent)
    save_model_dir(tmp_path / "child", child, training={"parent": {"path": str(tmp_path / "parent"),
                                                                   "format": "glassformer"}})
    loaded, note = load_parent(tmp_path / "child")
    assert loaded is not None and str(tmp_path / "parent") in note
    tokens = torch.randint(0, 30, (2, 9), generator=torch.Generator().manual_seed(2))
    report = sparse_layer_report(child, tokens[:, :8], parent=loaded, parent_note=note, eval_tokens=tokens)
    assert [row["layer"] for row in report["parent"]["layers"]] == [0, 1]
    assert report["layers"][0]["l0"] <= 4 and report["layers"][0]["interference"]["directions"] == 16
    json.dumps(report)  # everything is JSON
    assert load_parent(tmp_path / "parent") == (None, "training.json names no parent")
    (tmp_path / "child" / "training.json").write_text(json.dumps({"parent": {"path": str(tmp_path / "gone")}}))
    assert load_parent(tmp_path / "child")[1].endswith("is not there")
