"""Learned-mask machinery: the Heaviside gate and its surrogate gradient, bisection for the size at a target loss,
the pair split, agreement measures."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.analysis.common import geometric_mean
from glassformer.analysis.node.attribution import agreement, average_ranks, spearman
from glassformer.analysis.node.masks import (
    MaskConfig,
    choose_mask,
    heaviside,
    rank_nodes,
    smallest_circuit,
    task_loss,
)
from glassformer.analysis.tasks import TaskBatch
from glassformer.analysis.tasks.base import split_pairs


def test_heaviside_is_a_step_forward_and_a_sigmoid_derivative_backward():
    tau = torch.tensor([-1.0, -0.2, 0.0, 0.3, 1.0], requires_grad=True)
    gates = heaviside(tau, temperature=0.5)
    assert gates.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    gates.backward(torch.tensor([1.0, 2.0, 1.0, 1.0, -1.0]))
    s = [1 / (1 + math.exp(-t / 0.5)) for t in (-1.0, -0.2, 0.0, 0.3, 1.0)]
    expected = [g * si * (1 - si) / 0.5 for g, si in zip([1.0, 2.0, 1.0, 1.0, -1.0], s, strict=True)]
    assert tau.grad.tolist() == pytest.approx(expected, rel=1e-6)


def test_task_loss_is_the_binary_cross_entropy_over_the_two_answers():
    b = TaskBatch("t", torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long),
                  torch.zeros(2, dtype=torch.long), torch.tensor([0, 1]), torch.tensor([2, 2]))
    logits = torch.tensor([[[3.0, 0.0, 1.0], [0.0, -1.0, 1.0]]])  # (K=1, B=2, V=3); ld = 2, then -2
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2
    assert task_loss(logits, b).item() == pytest.approx(expected, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 2.0), min_size=2, max_size=60), st.floats(0.05, 1.0), st.integers(1, 9),
       st.integers(0, 70))
def test_bisection_finds_the_smallest_passing_size_when_loss_falls_with_size(drops, target, probes, hint):
    # C_0 .. C_n with losses falling as nodes are added: the first size at or below the target is the answer.
    losses = [3.0 - sum(sorted(drops, reverse=True)[:k]) * 3.0 / max(sum(drops), 1e-9) for k in range(len(drops) + 1)]
    n = len(drops)
    calls = []

    def loss_at(ks):
        calls.append(list(ks))
        return [losses[k] for k in ks]

    out = smallest_circuit(loss_at, n, target, hint=hint, probes=probes)
    passing = [k for k in range(n + 1) if losses[k] <= target]
    if not passing:
        assert out["nodes"] is None and not out["reached"] and out["loss"] == min(losses[k] for c in calls for k in c)
    else:
        assert out["nodes"] == passing[0] and out["reached"]
        assert out["loss"] == losses[passing[0]]
        assert out["bracket"][1] == passing[0] and (passing[0] == 0 or losses[out["bracket"][0]] > target)
    assert out["loss_full"] == losses[n] and out["loss_empty"] == losses[0]


def test_bisection_measures_few_sizes_on_a_large_graph():
    n, answer = 100_000, 31_337
    measured = []

    def loss_at(ks):
        measured.extend(ks)
        return [0.1 if k >= answer else 1.0 for k in ks]

    out = smallest_circuit(loss_at, n, 0.15, probes=7)
    assert out["nodes"] == answer
    assert len(set(measured)) < 60  # about log_8(n) rounds of 7 probes


def test_rank_nodes_breaks_ties_by_index():
    assert rank_nodes(torch.tensor([1.0, -1.0, 1.0, 0.2])).tolist() == [0, 2, 3, 1]


def test_split_pairs_holds_out_the_last_pairs_and_refuses_bad_fractions():
    b = TaskBatch("t", torch.zeros(5, 1, dtype=torch.long), torch.zeros(5, 1, dtype=torch.long),
                  torch.zeros(5, dtype=torch.long), torch.arange(5), torch.arange(5) + 5)
    train, held = split_pairs(b, 0.4)
    assert train.correct.tolist() == [0, 1, 2] and held.correct.tolist() == [3, 4]
    same, same2 = split_pairs(b, 0.0)
    assert same is b and same2 is b
    with pytest.raises(ValueError, match=r"holdout=1.0 is not allowed: expected a fraction in \[0, 1\)"):
        split_pairs(b, 1.0)


def test_mask_settings_refuse_bad_values_naming_them():
    with pytest.raises(ValueError, match="mask steps=0 is not allowed"):
        MaskConfig(steps=0)
    with pytest.raises(ValueError, match="mask search=.* is not allowed"):
        MaskConfig(search=((1e-3, 0.0),))
    assert MaskConfig().record()["tau_clamp"] == [-1.0, 1.0]


def test_spearman_and_average_ranks_by_hand():
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    # ranks (1, 2, 3, 4) against (2, 1, 4, 3): d^2 sums to 4, rho = 1 - 6 * 4 / (4 * 15) = 0.6
    assert spearman(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 1.0, 4.0, 3.0])) == pytest.approx(0.6)
    assert spearman(torch.tensor([1.0, 2.0]), torch.tensor([5.0, 5.0])) is None


def test_agreement_overlap_is_the_share_of_the_circuit_among_the_top_scores():
    keep = torch.tensor([True, False, True, True, False])
    tau = torch.tensor([1.0, -1.0, 0.5, 0.2, -0.5])
    scores = torch.tensor([9.0, 8.0, 0.0, 7.0, 1.0])  # top 3: nodes 0, 1, 3 -> two of the circuit's three
    out = agreement(keep, tau, scores)
    assert out["overlap"] == pytest.approx(2 / 3) and out["circuit_nodes"] == 3
    assert agreement(None, tau, scores)["overlap"] is None


def test_geometric_mean_counts_an_empty_circuit_as_one_node_and_skips_missing_sizes():
    assert geometric_mean([0, 9, None], floor=1.0) == pytest.approx(3.0)
    assert geometric_mean([], floor=1.0) is None


def test_the_search_keeps_the_smallest_mask_that_meets_the_target_else_the_lowest_loss():
    assert choose_mask([0.10, 0.05, 0.30], [50, 80, 10], target=0.15) == 0  # the 10-node mask misses the target
    assert choose_mask([0.15, 0.05], [50, 80], target=0.15) == 0  # "at most the target" meets it
    assert choose_mask([0.30, 0.20], [5, 9], target=0.15) == 1
    assert choose_mask([0.12, 0.11], [20, 20], target=0.15) == 1  # equal sizes: the lower loss


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.floats(0, 2), st.integers(0, 100)), min_size=1, max_size=6), st.floats(0.01, 1))
def test_the_chosen_mask_meets_the_target_whenever_one_does(runs, target):
    losses, active = [r[0] for r in runs], [r[1] for r in runs]
    i = choose_mask(losses, active, target)
    meeting = [j for j, loss in enumerate(losses) if loss <= target]
    if meeting:
        assert losses[i] <= target and active[i] == min(active[j] for j in meeting)
    else:
        assert losses[i] == min(losses)
