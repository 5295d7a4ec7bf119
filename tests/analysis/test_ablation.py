"""Edge patching: checked against the plain model, the corrupted run and hand-written hooks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests_analysis_support import VOCAB, make_batch, make_model

from glassformer.analysis.common import check_tokens
from glassformer.analysis.component.ablation import Patcher, writer_activations, writer_means
from glassformer.analysis.component.graph import ComponentGraph

CONFIGS = {
    "dense": dict(),
    "attn_only": dict(attn_only=True),
    "transcoder": dict(mlp={"kind": "transcoder", "activation": "topk", "k": 8}),
    "topk": dict(mlp={"kind": "topk", "k": 8}),
    "rotary_rmsnorm": dict(positional="rotary", norm="rmsnorm"),
}


def last_logits(model, tokens, batch):
    return model(tokens)[torch.arange(len(batch)), batch.last]  # (B, d_vocab)


@pytest.mark.parametrize("kind", CONFIGS)
@pytest.mark.parametrize("ablation", ["mean", "zero", "corrupt"])
def test_keeping_every_edge_reproduces_the_model(kind, ablation):
    model = make_model(**CONFIGS[kind])
    graph = ComponentGraph.from_config(model.cfg)
    batch = make_batch()
    means = writer_means(model, graph, torch.randint(0, VOCAB, (4, 16)))
    patcher = Patcher(model, graph, batch, ablation, means)
    out = patcher.run(graph.weights(torch.ones(2, graph.n_edges)))
    expected = last_logits(model, batch.clean, batch)
    torch.testing.assert_close(out[0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", CONFIGS)
def test_ablating_every_edge_with_corrupted_prompts_gives_the_corrupted_run(kind):
    model = make_model(**CONFIGS[kind])
    graph = ComponentGraph.from_config(model.cfg)
    batch = make_batch()
    out = Patcher(model, graph, batch, "corrupt").run(graph.weights(torch.zeros(1, graph.n_edges)))
    torch.testing.assert_close(out[0], last_logits(model, batch.corrupt, batch), rtol=1e-4, atol=1e-5)


def test_one_ablated_edge_matches_a_hand_written_hook():
    """a0.h1 -> a1.h0<v> under mean ablation: head 0 of layer 1 reads, through v only, the stream with head
    (0, 1)'s output replaced by its mean; every other reader sees the clean stream."""
    model = make_model()
    graph = ComponentGraph.from_config(model.cfg)
    batch = make_batch()
    corpus = torch.randint(0, VOCAB, (4, 16))
    means = writer_means(model, graph, corpus)
    _, cache = model.run_with_cache(corpus, names="blocks.0.attn.hook_result")
    mean_01 = cache["blocks.0.attn.hook_result"][:, :, 1].mean(dim=(0, 1))  # (d_model,)
    seen = {}

    def save(x, hook):
        seen["result"] = x

    def patch_v(x, hook):
        x = x.clone()
        x[:, :, 0] -= seen["result"][:, :, 1] - mean_01
        return x

    hooks = [("blocks.0.attn.hook_result", save), ("blocks.1.hook_v_input", patch_v)]
    with model.hooks(hooks):
        expected = last_logits(model, batch.clean, batch)
    keep = torch.ones(graph.n_edges)
    keep[graph.edge_index("a0.h1->a1.h0<v>")] = 0
    out = Patcher(model, graph, batch, "mean", means).run(graph.weights(keep[None]))[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, last_logits(model, batch.clean, batch))


def test_zero_ablating_input_to_logits_removes_the_embeddings_from_the_final_stream():
    model = make_model()
    graph = ComponentGraph.from_config(model.cfg)
    batch = make_batch()
    seen = {}

    def save(x, hook):
        seen[hook.name] = x

    def remove_input(x, hook):
        return x - seen["hook_embed"] - seen["hook_pos_embed"]

    hooks = [("hook_embed", save), ("hook_pos_embed", save), ("blocks.1.hook_resid_post", remove_input)]
    with model.hooks(hooks):
        expected = last_logits(model, batch.clean, batch)
    keep = torch.ones(graph.n_edges)
    keep[graph.edge_index("input->logits")] = 0
    out = Patcher(model, graph, batch, "zero").run(graph.weights(keep[None]))[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["mean", "zero", "corrupt"]))
def test_settings_batched_as_replicas_equal_settings_run_alone(seed, ablation):
    model = make_model()
    graph = ComponentGraph.from_config(model.cfg)
    batch = make_batch(B=2, T=5)
    means = writer_means(model, graph, torch.randint(0, VOCAB, (2, 8)))
    patcher = Patcher(model, graph, batch, ablation, means)
    keep = torch.rand(3, graph.n_edges, generator=torch.Generator().manual_seed(seed)) < 0.5
    together = patcher.run(graph.weights(keep.float()))
    for k in range(3):
        alone = patcher.run(graph.weights(keep[k:k + 1].float()))[0]
        torch.testing.assert_close(together[k], alone, rtol=1e-5, atol=1e-5)


def test_writer_means_average_every_corpus_token():
    model = make_model()
    graph = ComponentGraph.from_config(model.cfg)
    corpus = torch.randint(0, VOCAB, (5, 9))
    means = writer_means(model, graph, corpus, batch_size=2)
    expected_input = (model.embed(corpus) + model.pos_embed(torch.arange(9))).mean(dim=(0, 1))
    torch.testing.assert_close(means[0], expected_input, rtol=1e-5, atol=1e-6)
    acts = writer_activations(model, graph, corpus)
    torch.testing.assert_close(means, acts.mean(dim=(1, 2)), rtol=1e-5, atol=1e-6)


def test_corpus_tokens_are_checked():
    cfg = make_model().cfg
    with pytest.raises(ValueError, match=r"corpus_tokens=\(3,\) is not allowed: expected an integer tensor"):
        check_tokens(torch.zeros(3, dtype=torch.long), "corpus_tokens", cfg)
    with pytest.raises(ValueError, match=r"ids in \[0, 50\)"):
        check_tokens(torch.full((2, 3), VOCAB), "corpus_tokens", cfg)
    with pytest.raises(ValueError, match="ablation='half' is not allowed"):
        Patcher(make_model(), ComponentGraph.from_config(cfg), make_batch(), "half")
