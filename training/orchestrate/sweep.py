"""``glassformer sweep``: train the dense baseline and constrained variants at matched size, analyse, compare.

Variants are the YAML files in ``configs/`` that share the dense baseline's shape (``configs/tiny.yaml``, called
``dense`` here): same vocabulary, context, layers and heads. Each such file says in a comment how its parameter
count is matched to the dense model (wider and sparser, same total, or same active parameters). A preset scales
every variant the same way, so the matching survives: ``quick`` halves every width (``d_model``, ``d_mlp`` and a
TopK's ``k``), uses 2 layers and a 64-token context, and trains a few hundred steps; ``standard`` runs the YAML files
as they are. Every model of one sweep sees the same data, seed and token budget (the baseline's data and trainer
sections with the preset's overrides); each keeps its own optimiser section.

A sweep folder holds one model directory per variant, ``sweep.json`` (the resolved configs) and ``report/``.
Rerunning the same command continues where it stopped: a model directory with ``training.json`` is done, one with
only ``checkpoints/last.ckpt`` resumes exactly (``fit(..., resume=True)``), and a model without ``analysis.json``
is analysed; a finished model trained with other settings is refused rather than silently reused.

Example:
    >>> sorted(PRESETS), "dense" in discover_variants()
    (['quick', 'standard'], True)
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glassformer.analysis import AnalysisConfig, format_table
from glassformer.analysis.common import check_choice
from glassformer.archs import ModelConfig, load_config, read_training
from glassformer.archs.config import ConfigError, from_dict
from glassformer.archs.model_dir import TRAINING_FILE, atomic_write_json
from glassformer.training.checks import check_writable
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig
from glassformer.training.guards import LAST
from glassformer.training.orchestrate.models import analyze_model_dir, compare_models, has_run, report_summary
from glassformer.training.train import fit

log = logging.getLogger("glassformer")

BASELINE, BASELINE_FILE = "dense", "tiny.yaml"
SHAPE_KEYS = ("d_vocab", "n_ctx", "n_layers", "n_heads")
"""A YAML is a variant of the baseline when these model fields equal the baseline's."""
WIDTH_KEYS = ("d_model", "d_mlp")
MANIFEST = "sweep.json"
REPORT_DIR = "report"


@dataclass(frozen=True)
class SweepPreset:
    """How a sweep scales the variants' YAML files and analyses the models.

    Example:
        >>> PRESETS["quick"].width, PRESETS["quick"].variants
        (0.5, ('dense', 'transcoder', 'weight_sparse'))
    """

    description: str
    variants: tuple[str, ...] | None
    """Variants trained when ``--variants`` is not given; None means every variant in configs/."""
    width: float = 1.0
    """Multiplies d_model, d_mlp and the MLP's k, keeping each variant's matching to the baseline."""
    n_layers: int | None = None
    n_ctx: int | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    """Overrides of the baseline's trainer section (shared by every variant)."""
    optim: dict[str, Any] = field(default_factory=dict)
    """Overrides of each variant's optimiser section."""
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    """The analysis of every model (tasks, n_pairs, corpus_windows, seed, ...), at each of ``levels``."""
    levels: tuple[tuple[str, str], ...] = (("component", "auto"),)
    """(level, method) of each analysis run per model; each adds its results to analysis.json."""

    def analyses(self, tasks: list[str] | None = None) -> list[AnalysisConfig]:
        """The analysis config of each level (``tasks`` replacing the preset's when given).

        Example:
            >>> [c.level for c in PRESETS["standard"].analyses()]
            ['component', 'node']
        """
        base = self.analysis if tasks is None else self.analysis.replace(tasks=tasks)
        return [base.replace(level=level, method=method) for level, method in self.levels]
    baseline_widths: tuple[str, ...] = ()
    """Variants trained at the baseline's widths instead of their YAML's (same total parameters)."""


