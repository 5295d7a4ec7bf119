"""The checkpoint ladder: complete, loadable model directories at the right steps, each with the validation loss of
its own weights; written whole; a stopped and resumed run ends with the same points, none repeated, none lost.

Micro models (1 layer, d_model 32) for a few steps on one torch thread: each run takes a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from glassformer.archs import ModelConfig, load_model_dir
from glassformer.archs.config import ConfigError
from glassformer.archs.model_dir import publish_model_dir
from glassformer.training import module as module_lib
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig
from glassformer.training.evaluate import evaluate_model_dir
from glassformer.training.ladder import CheckpointLadder, ladder_steps
from glassformer.training.train import fit

ROOT = Path(__file__).resolve().parents[2]
DATA = DataConfig(max_bytes=300_000)
OPTIM = OptimConfig(warmup_steps=2)
MICRO = ModelConfig.from_dict({"d_vocab": 512, "n_ctx": 32, "d_model": 32, "n_layers": 1, "n_heads": 2, "d_mlp": 64})
# A TopK transcoder with 256 latents, one active per token and a dead-latent window of three steps' tokens
# (3 x 4 x 32), so that latents go dead and AuxK acts from step 3: a forward pass that updated the trackers (a
# validation run in training mode) would change which latents count as dead, so what AuxK trains and the weights.
TRANSCODER = ModelConfig.from_dict({**MICRO.to_dict(), "mlp": {"kind": "transcoder", "activation": "topk", "k": 1,
                                                                "expansion_factor": 8, "dead_window_tokens": 384}})


def trainer(**kw) -> TrainerConfig:
    base = {"max_steps": 8, "batch_size": 4, "val_every": 4, "val_batches": 2, "log_every": 2,
            "checkpoint_every": 4, "progress_bar": False, "seed": 5, "ladder_every": 3}
    return TrainerConfig(**{**base, **kw})


def read(path: Path) -> dict:
    return json.loads((path / "training.json").read_text())


def entries(model_dir: Path) -> list[str]:
    """Everything in the ladder folder, hidden temporaries included."""
    return sorted(p.name for p in (model_dir / "ladder").iterdir())


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def laddered(tmp_path_factory):
    """8 steps, a ladder every 3 steps, validation every 4: points at 3 and 6 (measured by the ladder) and 8 (the
    last step, which Lightning validates)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ladder") / "dense"
    fit(MICRO, DATA, OPTIM, trainer(), out, variant="dense")
    return out


def test_ladder_points_are_written_at_each_multiple_and_at_the_last_step(laddered):
    assert entries(laddered) == ["step-000003", "step-000006", "step-000008"]


def test_each_point_is_a_complete_model_directory_that_loads(laddered):
    for step in (3, 6, 8):
        point = laddered / "ladder" / f"step-{step:06d}"
        assert sorted(p.name for p in point.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json",
                                                           "training.json"]
        assert load_model_dir(point).cfg.to_dict() == MICRO.to_dict()
        record = read(point)
        assert (record["step"], record["steps"], record["seed"]) == (step, step, 5)
        assert (record["variant"], record["ladder_of"]) == ("dense", "dense")
        assert record["tokens_seen"] == step * 4 * 32
        assert record["corpus"] == read(laddered)["corpus"]  # analysis reads the corpus from here
        assert record["final"]["unigram_entropy"] == read(laddered)["final"]["unigram_entropy"]
    # The last point is the finished model.
    assert same_weights(laddered / "ladder" / "step-000008", laddered)


def test_each_point_records_the_validation_loss_of_its_own_weights(laddered):
    # Measured again from the saved directory, on the same validation windows (val_batches x batch_size); float32
    # sums in another order agree to about 1e-7.
    for step in (3, 6, 8):
        point = laddered / "ladder" / f"step-{step:06d}"
        again = evaluate_model_dir(point, batches=2, batch_size=4)["loss"]
        assert read(point)["val_loss"] == pytest.approx(again, rel=1e-6)
        assert read(point)["final"]["loss/val"] == read(point)["val_loss"]
    losses = [read(laddered / "ladder" / f"step-{s:06d}")["val_loss"] for s in (3, 6, 8)]
    assert len(set(losses)) == 3  # three different sets of weights


