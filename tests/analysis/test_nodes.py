"""The node-level graph: node counts and edge counts by hand, weight sparsity visible in the edges, gating equal to
ablating by hand."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.analysis.node.graph import GatedModel, NodeGraph, node_means
from glassformer.analysis.tasks import TaskBatch
from glassformer.analysis.tasks.base import logit_diff
from glassformer.archs import (
    MLP_REGISTRY,
    ModelConfig,
    TranscoderConfig,
    WeightSparsityConfig,
    build_model,
    project_,
)


def config(**overrides) -> ModelConfig:
    fields = dict(d_vocab=20, n_ctx=8, d_model=8, n_layers=2, n_heads=2, d_mlp=12, kernels="reference")
    fields.update(overrides)
    return ModelConfig(**fields)


def seeded_model(**overrides):
    torch.manual_seed(0)
    return build_model(config(**overrides)).eval()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.sampled_from([1, 2, 4]), st.integers(1, 3), st.booleans())
def test_node_count_is_the_sum_of_the_site_widths(n_layers, n_heads, d_head, attn_only):
    cfg = ModelConfig(d_vocab=10, n_ctx=4, d_model=8, n_layers=n_layers, n_heads=n_heads, d_head=d_head, d_mlp=6,
                      attn_only=attn_only)
    g = NodeGraph.from_config(cfg)
    # a.in + q + k + v + a.out, then m.in + neurons + m.out
    per_layer = 8 + 3 * n_heads * d_head + 8 + (0 if attn_only else 8 + 6 + 8)
    assert g.n_nodes == n_layers * per_layer
    names = [g.node_name(i) for i in range(g.n_nodes)]
    assert len(set(names)) == g.n_nodes
    assert [g.node_index(n) for n in names] == list(range(g.n_nodes))


@pytest.mark.parametrize("kind", MLP_REGISTRY.names())
def test_every_registered_mlp_variant_has_node_sites_its_model_hooks(kind):
    cfg = config(mlp={"kind": kind, "k": 4} if kind in ("topk", "transcoder") else {"kind": kind})
    g = NodeGraph.from_config(cfg)
    model = build_model(cfg)
    assert all(s.hook in model.hook_names() for s in g.sites)
    width = 4 * 8 if kind == "transcoder" else 12  # transcoder: expansion_factor 4 * d_model latents
    assert g.site("m1.hidden").size == width
    assert g.site("m0.hidden").hook == f"blocks.0.mlp.{'hook_latents' if kind == 'transcoder' else 'hook_post'}"


def dense_edges_by_hand(L: int, H: int, dh: int, D: int, W: int, rotary: bool = False) -> int:
    qkv = 3 * H * dh * D
    ov = D * H * dh
    qk = H * dh * (2 if rotary else 1)  # rotary: each channel meets both channels of its rotation pair
    mlp = 2 * D * W
    # read sites in order a0.in m0.in a1.in m1.in ...; a write reaches every read after it, channel to channel:
    # a_l.out reaches m_l.in and both reads of each later layer, m_l.out both reads of each later layer.
    residual = sum(1 + 2 * (L - 1 - l) + 2 * (L - 1 - l) for l in range(L)) * D
    return L * (qkv + ov + qk + mlp) + residual


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_edges_of_a_dense_model_match_the_count_by_hand(positional):
    model = seeded_model(positional=positional)
    g = NodeGraph.from_config(model.cfg)
    expected = dense_edges_by_hand(2, 2, 4, 8, 12, rotary=positional == "rotary")
    assert g.edges()["total"] == expected
    assert g.edges(model)["total"] == expected  # normal init: no weight is exactly zero


def test_weight_sparse_model_has_fewer_edges_than_a_dense_one_of_the_same_shape():
    dense = seeded_model()
    sparse = seeded_model()
    project_(sparse, 0.25, WeightSparsityConfig(fraction=0.25, min_per_neuron=1))
    g = NodeGraph.from_config(dense.cfg)
    e_dense, e_sparse = g.edges(dense), g.edges(sparse)
    assert e_sparse["total"] < e_dense["total"]
    # With every node kept, the matrix families count exactly the non-zero weights.
    nnz = lambda W: int((W != 0).sum())  # noqa: E731
    blocks = sparse.blocks
    assert e_sparse["qkv"] == sum(nnz(b.attn.W_Q.weight) + nnz(b.attn.W_K.weight) + nnz(b.attn.W_V.weight)
                                  for b in blocks)
    assert e_sparse["ov"] == sum(nnz(b.attn.W_O.weight) for b in blocks)
    assert e_sparse["mlp_in"] == sum(nnz(b.mlp.W_in.weight) for b in blocks)
    assert e_sparse["mlp_out"] == sum(nnz(b.mlp.W_out.weight) for b in blocks)
    assert e_sparse["mlp_in"] == pytest.approx(0.25 * e_dense["mlp_in"], abs=1)


def test_edges_count_only_non_zero_weights_between_kept_nodes():
    model = seeded_model()
    g = NodeGraph.from_config(model.cfg)
    keep = torch.zeros(g.n_nodes, dtype=torch.bool)
    for name in ("a0.in[0]", "a0.q[h0.1]", "a0.out[3]", "m0.in[3]", "a1.in[3]", "m1.hidden[2]"):
        keep[g.node_index(name)] = True
    e = g.edges(model, keep)
    assert (e["qkv"], e["residual"], e["mlp_in"], e["total"]) == (1, 2, 0, 3)
    with torch.no_grad():
        model.blocks[0].attn.W_Q.weight[1, 0] = 0.0  # q channel 1 of head 0 no longer reads channel 0
        model.blocks[1].ln1.weight[3] = 0.0  # layer 1's attention no longer reads residual channel 3
    e = g.edges(model, keep)
    assert (e["qkv"], e["residual"], e["total"]) == (0, 1, 1)


def test_skip_transcoder_edges_include_the_skip_matrix():
    cfg = config(mlp=TranscoderConfig(k=4, skip=True, expansion_factor=2))
    g = NodeGraph.from_config(cfg)
    model = build_model(cfg)
    assert g.edges()["skip"] == 2 * 8 * 8
    assert g.edges(model)["skip"] == 0  # the skip path starts at zero
    with torch.no_grad():
        model.blocks[1].mlp.W_skip[2, 5] = 1.0
    assert g.edges(model)["skip"] == 1


def batch_of(model, B: int = 3, T: int = 5) -> TaskBatch:
    gen = torch.Generator().manual_seed(3)
    clean = torch.randint(0, 20, (B, T), generator=gen)
    return TaskBatch("t", clean, clean.flip(1), torch.tensor([T - 1, T - 2, T - 1][:B]), torch.arange(B),
                     torch.arange(B) + 5)


def test_node_means_are_the_mean_activation_over_corpus_positions():
    model = seeded_model(mlp=TranscoderConfig(k=4, expansion_factor=2))
    g = NodeGraph.from_config(model.cfg)
    corpus = torch.randint(0, 20, (5, 8), generator=torch.Generator().manual_seed(1))
    means = node_means(model, g, corpus, batch_size=2)
    _, cache = model.run_with_cache(corpus)
    for name in ("a1.k", "m0.hidden", "a0.in", "m1.out"):
        s = g.site(name)
        expected = cache[s.hook].reshape(-1, s.size).mean(dim=0)
        torch.testing.assert_close(means[s.nodes], expected, rtol=1e-5, atol=1e-6)


def test_all_gates_open_reproduce_the_model_and_a_closed_gate_ablates_that_node_alone():
    model = seeded_model()
    g = NodeGraph.from_config(model.cfg)
    batch = batch_of(model)
    corpus = torch.randint(0, 20, (4, 8), generator=torch.Generator().manual_seed(2))
    means = node_means(model, g, corpus)
    gated = GatedModel(model, g, batch, "mean", means)
    gates = torch.ones(2, g.n_nodes)
    i = g.node_index("m0.hidden[7]")
    gates[1, i] = 0.0
    logits = gated.logits(gates)  # (2, B, d_vocab)
    plain = model(batch.clean)
    torch.testing.assert_close(logit_diff(logits[0][:, None], batch), logit_diff(plain, batch), rtol=1e-5, atol=1e-5)

    def by_hand(x, hook):
        x = x.clone()
        x[..., 7] = means[i]
        return x

    with model.hooks([("blocks.0.mlp.hook_post", by_hand)]):
        ablated = model(batch.clean)
    torch.testing.assert_close(logit_diff(logits[1][:, None], batch), logit_diff(ablated, batch), rtol=1e-5,
                               atol=1e-5)


def test_zero_ablation_of_a_whole_site_equals_zeroing_its_hook():
    model = seeded_model()
    g = NodeGraph.from_config(model.cfg)
    batch = batch_of(model)
    gates = torch.ones(1, g.n_nodes)
    gates[0, g.site("a1.v").nodes] = 0.0
    logits = GatedModel(model, g, batch, "zero").logits(gates)
    with model.hooks([("blocks.1.attn.hook_v", lambda x, hook: torch.zeros_like(x))]):
        expected = model(batch.clean)
    torch.testing.assert_close(logit_diff(logits[0][:, None], batch), logit_diff(expected, batch), rtol=1e-5,
                               atol=1e-5)


def test_bad_ablation_and_missing_means_are_refused():
    model = seeded_model()
    g = NodeGraph.from_config(model.cfg)
    with pytest.raises(ValueError, match="ablation='corrupt' is not allowed at node level: expected one of mean, zero"):
        GatedModel(model, g, batch_of(model), "corrupt")
    with pytest.raises(ValueError, match="ablation='mean' needs the node means"):
        GatedModel(model, g, batch_of(model), "mean")
    with pytest.raises(ValueError, match=r"keep has shape \(3,\)"):
        g.edges(model, torch.ones(3, dtype=torch.bool))