PRESETS: dict[str, SweepPreset] = {
    # Sized for `make demo`: under 20 minutes on a 2-core CPU including corpus preparation (measured: README).
    # The unembedding (4096 x d_model) dominates a step at this size; 600 steps of 16 x 64 tokens take the dense
    # model from 8.3 to under 5 nats. More steps buy more tasks with signal (a dense model had 4 of the 8 at 400
    # steps, 5 at 800, measured) but the budget is 20 minutes on a shared 2-core CPU. The weight-sparse model keeps the dense widths (same total parameters, a
    # quarter of the matrices non-zero) instead of Gao's doubled widths: on a CPU, projecting the doubled model
    # after every step costs more than the step itself (measured: 0.96 s against 0.85 s), tripling its training.
    # The tasks are those a 400-step dense model gets right above chance. The YAML's 50 warmup steps are kept:
    # with 20, the transcoder's TopK collapsed onto the same 16 latents for every token (94% dead, loss 6.6
    # against 5.2 with 50, measured).
    "quick": SweepPreset(
        description="2 layers, half the tiny widths, 64-token context, 600 steps; dense, transcoder (TopK), "
                    "weight-sparse at the dense widths; 8 tasks, 48 pairs each",
        variants=(BASELINE, "transcoder", "weight_sparse"),
        width=0.5, n_layers=2, n_ctx=64,
        trainer={"max_steps": 600, "batch_size": 16, "val_every": 300, "val_batches": 8, "log_every": 10,
                 "checkpoint_every": 150},
        analysis=AnalysisConfig(n_pairs=48, corpus_windows=32,
                                tasks=["quote_close", "bracket_type", "bracket_depth", "else_vs_except",
                                       "indent_after_colon", "return_vs_yield", "self_attribute", "induction"]),
        baseline_widths=("weight_sparse",),
    ),
    "standard": SweepPreset(
        description="the configs/*.yaml files as they are (tiny: 4 layers, d_model 128, 1200 steps); every "
                    "variant; 64 pairs per task; component (EAP-IG) and node (learned masks) circuits",
        variants=None,
        analysis=AnalysisConfig(n_pairs=64, corpus_windows=64),
        levels=(("component", "auto"), ("node", "mask")),
    ),
}


@dataclass
class PlannedRun:
    """One model of a sweep: its name, folder and resolved configs."""

    name: str
    out: Path
    source: Path
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    trainer: TrainerConfig

    def describe(self) -> dict[str, Any]:
        return {"config_file": str(self.source), "out": str(self.out), "model": self.model.to_dict(),
                "data": asdict(self.data), "optim": asdict(self.optim), "trainer": asdict(self.trainer)}


def default_configs_dir() -> Path:
    """The repository's ``configs/`` folder (beside the installed ``training/`` package in a checkout)."""
    return Path(__file__).resolve().parents[2] / "configs"


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with model/data/optim/trainer sections")
    return raw


def discover_variants(configs: str | Path | None = None) -> dict[str, Path]:
    """Variant name -> YAML file: ``dense`` (``tiny.yaml``) and every YAML at its shape (``--variants`` choices).

    Fine-tuning YAMLs (no full model section) and other presets (``debug.yaml``: another shape) are left out.

    Example:
        >>> [n for n in discover_variants() if n in ("dense", "debug", "transcoder")]
        ['dense', 'transcoder']
    """
    root = Path(configs) if configs is not None else default_configs_dir()
    base_file = root / BASELINE_FILE
    if not base_file.is_file():
        raise ConfigError(f"configs={str(root)!r} has no {BASELINE_FILE}: expected the folder of the variant "
                          f"YAML files (the repository's configs/)")
    base = _load_yaml(base_file).get("model", {})
    found = {BASELINE: base_file}
    for path in sorted(root.glob("*.yaml")):
        if path.name == BASELINE_FILE:
            continue
        model = _load_yaml(path).get("model")
        if isinstance(model, dict) and all(model.get(k) == base.get(k) for k in SHAPE_KEYS):
            found[path.stem] = path
    return found


