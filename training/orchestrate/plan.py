"""The plan of a sweep: its presets, the variants found in ``configs/``, and each run's resolved configs.

:mod:`.sweep` runs the plan (its docstring describes the sweep as a whole); nothing here trains or analyses.

Example:
    >>> [(r.name, r.variant, r.trainer.seed) for r in plan("quick", ["dense"], "runs/s", seeds=2)]
    [('dense-seed0', 'dense', 0), ('dense-seed1', 'dense', 1)]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glassformer.analysis import AnalysisConfig
from glassformer.analysis.common import check_choice
from glassformer.archs import ModelConfig
from glassformer.archs.config import ConfigError, from_dict
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig
from glassformer.training.ladder import ladder_dir, ladder_steps

BASELINE = "dense"
CONTROLS = {"all": "every analysis measures the controls", "first_seed": "only each variant's first final model"}
BASELINE_FILES = ("tiny.yaml", "dense.yaml")
"""The dense baseline of a configs folder: the first of these it holds (configs/: tiny.yaml)."""
SHAPE_KEYS = ("d_vocab", "n_ctx", "n_layers", "n_heads")
"""A YAML is a variant of the baseline when these model fields equal the baseline's."""
WIDTH_KEYS = ("d_model", "d_mlp")


@dataclass(frozen=True)
class SweepPreset:
    """How a sweep scales the variants' YAML files and analyses the models.

    Example:
        >>> PRESETS["standard"].width, PRESETS["quick"].variants
        (1.0, ('dense', 'weight_sparse'))
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
    seeds: int = 1
    """Models per variant, with trainer seeds base .. base + seeds - 1 (``--seeds`` overrides)."""
    ladder_every: int | str | None = "val_every"
    """The baseline's checkpoint ladder: every this many steps, ``"val_every"`` (the validation interval, so each
    point reuses a validation) or None (no ladder). Every point is analysed like a model."""
    configs: str | None = None
    """The folder of the preset's variant YAMLs, relative to the repository's configs/ (None: configs/ itself);
    ``--configs`` replaces it."""
    controls: str = "all"
    """Which analyses measure the controls (random-init model, shuffled labels): ``all``, or ``first_seed`` (the
    final model of each variant's first seed; other seeds and ladder points skip them). The controls are sanity
    checks whose expected answer is "no capability": one model per variant tests the method, and they cost as
    much as the model's own analysis."""


PRESETS: dict[str, SweepPreset] = {
    # Sized for `make demo`: under 15 minutes on a quiet 2-core CPU from a fresh clone, with `--jobs 2` (measured:
    # README). The recipes of configs/paper/ at half their steps: the dense baseline clears the capability gate on
    # 4 tasks at 1200 steps (the levers table in benchmarks/RESULTS.md), so those 4 are the tasks. The
    # weight-sparse model is the paper recipe at the dense widths (1/9 of each matrix kept, AbsTopK), since its
    # 1.5x widths would make it the slowest model by far; circuits at node level only (learned masks), the level
    # where weight sparsity is visible. One seed: the verdict needs two a side, so the comparison itself is the
    # paper preset's (three seeds).
    "quick": SweepPreset(
        description="configs/paper/ at 1200 steps: dense (ladder every 600 steps) and weight-sparse at the dense "
                    "widths; one seed; node circuits (learned masks) on the 4 tasks a 1200-step baseline does, "
                    "48 pairs each",
        variants=(BASELINE, "weight_sparse"),
        configs="paper",
        trainer={"max_steps": 1200, "val_every": 600, "checkpoint_every": 300},
        analysis=AnalysisConfig(n_pairs=48, corpus_windows=32,
                                tasks=["quote_close", "bracket_type", "bracket_depth", "indent_after_colon"]),
        levels=(("node", "mask"),),
        baseline_widths=("weight_sparse",),
        seeds=1,
    ),
    "standard": SweepPreset(
        description="the configs/*.yaml files as they are (tiny: 4 layers, d_model 128, 1200 steps); every "
                    "variant; 64 pairs per task; component (EAP-IG) and node (learned masks) circuits",
        variants=None,
        analysis=AnalysisConfig(n_pairs=64, corpus_windows=64),
        levels=(("component", "auto"), ("node", "mask")),
        seeds=3,
    ),
    # The comparison to publish: the recipes of configs/paper/, chosen by the measurements in
    # benchmarks/RESULTS.md (the levers table: a 2048-token vocabulary and 2400 steps give the dense baseline
    # capability on 8 of 14 tasks; the weight-sparse recipe: widths, kept fractions, refresh interval). Three seeds
    # of every variant; the dense ladder every 800 steps for the loss-matched comparison. Meant for
    # `--jobs 2 --threads 1` on a 2-core CPU (`make paper`).
    "paper": SweepPreset(
        description="configs/paper/: 4 layers, d_model 128, 2048-token vocabulary, 2400 steps; dense with its "
                    "ladder every 800 steps, weight-sparse in Gao's regime (1.5x wider, 1/9 of each matrix kept, "
                    "AbsTopK), TopK transcoder, AbsTopK activation sparsity; 3 seeds; component and node circuits, "
                    "48 pairs per task",
        variants=(BASELINE, "weight_sparse", "transcoder", "act_sparsity"),
        configs="paper",
        # Top-n circuits only (greedy growth is a second reading of the same ranking), meant to fit a 2-hour
        # budget; the sweep took about 2 h 40 min, mostly training (docs/results/paper.md).
        analysis=AnalysisConfig(n_pairs=48, corpus_windows=32, selections=["topn"]),
        levels=(("component", "auto"), ("node", "mask")),
        seeds=3,
        ladder_every=800,
        controls="first_seed",
    ),
}


@dataclass
class PlannedRun:
    """One model of a sweep: its name, variant, folder and resolved configs (``trainer.seed`` is its seed)."""

    name: str
    out: Path
    source: Path
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    trainer: TrainerConfig
    variant: str = ""
    seed_index: int = 0
    """k of the variant's k-th seed (0 .. seeds - 1)."""

    def analysis_plan(self, analyses: list[AnalysisConfig], controls: str = "all") -> list[tuple[Path, AnalysisConfig]]:
        """(model directory, analysis) of every analysis of this run: the final model, then each analysed ladder
        point, at every level; with ``controls="first_seed"`` only the first seed's final model keeps the controls.

        Example:
            >>> run = plan("quick", ["dense"], "s")[0]
            >>> [(str(d), a.controls) for d, a in run.analysis_plan([AnalysisConfig()], "first_seed")]
            [('s/dense', True), ('s/dense/ladder/step-000600', False)]
        """
        check_choice("controls", controls, CONTROLS)
        out = []
        for model_dir in [self.out, *self.ladder_analysed]:
            keep = controls == "all" or (self.seed_index == 0 and model_dir == self.out)
            out += [(model_dir, a if keep or not a.controls else a.replace(controls=False)) for a in analyses]
        return out

    @property
    def ladder(self) -> list[Path]:
        """The ladder points this run writes (none without ``trainer.ladder_every``)."""
        every = self.trainer.ladder_every
        return [] if every is None else [ladder_dir(self.out, s) for s in ladder_steps(every, self.trainer.max_steps)]

    @property
    def ladder_analysed(self) -> list[Path]:
        """The ladder points a sweep analyses: all but the one at the last step, which holds the final model's
        weights and is analysed as the model itself (a matched comparison takes the model for it)."""
        last = ladder_dir(self.out, self.trainer.max_steps)
        return [p for p in self.ladder if p != last]

    def describe(self) -> dict[str, Any]:
        return {"variant": self.variant, "seed": self.trainer.seed, "config_file": str(self.source),
                "out": str(self.out), "ladder": [str(p) for p in self.ladder], "model": self.model.to_dict(),
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
    base_file = next((root / f for f in BASELINE_FILES if (root / f).is_file()), None)
    if base_file is None:
        raise ConfigError(f"configs={str(root)!r} has no {' or '.join(BASELINE_FILES)}: expected the folder of the "
                          "variant YAML files (the repository's configs/)")
    base = _load_yaml(base_file).get("model", {})
    found = {BASELINE: base_file}
    for path in sorted(root.glob("*.yaml")):
        if path == base_file:
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
        >>> half = SweepPreset(description="half", variants=None, width=0.5, n_layers=2, n_ctx=64)
        >>> scale_model({"d_model": 128, "d_mlp": 512, "mlp": {"kind": "topk", "k": 64}}, half, 0.5)
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


def check_seeds(seeds: Any) -> int:
    """Refuse a number of seeds that is not a positive integer, naming the field; return it.

    Example:
        >>> check_seeds(0)
        Traceback (most recent call last):
        ...
        glassformer.archs.config.ConfigError: seeds=0 is not allowed: expected a positive integer (models per variant)
    """
    if not (isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0):
        raise ConfigError(f"seeds={seeds!r} is not allowed: expected a positive integer (models per variant)")
    return seeds


def run_name(variant: str, k: int, n_seeds: int) -> str:
    """The folder name of a variant's ``k``-th seed: the variant alone with one seed, ``<variant>-seed<k>`` else.

    Example:
        >>> run_name("dense", 0, 1), run_name("dense", 1, 3)
        ('dense', 'dense-seed1')
    """
    return variant if n_seeds == 1 else f"{variant}-seed{k}"


def plan(preset: str, variants: list[str] | None, out: str | Path, configs: str | Path | None = None,
         data: DataConfig | None = None, seeds: int | None = None) -> list[PlannedRun]:
    """The runs of a sweep, the baseline's seeds first, with their configs resolved (nothing is trained).

    ``seeds`` (default: the preset's) models per variant, with trainer seeds base .. base + seeds - 1, ``base``
    being the baseline YAML's ``trainer.seed``; everything else is shared. The baseline gets the preset's ladder.

    Example:
        >>> [r.name for r in plan("quick", None, "runs/sweep")]
        ['dense', 'weight_sparse']
        >>> plan("quick", ["transcoder"], "runs/sweep")[1].model.mlp.k
        32
        >>> [(r.name, r.trainer.seed) for r in plan("quick", ["transcoder"], "runs/sweep", seeds=2)][:2]
        [('dense-seed0', 0), ('dense-seed1', 1)]
    """
    check_choice("preset", preset, PRESETS)
    p = PRESETS[preset]
    n_seeds = check_seeds(p.seeds if seeds is None else seeds)
    if configs is None and p.configs is not None:
        configs = default_configs_dir() / p.configs
    found = discover_variants(configs)
    if variants is not None and (isinstance(variants, str) or not variants):
        raise ValueError(f"variants={variants!r} is not allowed: expected a non-empty list drawn from "
                         f"{', '.join(found)}")
    chosen = list(variants) if variants is not None else list(p.variants or found)
    for name in chosen:
        check_choice("variants", name, found)
    names = [BASELINE] + [n for n in dict.fromkeys(chosen) if n != BASELINE]  # the baseline is always trained
    base = _load_yaml(found[BASELINE])
    trainer = from_dict(TrainerConfig, {**base.get("trainer", {}), **p.trainer}, "trainer")
    ladder = trainer.val_every if p.ladder_every == "val_every" else p.ladder_every
    data_cfg = data if data is not None else from_dict(DataConfig, base.get("data", {}), "data")
    runs: list[PlannedRun] = []
    for name in names:
        model, optim, source = _variant_configs(name, found[name], p, trainer, runs[0].model if runs else None)
        for k in range(n_seeds):
            seeded = from_dict(TrainerConfig, {**asdict(trainer), "seed": trainer.seed + k,
                                               "ladder_every": ladder if name == BASELINE else None}, "trainer")
            runs.append(PlannedRun(run_name(name, k, n_seeds), Path(out) / run_name(name, k, n_seeds), source,
                                   model, data_cfg, optim, seeded, variant=name, seed_index=k))
    return runs


def _variant_configs(name: str, source: Path, p: SweepPreset, trainer: TrainerConfig,
                     baseline: ModelConfig | None) -> tuple[ModelConfig, OptimConfig, Path]:
    """A variant's model (at the preset's size and token budget) and optimiser configs."""
    raw = _load_yaml(source)
    yaml_trainer = {**asdict(TrainerConfig()), **raw.get("trainer", {})}
    yaml_ctx = raw["model"].get("n_ctx", ModelConfig().n_ctx)
    yaml_tokens = yaml_trainer["max_steps"] * yaml_trainer["batch_size"] * yaml_ctx
    tokens = trainer.max_steps * trainer.batch_size * (p.n_ctx or yaml_ctx)
    model_dict = scale_model(raw["model"], p, token_ratio=tokens / yaml_tokens)
    if name in p.baseline_widths and baseline is not None:
        model_dict.update({k: getattr(baseline, k) for k in WIDTH_KEYS})
    optim = from_dict(OptimConfig, {**raw.get("optim", {}), **p.optim}, "optim")
    return ModelConfig.from_dict(model_dict), optim, source


__all__ = ["BASELINE", "PRESETS", "PlannedRun", "SweepPreset", "check_seeds", "default_configs_dir",
           "discover_variants", "plan", "run_name", "scale_model"]
