"""Shifted task variants: the in-distribution pairs are unchanged, the variants draw from held-out pools, in other
wording, after distractor code that binds nothing of the prompt, and induction's variant after a random prefix.

Well-formedness and Python's verdict on the answers are checked for every variant by the suite-wide tests
(``test_task_well_formed.py``, ``test_task_answers.py``), which include the shifted variants.
"""

from __future__ import annotations

import ast
import builtins
import json
import keyword
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from task_digests import PATH, candidate_digests, pair_digests, tokenizer_digest

from glassformer.analysis.tasks import SHIFTED, TASKS, TemplateTask, shifted_batch, with_shifted
from glassformer.analysis.tasks.python_code import PythonTask
from glassformer.analysis.tasks.python_pools import (
    BLOCKS,
    DISTRACTOR_NAMES,
    HELD_OUT,
    IN_DISTRIBUTION,
    STATEMENTS,
    distractor,
    words,
)

BUILT_IN = [t for t in TASKS if type(t).__module__.startswith("glassformer.analysis.tasks.")]
PYTHON = [t.name for t in BUILT_IN if isinstance(t, PythonTask)]
NAMED_ANSWERS = [t.name for t in BUILT_IN if isinstance(t, PythonTask) and t.answer_names]
STORED = json.loads(PATH.read_text())
MAX_LEN = 64
KEYWORDS = set(keyword.kwlist)


def fold(names) -> set[str]:
    return {w.lower() for w in names}


def test_in_distribution_candidates_are_unchanged():
    """What ``make`` draws in distribution, seeds 0..2, is what it drew before the shifted variants existed."""
    assert candidate_digests(BUILT_IN) == STORED["candidates"]


def test_in_distribution_pairs_are_unchanged(stdlib_bpe):
    if tokenizer_digest(stdlib_bpe) != STORED["pairs"]["tokenizer"]:
        pytest.skip("this stdlib BPE is not the one the pair digests were recorded with (another Python's stdlib)")
    assert pair_digests(BUILT_IN, stdlib_bpe) == STORED["pairs"]["digests"]


def test_every_built_in_task_has_a_shifted_variant_named_after_it():
    for task in BUILT_IN:
        s = task.shifted()
        assert s is not None and s.name == f"{task.name}{SHIFTED}", task.name
        assert type(s) is type(task) and s.description != task.description
        assert s.shifted() is None  # no variant of a variant
        assert TASKS[task.name] is task and s.name not in TASKS  # the registered task is untouched


class Plain(TemplateTask):
    name, description, answers = "plain", "no variant", (" True", " False")

    def make(self, rng, pool):
        return "x = not True\nassert x is", "x = not False\nassert x is", " False", " True"


def test_a_task_without_a_variant_returns_none_and_shifted_batch_says_why(stdlib_bpe):
    assert Plain().shifted() is None
    batch, why = shifted_batch(Plain(), stdlib_bpe, 4)
    assert batch is None and why == "task 'plain' has no shifted variant"


def test_shifted_batch_is_the_variants_pairs(stdlib_bpe):
    batch, why = shifted_batch(TASKS["kwarg_recall"], stdlib_bpe, 8, seed=0, max_len=MAX_LEN)
    assert why is None and batch.task == "kwarg_recall@shifted" and len(batch) == 8
    assert [p.clean for p in batch.pairs] == [p.clean for p in TASKS["kwarg_recall"].shifted().generate(
        stdlib_bpe, 8, seed=0, max_len=MAX_LEN).pairs]


def test_shifted_batch_reports_a_variant_that_cannot_run(stdlib_bpe):
    batch, why = shifted_batch(TASKS["return_vs_yield"], stdlib_bpe, 8, max_len=24)
    assert batch is None and "'return_vs_yield@shifted'" in why and "longer than the model's context (24)" in why
    batch, why = shifted_batch(TASKS["induction"], stdlib_bpe, 8, max_len=24)
    assert batch is None and "'induction@shifted'" in why and "27 tokens exceed the model's context (24)" in why


