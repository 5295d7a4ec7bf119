"""Induction on repeated random tokens: ``r_1 .. r_n r_1 .. r_j`` -> ``r_{j+1}``.

The corrupted prompt replaces ``r_{j+1}`` in the first half by a token ``s`` that appears nowhere else, so an
induction circuit (a previous-token head feeding the key of an induction head that copies) predicts ``s``
instead. Tokens are drawn from the tokenizer's ordinary (non-special) ids, without repetition, so the copy
target is unambiguous: after the clean prompt only ``r_{j+1}`` continues the repeat (``s`` occurs nowhere in it),
after the corrupted prompt only ``s`` (``r_{j+1}`` occurs nowhere in it). Every drawn pair also comes mirrored
(the corrupted prompt as the clean one, answers swapped), so every token is a correct answer exactly as often as
it is an alternative and a prompt-blind model scores a mean logit difference of 0.

The shifted variant (:meth:`Induction.shifted`) puts ``n_random`` unrelated random tokens before the sequence (the
repeat then sits at later positions, after more context) and draws every token from the rarer half of the ordinary
ids (the later BPE merges, which the in-distribution pairs draw only half of the time). The prefix tokens occur
nowhere else in the prompt, so the copy target stays unambiguous.
"""

from __future__ import annotations

import random
from typing import Any

from glassformer.analysis.tasks.base import Pair, Task, TaskError, both_directions, start_id

TOKEN_POOLS = ("all", "rare")
"""The ordinary ids the tokens are drawn from: all of them, or the later (rarer) half."""


class Induction(Task):
    """Repeated random tokens; ``n_random`` fresh tokens, then the first ``n_repeat`` of them again.

    Example:
        >>> Induction(n_random=12, n_repeat=6).prompt_length(with_start=False)
        18
    """

    name = "induction"
    description = "continue a repeated sequence of random tokens (copy the token after the earlier occurrence)"
    well_formed_check = True

    def __init__(self, n_random: int = 10, n_repeat: int = 6, start: bool = True, n_prefix: int = 0,
                 token_pool: str = "all"):
        if not 1 <= n_repeat < n_random:
            raise ValueError(f"n_repeat={n_repeat!r} is not allowed: expected 1 <= n_repeat < n_random={n_random}")
        if not isinstance(n_prefix, int) or n_prefix < 0:
            raise ValueError(f"n_prefix={n_prefix!r} is not allowed: expected an integer >= 0")
        if token_pool not in TOKEN_POOLS:
            raise ValueError(f"token_pool={token_pool!r} is not allowed: expected one of {', '.join(TOKEN_POOLS)}")
        self.n_random, self.n_repeat, self.start = n_random, n_repeat, start
        self.n_prefix, self.token_pool = n_prefix, token_pool

    def prompt_length(self, with_start: bool = True) -> int:
        return self.n_prefix + self.n_random + self.n_repeat + int(with_start and self.start)

    def shifted(self) -> Task | None:
        """``n_random`` unrelated random tokens first, every token from the rarer half of the vocabulary; None for
        a task that already has a prefix or that pool.

        Example:
            >>> s = Induction().shifted()
            >>> s.name, s.prompt_length(), s.token_pool, s.shifted()
            ('induction@shifted', 27, 'rare', None)
        """
        if self.n_prefix or self.token_pool != "all":
            return None
        return self.shifted_copy(f"{self.description} [shifted: after {self.n_random} unrelated random tokens, "
                                 "tokens from the rarer half of the vocabulary]", n_prefix=self.n_random,
                                 token_pool="rare")

    def ordinary_ids(self, tokenizer: Any, d_vocab: int | None) -> list[int]:
        special = {tokenizer.token_to_id(t.content) for t in tokenizer.get_added_tokens_decoder().values()}
        size = tokenizer.get_vocab_size()
        if d_vocab is not None:
            size = min(size, d_vocab)
        ids = [i for i in range(size) if i not in special]
        # BPE numbers its merges in the order it learnt them, most frequent first: the later half is the rarer.
        return ids[len(ids) // 2:] if self.token_pool == "rare" else ids

    def check(self, tokenizer: Any, d_vocab: int | None = None) -> None:
        ids = self.ordinary_ids(tokenizer, d_vocab)
        need = self.n_random + 1 + self.n_prefix
        if len(ids) < need:
            raise TaskError(f"task {self.name!r}: needs {need} distinct ordinary tokens ({self.token_pool} pool), "
                            f"the tokenizer has {len(ids)}")

    def pairs(self, tokenizer: Any, n: int, seed: int, max_len: int | None = None,
              d_vocab: int | None = None) -> list[Pair]:
        start = [start_id(tokenizer)] if self.start and start_id(tokenizer) is not None else []
        length = len(start) + self.n_prefix + self.n_random + self.n_repeat
        if max_len is not None and length > max_len:
            raise TaskError(f"task {self.name!r}: prompts of {length} tokens exceed the model's context ({max_len})")
        ids = self.ordinary_ids(tokenizer, d_vocab)
        rng = random.Random(f"{self.name}/{seed}")
        out: list[Pair] = []
        while len(out) < n:
            # One draw without repetition: the prefix shares no token with the sequence or the corruption.
            drawn = rng.sample(ids, self.n_random + 1 + self.n_prefix)
            seq, other, distract = drawn[:self.n_random], drawn[self.n_random], drawn[self.n_random + 1:]
            prefix = start + distract
            j = self.n_repeat
            clean = prefix + seq + seq[:j]
            corrupt_seq = seq[:j] + [other] + seq[j + 1:]
            corrupt = prefix + corrupt_seq + seq[:j]
            pair = Pair(tokenizer.decode(clean[len(start):]), tokenizer.decode(corrupt[len(start):]),
                        tokenizer.id_to_token(seq[j]), tokenizer.id_to_token(other), tuple(clean), tuple(corrupt),
                        seq[j], other)
            out.extend(both_directions(pair, rng))
        return out[:n]
