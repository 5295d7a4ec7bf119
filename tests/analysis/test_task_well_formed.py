"""Suite-wide checks of every registered task that sets ``well_formed_check`` (every built-in task does).

For each such task the generated pairs must be minimal pairs usable under mean ablation:
(a) balanced: every answer is ``correct`` as often as it is ``alternative`` (within one pair for an odd count),
    at every prompt length; for two-answer tasks, each answer is correct in half the pairs;
(b) clean and corrupted prompts have the same length in tokens;
(c) they differ in exactly one contiguous span of tokens;
(d) the empty circuit scores 0: a model whose last-position logits ignore the prompt (every writer mean-ablated)
    has mean logit difference exactly the antisymmetric average, which balance makes 0. Checked with a fixed
    random logit vector, with random logits per position (position-mean ablation), and with a real model run
    with every edge ablated by the library's own patching.

The registry is read at collection time, so tasks registered by plugins that opt in are checked too, and so is
the shifted variant (``Task.shifted()``) of every checked task that has one.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from tests_analysis_support import small_config

from glassformer.analysis.component.ablation import writer_means
from glassformer.analysis.component.faithfulness import Faithfulness
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.tasks import TASKS, logit_diff
from glassformer.archs import build_model

SHIFTED_TASKS = {s.name: s for s in (t.shifted() for t in TASKS if getattr(t, "well_formed_check", False))
                 if s is not None}
"""The shifted variant of every checked task that has one: it makes the same guarantees, so it is checked alike."""
CHECKED = [t.name for t in TASKS if getattr(t, "well_formed_check", False)] + list(SHIFTED_TASKS)
N_EVEN, N_ODD = 24, 13
MAX_LEN = 64
BUILT_IN = "glassformer.analysis.tasks."

_batches: dict[tuple[str, int], object] = {}


def task_of(name: str):
    return SHIFTED_TASKS[name] if name in SHIFTED_TASKS else TASKS[name]


def batch_of(name: str, n: int, tokenizer):
    """Each (task, n) generated once per session: four tests read the same pairs."""
    if (name, n) not in _batches:
        _batches[name, n] = task_of(name).generate(tokenizer, n, seed=0, max_len=MAX_LEN)
    return _batches[name, n]


def surplus(first: list, second: list) -> int:
    """How many items of ``first`` and ``second`` are left unmatched when each item of one cancels one equal
    item of the other."""
    a, b = Counter(first), Counter(second)
    return sum(((a - b) + (b - a)).values())


def test_every_built_in_task_is_checked():
    built_in = [t.name for t in TASKS if type(t).__module__.startswith(BUILT_IN)]
    assert len(built_in) >= 13 and set(built_in) <= set(CHECKED)
    assert {f"{name}@shifted" for name in built_in} <= set(CHECKED)  # every built-in task has a shifted variant


@pytest.mark.parametrize("n", [N_EVEN, N_ODD])
@pytest.mark.parametrize("name", CHECKED)
def test_answers_are_balanced(name, n, stdlib_bpe):
    batch = batch_of(name, n, stdlib_bpe)
    correct, alternative = batch.correct.tolist(), batch.alternative.tolist()
    lengths = (batch.last + 1).tolist()
    odd = n % 2
    # One unmatched pair (odd n) leaves its correct and its alternative unmatched: a surplus of 2.
    assert surplus(correct, alternative) <= 2 * odd, (name, Counter(correct), Counter(alternative))
    assert surplus(list(zip(lengths, correct, strict=True)), list(zip(lengths, alternative, strict=True))) <= 2 * odd
    answers = getattr(task_of(name), "answers", ())
    if len(answers) == 2:
        ids = [stdlib_bpe.encode(a).ids[0] for a in answers]
        counts = sorted(correct.count(i) for i in ids)
        assert counts == [n // 2, n - n // 2], (name, answers, counts)


@pytest.mark.parametrize("name", CHECKED)
def test_every_prefix_and_suffix_is_balanced_within_one_pair(name, stdlib_bpe):
    """Held-out splits take the last pairs and chunks take consecutive ones: each part must stay balanced."""
    batch = batch_of(name, N_EVEN, stdlib_bpe)
    correct, alternative = batch.correct.tolist(), batch.alternative.tolist()
    for k in range(N_EVEN + 1):
        assert surplus(correct[:k], alternative[:k]) <= 2 * (k % 2), (name, k)
        assert surplus(correct[k:], alternative[k:]) <= 2 * ((N_EVEN - k) % 2), (name, k)


@pytest.mark.parametrize("name", CHECKED)
def test_clean_and_corrupt_have_one_length_and_differ_in_one_span(name, stdlib_bpe):
    batch = batch_of(name, N_EVEN, stdlib_bpe)
    for pair in batch.pairs:
        assert len(pair.clean_ids) == len(pair.corrupt_ids), (pair.clean, pair.corrupt)
        diff = [i for i in range(len(pair.clean_ids)) if pair.clean_ids[i] != pair.corrupt_ids[i]]
        assert diff, (pair.clean, pair.corrupt)
        assert diff[-1] - diff[0] + 1 == len(diff), (name, pair.clean, pair.corrupt, diff)
        assert pair.correct_id != pair.alternative_id
    padded = batch.clean != batch.corrupt  # (B, T): differences only inside each prompt
    for i, pair in enumerate(batch.pairs):
        assert not padded[i, len(pair.clean_ids):].any()


@pytest.mark.parametrize("name", CHECKED)
def test_a_prompt_blind_model_scores_zero(name, stdlib_bpe):
    batch = batch_of(name, N_EVEN, stdlib_bpe)
    B, T = batch.clean.shape
    V = stdlib_bpe.get_vocab_size()
    gen = torch.Generator().manual_seed(0)
    # float64, so that "0 up to float error" means 1e-12, far below any answer's logit gap
    fixed = torch.randn(V, generator=gen, dtype=torch.float64).expand(B, T, V)  # the same at every position
    per_position = torch.randn(T, V, generator=gen, dtype=torch.float64).expand(B, T, V)  # position-mean
    for logits in (fixed, per_position):
        ld = logit_diff(logits, batch)  # (B,)
        assert ld.abs().min() > 1e-6  # every pair's answers get different logits, so imbalance would show
        assert abs(ld.mean().item()) < 1e-12, (name, ld.mean().item())


ARCHS = {
    "dense": dict(),
    "transcoder_rotary": dict(mlp={"kind": "transcoder", "activation": "topk", "k": 8}, positional="rotary",
                              norm="rmsnorm"),
}


@pytest.fixture(scope="module", params=list(ARCHS))
def ablated_model(request):
    """A seeded, randomly initialised small model (training is not needed: with every edge ablated the output
    ignores the prompt whatever the weights) and its writer means over random corpus windows."""
    torch.manual_seed(0)
    model = build_model(small_config(n_ctx=MAX_LEN, **ARCHS[request.param])).eval()
    graph = ComponentGraph.from_config(model.cfg)
    corpus = torch.randint(0, model.cfg.d_vocab, (8, MAX_LEN), generator=torch.Generator().manual_seed(1))
    means = {"mean": writer_means(model, graph, corpus),
             "position-mean": writer_means(model, graph, corpus, per_position=True)}
    return model, graph, means


@pytest.mark.parametrize("ablation", ["mean", "position-mean"])
@pytest.mark.parametrize("name", CHECKED)
def test_the_empty_circuit_of_a_real_model_scores_zero(name, ablation, ablated_model, stdlib_bpe):
    model, graph, means = ablated_model
    batch = batch_of(name, N_EVEN, stdlib_bpe)
    fa = Faithfulness(model, graph, batch, ablation, means[ablation])
    per_pair = fa.per_pair(torch.zeros(1, graph.n_edges, dtype=torch.bool))[0]  # (B,) every edge ablated
    # float32 patching leaves ~1e-8 of prompt dependence; an unbalanced task would be off by a per-pair gap
    assert per_pair.abs().max() > 1e-4, (name, ablation, per_pair)
    assert abs(fa.m_empty) < 1e-6, (name, ablation, fa.m_empty)
