"""`glassformer sweep --seeds N`: every variant trained with seeds base .. base+N-1 on the same data and budget, the
baseline's checkpoint ladder analysed point by point, and a rerun resuming per model and per ladder point.

The micro sweep of test_sweep.py (6 steps a model, analysis and report stood in for), dense only, two seeds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_sweep import DATA, Calls, write_configs

from glassformer.analysis import AnalysisConfig
from glassformer.archs.config import ConfigError
from glassformer.training.orchestrate import sweep as sweep_module
from glassformer.training.orchestrate.sweep import PRESETS, SweepPreset, plan


class PathCalls(Calls):
    """Records each analysed directory by its path under the sweep folder (ladder points share their names)."""

    def __init__(self, out: Path):
        super().__init__()
        self.out = out

    def analyze(self, model_dir, config, progress=True) -> dict:
        content = super().analyze(model_dir, config, progress)
        self.analyzed[-1] = Path(model_dir).relative_to(self.out).as_posix()
        return content


def micro(seeds: int = 1) -> SweepPreset:
    return SweepPreset(description="test", variants=None, analysis=AnalysisConfig(n_pairs=2), seeds=seeds,
                       ladder_every=3)


def sweep_argv(root: Path, *extra: str) -> list[str]:
    return ["sweep", "--preset", "micro", "--variants", "dense", "--out", str(root / "out"), "--configs",
            str(root / "configs"), "--data.max_bytes", str(DATA.max_bytes), "--progress", "false", *extra]


def run_cli(root: Path, calls: Calls, *extra: str) -> None:
    from glassformer.training.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "micro", micro())
        calls.install(mp)
        main(sweep_argv(root, *extra))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """`glassformer sweep --variants dense --seeds 2` on the micro configs, run once to the end."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("seeds")
    write_configs(root / "configs")
    calls = PathCalls(root / "out")
    run_cli(root, calls, "--seeds", "2")
    return root, calls


def training(path: Path) -> dict:
    return json.loads((path / "training.json").read_text())


def test_two_seeds_train_two_models_with_their_own_seed_and_weights_on_the_same_data(seeded):
    root, _ = seeded
    a, b = root / "out" / "dense-seed0", root / "out" / "dense-seed1"
    assert not (root / "out" / "dense").exists()
    ta, tb = training(a), training(b)
    assert (ta["seed"], tb["seed"]) == (0, 1) and ta["variant"] == tb["variant"] == "dense"
    assert ta["config"]["trainer"]["seed"] == 0 and tb["config"]["trainer"]["seed"] == 1
    # The same data and budget: corpus, data config, steps, batch size, tokens.
    assert ta["corpus"]["fingerprint"] == tb["corpus"]["fingerprint"] and ta["config"]["data"] == tb["config"]["data"]
    assert {k: v for k, v in ta["config"]["trainer"].items() if k != "seed"} == \
        {k: v for k, v in tb["config"]["trainer"].items() if k != "seed"}
    assert ta["tokens_seen"] == tb["tokens_seen"] == 6 * 4 * 32
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and not any(torch.equal(wa[k], wb[k]) for k in wa if k.endswith("weight"))


def test_the_manifest_records_the_seeds_and_each_run(seeded):
    root, _ = seeded
    manifest = json.loads((root / "out" / sweep_module.MANIFEST).read_text())
    assert manifest["seeds"] == [0, 1]
    assert {n: (r["variant"], r["seed"]) for n, r in manifest["runs"].items()} == \
        {"dense-seed0": ("dense", 0), "dense-seed1": ("dense", 1)}


def test_each_seed_of_the_baseline_has_its_ladder_and_every_point_is_analysed(seeded):
    root, calls = seeded
    # The point at the last step (6) holds the final weights: written, but analysed as the model itself.
    assert calls.analyzed == ["dense-seed0", "dense-seed0/ladder/step-000003", "dense-seed1",
                              "dense-seed1/ladder/step-000003"]
    for k in (0, 1):
        point = training(root / "out" / f"dense-seed{k}" / "ladder" / "step-000006")
        assert (point["seed"], point["variant"], point["ladder_of"], point["step"]) == (k, "dense", "dense", 6)


def test_the_report_gets_every_model_directory_of_every_seed(seeded):
    _, calls = seeded
    assert calls.compared == [["dense-seed0", "dense-seed1"]] and calls.baseline == "dense-seed0"


@pytest.fixture
def sweep_copy(seeded, tmp_path):
    shutil.copytree(seeded[0], tmp_path / "s")
    return tmp_path / "s"


