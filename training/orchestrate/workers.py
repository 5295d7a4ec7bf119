"""A sweep's models trained and analysed by several worker processes at once (``glassformer sweep --jobs N``).

Each worker takes a whole model (training, then its analyses and its ladder points') on its own torch threads
(default one), the dearest models first so that the last one to start is a cheap one: on a 2-core CPU two small
models train at once instead of one model on two threads, whose small matrices split poorly between them. Every
stage is the sequential sweep's own (``_train`` / ``_analyze``), so resuming, reuse and refusal behave the same;
the comparison is left to the caller.

Example:
    >>> from glassformer.training.orchestrate.plan import plan
    >>> [r.name for r in by_cost(plan("paper", ["dense", "weight_sparse"], "runs/p", seeds=1))]
    ['weight_sparse', 'dense']
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from glassformer.analysis import AnalysisConfig
from glassformer.training.orchestrate.plan import PlannedRun


def model_cost(run: PlannedRun) -> float:
    """A model's training cost in relative units: tokens x parameters that multiply (all but the token and position
    embeddings, which are looked up). Weight-sparse matrices count whole: a CPU multiplies them densely.

    Example:
        >>> from glassformer.training.orchestrate.plan import plan
        >>> dense, sparse = plan("standard", ["weight_sparse"], "runs/s", seeds=1)
        >>> round(model_cost(sparse) / model_cost(dense), 2)
        3.19
    """
    import torch

    from glassformer.archs import build_model

    with torch.device("meta"):  # shapes only, nothing allocated
        model = build_model(run.model)
    looked_up = {id(p) for name, p in model.named_parameters() if name.startswith(("embed.", "pos_embed."))}
    if getattr(model, "unembed", None) is not None:
        looked_up.discard(id(model.unembed.weight))  # tied: the unembedding still multiplies
    n = sum(p.numel() for p in model.parameters() if id(p) not in looked_up)
    return float(run.trainer.max_steps * run.trainer.batch_size * n)


def by_cost(runs: list[PlannedRun]) -> list[PlannedRun]:
    """``runs`` dearest first (stable for equal costs)."""
    return sorted(runs, key=model_cost, reverse=True)


def prepare_corpora(runs: list[PlannedRun]) -> int:
    """Train each tokenizer and tokenise each corpus the runs need, once, before the workers start; returns how
    many (data, vocabulary) pairs were prepared (or found cached).

    Two workers starting together would otherwise both train the same tokenizer and tokenise the same corpus (the
    cache files are written atomically, so that costs time, not correctness).

    Example:
        >>> prepare_corpora(plan("quick", None, "runs/demo"))  # doctest: +SKIP
        1
    """
    from glassformer.training.corpus import prepare_data
    from glassformer.training.orchestrate.sweep import run_state

    needed = {(repr(run.data), run.model.d_vocab): run for run in runs if run_state(run.out) != "done"}
    for run in needed.values():
        prepare_data(run.data, run.model.d_vocab)
    return len(needed)


def _init_worker(threads: int, plugins: list[str]) -> None:
    import torch

    torch.set_num_threads(threads)
    if plugins:
        from glassformer.training.cli.plugins import load_plugins

        load_plugins(plugins)


def _one_model(run: PlannedRun, analyses: list[AnalysisConfig], controls: str) -> tuple[str, float]:
    from glassformer.training.orchestrate.sweep import _analyze, _train

    started = time.perf_counter()
    print(f"sweep: worker takes {run.name}", file=sys.stderr, flush=True)
    _train(run, progress=False)
    for model_dir, analysis in run.analysis_plan(analyses, controls):
        _analyze(model_dir, analysis, progress=False)
    return run.name, time.perf_counter() - started


def run_parallel(runs: list[PlannedRun], analyses: list[AnalysisConfig], jobs: int, threads: int = 1,
                 plugins: list[str] | None = None, controls: str = "all") -> dict[str, float]:
    """Train and analyse every run in ``jobs`` worker processes of ``threads`` torch threads; returns each model's
    seconds (``controls``: see :meth:`PlannedRun.analysis_plan`). The first failure stops the pool (what finished is kept, a rerun resumes) and is raised here.

    Example:
        >>> run_parallel(plan("quick", None, "runs/demo"), PRESETS["quick"].analyses(), jobs=2)  # doctest: +SKIP
        {'weight_sparse': 301.2, 'transcoder': 288.0, 'dense': 250.4}
    """
    seconds: dict[str, float] = {}
    prepare_corpora(runs)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, list(plugins or []))) as pool:
        futures = [pool.submit(_one_model, run, analyses, controls) for run in by_cost(runs)]
        for future in as_completed(futures):
            error = future.exception()
            if error is not None:
                pool.shutdown(wait=True, cancel_futures=True)  # the running models finish: nothing half-done
                raise error
            name, took = future.result()
            seconds[name] = took
            print(f"sweep: {name} trained and analysed in {took:.0f} s ({len(seconds)} of {len(runs)} models)",
                  file=sys.stderr, flush=True)
    return seconds


__all__ = ["by_cost", "model_cost", "run_parallel"]
