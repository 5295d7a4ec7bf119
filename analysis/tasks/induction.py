"""Induction on repeated random tokens: ``r_1 .. r_n r_1 .. r_j`` -> ``r_{j+1}``.

The corrupted prompt replaces ``r_{j+1}`` in the first half by a token ``s`` that appears nowhere else, so an
induction circuit (a previous-token head feeding the key of an induction head that copies) predicts ``s``
instead. Tokens are drawn from the tokenizer's ordinary (non-special) ids, without repetition, so the copy
target is unambiguous: after the clean prompt only ``r_{j+1}`` continues the repeat (``s`` occurs nowhere in it),
after the corrupted prompt only ``s`` (``r_{j+1}`` occurs nowhere in it). Every drawn pair also comes mirrored
(the corrupted prompt as the clean one, answers swapped), so every token is a correct answer exactly as often as
it is an alternative and a prompt-blind model scores a mean logit difference of 0.
"""

from __future__ import annotations

import random
from typing import Any

from glassformer.analysis.tasks.base import Pair, Task, TaskError, both_directions, start_id


class Induction(Task):
    """Repeated random tokens; ``n_random`` fresh tokens, then the first ``n_repeat`` of them again.

    Example:
        >>> Induction(n_random=12, n_repeat=6).prompt_length(with_start=False)
        18
    """

    name = "induction"
    description = "continue a repeated sequence of random tokens (copy the token after the earlier occurrence)"
    well_formed_check = True

    def __init__(self, n_random: int = 10, n_repeat: int = 6, start: bool = True):
        if not 1 <= n_repeat < n_random:
            raise ValueError(f"n_repeat={n_repeat!r} is not allowed: expected 1 <= n_repeat < n_random={n_random}")
        self.n_random, self.n_repeat, self.start = n_random, n_repeat, start

    def prompt_length(self, with_start: bool = True) -> int:
        return self.n_random + self.n_repeat + int(with_start and self.start)

    def ordinary_ids(self, tokenizer: Any, d_vocab: int | None) -> list[int]:
        special = {tokenizer.token_to_id(t.content) for t in tokenizer.get_added_tokens_decoder().values()}
        size = tokenizer.get_vocab_size()
        if d_vocab is not None:
            size = min(size, d_vocab)
        return [i for i in range(size) if i not in special]

    def check(self, tokenizer: Any, d_vocab: int | None = None) -> None:
        ids = self.ordinary_ids(tokenizer, d_vocab)
        if len(ids) < self.n_random + 1:
            raise TaskError(f"task {self.name!r}: needs {self.n_random + 1} distinct ordinary tokens, the tokenizer "
                            f"has {len(ids)}")

    def pairs(self, tokenizer: Any, n: int, seed: int, max_len: int | None = None,
              d_vocab: int | None = None) -> list[Pair]:
        prefix = [start_id(tokenizer)] if self.start and start_id(tokenizer) is not None else []
        if max_len is not None and len(prefix) + self.n_random + self.n_repeat > max_len:
            raise TaskError(f"task {self.name!r}: prompts of {len(prefix) + self.n_random + self.n_repeat} tokens "
                            f"exceed the model's context ({max_len})")
        ids = self.ordinary_ids(tokenizer, d_vocab)
        rng = random.Random(f"{self.name}/{seed}")
        out: list[Pair] = []
        while len(out) < n:
            drawn = rng.sample(ids, self.n_random + 1)
            seq, other = drawn[:-1], drawn[-1]
            j = self.n_repeat
            clean = prefix + seq + seq[:j]
            corrupt_seq = seq[:j] + [other] + seq[j + 1:]
            corrupt = prefix + corrupt_seq + seq[:j]
            pair = Pair(tokenizer.decode(clean[len(prefix):]), tokenizer.decode(corrupt[len(prefix):]),
                        tokenizer.id_to_token(seq[j]), tokenizer.id_to_token(other), tuple(clean), tuple(corrupt),
                        seq[j], other)
            out.extend(both_directions(pair, rng))
        return out[:n]