def test_the_model_records_its_seed_variant_and_last_validation_loss(laddered):
    record = read(laddered)
    assert (record["seed"], record["variant"]) == (5, "dense")
    assert record["val_loss"] == record["final"]["loss/val"]
    assert record["val_loss"] == pytest.approx(evaluate_model_dir(laddered, batches=2, batch_size=4)["loss"],
                                               rel=1e-6)
    assert record["ladder"]["every"] == 3 and record["ladder"]["written"] == [3, 6, 8]
    assert set(record["ladder"]["seconds"]) == {"validation", "writing"}


def test_the_ladder_leaves_training_unchanged(tmp_path, one_thread):
    # Its own validation passes run in eval mode without gradients: the transcoder's dead-latent trackers (and
    # so AuxK) see only training batches, and the weights end bit-identical to a run without a ladder.
    fit(TRANSCODER, DATA, OPTIM, trainer(ladder_every=None), tmp_path / "plain")
    fit(TRANSCODER, DATA, OPTIM, trainer(ladder_every=1), tmp_path / "laddered")
    assert not (tmp_path / "plain" / "ladder").exists()
    assert entries(tmp_path / "laddered") == [f"step-{s:06d}" for s in range(1, 9)]
    assert same_weights(tmp_path / "plain", tmp_path / "laddered")


class Crash(RuntimeError):
    pass


