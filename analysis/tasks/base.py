"""What a task is: seeded minimal pairs, checked against the model's tokenizer, and the task metrics.

A minimal pair is a clean prompt and a corrupted prompt that differ in one place, with two candidate next
tokens: the one the clean prompt calls for (``correct``) and the one the corruption calls for
(``alternative``). Both answers must be single tokens of the model's tokenizer, and the two prompts must tokenise
to the same length with their differing tokens in one contiguous span (corrupted-prompt patching lines the two
runs up position by position).

Each prompt alone decides its answer (mean ablation never reads the corrupted prompt): after the clean prompt
only ``correct`` is right, after the corrupted one only ``alternative``. Tasks that set
:attr:`Task.well_formed_check` also come in both directions, half the pairs each way (:func:`mirror`), so the
"empty circuit" (a model whose last-position logits do not depend on the prompt) has mean logit difference 0.

A task may offer a shifted variant (:meth:`Task.shifted`): the same task drawn from another distribution, with
the same guarantees, on which the circuit found in distribution is scored (out-of-distribution faithfulness).

Metrics on the logits at each prompt's last position (``ld`` = logit(correct) - logit(alternative)):
task loss = binary cross-entropy over the two answers = ``softplus(-ld)``; accuracy = fraction with ``ld > 0``.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

EOT = "<|endoftext|>"
SHIFTED = "@shifted"
"""Suffix of a shifted variant's name: ``f"{task.name}{SHIFTED}"`` (see :meth:`Task.shifted`)."""


class TaskError(ValueError):
    """A task cannot run on this model/tokenizer; the message names the task and why."""


class AnswerTokenError(TaskError):
    """An answer of a task is not a single token of the tokenizer; the message names the task and the token."""

    def __init__(self, task: str, token: str, pieces: list[str]):
        self.task, self.token, self.pieces = task, token, pieces
        super().__init__(f"task {task!r}: answer {token!r} is not a single token of this tokenizer "
                         f"(it encodes to {len(pieces)} tokens {pieces}); the task needs single-token answers")


@dataclass(frozen=True)
class Pair:
    """One minimal pair, as text and as token ids (the ids include any start-of-document prefix)."""

    clean: str
    corrupt: str
    correct: str
    alternative: str
    clean_ids: tuple[int, ...]
    corrupt_ids: tuple[int, ...]
    correct_id: int
    alternative_id: int

    def example(self) -> dict[str, str]:
        return {"clean": self.clean, "corrupt": self.corrupt, "correct": self.correct,
                "alternative": self.alternative}


@dataclass
class TaskBatch:
    """Pairs as right-padded tensors; the answer is read at ``last`` (padding after it cannot reach it: causal)."""

    task: str
    clean: Tensor  # (B, T) int64
    corrupt: Tensor  # (B, T) int64
    last: Tensor  # (B,) index of each prompt's last token
    correct: Tensor  # (B,)
    alternative: Tensor  # (B,)
    pairs: list[Pair] = field(default_factory=list)
    labels: str = "true"
    """"true", or "shuffled" for the shuffled-labels control."""
    shifted: TaskBatch | None = None
    """The pairs of the task's shifted variant, for out-of-distribution scoring (``with_shifted``), or None."""
    shifted_note: str | None = None
    """Why ``shifted`` is None, when the analysis tried to build it (no variant, or it cannot run here)."""

    def __len__(self) -> int:
        return int(self.clean.shape[0])

    def subset(self, idx: slice) -> TaskBatch:
        """The pairs ``idx`` of the batch.

        Example:
            >>> b = TaskBatch("t", torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, 1, dtype=torch.long),
            ...               torch.zeros(4, dtype=torch.long), torch.arange(4), torch.arange(4) + 4)
            >>> b.subset(slice(1, 3)).correct.tolist()
            [1, 2]
        """
        return replace(self, clean=self.clean[idx], corrupt=self.corrupt[idx], last=self.last[idx],
                       correct=self.correct[idx], alternative=self.alternative[idx], pairs=self.pairs[idx])

    def to(self, device: str | torch.device) -> TaskBatch:
        return replace(self, clean=self.clean.to(device), corrupt=self.corrupt.to(device),
                       last=self.last.to(device), correct=self.correct.to(device),
                       alternative=self.alternative.to(device),
                       shifted=None if self.shifted is None else self.shifted.to(device))

    def shuffled_labels(self, seed: int) -> TaskBatch:
        """The control task: each pair's two answers swapped with probability 1/2 (seeded), so the label no longer
        follows the prompt.

        Example:
            >>> b = TaskBatch("t", torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 2, dtype=torch.long),
            ...               torch.ones(4, dtype=torch.long), torch.arange(4), torch.arange(4) + 10)
            >>> s = b.shuffled_labels(0)
            >>> sorted(zip(s.correct.tolist(), s.alternative.tolist())) != sorted(zip(range(4), range(10, 14)))
            True
        """
        gen = torch.Generator().manual_seed(seed)
        swap = torch.rand(len(self), generator=gen) < 0.5  # (B,)
        if len(self) > 1 and (swap.all() or not swap.any()):
            swap[0] = ~swap[0]  # at least one pair on each side, so the control is never the task itself
        swap = swap.to(self.correct.device)
        correct = torch.where(swap, self.alternative, self.correct)
        alternative = torch.where(swap, self.correct, self.alternative)
        # The control has no shifted variant: its labels follow no rule a shifted prompt could keep.
        return replace(self, correct=correct, alternative=alternative, labels="shuffled", shifted=None,
                       shifted_note="the shuffled-labels control has no shifted variant")