def test_a_rerun_resumes_the_unfinished_seed_and_analyses_only_what_is_missing(sweep_copy, monkeypatch):
    from glassformer.training import train

    real_fit, fitted = train.fit, []

    def spy(model, data, optim, trainer, out, resume=False, **kwargs):
        fitted.append((Path(out).name, resume, trainer.seed))
        return real_fit(model, data, optim, trainer, out, resume=resume, **kwargs)

    monkeypatch.setattr(sweep_module, "fit", spy)
    out = sweep_copy / "out"
    # Seed 1 as if stopped while validating its last step: its checkpoint is there, nothing after it is.
    for name in ("training.json", "model.safetensors", "analysis.json"):
        (out / "dense-seed1" / name).unlink()
    shutil.rmtree(out / "dense-seed1" / "ladder" / "step-000006")
    # Seed 0 finished, but the analysis of its ladder point was lost.
    (out / "dense-seed0" / "ladder" / "step-000003" / "analysis.json").unlink()
    calls = PathCalls(out)
    run_cli(sweep_copy, calls, "--seeds", "2")
    assert fitted == [("dense-seed1", True, 1)]
    assert calls.analyzed == ["dense-seed0/ladder/step-000003", "dense-seed1"]
    assert training(out / "dense-seed1" / "ladder" / "step-000006")["seed"] == 1


def test_one_seed_keeps_the_plain_variant_names():
    assert [(r.name, r.trainer.seed) for r in plan("quick", None, "s")] == [("dense", 0), ("weight_sparse", 0)]
    assert [(r.name, r.trainer.seed) for r in plan("quick", ["transcoder"], "s", seeds=2)] == \
        [("dense-seed0", 0), ("dense-seed1", 1), ("transcoder-seed0", 0), ("transcoder-seed1", 1)]


def test_only_the_baseline_gets_a_ladder_by_default_at_the_validation_interval():
    runs = plan("quick", None, "s")
    assert [r.trainer.ladder_every for r in runs] == [600, None]
    assert [p.name for p in runs[0].ladder] == ["step-000600", "step-001200"]
    assert PRESETS["quick"].seeds == 1 and PRESETS["standard"].seeds == 3


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_bad_number_of_seeds_is_refused_before_any_work(tmp_path, value, capsys):
    from glassformer.training.cli import main

    with pytest.raises(SystemExit) as e:
        main(["sweep", "--seeds", value, "--out", str(tmp_path / "s")])
    assert e.value.code == 2
    assert f"seeds={value} is not allowed: expected a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match=f"seeds={value} is not allowed"):
        plan("quick", None, "s", seeds=int(value))


def test_a_finished_baseline_without_the_ladder_is_refused_rather_than_reused(sweep_copy, monkeypatch):
    # As a model trained before the ladder existed: its points could not be made after the fact.
    monkeypatch.setitem(PRESETS, "micro", SweepPreset(description="test", variants=None, seeds=2,
                                                      analysis=AnalysisConfig(n_pairs=2), ladder_every=None))
    with pytest.raises(ConfigError, match=r"dense-seed0 holds a model trained with other settings than this "
                                          r"sweep's 'dense-seed0' \(trainer.ladder_every: 3 there, None here\)"):
        sweep_module.run_sweep("micro", ["dense"], sweep_copy / "out", configs=sweep_copy / "configs", data=DATA,
                               progress=False)


def test_with_controls_on_the_first_seed_only_other_seeds_and_ladder_points_skip_them():
    runs = plan("paper", ["dense", "transcoder"], "s")
    stages = sweep_module.sweep_stages(runs, PRESETS["paper"].analyses(), "first_seed")
    with_controls = sorted({str(d) for kind, _, d, a in stages if kind == "analyze" and a.controls})
    assert with_controls == ["s/dense-seed0", "s/transcoder-seed0"]
    analysed = [(str(d), a.level) for kind, _, d, a in stages if kind == "analyze"]
    # Every directory still gets both levels; only the controls differ.
    assert ("s/dense-seed1/ladder/step-000800", "node") in analysed and len(analysed) == 2 * (6 + 6)
    everything = sweep_module.sweep_stages(runs, PRESETS["paper"].analyses(), "all")
    assert all(a.controls for kind, _, _, a in everything if kind == "analyze")
    with pytest.raises(ValueError, match="controls='some' is not allowed: expected one of all, first_seed"):
        runs[0].analysis_plan(PRESETS["paper"].analyses(), "some")