@pytest.fixture
def crash_at(monkeypatch):
    """``crash_at["train"] = s`` raises from training_step at global step s (while taking step s + 1);
    ``crash_at["val"] = s`` raises from validation_step during fit at global step s."""
    plan = {"train": None, "val": None}
    train_step, val_step = module_lib.LanguageModel.training_step, module_lib.LanguageModel.validation_step

    def training_step(self, batch, batch_idx):
        if self.global_step == plan["train"]:
            raise Crash(f"simulated crash at step {self.global_step}")
        return train_step(self, batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        if self.trainer.state.fn == "fit" and self.global_step == plan["val"]:
            raise Crash(f"simulated crash while validating step {self.global_step}")
        return val_step(self, batch, batch_idx)

    monkeypatch.setattr(module_lib.LanguageModel, "training_step", training_step)
    monkeypatch.setattr(module_lib.LanguageModel, "validation_step", validation_step)
    return plan


def test_a_resumed_run_neither_repeats_nor_loses_a_point(tmp_path, crash_at, one_thread):
    # Crash while taking step 8 of 12: points 3 and 6 are written, last.ckpt holds step 4, so the resume takes
    # steps 5..12 again and meets step 6 a second time.
    out = tmp_path / "dense"
    crash_at["train"] = 7
    with pytest.raises(Crash):
        fit(MICRO, DATA, OPTIM, trainer(max_steps=12), out, variant="dense")
    assert entries(out) == ["step-000003", "step-000006"]
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    first_six = (out / "ladder" / "step-000006" / "training.json").stat().st_mtime_ns
    crash_at["train"] = None
    fit(MICRO, DATA, OPTIM, trainer(max_steps=12), out, resume=True, variant="dense")
    assert entries(out) == ["step-000003", "step-000006", "step-000009", "step-000012"]
    assert (out / "ladder" / "step-000006" / "training.json").stat().st_mtime_ns == first_six  # kept, not rewritten
    assert [read(out / "ladder" / f"step-{s:06d}")["step"] for s in (3, 6, 9, 12)] == [3, 6, 9, 12]
    assert same_weights(out / "ladder" / "step-000012", out)


def test_a_run_stopped_while_validating_a_ladder_step_writes_that_point_when_resumed(tmp_path, crash_at, one_thread):
    # Ladder and validation every 4 steps: the point of step 4 waits for Lightning's validation, which runs after
    # step 4's checkpoint. A crash in that validation leaves a checkpoint of step 4 and no point; the resume starts
    # from exactly those weights and writes it.
    out = tmp_path / "dense"
    crash_at["val"] = 4
    with pytest.raises(Crash):
        fit(MICRO, DATA, OPTIM, trainer(ladder_every=4), out)
    assert not (out / "ladder").exists() or entries(out) == []
    crash_at["val"] = None
    fit(MICRO, DATA, OPTIM, trainer(ladder_every=4), out, resume=True)
    assert entries(out) == ["step-000004", "step-000008"]
    point = out / "ladder" / "step-000004"
    assert read(point)["val_loss"] == pytest.approx(evaluate_model_dir(point, batches=2, batch_size=4)["loss"],
                                                    rel=1e-6)
    assert read(point)["ladder_of"] == "dense"  # without a variant, the model directory's name


def test_a_run_stopped_while_validating_its_last_step_writes_that_point_when_resumed(tmp_path, crash_at, one_thread):
    # The last step's checkpoint is on disk, so the resume has no step left to train (Lightning skips
    # on_train_start); the point comes from the final validation.
    out = tmp_path / "dense"
    crash_at["val"] = 8
    with pytest.raises(Crash):
        fit(MICRO, DATA, OPTIM, trainer(ladder_every=4), out)
    assert entries(out) == ["step-000004"]
    crash_at["val"] = None
    fit(MICRO, DATA, OPTIM, trainer(ladder_every=4), out, resume=True)
    assert entries(out) == ["step-000004", "step-000008"]
    assert same_weights(out / "ladder" / "step-000008", out)
    assert read(out / "ladder" / "step-000008")["val_loss"] == read(out)["val_loss"]


def test_a_point_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from glassformer.archs import build_model, model_dir

    def fail_after_weights(path, model, *, tokenizer_json=None, training=None):
        (Path(path) / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(model_dir, "save_model_dir", fail_after_weights)
    point = tmp_path / "ladder" / "step-000003"
    with pytest.raises(OSError, match="disk full"):
        publish_model_dir(point, build_model(MICRO), training={"step": 3})
    assert list((tmp_path / "ladder").iterdir()) == []  # neither the point nor its temporary folder
    # A writer killed at that moment (no clean-up runs) leaves only a hidden temporary folder: the point's own
    # path never holds a partial directory.
    monkeypatch.setattr(model_dir, "_remove_tree", lambda path: None)
    with pytest.raises(OSError, match="disk full"):
        publish_model_dir(point, build_model(MICRO), training={"step": 3})
    assert not point.exists()
    assert [p.name.startswith(".step-000003.") and p.name.endswith(".tmp") for p in point.parent.iterdir()] == [True]


def test_a_writer_killed_midway_leaves_a_temporary_folder_that_the_next_run_removes(tmp_path, one_thread):
    stale = tmp_path / "dense" / "ladder" / ".step-000003.x1y2.tmp"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"partial")
    fit(MICRO, DATA, OPTIM, trainer(max_steps=3), tmp_path / "dense")
    assert entries(tmp_path / "dense") == ["step-000003"]


@given(every=st.integers(1, 40), max_steps=st.integers(1, 120))
@settings(max_examples=60, derandomize=True, deadline=None)
def test_the_planned_steps_are_exactly_those_the_callback_writes(every, max_steps):
    planned = ladder_steps(every, max_steps)
    callback = CheckpointLadder(every, "unused")
    assert planned == [s for s in range(max_steps + 1) if callback.is_ladder_step(s, max_steps)]
    assert planned[-1] == max_steps and planned == sorted(set(planned))
    assert all(s % every == 0 for s in planned[:-1])
    assert len(planned) == max_steps // every + (max_steps % every != 0)


@pytest.mark.parametrize("value", [0, -3, True, 2.5, "10"])
def test_a_bad_ladder_interval_is_refused_naming_the_field(value):
    with pytest.raises(ConfigError, match=rf"trainer.ladder_every={value!r} is not allowed: expected a positive "
                                          r"integer \(steps\) or null"):
        TrainerConfig(ladder_every=value)


def test_the_command_line_refuses_a_bad_ladder_interval_before_any_work(tmp_path, capsys):
    from glassformer.training.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(ROOT / "configs" / "debug.yaml"), "--trainer.ladder_every", "0", "--out", str(tmp_path / "m")])
    assert e.value.code == 2 and "trainer.ladder_every=0" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