def split_pairs(batch: TaskBatch, holdout: float) -> tuple[TaskBatch, TaskBatch]:
    """(training pairs, held-out pairs): the last ``round(holdout * B)`` pairs are held out (at least one of each
    when ``0 < holdout < 1`` and B >= 2); ``holdout=0`` trains and measures on the same pairs.

    Example:
        >>> b = TaskBatch("t", torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, 1, dtype=torch.long),
        ...               torch.zeros(4, dtype=torch.long), torch.arange(4), torch.arange(4) + 4)
        >>> [s.correct.tolist() for s in split_pairs(b, 0.5)]
        [[0, 1], [2, 3]]
    """
    if not isinstance(holdout, (int, float)) or isinstance(holdout, bool) or not 0 <= holdout < 1:
        raise ValueError(f"holdout={holdout!r} is not allowed: expected a fraction in [0, 1)")
    B = len(batch)
    if holdout == 0 or B < 2:
        return batch, batch
    n_eval = min(B - 1, max(1, round(holdout * B)))
    return batch.subset(slice(0, B - n_eval)), batch.subset(slice(B - n_eval, B))


def answer_logits(logits: Tensor, batch: TaskBatch) -> Tensor:
    """(B, T, d_vocab) logits, or (B, 1, d_vocab) already taken at the last positions -> (B, 2) logits of the
    correct and the alternative answer.

    Example:
        >>> b = TaskBatch("t", torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long),
        ...               torch.tensor([2]), torch.tensor([1]), torch.tensor([0]))
        >>> answer_logits(torch.arange(9.0).view(1, 3, 3), b).tolist()
        [[7.0, 6.0]]
    """
    B = logits.shape[0]
    rows = torch.arange(B, device=logits.device)
    last = batch.last if logits.shape[1] > 1 else torch.zeros_like(batch.last)
    final = logits[rows, last.to(logits.device)]  # (B, d_vocab)
    return torch.stack([final[rows, batch.correct], final[rows, batch.alternative]], dim=-1)


def logit_diff(logits: Tensor, batch: TaskBatch) -> Tensor:
    """(B,) logit(correct) - logit(alternative) at the last position."""
    two = answer_logits(logits, batch)
    return two[:, 0] - two[:, 1]


def task_metrics(logits: Tensor, batch: TaskBatch) -> dict[str, float]:
    """Task loss (binary cross-entropy over the two answers), accuracy and mean logit difference.

    Example:
        >>> b = TaskBatch("t", torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long),
        ...               torch.zeros(2, dtype=torch.long), torch.tensor([0, 0]), torch.tensor([1, 1]))
        >>> task_metrics(torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]]), b)["accuracy"]
        0.5
    """
    ld = logit_diff(logits, batch).float()  # (B,)
    return {"loss": F.softplus(-ld).mean().item(), "accuracy": (ld > 0).float().mean().item(),
            "logit_diff": ld.mean().item()}


def encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text).ids


def single_token(tokenizer: Any, text: str) -> int | None:
    """The id of ``text`` when it is exactly one token, else None."""
    ids = encode(tokenizer, text)
    return ids[0] if len(ids) == 1 else None


def mirror(pair: Pair) -> Pair:
    """The same pair in the other direction: the corrupted prompt becomes the clean one and the answers swap.

    Example:
        >>> p = Pair("a(", "a[", ")", "]", (1, 2), (1, 3), 4, 5)
        >>> mirror(p).clean, mirror(p).correct, mirror(p).clean_ids, mirror(mirror(p)) == p
        ('a[', ']', (1, 3), True)
    """
    return Pair(pair.corrupt, pair.clean, pair.alternative, pair.correct, pair.corrupt_ids, pair.clean_ids,
                pair.alternative_id, pair.correct_id)


