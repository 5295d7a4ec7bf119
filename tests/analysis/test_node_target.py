"""The node-level target is relative to the full model: a circuit must come within ``target_margin`` of its own
full model's held-out task loss; a circuit that beats its model by more than ``artefact_margin`` is flagged, marked
in the table and never averaged; the KL divergence of the circuit's next-token distribution from the model's is
recorded beside the loss.

The planted artefact: the hand-set model of test_masks_planted gets two more layer-0 latents that read the same
channel as the planted ones and write the opposite sign, twice as strongly, so the whole model answers every pair
wrong (loss > 2 nats) while the four planted nodes alone answer every pair right.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_masks_planted import PLANTED, planted_batch, planted_model
from tests_analysis_support import make_batch, make_model

from glassformer.analysis import AnalysisConfig
from glassformer.analysis.node.circuits import analyze_task, format_table, summary
from glassformer.analysis.node.graph import GatedModel, NodeGraph
from glassformer.analysis.node.masks import (
    MaskConfig,
    circuit_kl,
    circuit_loss_fn,
    learn_circuit,
    smallest_circuit,
)
from glassformer.analysis.tasks.base import logit_diff, split_pairs

SABOTAGE = {"m0.hidden[2]", "m0.hidden[3]"}


def sabotaged_model():
    model = planted_model()
    tc = model.blocks[0].mlp
    with torch.no_grad():
        for latent, sign in ((2, 1.0), (3, -1.0)):
            tc.W_enc[latent] = 0.0
            tc.W_enc[latent, 0] = 3.0 * sign
            tc.b_enc[latent] = 0.0
            tc.W_dec[latent] = 0.0
            tc.W_dec[latent, 1] = -2.0 * sign
    return model


def full_loss(model, batch) -> float:
    """The whole model's task loss, by a plain forward (not the code under test)."""
    with torch.no_grad():
        return F.softplus(-logit_diff(model(batch.clean), batch)).mean().item()


def planted_first(graph: NodeGraph) -> torch.Tensor:
    """A hand-set ranking: the planted nodes, then every other node, the sabotaging latents last."""
    names = [graph.node_name(i) for i in range(graph.n_nodes)]
    order = sorted(range(graph.n_nodes), key=lambda i: (names[i] not in PLANTED, names[i] in SABOTAGE, i))
    return torch.tensor(order)


@pytest.mark.parametrize("target", [None, 0.15])
def test_a_circuit_that_beats_its_model_is_flagged(target):
    _, heldout = split_pairs(planted_batch(32, 1), 0.5)
    graph = None
    for model, beats in ((sabotaged_model(), True), (planted_model(), False)):
        graph = graph or NodeGraph.from_config(model.cfg)
        loss_full = full_loss(model, heldout)
        loss_at = circuit_loss_fn(GatedModel(model, graph, heldout, "zero"), planted_first(graph))
        # The hint plays the learned mask's size: the bisection searches below it when it meets the target.
        out = smallest_circuit(loss_at, graph.n_nodes, target, hint=len(PLANTED), margin=0.05, artefact_margin=0.1)
        assert out["reached"] and out["loss_full"] == pytest.approx(loss_full, rel=1e-4)
        if beats:
            assert loss_full > 2.0  # the planted precondition: the whole model is wrong on every pair
        assert out["artefact"] is beats, (loss_full, out)
        expected = loss_full + 0.05 if target is None else target
        assert out["target"] == pytest.approx(expected, rel=1e-4)
        assert out["target_rule"] == ("relative" if target is None else "absolute")


@pytest.mark.parametrize("target", [None, 0.3])
def test_masks_are_chosen_at_the_training_pairs_relative_target(target):
    model = sabotaged_model()
    graph = NodeGraph.from_config(model.cfg)
    train, heldout = split_pairs(planted_batch(32, 1), 0.5)
    out = learn_circuit(model, graph, train, heldout, "zero", None, target,
                        MaskConfig(steps=2, search=((1e-3, 5e-2),), seed=0), margin=0.05)
    expected = full_loss(model, train) + 0.05 if target is None else target
    assert out["train_target"] == pytest.approx(expected, rel=1e-4)
    assert out["target"] == pytest.approx(full_loss(model, heldout) + 0.05 if target is None else target, rel=1e-4)


def test_artefact_rule_on_synthetic_losses():
    losses = [0.9, 0.5, 0.30, 0.52, 0.6]  # C_0 .. C_4; the full model 0.6
    out = smallest_circuit(lambda ks: [losses[k] for k in ks], 4, None, margin=0.05, artefact_margin=0.1)
    assert (out["nodes"], out["artefact"]) == (1, False)  # 0.5: 0.1 below the model, not more
    out = smallest_circuit(lambda ks: [losses[k] for k in ks], 4, 0.35, hint=2, margin=0.05, artefact_margin=0.1)
    assert (out["nodes"], out["artefact"]) == (2, True)  # 0.30: 0.3 below the model