def test_the_pools_are_disjoint():
    held_out, in_dist = HELD_OUT.all_names(), IN_DISTRIBUTION.all_names()
    assert not fold(held_out) & fold(in_dist)
    assert not fold(DISTRACTOR_NAMES) & fold(held_out | in_dist)
    assert not set(HELD_OUT.identifiers) & set(HELD_OUT.functions)
    bad = [w for w in held_out | set(DISTRACTOR_NAMES)
           if keyword.iskeyword(w) or hasattr(builtins, w) or not w.isidentifier()]
    assert not bad


@pytest.mark.parametrize("name", NAMED_ANSWERS)
def test_shifted_answers_are_held_out_names(name, stdlib_bpe):
    task = TASKS[name]
    pool = getattr(HELD_OUT, task.answer_names)
    batch = task.shifted().generate(stdlib_bpe, 24, seed=0, max_len=MAX_LEN)
    for p in batch.pairs:
        assert p.correct.strip() in pool and p.alternative.strip() in pool, p.example()
    in_dist = task.generate(stdlib_bpe, 24, seed=0, max_len=MAX_LEN)
    assert all(p.correct.strip() in getattr(IN_DISTRIBUTION, task.answer_names) for p in in_dist.pairs)


@pytest.mark.parametrize("name", PYTHON)
def test_no_in_distribution_name_occurs_in_a_shifted_pair(name, stdlib_bpe):
    batch = TASKS[name].shifted().generate(stdlib_bpe, 24, seed=1, max_len=MAX_LEN)
    assert batch.clean.shape[1] <= MAX_LEN
    for p in batch.pairs:
        found = words(p.clean, p.corrupt, p.correct, p.alternative) & IN_DISTRIBUTION.all_names()
        assert not found, (found, p.example())


def skeleton(text: str) -> str:
    """``text`` with every pool name (in distribution or held out) replaced by NAME: what is left is the wording."""
    names = IN_DISTRIBUTION.all_names() | HELD_OUT.all_names()
    return re.sub(r"[A-Za-z_]\w*", lambda m: "NAME" if m.group() in names else m.group(), text)


@pytest.mark.parametrize("name", PYTHON)
def test_shifted_templates_use_other_wording(name):
    """No shifted template, names aside, is worded as any in-distribution one (``make`` drawn directly: no
    distractor, no tokenizer)."""
    task, shifted = TASKS[name], TASKS[name].shifted()

    def skeletons(t) -> set[str]:
        rng = random.Random(0)
        return {skeleton(text) for _ in range(200) for text in t.make(rng, list(t.answer_pool))[:2]}

    assert not skeletons(task) & skeletons(shifted)


@pytest.mark.parametrize("name", PYTHON)
def test_the_distractor_binds_no_name_of_the_prompt_and_mentions_no_answer(name, stdlib_bpe, monkeypatch):
    seen: dict[str, tuple[str, tuple[str, str, str, str]]] = {}
    context = PythonTask.context

    def spy(self, rng, candidate):
        code = context(self, rng, candidate)
        seen[code + candidate[0]] = seen[code + candidate[1]] = (code, candidate)
        return code

    monkeypatch.setattr(PythonTask, "context", spy)
    batch = TASKS[name].shifted().generate(stdlib_bpe, 24, seed=2, max_len=MAX_LEN)
    for p in batch.pairs:
        code, (clean, corrupt, correct, alternative) = seen[p.clean]
        assert p.corrupt == code + (corrupt if p.clean == code + clean else clean)
        assert 1 <= len(ast.parse(code).body) <= 3, code
        shared = words(code) & words(clean, corrupt)
        assert shared <= KEYWORDS, (shared, p.example())  # it binds and uses no name of the template
        assert not words(code) & words(correct, alternative), p.example()


PIECE_WORDS = words(*STATEMENTS, *BLOCKS) - {"a", "b", "c", "n", "m"}


@settings(max_examples=150, derandomize=True, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), taken=st.sets(st.sampled_from(DISTRACTOR_NAMES), max_size=7),
       answer=st.sampled_from(sorted(PIECE_WORDS) + ["x"]))
