"""``glassformer sweep``: train the dense baseline and the variants, analyse each, compare them."""

from __future__ import annotations

import json
from pathlib import Path

from glassformer.archs import read_training
from glassformer.training.cli.generate import sample_text
from glassformer.training.cli.plugins import load_plugins
from glassformer.training.config import DataConfig

SAMPLE_PROMPT = "import os\n\n\ndef"
PUBLISHED = "docs/results/paper.md"


def sweep(
    preset: str = "quick",
    variants: list[str] | str | None = None,
    out: str = "runs/sweep",
    data: DataConfig = DataConfig(),
    configs: str | None = None,
    tasks: list[str] | str | None = None,
    seeds: int | None = None,
    threads: int | None = None,
    jobs: int = 1,
    progress: bool = True,
    plugins: list[str] | str | None = None,
) -> None:
    """Train the dense baseline and constrained variants at matched size, analyse each, and compare them.

    Presets: quick (the paper recipes at 1200 steps: dense and weight-sparse at the dense widths, node circuits on
    4 tasks, one seed: `make demo`), standard (configs/*.yaml as they are, every variant, three seeds) and paper
    (configs/paper/: the published comparison, three seeds of dense, weight-sparse, transcoder and
    activation-sparse; run it with --jobs 2 --threads 1). The dense baseline also writes a checkpoint ladder (a
    model directory every validation interval, under OUT/dense/ladder/), and every ladder point is analysed like a
    model. Rerunning the same command continues where it stopped: finished models and analyses are reused, an
    interrupted training resumes from its last checkpoint. The report lands in OUT/report/index.html.

    Args:
        preset: quick, standard or paper (see glassformer/training/orchestrate/plan.py: PRESETS).
        variants: Variants to train beside the dense baseline, e.g. '[transcoder, topk]' or transcoder,topk;
            the names of configs/*.yaml at the baseline's shape (dense is tiny.yaml). Default: the preset's.
        out: Sweep folder: one model directory per variant, sweep.json and report/.
        data: Training corpus for every model (default: the Python standard library).
        configs: Folder of the variant YAML files (default: the repository's configs/).
        tasks: Tasks to analyse instead of the preset's (a name or a list; plugin tasks included).
        seeds: Models per variant (default: the preset's), trained with seeds base .. base+N-1 (init and data
            order differ; data and budget are the same). With N > 1 the folders are OUT/<variant>-seed<k>.
        threads: Torch CPU threads (default: torch's choice; with --jobs, 1 per worker). On a machine shared with
            other jobs, 1 avoids threads spinning against them.
        jobs: Worker processes that train and analyse models side by side (default 1). On a 2-core CPU
            --jobs 2 --threads 1 finishes a sweep sooner than one model at a time on two threads.
        progress: Progress bars (the sweep's stages, Lightning's training, the analysis).
        plugins: Modules to import first, which register tasks of their own (docs/adding-a-task.md).
    """
    from glassformer.training.orchestrate.sweep import run_sweep

    load_plugins(plugins)
    if isinstance(variants, str):
        variants = [v.strip() for v in variants.split(",") if v.strip()]
    if threads is not None:
        import torch

        if threads < 1:
            raise ValueError(f"--threads {threads} is not allowed: expected a positive integer")
        torch.set_num_threads(threads)
    report = run_sweep(preset, variants, out, configs=configs, data=data,
                       tasks=[tasks] if isinstance(tasks, str) else tasks, seeds=seeds, progress=progress,
                       jobs=jobs, threads=threads, plugins=[plugins] if isinstance(plugins, str) else plugins)
    written = report / "report.json"
    pointer = published_pointer(json.loads(written.read_text()), preset) if written.is_file() else None
    if pointer:
        print(pointer)
    print_sweep_summary(report.parent)


def published_pointer(report: dict, preset: str) -> str | None:
    """The line a sweep prints when none of its comparisons tells a variant from the baseline: where the published
    comparison (the paper preset, three seeds per variant) is. None after a paper sweep, or when a call was made.

    Example:
        >>> published_pointer({"comparisons": [{"call": "smaller"}]}, "quick") is None
        True
        >>> print(published_pointer({"comparisons": [{"call": "not distinguishable"}]}, "quick"))
        No comparison of this sweep tells a variant from the baseline (1 made, each 'not distinguishable'). The published comparison, three seeds per variant (make paper): docs/results/paper.md in the glassformer repository.
    """
    calls = [c.get("call") for c in report.get("comparisons", [])]
    if preset == "paper" or any(c in ("smaller", "larger") for c in calls):
        return None
    return (f"No comparison of this sweep tells a variant from the baseline ({len(calls)} made, each 'not "
            f"distinguishable'). The published comparison, three seeds per variant (make paper): {PUBLISHED} in the "
            f"glassformer repository.")


def print_sweep_summary(sweep_dir: str | Path, max_new_tokens: int = 80) -> None:
    """Print each model's validation loss beside the corpus's unigram entropy, and a code sample from the baseline.

    The unigram entropy is the loss of the best model that ignores context, so a model below it has learned
    something from context. Reads the sweep's ``sweep.json`` and each model's training.json (JSON only).

    Example:
        >>> print_sweep_summary("runs/demo")  # doctest: +SKIP
        dense          validation loss 4.8490 nats/token (unigram entropy of the corpus 6.4774)
    """
    from glassformer.training.orchestrate.sweep import MANIFEST

    sweep_dir = Path(sweep_dir)
    runs = json.loads((sweep_dir / MANIFEST).read_text())["runs"]
    for name in runs:
        final = read_training(sweep_dir / name).get("final", {})
        print(f"{name:<14} validation loss {final.get('loss/val', float('nan')):.4f} nats/token "
              f"(unigram entropy of the corpus {final.get('unigram_entropy', float('nan')):.4f})")
    baseline = next(iter(runs))
    print(f"sample from {baseline} (prompt {SAMPLE_PROMPT!r}, temperature 0.8, seed 0):")
    print(sample_text(sweep_dir / baseline, SAMPLE_PROMPT, max_new_tokens))
