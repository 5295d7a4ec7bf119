"""The task suite: seeded minimal pairs that differ in one place, single-token answers, task metrics."""

from __future__ import annotations

import os
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.analysis.tasks import (
    TASKS,
    AnswerTokenError,
    Induction,
    Pair,
    TaskBatch,
    TaskError,
    one_place,
    task_metrics,
)
from glassformer.analysis.tasks.base import both_directions, mirror

N = 12


def test_registry_holds_at_least_twelve_python_tasks_and_induction():
    names = TASKS.names()
    assert "induction" in names
    assert len([n for n in names if n != "induction"]) >= 12
    assert len(set(names)) == len(names)


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        TASKS.register(Induction())


def test_unknown_task_names_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown task 'nope'.*quote_close"):
        TASKS["nope"]


@pytest.mark.parametrize("name", TASKS.names())
def test_task_generation_is_seeded(name, stdlib_bpe):
    task = TASKS[name]
    a = task.generate(stdlib_bpe, N, seed=3, max_len=128)
    b = task.generate(stdlib_bpe, N, seed=3, max_len=128)
    c = task.generate(stdlib_bpe, N, seed=4, max_len=128)
    assert torch.equal(a.clean, b.clean) and torch.equal(a.corrupt, b.corrupt)
    assert torch.equal(a.correct, b.correct) and torch.equal(a.alternative, b.alternative)
    assert [p.clean for p in a.pairs] != [p.clean for p in c.pairs]


def _differ_in_one_span(a: str, b: str) -> bool:
    prefix = len(os.path.commonprefix([a, b]))
    suffix = len(os.path.commonprefix([a[prefix:][::-1], b[prefix:][::-1]]))
    return a != b and a[prefix:len(a) - suffix] != b[prefix:len(b) - suffix]


@pytest.mark.parametrize("name", TASKS.names())
def test_every_pair_differs_in_one_place_with_single_token_answers(name, stdlib_bpe):
    batch = TASKS[name].generate(stdlib_bpe, N, seed=0, max_len=128)
    assert len(batch) == N
    for i, pair in enumerate(batch.pairs):
        assert len(pair.clean_ids) == len(pair.corrupt_ids)
        diff = [j for j, (x, y) in enumerate(zip(pair.clean_ids, pair.corrupt_ids, strict=True)) if x != y]
        assert diff and diff == list(range(diff[0], diff[-1] + 1)), (pair.clean, pair.corrupt)
        assert _differ_in_one_span(pair.clean, pair.corrupt)
        assert pair.correct_id != pair.alternative_id
        if name != "induction":  # induction answers are token ids, not text
            assert stdlib_bpe.encode(pair.correct).ids == [pair.correct_id]
            assert stdlib_bpe.encode(pair.alternative).ids == [pair.alternative_id]
            assert stdlib_bpe.encode(pair.clean + pair.correct).ids == list(pair.clean_ids[1:]) + [pair.correct_id]
        assert int(batch.last[i]) == len(pair.clean_ids) - 1
        assert int(batch.clean[i, batch.last[i]]) == pair.clean_ids[-1]


def test_a_task_whose_answer_is_not_one_token_names_task_and_token(byte_bpe):
    with pytest.raises(AnswerTokenError, match=r"task 'else_vs_except': answer ' else' is not a single token"):
        TASKS["else_vs_except"].generate(byte_bpe, 4)
    with pytest.raises(AnswerTokenError, match=r"task 'self_attribute': answer '\w+' is not a single token"):
        TASKS["self_attribute"].generate(byte_bpe, 4)


def test_prompts_longer_than_the_context_are_refused(stdlib_bpe):
    with pytest.raises(TaskError, match="docstring_param"):
        TASKS["docstring_param"].generate(stdlib_bpe, 4, max_len=8)
    with pytest.raises(TaskError, match="induction.*context"):
        TASKS["induction"].generate(stdlib_bpe, 4, max_len=8)


