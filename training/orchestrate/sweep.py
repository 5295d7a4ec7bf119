"""``glassformer sweep``: train the dense baseline and constrained variants at matched size, analyse, compare.

Variants are the YAML files in ``configs/`` that share the dense baseline's shape (``configs/tiny.yaml``, called
``dense`` here): same vocabulary, context, layers and heads. Each such file says in a comment how its parameter
count is matched to the dense model (wider and sparser, same total, or same active parameters). A preset scales
every variant the same way, so the matching survives: ``quick`` halves every width (``d_model``, ``d_mlp`` and a
TopK's ``k``), uses 2 layers and a 64-token context, and trains a few hundred steps; ``standard`` runs the YAML files
as they are. Every model of one sweep sees the same data, seed and token budget (the baseline's data and trainer
sections with the preset's overrides); each keeps its own optimiser section.

Seeds: with ``seeds`` N (the preset's, or ``--seeds``) every variant is trained N times, with trainer seeds
``base .. base + N - 1`` (``base``: the baseline's ``trainer.seed``), so initialisation and data order differ while
the data and the budget stay the same. The baseline also writes a checkpoint ladder (``trainer.ladder_every``,
:mod:`glassformer.training.ladder`), and every ladder point is analysed like a model, so a report can match a
variant against the baseline at equal steps or at equal loss.

A sweep folder holds one model directory per variant and seed (``<variant>`` with one seed, ``<variant>-seed<k>``
with several), ``sweep.json`` (the resolved configs, the seeds) and ``report/``. Rerunning the same command
continues where it stopped: a model directory with ``training.json`` is done, one with only
``checkpoints/last.ckpt`` resumes exactly (``fit(..., resume=True)``), and a model or ladder point without
``analysis.json`` (or without this analysis in it) is analysed; a finished model trained with other settings is
refused rather than silently reused.

Example:
    >>> sorted(PRESETS), "dense" in discover_variants()
    (['paper', 'quick', 'standard'], True)
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

from glassformer.analysis import AnalysisConfig, format_table
from glassformer.archs import load_config, read_training
from glassformer.archs.config import ConfigError
from glassformer.archs.model_dir import TRAINING_FILE, atomic_write_json
from glassformer.training.checks import check_writable
from glassformer.training.config import DataConfig, TrainerConfig
from glassformer.training.guards import LAST
from glassformer.training.orchestrate.models import analyze_model_dir, compare_models, has_run, report_summary
from glassformer.training.orchestrate.plan import (
    BASELINE,
    PRESETS,
    PlannedRun,
    SweepPreset,
    check_seeds,
    discover_variants,
    plan,
    run_name,
    scale_model,
)
from glassformer.training.train import fit

log = logging.getLogger("glassformer")

MANIFEST = "sweep.json"
REPORT_DIR = "report"


def run_state(path: Path) -> str:
    """``done`` (training.json written), ``partial`` (a last checkpoint to resume) or ``new``."""
    if (path / TRAINING_FILE).is_file():
        return "done"
    return "partial" if (path / "checkpoints" / LAST).is_file() else "new"


REUSE_KEYS = ("max_steps", "batch_size", "seed", "ladder_every")
"""Trainer settings a finished model must share with the sweep to be reused (besides its model config)."""


def check_reusable(run: PlannedRun) -> None:
    """Refuse a finished model directory that was trained with other settings than this sweep's.

    Example:
        >>> check_reusable(plan("quick", None, "runs/demo")[0])  # doctest: +SKIP
    """
    recorded = load_config(run.out).to_dict()
    trainer = read_training(run.out).get("config", {}).get("trainer", {})
    differ = [f"trainer.{k}: {trainer.get(k)!r} there, {getattr(run.trainer, k)!r} here" for k in REUSE_KEYS
              if trainer.get(k) != getattr(run.trainer, k)]
    if recorded != run.model.to_dict():
        differ.insert(0, "the model config")
    if differ:
        raise ConfigError(f"{run.out} holds a model trained with other settings than this sweep's {run.name!r} "
                          f"({'; '.join(differ)}); use another --out or remove it")


Stage = tuple[str, "PlannedRun | None", "Path | None", "AnalysisConfig | None"]


def sweep_stages(runs: list[PlannedRun], analyses: list[AnalysisConfig], controls: str = "all") -> list[Stage]:
    """The sweep's stages in order: train every run, analyse every run and then every ladder point but the last (the
    final model's own weights) at each level, compare. Each is (kind, run, model directory, analysis).

    Example:
        >>> [(k, str(d)) for k, _, d, _ in sweep_stages(plan("quick", ["dense"], "s"), [AnalysisConfig()])]
        [('train', 's/dense'), ('analyze', 's/dense'), ('analyze', 's/dense/ladder/step-000600'), ('compare', 'None')]
    """
    stages: list[Stage] = [("train", r, r.out, None) for r in runs]
    stages += [("analyze", r, d, a) for r in runs for d, a in r.analysis_plan(analyses, controls)]
    return [*stages, ("compare", None, None, None)]


def run_sweep(preset: str = "quick", variants: list[str] | None = None, out: str | Path = "runs/sweep", *,
              configs: str | Path | None = None, data: DataConfig | None = None, tasks: list[str] | None = None,
              seeds: int | None = None, progress: bool = True, jobs: int = 1, threads: int | None = None,
              plugins: list[str] | None = None) -> Path:
    """Train (or resume, or reuse) every planned model, analyse each and each ladder point at every level of the
    preset, then compare the models; returns the report folder. ``tasks`` replaces the preset's task list (a
    user's own tasks included, once registered); ``seeds`` the preset's number of models per variant.

    With ``jobs`` N > 1, N worker processes (``threads`` torch threads each, default 1) take the models one at a
    time, the dearest first, and each trains and analyses its model and its ladder points; the comparison runs
    here once they are all done. ``plugins`` are imported in each worker (their tasks must be registered there).

    Example:
        >>> run_sweep("quick", out="runs/demo", jobs=2, threads=1)  # doctest: +SKIP
        PosixPath('runs/demo/report')
    """
    from tqdm.auto import tqdm

    if not (isinstance(jobs, int) and not isinstance(jobs, bool) and jobs >= 1):
        raise ConfigError(f"jobs={jobs!r} is not allowed: expected a positive integer (worker processes)")
    runs = plan(preset, variants, out, configs, data, seeds)
    p = PRESETS[preset]
    analyses = p.analyses(tasks)
    out = Path(out)
    check_writable(out)
    for run in runs:
        if run_state(run.out) == "done":
            check_reusable(run)
    atomic_write_json(out / MANIFEST, {"kind": "glassformer.sweep", "preset": preset, "description": p.description,
                                       "seeds": sorted({r.trainer.seed for r in runs}),
                                       "analysis": [a.record() for a in analyses], "command": sys.argv,
                                       "runs": {r.name: r.describe() for r in runs}})
    if jobs > 1:
        from glassformer.training.orchestrate.workers import run_parallel

        run_parallel(runs, analyses, jobs, threads or 1, plugins or [], controls=p.controls)
    stages = sweep_stages(runs, analyses, p.controls)
    bar = tqdm(total=len(stages), desc="sweep", unit="stage", disable=not progress, leave=True)
    try:
        for i, (stage, run, model_dir, analysis) in enumerate(stages, 1):
            label = stage if model_dir is None else f"{stage} {model_dir.relative_to(out)}"
            label += f" ({analysis.level}/{analysis.method})" if analysis else ""
            bar.set_postfix_str(label)
            bar.write(f"sweep: stage {i}/{len(stages)}: {label}", file=sys.stderr)
            started = time.perf_counter()
            if stage == "train":
                _train(run, progress)
            elif stage == "analyze":
                _analyze(model_dir, analysis, progress)
            else:
                with tqdm.external_write_mode():  # the verdict starts on a line of its own, not after the bar
                    # Every model directory, every seed; the ladder points are found under each model's ladder/.
                    report = compare_models([str(r.out) for r in runs], out / REPORT_DIR, analyses[0],
                                            baseline=str(runs[0].out), command=sys.argv)
                    print(report_summary(report))
            log.info("%s took %.0f s", label, time.perf_counter() - started)
            bar.update(1)
    finally:
        bar.close()
    return out / REPORT_DIR


def _analyze(model_dir: Path, analysis: AnalysisConfig, progress: bool) -> None:
    if not (model_dir / TRAINING_FILE).is_file():
        # Only a ladder point can be missing here (its run finished): deleted by hand, it cannot be remade.
        log.warning("%s is missing (removed after its run finished?): not analysed, the report will lack it",
                    model_dir)
        return
    if has_run(model_dir, analysis):
        log.info("%s: analysis.json holds %s/%s with these settings, reused", model_dir, analysis.level,
                 analysis.method)
        return
    started = time.perf_counter()
    result = analyze_model_dir(model_dir, analysis, progress=progress)
    print(format_table(result))
    print(f"wrote {model_dir / 'analysis.json'} ({result['latest']}) in {time.perf_counter() - started:.0f} s")


def _train(run: PlannedRun, progress: bool) -> None:
    state = run_state(run.out)
    if state == "done":
        log.info("%s: training.json exists, reused", run.out)
        return
    trainer = run.trainer if progress else TrainerConfig(**{**asdict(run.trainer), "progress_bar": False})
    log.info("%s: %s", run.out, "resuming from its last checkpoint" if state == "partial" else "training")
    fit(run.model, run.data, run.optim, trainer, run.out, resume=state == "partial", variant=run.variant)


# The plan's names are re-exported: callers (and the CLI) know the sweep by this module.
__all__ = ["PRESETS", "SweepPreset", "PlannedRun", "discover_variants", "plan", "run_sweep", "scale_model",
           "run_state", "run_name", "check_seeds", "sweep_stages", "BASELINE", "MANIFEST", "REPORT_DIR"]
