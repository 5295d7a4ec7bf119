"""`glassformer sweep`: variants come from configs/, presets keep each variant's matching to the dense baseline,
and a rerun reuses finished models, resumes interrupted ones and refuses ones trained otherwise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from glassformer.analysis import AnalysisConfig
from glassformer.archs.config import ConfigError
from glassformer.training.config import DataConfig
from glassformer.training.orchestrate import sweep as sweep_module
from glassformer.training.orchestrate.sweep import PRESETS, SweepPreset, discover_variants, plan, run_sweep

ROOT = Path(__file__).resolve().parents[2]
DATA = DataConfig(max_bytes=300_000)
MICRO = {"d_vocab": 512, "n_ctx": 32, "d_model": 32, "n_layers": 1, "n_heads": 2}
TRAINER = {"max_steps": 6, "batch_size": 4, "val_every": 6, "val_batches": 1, "log_every": 2, "checkpoint_every": 3}


def test_variants_are_the_yaml_files_at_the_baseline_shape():
    found = discover_variants(ROOT / "configs")
    assert found["dense"].name == "tiny.yaml"
    assert set(found) == {"dense", "act_sparsity", "ortho", "solu", "topk", "transcoder", "transcoder_batchtopk",
                          "transcoder_jumprelu", "transcoder_relu", "weight_sparse"}  # not debug, not finetune_*


def test_the_quick_preset_is_the_paper_recipes_at_1200_steps_with_the_sparse_model_at_the_dense_widths():
    runs = {r.name: r for r in plan("quick", None, "out")}
    assert list(runs) == ["dense", "weight_sparse"]
    dense, ws = runs["dense"].model, runs["weight_sparse"].model
    paper = yaml.safe_load((ROOT / "configs" / "paper" / "weight_sparse.yaml").read_text())["model"]
    assert (dense.d_model, dense.mlp_width, dense.n_layers, dense.d_vocab) == (128, 512, 4, 2048)
    assert (ws.d_model, ws.mlp_width) == (128, 512) and paper["d_model"] == 192  # the YAML's widths not taken
    assert ws.weight_sparsity.fraction == paper["weight_sparsity"]["fraction"]
    assert ws.activation_sparsity.fraction == paper["activation_sparsity"]["fraction"]
    for r in runs.values():  # the same data, seed and token budget for all
        assert (r.trainer.max_steps, r.trainer.batch_size, r.trainer.seed) == (1200, 16, 0)
        assert r.data == runs["dense"].data and r.out == Path("out") / r.name
    (analysis,) = PRESETS["quick"].analyses()
    assert (analysis.level, analysis.method) == ("node", "mask")
    assert analysis.tasks == ["quote_close", "bracket_type", "bracket_depth", "indent_after_colon"]


def test_a_width_preset_shrinks_every_variant_the_same_way(monkeypatch):
    monkeypatch.setitem(PRESETS, "half", SweepPreset(description="half", variants=None, width=0.5, n_layers=2,
                                                     n_ctx=64, trainer={"max_steps": 600}))
    runs = {r.name: r for r in plan("half", ["transcoder", "weight_sparse"], "out")}
    dense, tc, ws = runs["dense"].model, runs["transcoder"].model, runs["weight_sparse"].model
    assert (dense.d_model, dense.mlp_width, dense.n_layers, dense.n_ctx) == (64, 256, 2, 64)
    # transcoder.yaml: n_latents = 4 * d_model = the dense d_mlp (same total parameters), k = 32 of 512 latents.
    assert tc.mlp.expansion_factor * tc.d_model == dense.mlp_width and tc.mlp.k == 16
    # The dead-latent window stays the same share of training: 262144 of 1200*16*128 tokens.
    assert tc.mlp.dead_window_tokens == round(262144 * (600 * 16 * 64) / (1200 * 16 * 128))
    # weight_sparse.yaml doubles the tiny widths; halved, they are the tiny widths.
    assert (ws.d_model, ws.mlp_width, ws.weight_sparsity.fraction) == (128, 512, 0.25)


def test_the_standard_preset_trains_the_yaml_files_as_they_are():
    runs = plan("standard", ["weight_sparse"], "out")
    # Three seeds per variant by default; folders named by variant and seed.
    assert [r.name for r in runs] == ["dense-seed0", "dense-seed1", "dense-seed2", "weight_sparse-seed0",
                                      "weight_sparse-seed1", "weight_sparse-seed2"]
    dense, ws = runs[0], runs[3]
    raw = yaml.safe_load((ROOT / "configs" / "weight_sparse.yaml").read_text())
    assert (ws.model.d_model, ws.model.d_mlp, ws.model.n_layers) == (raw["model"]["d_model"], raw["model"]["d_mlp"], 4)
    assert dense.trainer.max_steps == ws.trainer.max_steps == raw["trainer"]["max_steps"]


def test_an_unknown_variant_or_preset_is_refused_naming_the_allowed_ones(tmp_path, capsys):
    with pytest.raises(ValueError, match="variants='nope' is not allowed: expected one of dense, act_sparsity"):
        plan("quick", ["nope"], "out")
    with pytest.raises(ValueError, match="preset='huge' is not allowed: expected one of quick, standard"):
        plan("huge", None, "out")
    from glassformer.training.cli import main

    with pytest.raises(SystemExit) as e:
        main(["sweep", "--variants", "transcoder,nope", "--out", str(tmp_path / "s")])
    assert e.value.code == 2 and "variants='nope'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # refused before anything was written


def write_configs(folder: Path) -> Path:
    folder.mkdir()
    common = {"data": {"source": "python-stdlib"}, "optim": {"lr": 0.003, "warmup_steps": 2}, "trainer": TRAINER}
    (folder / "tiny.yaml").write_text(yaml.safe_dump({"model": {**MICRO, "d_mlp": 64}, **common}))
    tc = {**MICRO, "mlp": {"kind": "transcoder", "activation": "topk", "k": 4, "expansion_factor": 2}}
    (folder / "transcoder.yaml").write_text(yaml.safe_dump({"model": tc, **common}))
    (folder / "debug.yaml").write_text(yaml.safe_dump({"model": {**MICRO, "n_layers": 2}, **common}))
    return folder


class Calls:
    """Stand-ins for the orchestration's analysis and comparison of model directories, recording their calls."""

    def __init__(self):
        self.analyzed: list[str] = []
        self.compared: list[list[str]] = []
        self.baseline: str | None = None

    def analyze(self, model_dir, config, progress=True) -> dict:
        self.analyzed.append(Path(model_dir).name)
        key = f"{config.level}/{config.method}/{config.ablation}"
        run = {"config": config.record(), "settings": {"level": config.level, "method": config.method,
                                                       "ablation": config.ablation}}
        content = {"schema_version": 3, "results": {key: run}, "latest": key, "settings": run["settings"],
                   "tasks": {}, "capability": {}}
        (Path(model_dir) / "analysis.json").write_text(json.dumps(content))
        return content

    def compare(self, dirs, out, config, baseline=None, circuit_task=None, command=None) -> dict:
        self.compared.append([Path(d).name for d in dirs])
        self.baseline = Path(baseline).name
        paths = {k: Path(out) / n for k, n in (("html", "index.html"), ("md", "report.md"), ("json", "report.json"))}
        return {"verdict": {"text": ["(verdict)"]}, "paths": paths}

    def install(self, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(sweep_module, "analyze_model_dir", self.analyze)
        mp.setattr(sweep_module, "compare_models", self.compare)
        mp.setattr(sweep_module, "format_table", lambda result: "(table)")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A micro sweep (dense and transcoder, 6 steps each), run once to the end."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sweep")
    configs = write_configs(root / "configs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "micro", SweepPreset(description="test", variants=None, ladder_every=3,
                                                 analysis=AnalysisConfig(n_pairs=2)))
        calls = Calls()
        calls.install(mp)
        run_sweep("micro", None, root / "out", configs=configs, data=DATA, progress=False)
    # The baseline's ladder (steps 3 and 6) is analysed after the baseline itself, but for the point at the last
    # step: it holds the final model's weights, analysed as the model.
    assert calls.analyzed == ["dense", "step-000003", "transcoder"] and calls.compared == [["dense", "transcoder"]]
    assert (root / "out" / "dense" / "ladder" / "step-000006" / "model.safetensors").is_file()
    assert calls.baseline == "dense"
    return root


