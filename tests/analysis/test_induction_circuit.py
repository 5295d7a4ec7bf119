"""A 2-layer attention-only model trained here on induction: its circuit holds the heads its attention patterns
single out, EAP-IG agrees with exact patching on its 81-edge graph, and faithfulness is measured by running it.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from glassformer.analysis.analyze import analyze
from glassformer.analysis.component.ablation import writer_means
from glassformer.analysis.component.attribution import attribute
from glassformer.analysis.component.circuits import rank
from glassformer.analysis.component.faithfulness import Faithfulness, evaluate_ranking
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.tasks import TASKS, logit_diff
from glassformer.archs import ModelConfig, build_model, save_model_dir

V, T = 64, 24
PREV_TOKEN = 0.3
"""A layer-0 head is a previous-token head if it puts this much attention on the previous token (uniform causal
attention puts about 0.12 there on average)."""
INDUCTION = 0.5
"""A layer-1 head is an induction head if it puts this much attention on the token after the current token's
earlier occurrence (uniform attention: about 0.06)."""


def induction_windows(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct random tokens in which a segment at a random offset is repeated at once: the repeat's offset
    varies, so attending by position alone cannot solve it. Returns tokens (n, T) and the mask of positions an
    induction circuit can predict."""
    x = torch.argsort(torch.rand(n, V, generator=gen), dim=1)[:, :T]
    start = torch.randint(0, 9, (n,), generator=gen)
    length = (T - start) // 2
    pos = torch.arange(T)
    second = (pos >= (start + length)[:, None]) & (pos < (start + 2 * length)[:, None])
    x = torch.where(second, x.gather(1, (pos - length[:, None]).clamp(min=0)), x)
    return x, second & (pos >= (start + length + 1)[:, None])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        cfg = ModelConfig(d_vocab=V, n_ctx=T, d_model=64, n_layers=2, n_heads=4, attn_only=True)
        model = build_model(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
        gen = torch.Generator().manual_seed(0)
        for _ in range(250):
            x, target = induction_windows(gen, 128)
            logits = model(x[:, :-1])
            loss = F.cross_entropy(logits[target[:, 1:]], x[:, 1:][target[:, 1:]])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(V)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path_factory.mktemp("induction_model")
    save_model_dir(path, model, tokenizer_json=tok.to_str())
    corpus, _ = induction_windows(torch.Generator().manual_seed(1), 64)
    graph = ComponentGraph.from_config(cfg)
    return SimpleNamespace(model=model, graph=graph, dir=path, corpus=corpus, tokenizer=tok,
                           batch=TASKS["induction"].generate(tok, 32, seed=0, max_len=T, d_vocab=V),
                           means={"mean": writer_means(model, graph, corpus),
                                  "position-mean": writer_means(model, graph, corpus, per_position=True),
                                  "corrupt": None})


def head_scores(model) -> tuple[torch.Tensor, torch.Tensor]:
    """From attention patterns alone, on fresh sequences of 12 random tokens repeated once: each layer-0 head's
    attention to the previous token and each layer-1 head's attention to the induction target."""
    gen = torch.Generator().manual_seed(7)
    seq = torch.argsort(torch.rand(64, V, generator=gen), dim=1)[:, :12]
    _, cache = model.run_with_cache(torch.cat([seq, seq], dim=1), names=lambda n: n.endswith("hook_pattern"))
    p0, p1 = cache["blocks.0.attn.hook_pattern"], cache["blocks.1.attn.hook_pattern"]  # (B, H, T, T)
    prev = torch.stack([p0[:, :, t, t - 1] for t in range(1, T)], dim=-1).mean(dim=(0, 2))  # (H,)
    ind = torch.stack([p1[:, :, t, t - 11] for t in range(12, T)], dim=-1).mean(dim=(0, 2))  # (H,)
    return prev, ind


def test_the_model_learned_induction(trained):
    logits = trained.model(trained.batch.clean)
    assert (logit_diff(logits, trained.batch) > 0).float().mean() > 0.9


def n08_circuit(trained, ablation: str, method: str = "eap-ig", selection: str = "greedy"):
    """Scores by ``method``, then the smallest greedy circuit measured to reach f >= 0.8."""
    model, graph, batch, means = trained.model, trained.graph, trained.batch, trained.means[ablation]
    att = attribute(method, model, graph, batch, ablation, means)
    fa = Faithfulness(model, graph, batch, ablation, means)
    ranking = rank(selection, graph, att.scores)
    n = evaluate_ranking(fa, ranking, probes=8, rounds=3)["N_0.8"]["edges"]
    mask = torch.zeros(graph.n_edges, dtype=torch.bool)
    mask[ranking[:n]] = True
    return SimpleNamespace(att=att, fa=fa, n=n, mask=mask,
                           edges={graph.edge_names()[e] for e in ranking[:n].tolist()})


@pytest.mark.parametrize("ablation", ["mean", "position-mean"])
def test_circuit_contains_a_previous_token_head_and_an_induction_head(trained, ablation):
    prev, ind = head_scores(trained.model)
    prev_heads = [h for h in range(4) if prev[h] > PREV_TOKEN]
    induction_heads = [h for h in range(4) if ind[h] > INDUCTION]
    assert prev_heads and induction_heads, (prev, ind)
    found = n08_circuit(trained, ablation)
    circuit = found.edges
    assert found.n < trained.graph.n_edges
    if ablation == "position-mean":  # positions survive the ablation: the circuit is a minority of edges
        assert found.n <= trained.graph.n_edges // 2
    # The induction head writes the answer into the logits.
    assert any(f"a1.h{i}->logits" in circuit for i in induction_heads), sorted(circuit)
    if ablation == "mean":
        # K-composition: a previous-token head writes into an induction head's key. Only under mean ablation:
        # position-mean keeps each head's average output at every position, and on the model this fixture trains
        # (torch 2.13 CPU) an 8-edge greedy circuit with no layer-0 -> key edge is measured at f >= 0.8, by
        # EAP-IG at 5, 20 and 50 steps alike, so the edge is not needed there.
        assert any(f"a0.h{p}->a1.h{i}<k>" in circuit for p in prev_heads for i in induction_heads), sorted(circuit)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / (ra.norm() * rb.norm()))


