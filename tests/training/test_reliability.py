"""A real `glassformer train` process survives SIGKILL, SIGTERM and Ctrl-C; writes are atomic; divergence stops.

The subprocess runs use the debug preset on a 300 kB slice of the default corpus, 16 steps of 8 windows with a
checkpoint every 4 steps, and one torch thread (``OMP_NUM_THREADS=1``): the reference run and the resumed run
must reduce in the same order to be bit-identical, and the test machine has 2 shared cores.
"""

import math
import os
import random
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glassformer.training import module as module_lib
from glassformer.training.cli import main
from glassformer.training.guards import AtomicCheckpointIO, TrainingDiverged, nonfinite_tensors

ROOT = Path(__file__).resolve().parents[2]
STEPS, EVERY = 16, 4
TIMEOUT = 300  # seconds for any one subprocess: generous, for a loaded machine; never an assertion on speed


def train_argv(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "glassformer.training.cli", "train", "--config", str(ROOT / "configs" / "debug.yaml"),
            "--out", str(out), "--data.max_bytes", "300000", "--trainer.max_steps", str(STEPS),
            "--trainer.batch_size", "8", "--trainer.checkpoint_every", str(EVERY), "--trainer.val_every", "8",
            "--trainer.val_batches", "2", "--trainer.log_every", "4", "--trainer.progress_bar", "false",
            "--optim.warmup_steps", "4", *extra]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training exited ({proc.returncode}) before writing {path}:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {TIMEOUT} s")
        time.sleep(0.005)


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs by {(wa[name] - wb[name]).abs().max():.3g}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, started once and shared; `reference()` waits for it and returns its folder."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = start(train_argv(out), out.parent)
    done: list[Path] = []

    def wait() -> Path:
        if not done:
            code, _, err = finish(proc)
            assert code == 0, err[-3000:]
            done.append(out)
        return done[0]

    yield wait
    if proc.poll() is None:
        proc.kill()


def test_sigkill_at_a_random_step_then_resume_gives_bit_identical_weights(tmp_path, reference):
    rng = random.Random()
    after_checkpoint = rng.choice([EVERY, 2 * EVERY])
    delay = rng.uniform(0.0, 0.25)
    why = f"(killed {delay:.3f} s after step{after_checkpoint}.ckpt appeared)"
    out = tmp_path / "run"
    proc = start(train_argv(out), tmp_path)
    wait_for(out / "checkpoints" / f"step{after_checkpoint}.ckpt", proc)
    wait_for(out / "checkpoints" / "last.ckpt", proc)  # written just after the first step4.ckpt
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    code, _, err = finish(proc)
    assert code == -signal.SIGKILL, f"the run ended on its own before the kill {why}: {err[-2000:]}"
    assert not (out / "model.safetensors").exists()
    # last.ckpt is written just after step{N}.ckpt, so a kill between the two resumes from the checkpoint before.
    resumed_from = checkpoint_step(out / "checkpoints" / "last.ckpt")
    assert after_checkpoint - EVERY <= resumed_from < STEPS and resumed_from >= EVERY, why

    code, _, err = finish(start(train_argv(out, "--resume", "true"), tmp_path))
    assert code == 0, err[-3000:]
    assert f"Restored all states from the checkpoint at {out / 'checkpoints' / 'last.ckpt'}" in err
    assert_same_weights(reference(), out)


def stop_with(signum: int, out: Path) -> tuple[subprocess.Popen, int]:
    proc = start(train_argv(out), out.parent)
    wait_for(out / "checkpoints" / f"step{EVERY}.ckpt", proc)
    proc.send_signal(signum)
    return proc, signum


def check_stopped(proc: subprocess.Popen, signum: int, out: Path) -> str:
    """Asserts a clean stop after a checkpoint of the last step; returns the printed resume command."""
    code, _, err = finish(proc)
    assert code == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    stopped = [line for line in err.splitlines() if f"training stopped by {name} after step" in line]
    assert stopped, err[-3000:]
    step = int(stopped[0].split("after step ")[1].split(";")[0])
    assert EVERY <= step < STEPS
    assert stopped[0].endswith(f"{out / 'checkpoints' / 'last.ckpt'} holds step {step}")
    assert checkpoint_step(out / "checkpoints" / "last.ckpt") == step
    assert not (out / "model.safetensors").exists()
    command = err.strip().splitlines()[-1].strip()
    assert command.endswith("--resume true") and f"--out {out}" in command
    return command


