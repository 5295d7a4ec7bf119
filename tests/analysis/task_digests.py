"""Digests of the in-distribution pairs, so a refactoring of the task code can be shown to change none of them.

``tests/analysis/data/task_digests.json`` was written by running this module (``python
tests/analysis/task_digests.py``) on the task code *before* the shifted variants were added. Two layers:

- ``candidates``: what each template task's ``make`` draws, seeds 0..2, 32 candidates each, from the answer pool
  unfiltered by any tokenizer (so this layer is the same on every machine);
- ``pairs``: the pairs ``generate`` returns with the stdlib BPE of ``conftest.py`` (24 pairs, seeds 0..2,
  ``max_len`` 128), keyed by a digest of that tokenizer (it is trained on the running Python's standard library, so
  another Python version gives another tokenizer, and the test of this layer then skips, saying so).

Rewrite the file only on purpose, when the in-distribution pairs are meant to change.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

PATH = Path(__file__).parent / "data" / "task_digests.json"
SEEDS = (0, 1, 2)
N_CANDIDATES, N_PAIRS, MAX_LEN = 32, 24, 128


def digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def candidate_digests(tasks) -> dict[str, str]:
    """``{task/seed: digest}`` of the first candidates ``make`` draws, for every template task in ``tasks``."""
    out = {}
    for task in tasks:
        if not hasattr(task, "make"):
            continue
        for seed in SEEDS:
            rng = random.Random(f"{task.name}/{seed}")
            pool = list(task.answer_pool)
            out[f"{task.name}/{seed}"] = digest([list(task.make(rng, pool)) for _ in range(N_CANDIDATES)])
    return out


def pair_digests(tasks, tokenizer) -> dict[str, str]:
    """``{task/seed: digest}`` of the pairs ``generate`` returns with ``tokenizer``, for every task in ``tasks``."""
    out = {}
    for task in tasks:
        for seed in SEEDS:
            batch = task.generate(tokenizer, N_PAIRS, seed=seed, max_len=MAX_LEN)
            out[f"{task.name}/{seed}"] = digest([[p.clean, p.corrupt, p.correct, p.alternative, list(p.clean_ids),
                                                  list(p.corrupt_ids), p.correct_id, p.alternative_id]
                                                 for p in batch.pairs])
    return out


def tokenizer_digest(tokenizer) -> str:
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import BPE_VOCAB, stdlib_texts, train_bpe

    from glassformer.analysis.tasks import TASKS

    tok = train_bpe(stdlib_texts(), BPE_VOCAB)
    built_in = [t for t in TASKS if type(t).__module__.startswith("glassformer.analysis.tasks.")]
    PATH.write_text(json.dumps({"candidates": candidate_digests(built_in),
                                "pairs": {"tokenizer": tokenizer_digest(tok), "digests": pair_digests(built_in, tok)}},
                               indent=1, sort_keys=True) + "\n")
    print(f"wrote {PATH}")