def both_directions(pair: Pair, rng: random.Random) -> list[Pair]:
    """``pair`` and its :func:`mirror`, in an order drawn by ``rng``: consecutive, so that any prefix of a list of
    such couples (a held-out split, a chunk) stays balanced to within one pair.

    Example:
        >>> p = Pair("a(", "a[", ")", "]", (1, 2), (1, 3), 4, 5)
        >>> sorted(q.correct for q in both_directions(p, random.Random(0)))
        [')', ']']
    """
    couple = [pair, mirror(pair)]
    return couple[::-1] if rng.random() < 0.5 else couple


def one_place(a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int]) -> bool:
    """True when ``a`` and ``b`` have the same length and differ in one non-empty contiguous span.

    Example:
        >>> one_place([1, 2, 3, 4], [1, 5, 6, 4]), one_place([1, 2, 3], [5, 2, 6]), one_place([1], [1])
        (True, False, False)
    """
    if len(a) != len(b):
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return bool(diff) and diff[-1] - diff[0] + 1 == len(diff)


class Task:
    """A named family of minimal pairs. Subclasses implement :meth:`check` and :meth:`pairs`."""

    name: str = ""
    description: str = ""
    well_formed_check: bool = False
    """Opt in to the suite-wide pair checks (``tests/analysis/test_task_well_formed.py``, run over every task
    in the registry that sets this): the pairs are balanced (every answer is ``correct`` as often as it is
    ``alternative``, within one pair for odd counts, and so at every prompt length), clean and corrupted prompts
    have the same length in tokens and differ in one contiguous span, and a model whose last-position logits
    ignore the prompt (the empty circuit under mean ablation) has mean logit difference 0. Every built-in task
    sets it; :class:`TemplateTask` (which emits every pair in both directions) sets it for its subclasses."""

    def check(self, tokenizer: Any, d_vocab: int | None = None) -> None:
        """Raise :class:`AnswerTokenError` or :class:`TaskError` if the task cannot run with ``tokenizer``."""
        raise NotImplementedError

    def pairs(self, tokenizer: Any, n: int, seed: int, max_len: int | None = None,
              d_vocab: int | None = None) -> list[Pair]:
        """``n`` minimal pairs, the same for the same ``seed`` and tokenizer."""
        raise NotImplementedError

    def generate(self, tokenizer: Any, n: int, seed: int = 0, max_len: int | None = None,
                 d_vocab: int | None = None) -> TaskBatch:
        """``n`` pairs as a :class:`TaskBatch`; checks the tokenizer first.

        Example:
            >>> from glassformer.analysis.tasks import TASKS
            >>> TASKS["induction"].generate(tokenizer, 8, seed=0).clean.shape[0]  # doctest: +SKIP
            8
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n_pairs={n!r} is not allowed: expected a positive integer")
        self.check(tokenizer, d_vocab)
        return to_batch(self.name, self.pairs(tokenizer, n, seed, max_len, d_vocab),
                        pad_id=start_id(tokenizer) or 0)

    def shifted(self) -> Task | None:
        """The task drawn from another distribution, where its circuit is scored out of distribution, or None (the
        default). A variant, named ``f"{name}@shifted"``, has the same answers (or answers drawn by the same rule
        from another pool) and the task's guarantees (balanced, equal lengths, one place, exactly one right answer
        per prompt). Override it, usually with :meth:`shifted_copy`.

        Example:
            >>> Task().shifted() is None
            True
        """
        return None

    def shifted_copy(self, description: str | None = None, **changes: Any) -> Task:
        """A shallow copy of this task named ``f"{name}@shifted"`` with the attributes ``changes`` replaced (the
        usual body of :meth:`shifted`; template tasks seed their generator with the name, so its stream differs).

        Example:
            >>> t = Task(); t.name, t.description = "t", "d"
            >>> s = t.shifted_copy(alphabet="xyz")
            >>> s.name, s.description, s.alphabet, t.name
            ('t@shifted', 'd (shifted)', 'xyz', 't')
        """
        if self.name.endswith(SHIFTED):
            raise TaskError(f"task {self.name!r} is already a shifted variant")
        task = copy.copy(self)
        task.name = f"{self.name}{SHIFTED}"
        task.description = description if description is not None else f"{self.description} (shifted)"
        for key, value in changes.items():
            setattr(task, key, value)
        return task


def start_id(tokenizer: Any) -> int | None:
    """The end-of-text id, which starts every prompt as it starts every document in training; None if absent."""
    return tokenizer.token_to_id(EOT)


def to_batch(name: str, pairs: list[Pair], pad_id: int = 0) -> TaskBatch:
    B, T = len(pairs), max(len(p.clean_ids) for p in pairs)
    clean = torch.full((B, T), pad_id, dtype=torch.long)
    corrupt = torch.full((B, T), pad_id, dtype=torch.long)
    for i, p in enumerate(pairs):
        clean[i, : len(p.clean_ids)] = torch.tensor(p.clean_ids)
        corrupt[i, : len(p.corrupt_ids)] = torch.tensor(p.corrupt_ids)
    last = torch.tensor([len(p.clean_ids) - 1 for p in pairs])
    correct = torch.tensor([p.correct_id for p in pairs])
    alternative = torch.tensor([p.alternative_id for p in pairs])
    return TaskBatch(name, clean, corrupt, last, correct, alternative, pairs)


class TemplateTask(Task):
    """A task whose pairs come from a text template filled in by a seeded RNG.

    Subclasses set ``answers`` (fixed answer tokens) or ``answer_pool`` (answers drawn from a list: at least two
    must be single tokens) and implement :meth:`make`. A drawn candidate is kept only if both answers are single
    tokens, the prompts tokenise to equal lengths differing in one contiguous span, and each answer tokenises as
    its own token after its prompt (so the model sees the answer as it would in the corpus). Every kept candidate
    is emitted in both directions (:func:`both_directions`), so :meth:`make` may return either one.
    :meth:`context` may put text before both prompts of a candidate (a shifted variant's distractor code).
    """

    answers: tuple[str, ...] = ()
    answer_pool: tuple[str, ...] = ()
    max_attempts_per_pair = 40
    well_formed_check = True

    def make(self, rng: random.Random, pool: list[str]) -> tuple[str, str, str, str]:
        """One candidate ``(clean, corrupt, correct, alternative)``; ``pool`` is the single-token answer pool."""
        raise NotImplementedError

    def context(self, rng: random.Random, candidate: tuple[str, str, str, str]) -> str:
        """Text put before both prompts of ``candidate`` (after the start token): "" here, drawing nothing from
        ``rng``, so a task that does not override it makes the same pairs as before the hook existed.

        Example:
            >>> TemplateTask().context(random.Random(0), ("a(", "a[", ")", "]"))
            ''
        """
        return ""

    def single_token_pool(self, tokenizer: Any) -> list[str]:
        return [w for w in self.answer_pool if single_token(tokenizer, w) is not None]

    def check(self, tokenizer: Any, d_vocab: int | None = None) -> None:
        for token in self.answers:
            if single_token(tokenizer, token) is None:
                raise AnswerTokenError(self.name, token, tokenizer.encode(token).tokens)
        if self.answer_pool:
            pool = self.single_token_pool(tokenizer)
            if len(pool) < 2:
                bad = next(w for w in self.answer_pool if w not in pool)
                raise AnswerTokenError(self.name, bad, tokenizer.encode(bad).tokens)
        if d_vocab is not None and tokenizer.get_vocab_size() > d_vocab:
            raise TaskError(f"task {self.name!r}: the tokenizer has {tokenizer.get_vocab_size()} tokens but the "
                            f"model only d_vocab={d_vocab}")

    def pairs(self, tokenizer: Any, n: int, seed: int, max_len: int | None = None,
              d_vocab: int | None = None) -> list[Pair]:
        # A string seed keeps tasks with the same numeric seed from drawing the same stream.
        rng = random.Random(f"{self.name}/{seed}")
        pool = self.single_token_pool(tokenizer)
        prefix = [start_id(tokenizer)] if start_id(tokenizer) is not None else []
        out: list[Pair] = []
        rejected: dict[str, int] = {}
        for _ in range(n * self.max_attempts_per_pair):
            if len(out) >= n:
                break
            clean, corrupt, correct, alt = self.make(rng, pool)
            context = self.context(rng, (clean, corrupt, correct, alt))
            clean, corrupt = context + clean, context + corrupt
            reason = None
            c_id, a_id = single_token(tokenizer, correct), single_token(tokenizer, alt)
            c_ids, k_ids = prefix + encode(tokenizer, clean), prefix + encode(tokenizer, corrupt)
            if c_id is None or a_id is None or c_id == a_id:
                reason = "answers are not two distinct single tokens"
            elif not one_place(c_ids, k_ids):
                reason = "prompts do not tokenise to equal lengths differing in one place"
            elif (prefix + encode(tokenizer, clean + correct) != c_ids + [c_id]
                  or prefix + encode(tokenizer, corrupt + alt) != k_ids + [a_id]):
                reason = "an answer merges with its prompt when tokenised"
            elif max_len is not None and len(c_ids) > max_len:
                reason = f"prompt longer than the model's context ({max_len})"
            if reason is not None:
                rejected[reason] = rejected.get(reason, 0) + 1
                continue
            # Every check above holds in both directions (equal lengths, both answers checked after their prompt).
            pair = Pair(clean, corrupt, correct, alt, tuple(c_ids), tuple(k_ids), c_id, a_id)
            out.extend(both_directions(pair, rng))
        if len(out) < n:
            why = max(rejected, key=rejected.get) if rejected else "no candidates"
            raise TaskError(f"task {self.name!r}: only {len(out)} of {n} pairs could be made with this tokenizer "
                            f"(most candidates rejected because: {why})")
        return out[:n]