def test_sigterm_and_ctrl_c_write_a_checkpoint_exit_cleanly_and_print_the_resume_command(tmp_path):
    # Both runs at once: each waits for its own first checkpoint before its signal.
    runs = {signum: stop_with(signum, tmp_path / signal.Signals(signum).name)
            for signum in (signal.SIGTERM, signal.SIGINT)}
    for signum, (proc, _) in runs.items():
        check_stopped(proc, signum, tmp_path / signal.Signals(signum).name)


@pytest.mark.slow
def test_the_printed_resume_command_after_sigterm_gives_bit_identical_weights(tmp_path, reference):
    out = tmp_path / "run"
    command = check_stopped(*stop_with(signal.SIGTERM, out), out)
    code, _, err = finish(start(shlex.split(command), tmp_path))
    assert code == 0, err[-3000:]
    assert_same_weights(reference(), out)


# --- atomic writes ------------------------------------------------------------------------------------------------

WRITER = textwrap.dedent('''
    import sys, time, torch
    from pathlib import Path
    from glassformer.training.guards import AtomicCheckpointIO

    path, good = Path(sys.argv[1]), {"global_step": 1, "state_dict": {"w": torch.full((1000,), 1.0)}}
    io = AtomicCheckpointIO()
    io.save_checkpoint(good, path)
    real_save = torch.save

    def half_then_hang(obj, f):
        # The real serialisation, cut in half and left hanging: a writer caught mid-write.
        import io as _io
        buf = _io.BytesIO(); real_save(obj, buf); data = buf.getvalue()
        f.write(data[: len(data) // 2]); f.flush()
        print("HALF-WRITTEN", flush=True)
        time.sleep(600)

    torch.save = half_then_hang
    io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.full((4_000_000,), 2.0)}}, path)
''')

MODEL_WRITER = textwrap.dedent('''
    import sys, time, torch, safetensors.torch as st
    from glassformer.archs import build_model, model_dir, presets, save_model_dir

    torch.manual_seed(0)
    save_model_dir(sys.argv[1], build_model(presets.get("debug")))

    def half_then_hang(model, filename, metadata=None):
        data = st.save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata=metadata)
        with open(filename, "wb") as f:
            f.write(data[: len(data) // 2]); f.flush()
        print("HALF-WRITTEN", flush=True)
        time.sleep(600)

    model_dir.save_model = half_then_hang  # the writer's own reference to safetensors' save_model
    torch.manual_seed(1)
    save_model_dir(sys.argv[1], build_model(presets.get("debug")))
''')