@pytest.fixture
def sweep_copy(finished, tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "micro", SweepPreset(description="test", variants=None, ladder_every=3,
                                                      analysis=AnalysisConfig(n_pairs=2)))
    shutil.copytree(finished, tmp_path / "s")
    return tmp_path / "s"


def run(root: Path, calls: Calls) -> None:
    with pytest.MonkeyPatch.context() as mp:
        calls.install(mp)
        run_sweep("micro", None, root / "out", configs=root / "configs", data=DATA, progress=False)


def test_a_rerun_reuses_finished_models_and_analyses(sweep_copy, monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("a finished model was trained again")

    monkeypatch.setattr(sweep_module, "fit", no_fit)
    calls = Calls()
    calls.analyze = no_fit  # analysis.json exists: not analysed again
    run(sweep_copy, calls)
    assert calls.compared == [["dense", "transcoder"]]
    manifest = (sweep_copy / "out" / sweep_module.MANIFEST).read_text()
    assert '"preset": "micro"' in manifest


def test_an_interrupted_model_resumes_from_its_last_checkpoint(sweep_copy, monkeypatch):
    from glassformer.training import train

    real_fit, resumed = train.fit, []

    def spy(model, data, optim, trainer, out, resume=False, **kwargs):
        resumed.append((Path(out).name, resume))
        return real_fit(model, data, optim, trainer, out, resume=resume, **kwargs)

    monkeypatch.setattr(sweep_module, "fit", spy)
    tc = sweep_copy / "out" / "transcoder"
    for name in ("training.json", "model.safetensors", "analysis.json"):  # as if stopped before the end
        (tc / name).unlink()
    assert (tc / "checkpoints" / "last.ckpt").is_file()
    calls = Calls()
    run(sweep_copy, calls)
    assert resumed == [("transcoder", True)]
    assert calls.analyzed == ["transcoder"]
    assert (tc / "training.json").is_file() and (tc / "model.safetensors").is_file()


def test_a_finished_model_trained_with_other_settings_is_refused(sweep_copy, monkeypatch):
    configs = sweep_copy / "configs"
    raw = yaml.safe_load((configs / "tiny.yaml").read_text())
    raw["trainer"]["max_steps"] = 7
    (configs / "tiny.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"out/dense holds a model trained with other settings"):
        run(sweep_copy, Calls())


def test_the_sweep_ends_with_each_loss_beside_the_unigram_entropy_and_a_sample(finished, capsys):
    from glassformer.archs import read_training
    from glassformer.training.cli.sweep import SAMPLE_PROMPT, print_sweep_summary

    print_sweep_summary(finished / "out", max_new_tokens=8)
    lines = capsys.readouterr().out.splitlines()
    for line, name in zip(lines, ["dense", "transcoder"], strict=False):
        final = read_training(finished / "out" / name)["final"]
        assert line.startswith(name)
        assert f"validation loss {final['loss/val']:.4f}" in line
        assert f"unigram entropy of the corpus {final['unigram_entropy']:.4f}" in line
    assert lines[2].startswith("sample from dense")
    assert "\n".join(lines[3:]).startswith(SAMPLE_PROMPT.strip())


def test_the_paper_preset_reads_its_own_configs_folder():
    runs = plan("paper", None, "out")
    assert [r.name for r in runs][::3] == ["dense-seed0", "weight_sparse-seed0", "transcoder-seed0",
                                           "act_sparsity-seed0"]
    assert len(runs) == 12
    folder = ROOT / "configs" / "paper"
    for r in runs:
        raw = yaml.safe_load((folder / f"{r.variant}.yaml").read_text())
        assert r.source == folder / f"{r.variant}.yaml"
        assert (r.model.d_model, r.model.d_vocab) == (raw["model"]["d_model"], 2048)  # the YAML as it is
        assert (r.trainer.max_steps, r.trainer.batch_size) == (2400, 16)
    assert runs[0].trainer.ladder_every == 800 and runs[3].trainer.ladder_every is None
    # --configs still replaces the preset's folder.
    with pytest.raises(ConfigError, match="has no tiny.yaml or dense.yaml"):
        plan("paper", None, "out", configs=ROOT / "docs")


def test_a_sweep_without_a_call_points_to_the_published_comparison():
    from glassformer.training.cli.sweep import PUBLISHED, published_pointer

    none = {"comparisons": [{"call": "not distinguishable"}, {"call": "not distinguishable"}]}
    assert PUBLISHED in published_pointer(none, "quick")
    assert "2 made" in published_pointer(none, "quick")
    for call in ("smaller", "larger"):  # a call was made: the sweep's own verdict stands
        assert published_pointer({"comparisons": [*none["comparisons"], {"call": call}]}, "quick") is None
    assert published_pointer(none, "paper") is None  # the paper sweep is the published one
    assert (ROOT / PUBLISHED).is_file()  # the page it points to is in the repository
