"""A run that crashes and resumes from its last checkpoint ends bit-identical to one that never stopped.

In-process: the crash is an exception raised from ``training_step`` at a chosen step (the subprocess tests in
test_reliability.py use a real SIGKILL). Runs use one torch thread: the reference and the resumed run must reduce
in the same order to be bit-identical, and the test machine has 2 shared cores.
"""

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glassformer.archs import ModelConfig, presets
from glassformer.training import module as module_lib
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig
from glassformer.training.train import fit

DATA = DataConfig(max_bytes=300_000)
OPTIM = OptimConfig(warmup_steps=4)
# Checkpoints every 4 steps; a crash at step 6 resumes from step 4, before the middle of the 16-step "epoch":
# that is where a loader that restarts its epoch would repeat batches (the old data module did).
TRAINER = TrainerConfig(max_steps=16, batch_size=8, val_every=6, val_batches=2, log_every=4, checkpoint_every=4,
                        progress_bar=False, seed=3)
CRASH_AT = 6
DEAD_WINDOW = 2 * TRAINER.batch_size * 64  # tokens: two steps of the debug preset (n_ctx 64)


class Crash(RuntimeError):
    pass


@pytest.fixture
def recorded(monkeypatch):
    """Patches training_step to record (global_step, batch digest), to crash on demand, and to draw from the
    global torch RNG the way dropout would (so a resume that lost the RNG state changes the weights)."""
    plan = {"crash_at": None, "seen": []}
    original = module_lib.LanguageModel.training_step

    def training_step(self, batch, batch_idx):
        if plan["crash_at"] is not None and self.global_step == plan["crash_at"]:
            raise Crash(f"simulated crash at step {self.global_step}")
        plan["seen"].append((int(self.global_step), hashlib.sha1(batch.numpy().tobytes()).hexdigest()))
        loss = original(self, batch, batch_idx)
        return loss * (1 + 0.1 * torch.rand(()))

    monkeypatch.setattr(module_lib.LanguageModel, "training_step", training_step)
    return plan


def crash_and_resume(plan, model_cfg: ModelConfig, out: Path) -> list[tuple[int, str]]:
    """Run to CRASH_AT, crash, resume from last.ckpt; return the batches of the resumed part."""
    plan["crash_at"], plan["seen"] = CRASH_AT, []
    with pytest.raises(Crash):
        fit(model_cfg, DATA, OPTIM, TRAINER, out)
    before = list(plan["seen"])
    assert [s for s, _ in before] == list(range(CRASH_AT))
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4, "the crash must come after a checkpoint and between two of them"
    plan["crash_at"], plan["seen"] = None, []
    fit(model_cfg, DATA, OPTIM, TRAINER, out, resume=True)
    return list(plan["seen"])


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs by {(wa[name] - wb[name]).abs().max():.3g}"


def test_resume_continues_the_data_stream_and_the_rng_exactly(tmp_path, recorded, one_thread):
    fit(presets.get("debug"), DATA, OPTIM, TRAINER, tmp_path / "straight")
    straight = list(recorded["seen"])
    assert [s for s, _ in straight] == list(range(TRAINER.max_steps))

    resumed = crash_and_resume(recorded, presets.get("debug"), tmp_path / "resumed")
    # Lightning resumes mid-epoch at global_step 4: batches 4..15 once each, none repeated, none skipped.
    assert [s for s, _ in resumed] == list(range(4, TRAINER.max_steps))
    assert resumed == straight[4:]
    assert len({digest for _, digest in straight}) == TRAINER.max_steps
    # The patched step draws from the torch RNG every step, so equal weights also mean the RNG state resumed.
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")


def sparse_transcoder() -> ModelConfig:
    """Debug shape with a TopK transcoder whose latents die after two steps of silence (two, so that the tracker's
    history matters, not just the last step), and weight sparsity annealing over the first half of the run with
    learning-rate scaling: every piece of state a resume needs."""
    d = presets.get("debug").to_dict()
    d["mlp"] = {"kind": "transcoder", "activation": "topk", "k": 8, "expansion_factor": 4,
                "dead_window_tokens": DEAD_WINDOW}
    d["weight_sparsity"] = {"fraction": 0.5, "embed_fraction": 0.75, "bias_fraction": 0.75, "anneal_start": 0.0,
                            "anneal_end": 0.5, "min_per_neuron": 2, "lr_scaling": True}
    return ModelConfig.from_dict(d)


def test_resume_restores_dead_latent_trackers_and_the_weight_sparsity_schedule(tmp_path, recorded, one_thread):
    cfg = sparse_transcoder()
    fit(cfg, DATA, OPTIM, TRAINER, tmp_path / "straight")
    crash_and_resume(recorded, cfg, tmp_path / "resumed")
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")

    final = {name: torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
             for name in ("straight", "resumed")}
    trackers = {name: ck["glassformer"]["trackers"] for name, ck in final.items()}
    assert set(trackers["straight"]) == {"blocks.0.mlp.tracker", "blocks.1.mlp.tracker"}
    for name, state in trackers["straight"].items():
        assert state["tokens_seen"] == TRAINER.max_steps * TRAINER.batch_size * cfg.n_ctx
        assert torch.equal(state["tokens_since_fired"], trackers["resumed"][name]["tokens_since_fired"])
    # Some latents died, so the AuxK loss acted on the weights the two runs share.
    dead = trackers["straight"]["blocks.0.mlp.tracker"]["tokens_since_fired"] >= DEAD_WINDOW
    assert dead.any()
    assert final["straight"]["glassformer"]["lr_scale"] == final["resumed"]["glassformer"]["lr_scale"] == 1.0
    for name in ("straight", "resumed"):
        assert final[name]["global_step"] == TRAINER.max_steps


def test_a_resume_between_two_selections_reapplies_the_checkpointed_masks(tmp_path, recorded, one_thread):
    # Selections every 3 steps: at 3 and 6. The checkpoint at step 4 lies between them, so the resumed run must
    # re-apply step 3's masks until step 6; selecting anew at step 4 would prune other entries.
    d = presets.get("debug").to_dict()
    d["weight_sparsity"] = {"fraction": 0.3, "anneal_start": 0.0, "anneal_end": 0.25, "refresh_every": 3}
    cfg = ModelConfig.from_dict(d)
    fit(cfg, DATA, OPTIM, TRAINER, tmp_path / "straight")
    crash_and_resume(recorded, cfg, tmp_path / "resumed")
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_resuming_with_another_model_config_names_the_fields(tmp_path, recorded, one_thread):
    recorded["crash_at"] = CRASH_AT
    with pytest.raises(Crash):
        fit(presets.get("debug"), DATA, OPTIM, TRAINER, tmp_path / "run")
    wider = ModelConfig.from_dict({**presets.get("debug").to_dict(), "d_mlp": 128})
    recorded["crash_at"] = None
    with pytest.raises(ValueError, match=r"model\.d_mlp: checkpoint 256, this run 128"):
        fit(wider, DATA, OPTIM, TRAINER, tmp_path / "run", resume=True)