def test_a_distractor_is_one_to_three_complete_statements_that_run(seed, taken, answer):
    code = distractor(random.Random(seed), taken, {answer})
    tree = ast.parse(code)
    assert 1 <= len(tree.body) <= 3
    assert code.endswith("\n\n") and not code.endswith("\n\n\n")
    assert not words(code) & taken and answer not in words(code)
    assert words(code) <= PIECE_WORDS | set(DISTRACTOR_NAMES)
    exec(compile(tree, "<distractor>", "exec"), {})  # our own pieces: they must run, as the answer tests run them


def test_induction_variant_has_a_random_prefix_of_rarer_tokens(stdlib_bpe):
    start = stdlib_bpe.token_to_id("<|endoftext|>")
    vocab = stdlib_bpe.get_vocab_size()
    ordinary = [i for i in range(vocab) if i != start]  # the stdlib BPE's only special token is <|endoftext|>
    rare = set(ordinary[len(ordinary) // 2:])
    batch = TASKS["induction"].shifted().generate(stdlib_bpe, 16, seed=0, max_len=MAX_LEN)
    for p in batch.pairs:
        ids, corrupt = p.clean_ids, p.corrupt_ids
        assert len(ids) == 1 + 10 + 10 + 6 and ids[0] == start
        assert set(ids[1:]) <= rare and set(corrupt[1:]) <= rare
        prefix = ids[1:11]
        assert prefix == corrupt[1:11] and len(set(prefix)) == 10
        assert not set(prefix) & (set(ids[11:]) | set(corrupt[11:]))  # the prefix never repeats
        assert ids[11:17] == ids[21:27]  # then the sequence and its repeat, as in distribution
    in_dist = TASKS["induction"].generate(stdlib_bpe, 16, seed=0, max_len=MAX_LEN)
    assert len(in_dist.pairs[0].clean_ids) == 17


def doc_block(first_line: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "adding-a-task.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if b.startswith(first_line)]
    return block


def test_the_documented_shifted_variant_keeps_the_task_and_shifts_it(stdlib_bpe):
    """docs/adding-a-task.md's task, before and after it gains a variant: its own pairs are the same, and the
    variant's are well formed, on other names, after a statement, with Python agreeing on every answer."""
    before, after = {}, {}
    exec(doc_block("# my_tasks.py").replace("TASKS.register(NegatedBool())", ""), before)  # our own docs
    exec(doc_block("# NegatedBool again"), after)
    old, new = before["NegatedBool"](), after["NegatedBool"]()
    assert [p.clean for p in old.generate(stdlib_bpe, 16, seed=0).pairs] == \
        [p.clean for p in new.generate(stdlib_bpe, 16, seed=0).pairs]
    shifted = new.shifted()
    assert shifted.name == "negated_bool@shifted" and new.name == "negated_bool"
    batch = shifted.generate(stdlib_bpe, 16, seed=0, max_len=MAX_LEN)
    correct = [p.correct for p in batch.pairs]
    assert sorted(correct) == [" False"] * 8 + [" True"] * 8
    for p in batch.pairs:
        assert p.clean.startswith("count = ") and words(p.clean) & set(new.names) == set()
        assert len(p.clean_ids) == len(p.corrupt_ids)
        for prompt, right, wrong in ((p.clean, p.correct, p.alternative), (p.corrupt, p.alternative, p.correct)):
            exec(prompt + right, {})  # the assertion holds with the right answer ...
            with pytest.raises(AssertionError):
                exec(prompt + wrong, {})  # ... and fails with the other


def test_a_batch_carries_its_shifted_pairs_to_the_device_and_not_into_the_control(stdlib_bpe):
    task = TASKS["self_vs_cls"]
    batch = with_shifted(task.generate(stdlib_bpe, 8, seed=0), task, stdlib_bpe, 8, seed=0, max_len=MAX_LEN)
    assert batch.shifted.task == "self_vs_cls@shifted" and batch.shifted_note is None
    moved = batch.to("meta")  # a device other than the CPU, without one
    assert moved.clean.device.type == "meta" and moved.shifted.clean.device.type == "meta"
    control = batch.shuffled_labels(0)
    assert control.shifted is None and "control has no shifted variant" in control.shifted_note
    plain = with_shifted(Plain().generate(stdlib_bpe, 4), Plain(), stdlib_bpe, 4)
    assert plain.shifted is None and plain.shifted_note == "task 'plain' has no shifted variant"