@pytest.mark.parametrize("ablation", ["mean", "corrupt"])
def test_eap_ig_agrees_with_exact_patching(trained, ablation, record_property):
    """Thresholds, on this 81-edge graph:

    - Spearman correlation of EAP-IG's and exact patching's edge scores >= 0.7. Unrelated scores give about 0
      with a standard deviation of 1/sqrt(80) = 0.11, so 0.7 is six deviations above chance; EAP-IG is a
      path-integrated first-order estimate, not exact, so perfect agreement is not expected (Hanna et al. 2024
      report high but imperfect agreement). Measured here: about 0.86 (mean) and 0.94 (corrupt).
    - Overlap: the fraction of the exact N_0.8 circuit's edges that EAP-IG's N_0.8 circuit holds must be at
      least halfway from chance (a random circuit of EAP-IG's size holds |C_ig| / E of them) to 1. Measured:
      0.94 (chance 0.74) and 1.0 (chance 0.12).
    - EAP-IG ranks edges at least as close to exact patching as plain EAP does, under mean ablation, where the
      gradient at the clean run is a poor guide (measured 0.86 against 0.51).
    """
    exact, ig = n08_circuit(trained, ablation, method="exact"), n08_circuit(trained, ablation, method="eap-ig")
    eap = attribute("eap", trained.model, trained.graph, trained.batch, ablation, trained.means[ablation])
    rho_ig, rho_eap = spearman(ig.att.scores, exact.att.scores), spearman(eap.scores, exact.att.scores)
    overlap = len(exact.edges & ig.edges) / len(exact.edges)
    n_exact, n_ig = exact.n, ig.n
    chance = n_ig / trained.graph.n_edges
    record_property("spearman_eap_ig", rho_ig)
    record_property("spearman_eap", rho_eap)
    record_property("overlap_n08", overlap)
    print(f"{ablation}: spearman EAP-IG {rho_ig:.3f}, EAP {rho_eap:.3f}; N_0.8 exact {n_exact}, EAP-IG {n_ig}; "
          f"overlap {overlap:.2f} (chance {chance:.2f})")
    assert rho_ig >= 0.7
    assert overlap >= chance + (1 - chance) / 2
    if ablation == "mean":
        assert rho_ig >= rho_eap