def _entry(model, config, subjects=None):
    batch = planted_batch(32, 1)
    graph = NodeGraph.from_config(model.cfg)
    subjects = subjects or {"model": model}
    return graph, batch, analyze_task("planted", "", batch, graph, subjects, dict.fromkeys(subjects), config)


def test_the_relative_target_is_each_subjects_own_full_loss_plus_the_margin():
    model, random_model = planted_model(), planted_model(seed=1, plant=False)
    config = AnalysisConfig(level="node", method="eap", ablation="zero", target_margin=0.07, n_pairs=32,
                            controls=True)
    _, batch, entry = _entry(model, config, {"model": model, "random_init": random_model})
    c = entry["circuits"][0]
    _, heldout = split_pairs(batch, config.holdout)
    assert c["loss_full"]["model"] == pytest.approx(full_loss(model, heldout), rel=1e-4)
    assert c["loss_full"]["random_init"] == pytest.approx(full_loss(random_model, heldout), rel=1e-4)
    for who in ("model", "random_init", "shuffled_labels"):
        assert c["target_rule"][who] == "relative"
        assert c["target"][who] == pytest.approx(c["loss_full"][who] + 0.07, abs=1e-9)
        # The whole model meets its own target, so every subject, the controls too, has a size.
        assert c["reached"][who] and c["loss"][who] <= c["target"][who]
        assert c["kl"][who] >= 0.0
    assert (c["target_margin"], c["target_loss"], c["artefact_margin"]) == (0.07, None, 0.1)
    # With shuffled labels the whole model answers half the pairs wrong (about 1.5 nats) while the empty circuit
    # sits at log 2: the control's circuit beats its model, and says so.
    assert c["loss_full"]["shuffled_labels"] > 1.0
    assert c["artefact"] == {"model": False, "random_init": False, "shuffled_labels": True}


def test_an_artefact_is_marked_in_the_table_and_never_averaged():
    model = sabotaged_model()
    config = AnalysisConfig(level="node", method="eap", ablation="zero", n_pairs=32, controls=False,
                            size_gated_out=True)
    graph, _, entry = _entry(model, config)
    c = entry["circuits"][0]
    assert c["reached"]["model"] and c["artefact"]["model"]
    entry["gate"]["model"]["passed"] = True  # as if capable, so the summary considers it
    row = summary({"planted": entry}, config)[0]
    assert row["geomean_nodes"]["model"] is None and row["tasks_artefact"]["model"] == 1
    assert row["tasks_reached"]["model"] == 0
    result = {"settings": {"method": "eap", "target_loss": None, "target_margin": 0.05, "artefact_margin": 0.1,
                           "controls": []}, "graph": graph.describe(model), "tasks": {"planted": entry},
              "summary": [row]}
    line = next(s for s in format_table(result) if s.startswith("planted"))
    assert f" {c['nodes']['model']}* []" in line and f"{c['kl']['model']:.3f}" in line


def test_kl_is_zero_for_the_full_model_and_positive_for_a_strict_subset():
    model = make_model()
    graph = NodeGraph.from_config(model.cfg)
    batch = make_batch(B=6)
    gated = GatedModel(model, graph, batch, "zero")
    ranking = torch.randperm(graph.n_nodes, generator=torch.Generator().manual_seed(0))
    assert circuit_kl(gated, ranking, graph.n_nodes) == pytest.approx(0.0, abs=1e-9)
    k = graph.n_nodes // 2
    keep = torch.zeros(graph.n_nodes)
    keep[ranking[:k]] = 1.0
    with torch.no_grad():  # the reference: the plain model and GatedModel.logits, through F.kl_div
        full = model(batch.clean)[torch.arange(len(batch)), batch.last].double().log_softmax(-1)
        circ = gated.logits(keep[None])[0].double().log_softmax(-1)
    expected = F.kl_div(circ, full, log_target=True, reduction="batchmean").item()
    assert expected > 0
    assert circuit_kl(gated, ranking, k) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("field", ["target_margin", "artefact_margin"])
@pytest.mark.parametrize("value", [-0.01, math.inf, math.nan, True, "0.1"])
def test_margins_are_validated(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r} is not allowed"):
        AnalysisConfig(level="node", **{field: value})


def test_target_loss_is_an_optional_absolute_mode():
    assert AnalysisConfig(level="node").target_loss is None
    assert AnalysisConfig(level="node", target_margin=0).target_margin == 0
    for bad in (0, -1.0, math.inf, False):
        with pytest.raises(ValueError, match=f"target_loss={bad!r} is not allowed"):
            AnalysisConfig(level="node", target_loss=bad)
    record = AnalysisConfig(level="node", target_loss=0.15).record()
    assert (record["target_loss"], record["target_margin"], record["artefact_margin"]) == (0.15, 0.05, 0.1)