def kill_when_half_written(script: str, target: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "HALF-WRITTEN", proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


def test_a_checkpoint_writer_killed_mid_write_leaves_the_previous_file_intact(tmp_path):
    from glassformer.training.guards import remove_stale_temporaries

    path = tmp_path / "checkpoints" / "last.ckpt"
    kill_when_half_written(WRITER, path)
    leftovers = list(path.parent.glob(".last.ckpt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the kill really came mid-write
    ckpt = AtomicCheckpointIO().load_checkpoint(path)
    assert ckpt["global_step"] == 1 and torch.equal(ckpt["state_dict"]["w"], torch.full((1000,), 1.0))
    assert remove_stale_temporaries(path.parent) == leftovers and path.exists()


def test_a_model_directory_writer_killed_mid_write_leaves_the_previous_model_loadable(tmp_path):
    from glassformer.archs import build_model, load_model_dir, presets

    kill_when_half_written(MODEL_WRITER, tmp_path / "model")
    assert list((tmp_path / "model").glob(".model.safetensors.*.tmp"))
    torch.manual_seed(0)
    expected = build_model(presets.get("debug")).state_dict()
    loaded = load_model_dir(tmp_path / "model").state_dict()
    for name, value in expected.items():
        assert torch.equal(loaded[name], value), name


@pytest.mark.slow
def test_writes_killed_at_random_moments_always_leave_a_complete_checkpoint(tmp_path):
    """Unpatched: a writer rewrites a 16 MB checkpoint in a loop, alternating its contents, and is killed at a
    random moment; whatever the moment, the file holds one whole version."""
    script = textwrap.dedent('''
        import sys, torch
        from glassformer.training.guards import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        for i in range(10_000):
            io.save_checkpoint({"global_step": i, "state_dict": {"w": torch.full((4_000_000,), float(i))}}, sys.argv[1])
            if i == 0:
                print("FIRST", flush=True)
    ''')
    path = tmp_path / "last.ckpt"
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script, str(path)], env=child_env(), stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "FIRST"
        time.sleep(random.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=TIMEOUT)
        ckpt = AtomicCheckpointIO().load_checkpoint(path)
        assert torch.equal(ckpt["state_dict"]["w"], torch.full((4_000_000,), float(ckpt["global_step"])))


# --- divergence ---------------------------------------------------------------------------------------------------

DEBUG_FLAGS = ["--config", str(ROOT / "configs" / "debug.yaml"), "--data.max_bytes", "300000",
               "--trainer.max_steps", "12", "--trainer.batch_size", "8", "--trainer.checkpoint_every", "4",
               "--trainer.val_every", "100", "--trainer.val_batches", "1", "--trainer.progress_bar", "false",
               "--optim.warmup_steps", "2"]
BAD_STEP = 6  # global_step when the bad value appears: the 7th step, after the step-4 checkpoint


def assert_only_good_checkpoints(out: Path) -> None:
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step4.ckpt"], names
    for name in names:
        ckpt = torch.load(out / "checkpoints" / name, weights_only=True)
        assert ckpt["global_step"] == 4
        assert nonfinite_tensors({"w": ckpt["state_dict"], "o": ckpt["optimizer_states"]}) == []
    assert not (out / "model.safetensors").exists()


def test_a_nan_loss_stops_the_cli_naming_step_quantity_and_last_good_checkpoint(tmp_path, monkeypatch, capsys,
                                                                                 one_thread):
    original = module_lib.LanguageModel.training_step

    def nan_at_step(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == BAD_STEP else loss

    monkeypatch.setattr(module_lib.LanguageModel, "training_step", nan_at_step)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", *DEBUG_FLAGS, "--out", str(out)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"training diverged at step {BAD_STEP + 1}: the loss is nan" in err
    assert f"the last good checkpoint is {out / 'checkpoints' / 'last.ckpt'} (step 4)" in err
    assert_only_good_checkpoints(out)


def test_an_infinite_gradient_stops_fit_before_the_update(tmp_path, monkeypatch, one_thread):
    from glassformer.archs import presets
    from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig
    from glassformer.training.train import fit

    def poison(self):
        if self.global_step == BAD_STEP:
            self.model.blocks[1].mlp.W_out.weight.grad[0, 0] = float("inf")

    monkeypatch.setattr(module_lib.LanguageModel, "on_after_backward", poison, raising=False)
    out = tmp_path / "run"
    trainer = TrainerConfig(max_steps=12, batch_size=8, checkpoint_every=4, val_every=100, val_batches=1,
                            progress_bar=False)
    sigint_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingDiverged) as e:
        fit(presets.get("debug"), DataConfig(max_bytes=300_000), OptimConfig(warmup_steps=2), trainer, out)
    assert signal.getsignal(signal.SIGINT) is sigint_before  # fit's Ctrl-C handler is gone after the failure
    assert e.value.step == BAD_STEP + 1
    assert "the gradient norm is inf" in e.value.quantity and "blocks.1.mlp" in e.value.quantity
    assert e.value.checkpoint == out / "checkpoints" / "last.ckpt"
    assert_only_good_checkpoints(out)


def test_the_checkpoint_writer_refuses_nan_weights_and_keeps_the_good_file(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(3)}}, path)
    with pytest.raises(TrainingDiverged, match=r"non-finite values in state_dict\.w"):
        io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.tensor([1.0, math.nan, 0.0])}}, path)
    assert io.load_checkpoint(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