def test_faithfulness_is_measured_by_running_the_model_with_the_rest_ablated(trained):
    """A circuit of every edge among a set of heads (plus input and logits) is the same as mean-ablating every
    other head's output: a hand-written hook on ``attn.hook_result`` must give the metric the patching engine
    measures. And the reported N_0.8 circuit must reach f >= 0.8 when measured afresh."""
    model, graph, batch = trained.model, trained.graph, trained.batch
    found = n08_circuit(trained, "mean")
    top10 = torch.zeros(graph.n_edges, dtype=torch.bool)
    top10[rank("greedy", graph, found.att.scores)[:10]] = True
    heads = {node for node in graph.edge_nodes(top10) if node.startswith("a")}
    keep = [(layer, h) for layer in range(2) for h in range(4) if f"a{layer}.h{h}" in heads]
    inside = {"input", "logits", *heads}
    mask = torch.tensor([graph.writers[w].name in inside and graph.readers[r].node.name in inside
                         for w, r in zip(graph.edge_writer.tolist(), graph.edge_reader.tolist(), strict=True)])
    _, cache = model.run_with_cache(trained.corpus, names=lambda name: name.endswith("hook_result"))

    def ablate(layer: int):
        mean = cache[f"blocks.{layer}.attn.hook_result"].mean(dim=(0, 1))  # (H, d_model)

        def fn(x, hook):
            x = x.clone()
            for h in range(4):
                if (layer, h) not in keep:
                    x[:, :, h] = mean[h]
            return x
        return fn

    with model.hooks([(f"blocks.{layer}.attn.hook_result", ablate(layer)) for layer in range(2)]):
        by_hand = logit_diff(model(batch.clean), batch).mean().item()
    assert len(keep) < 8  # some heads are ablated, or the check would be trivial
    assert found.fa.m(mask[None]).item() == pytest.approx(by_hand, rel=1e-4, abs=1e-4)
    fresh = Faithfulness(model, graph, batch, "mean", trained.means["mean"])
    assert fresh.f(found.mask[None]).item() >= 0.8


def test_analyze_runs_on_an_attention_only_model(trained):
    val, _ = induction_windows(torch.Generator().manual_seed(2), 8)
    result = analyze(trained.dir, tasks=["induction"], ablation="position-mean", corpus_tokens=trained.corpus,
                     val_tokens=val, n_pairs=16, progress=False)
    assert result["graph"]["n_edges"] == 81 and result["model"]["mlp"] is None
    task = result["tasks"]["induction"]
    assert task["capability"]["model"]["accuracy"] > 0.9
    assert task["capability"]["random_init"]["accuracy"] < task["capability"]["model"]["accuracy"]
    # A model trained on induction passes the capability gate; its controls must not (the sanity check).
    assert task["capable"] and task["gate"]["model"]["gap"] >= 0.5, task["gate"]["model"]["reasons"]
    assert not task["gate"]["random_init"]["passed"] and not task["gate"]["shuffled_labels"]["passed"]
    assert result["summary"][0]["n_tasks_gated_in"] == 1
    for circuit in task["circuits"]:
        assert set(circuit["N_0.8"]) == {"model", "random_init", "shuffled_labels"}
        assert circuit["N_0.8"]["model"]["edges"] <= 81
    assert (trained.dir / "analysis.json").is_file()