def scale_model(model: dict[str, Any], preset: SweepPreset, token_ratio: float) -> dict[str, Any]:
    """A variant's model section at the preset's size.

    Widths and the MLP's ``k`` are multiplied by ``preset.width``; ``dead_window_tokens`` by ``token_ratio`` (the
    preset's token budget over the YAML's), so a latent is still called dead after the same share of training.

    Example:
        >>> scale_model({"d_model": 128, "d_mlp": 512, "mlp": {"kind": "topk", "k": 64}},
        ...             PRESETS["quick"], 0.5)
        {'d_model': 64, 'd_mlp': 256, 'mlp': {'kind': 'topk', 'k': 32}, 'n_layers': 2, 'n_ctx': 64}
    """
    out = dict(model)
    for key in WIDTH_KEYS:
        if out.get(key) is not None:
            out[key] = max(1, round(out[key] * preset.width))
    mlp = out.get("mlp")
    if isinstance(mlp, dict):
        mlp = dict(mlp)
        if mlp.get("k") is not None:
            mlp["k"] = max(1, round(mlp["k"] * preset.width))
        if mlp.get("dead_window_tokens") is not None:
            mlp["dead_window_tokens"] = max(1, round(mlp["dead_window_tokens"] * token_ratio))
        out["mlp"] = mlp
    if preset.n_layers is not None:
        out["n_layers"] = preset.n_layers
    if preset.n_ctx is not None:
        out["n_ctx"] = preset.n_ctx
    return out


def plan(preset: str, variants: list[str] | None, out: str | Path, configs: str | Path | None = None,
         data: DataConfig | None = None) -> list[PlannedRun]:
    """The runs of a sweep, baseline first, with their configs resolved (nothing is trained).

    Example:
        >>> [r.name for r in plan("quick", None, "runs/sweep")]
        ['dense', 'transcoder', 'weight_sparse']
        >>> plan("quick", ["transcoder"], "runs/sweep")[1].model.mlp.k
        16
    """
    check_choice("preset", preset, PRESETS)
    p = PRESETS[preset]
    found = discover_variants(configs)
    if variants is not None and (isinstance(variants, str) or not variants):
        raise ValueError(f"variants={variants!r} is not allowed: expected a non-empty list drawn from "
                         f"{', '.join(found)}")
    chosen = list(variants) if variants is not None else list(p.variants or found)
    for name in chosen:
        check_choice("variants", name, found)
    names = [BASELINE] + [n for n in dict.fromkeys(chosen) if n != BASELINE]  # the baseline is always trained
    base = _load_yaml(found[BASELINE])
    base_trainer = {**base.get("trainer", {}), **p.trainer}
    trainer = from_dict(TrainerConfig, base_trainer, "trainer")
    data_cfg = data if data is not None else from_dict(DataConfig, base.get("data", {}), "data")
    runs: list[PlannedRun] = []
    for name in names:
        raw = _load_yaml(found[name])
        yaml_trainer = {**asdict(TrainerConfig()), **raw.get("trainer", {})}
        yaml_ctx = raw["model"].get("n_ctx", ModelConfig().n_ctx)
        yaml_tokens = yaml_trainer["max_steps"] * yaml_trainer["batch_size"] * yaml_ctx
        tokens = trainer.max_steps * trainer.batch_size * (p.n_ctx or yaml_ctx)
        model_dict = scale_model(raw["model"], p, token_ratio=tokens / yaml_tokens)
        if name in p.baseline_widths:
            model_dict.update({k: getattr(runs[0].model, k) for k in WIDTH_KEYS})
        optim = from_dict(OptimConfig, {**raw.get("optim", {}), **p.optim}, "optim")
        runs.append(PlannedRun(name, Path(out) / name, found[name], ModelConfig.from_dict(model_dict), data_cfg,
                               optim, trainer))
    return runs


def run_state(path: Path) -> str:
    """``done`` (training.json written), ``partial`` (a last checkpoint to resume) or ``new``."""
    if (path / TRAINING_FILE).is_file():
        return "done"
    return "partial" if (path / "checkpoints" / LAST).is_file() else "new"