def test_induction_pairs_repeat_the_random_prefix(stdlib_bpe):
    task = Induction(n_random=8, n_repeat=3, start=False)
    batch = task.generate(stdlib_bpe, 5, seed=1)
    for p in batch.pairs:
        seq = p.clean_ids
        assert seq[8:] == seq[:3] and len(set(seq[:8])) == 8
        assert p.correct_id == seq[3] and p.alternative_id == p.corrupt_ids[3] and p.alternative_id not in seq


def _batch(correct, alternative):
    B = len(correct)
    return TaskBatch("t", torch.zeros(B, 2, dtype=torch.long), torch.zeros(B, 2, dtype=torch.long),
                     torch.ones(B, dtype=torch.long), torch.tensor(correct), torch.tensor(alternative))


def test_task_loss_is_binary_cross_entropy_over_the_two_answers():
    batch = _batch([0, 2], [1, 0])
    logits = torch.zeros(2, 2, 3)
    logits[0, 1] = torch.tensor([2.0, 0.0, 5.0])  # logit diff +2
    logits[1, 1] = torch.tensor([1.0, 9.0, 0.0])  # logit diff -1
    out = task_metrics(logits, batch)
    expected = (torch.log1p(torch.exp(torch.tensor(-2.0))) + torch.log1p(torch.exp(torch.tensor(1.0)))) / 2
    assert out["loss"] == pytest.approx(expected.item(), rel=1e-6)
    assert out["accuracy"] == 0.5
    assert out["logit_diff"] == pytest.approx(0.5)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=2, max_size=40), st.integers(0, 10_000))
def test_shuffled_labels_swap_answers_within_pairs(ids, seed):
    correct = ids
    alternative = [i + 100 for i in ids]
    batch = _batch(correct, alternative)
    s1, s2 = batch.shuffled_labels(seed), batch.shuffled_labels(seed)
    assert torch.equal(s1.correct, s2.correct)
    swapped = s1.correct != batch.correct
    assert 0 < int(swapped.sum()) < len(ids)  # both sides always present
    assert torch.equal(torch.where(swapped, batch.alternative, batch.correct), s1.correct)
    assert torch.equal(s1.correct + s1.alternative, batch.correct + batch.alternative)
    assert s1.labels == "shuffled"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=12), st.data())
def test_one_place_means_one_contiguous_differing_span(a, data):
    start = data.draw(st.integers(0, len(a) - 1))
    stop = data.draw(st.integers(start + 1, len(a)))
    b = list(a)
    for j in range(start, stop):
        b[j] = a[j] + 10
    assert one_place(a, b)
    if stop - start >= 3:
        b[start + 1] = a[start + 1]  # a gap splits the span in two
        assert not one_place(a, b)
    assert not one_place(a, a) and not one_place(a, a + [0])


def test_mirror_swaps_the_prompts_and_the_answers_and_undoes_itself():
    pair = Pair("f(x", "f[x", ")", "]", (0, 1, 2), (0, 3, 2), 4, 5)
    m = mirror(pair)
    assert (m.clean, m.corrupt, m.correct, m.alternative) == ("f[x", "f(x", "]", ")")
    assert (m.clean_ids, m.corrupt_ids, m.correct_id, m.alternative_id) == ((0, 3, 2), (0, 1, 2), 5, 4)
    assert mirror(m) == pair


def test_both_directions_gives_the_pair_and_its_mirror_in_an_order_drawn_from_the_seed():
    pair = Pair("f(x", "f[x", ")", "]", (0, 1, 2), (0, 3, 2), 4, 5)
    couples = [both_directions(pair, random.Random(seed)) for seed in range(40)]
    for couple in couples:
        assert sorted(couple, key=lambda p: p.correct) == [pair, mirror(pair)]
    first = [couple[0] == pair for couple in couples]
    assert first == [both_directions(pair, random.Random(seed))[0] == pair for seed in range(40)]
    assert 0 < sum(first) < 40  # both orders occur
