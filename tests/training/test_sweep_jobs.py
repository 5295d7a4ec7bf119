"""`glassformer sweep --jobs N`: worker processes train the same models a sequential sweep trains, bit for bit, and
a failure in one worker reaches the caller while the models that finished are kept.

The micro configs of test_sweep.py (6 steps a model); no analyses, so only training crosses the process boundary.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from test_sweep import DATA, write_configs

from glassformer.training.orchestrate import sweep as sweep_module
from glassformer.training.orchestrate.sweep import PRESETS, SweepPreset, plan
from glassformer.training.orchestrate.workers import by_cost, model_cost, run_parallel


@pytest.fixture
def micro_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "micro", SweepPreset(description="test", variants=None))
    configs = write_configs(tmp_path / "configs")
    return plan("micro", None, tmp_path / "out", configs=configs, data=DATA)


def test_workers_train_what_a_sequential_sweep_trains(micro_runs, tmp_path):
    seconds = run_parallel(micro_runs, [], jobs=2, threads=1)
    assert sorted(seconds) == ["dense", "transcoder"]
    torch.set_num_threads(1)
    for run in micro_runs:
        alone = replace(run, out=tmp_path / "alone" / run.name)
        sweep_module._train(alone, progress=False)
        ours, theirs = load_file(run.out / "model.safetensors"), load_file(alone.out / "model.safetensors")
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert torch.equal(ours[name], theirs[name]), f"{run.name}: {name} differs"


def test_a_failing_model_is_raised_and_the_others_are_kept(micro_runs):
    broken = replace(micro_runs[1], out=micro_runs[1].out)
    broken.out.parent.mkdir(parents=True, exist_ok=True)
    broken.out.write_text("not a folder")  # training cannot write its model directory here
    with pytest.raises(Exception, match="transcoder"):
        run_parallel([micro_runs[0], broken], [], jobs=2, threads=1)
    assert (micro_runs[0].out / "training.json").is_file()


def test_the_dearest_model_is_taken_first(micro_runs):
    dense, transcoder = micro_runs
    wider = replace(dense, name="wide", model=replace(dense.model, d_model=64))
    assert model_cost(wider) > model_cost(dense)
    assert [r.name for r in by_cost([dense, wider, transcoder])][0] == "wide"


def test_jobs_must_be_a_positive_integer(micro_runs, tmp_path):
    from glassformer.archs.config import ConfigError

    with pytest.raises(ConfigError, match="jobs=0 is not allowed: expected a positive integer"):
        sweep_module.run_sweep("micro", None, tmp_path / "s", jobs=0)
    assert not (tmp_path / "s").exists()


def test_the_corpus_is_prepared_once_before_the_workers_and_not_for_finished_models(micro_runs, monkeypatch):
    from glassformer.training import corpus
    from glassformer.training.orchestrate.workers import prepare_corpora

    calls = []
    real = corpus.prepare_data
    monkeypatch.setattr(corpus, "prepare_data", lambda cfg, vocab, **kw: calls.append(vocab) or real(cfg, vocab, **kw))
    assert prepare_corpora(micro_runs) == 1 and calls == [512]  # two models, one corpus and vocabulary
    for run in micro_runs:
        run.out.mkdir(parents=True)
        (run.out / "training.json").write_text("{}")  # finished
    assert prepare_corpora(micro_runs) == 0 and calls == [512]