def check_reusable(run: PlannedRun) -> None:
    """Refuse a finished model directory that was trained with other settings than this sweep's."""
    recorded = load_config(run.out).to_dict()
    trainer = read_training(run.out).get("config", {}).get("trainer", {})
    same_trainer = all(trainer.get(k) == getattr(run.trainer, k) for k in ("max_steps", "batch_size", "seed"))
    if recorded != run.model.to_dict() or not same_trainer:
        raise ConfigError(f"{run.out} holds a model trained with other settings than this sweep's {run.name!r} "
                          f"(model config or max_steps/batch_size/seed differ); use another --out or remove it")


def run_sweep(preset: str = "quick", variants: list[str] | None = None, out: str | Path = "runs/sweep", *,
              configs: str | Path | None = None, data: DataConfig | None = None, tasks: list[str] | None = None,
              progress: bool = True) -> Path:
    """Train (or resume, or reuse) every planned model, analyse each at every level of the preset, then compare
    them; returns the report folder. ``tasks`` replaces the preset's task list (a user's own tasks included, once
    registered).

    Example:
        >>> run_sweep("quick", out="runs/demo")  # doctest: +SKIP
        PosixPath('runs/demo/report')
    """
    from tqdm.auto import tqdm

    runs = plan(preset, variants, out, configs, data)
    p = PRESETS[preset]
    analyses = p.analyses(tasks)
    out = Path(out)
    check_writable(out)
    for run in runs:
        if run_state(run.out) == "done":
            check_reusable(run)
    atomic_write_json(out / MANIFEST, {"kind": "glassformer.sweep", "preset": preset, "description": p.description,
                                       "analysis": [a.record() for a in analyses], "command": sys.argv,
                                       "runs": {r.name: r.describe() for r in runs}})
    stages: list[tuple[str, PlannedRun | None, AnalysisConfig | None]] = [("train", r, None) for r in runs]
    stages += [("analyze", r, a) for r in runs for a in analyses] + [("compare", None, None)]
    bar = tqdm(total=len(stages), desc="sweep", unit="stage", disable=not progress, leave=True)
    try:
        for i, (stage, run, analysis) in enumerate(stages, 1):
            label = stage if run is None else f"{stage} {run.name}"
            label += f" ({analysis.level}/{analysis.method})" if analysis else ""
            bar.set_postfix_str(label)
            bar.write(f"sweep: stage {i}/{len(stages)}: {label}", file=sys.stderr)
            started = time.perf_counter()
            if stage == "train":
                _train(run, progress)
            elif stage == "analyze":
                _analyze(run, analysis, progress)
            else:
                with tqdm.external_write_mode():  # the verdict starts on a line of its own, not after the bar
                    report = compare_models([str(r.out) for r in runs], out / REPORT_DIR, analyses[0],
                                            baseline=str(runs[0].out), command=sys.argv)
                    print(report_summary(report))
            log.info("%s took %.0f s", label, time.perf_counter() - started)
            bar.update(1)
    finally:
        bar.close()
    return out / REPORT_DIR


def _analyze(run: PlannedRun, analysis: AnalysisConfig, progress: bool) -> None:
    if has_run(run.out, analysis):
        log.info("%s: analysis.json holds %s/%s with these settings, reused", run.out, analysis.level,
                 analysis.method)
        return
    started = time.perf_counter()
    result = analyze_model_dir(run.out, analysis, progress=progress)
    print(format_table(result))
    print(f"wrote {run.out / 'analysis.json'} ({result['latest']}) in {time.perf_counter() - started:.0f} s")


def _train(run: PlannedRun, progress: bool) -> None:
    state = run_state(run.out)
    if state == "done":
        log.info("%s: training.json exists, reused", run.out)
        return
    trainer = run.trainer if progress else TrainerConfig(**{**asdict(run.trainer), "progress_bar": False})
    log.info("%s: %s", run.out, "resuming from its last checkpoint" if state == "partial" else "training")
    fit(run.model, run.data, run.optim, trainer, run.out, resume=state == "partial")


__all__ = ["PRESETS", "SweepPreset", "PlannedRun", "discover_variants", "plan", "run_sweep", "scale_model",
           "run_state", "BASELINE", "MANIFEST", "REPORT_DIR"]
