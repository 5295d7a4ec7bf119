"""Hostile inputs through the command line: never a traceback, always an error that names what was wrong.

Extends tests/archs/test_model_dir.py (which checks ``load_model_dir`` itself) to the CLI: bad flags and configs,
truncated or corrupt model directories and checkpoints, and folders that carry code which must never run.
"""

import json
import logging
import pickle
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glassformer.training.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEBUG_YAML = str(ROOT / "configs" / "debug.yaml")
N_FLAG_CASES = 60  # hypothesis examples of a bad flag (each a full parse; 0.1-0.3 s)


@pytest.fixture(autouse=True)
def _quiet_stale_log_handlers(monkeypatch):
    """Log handlers (Lightning's own) keep the stderr of whichever test created
    them, closed by the time a later test logs; logging then prints a "Logging error" traceback that belongs to
    pytest's stream swapping, not to the CLI. The subprocess test checks the real console script."""
    monkeypatch.setattr(logging, "raiseExceptions", False)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """``main(argv)`` → (exit status, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return e.value.code, capsys.readouterr().err


# --- invalid configs and flags ------------------------------------------------------------------------------------

NOT_A_NUMBER = st.sampled_from(["abc", "", "1,5", "0x", "[]", "{}", "ten", "1..2", "--"])
NON_POSITIVE = st.integers(max_value=0).map(str)
NEGATIVE = st.integers(max_value=-1).map(str)
FRACTIONAL = st.floats(min_value=0.01, max_value=1e6, allow_nan=False).filter(lambda x: x != int(x)).map(repr)
NOT_POSITIVE_FLOAT = st.one_of(st.floats(max_value=0.0), st.just("nan"), NOT_A_NUMBER).map(str)
NOT_BOOL = st.sampled_from(["maybe", "2", "tru", "nope", "[]", "{}", "-1", "yess"])
# A prefix no Lightning precision, accelerator, strategy or device count starts with.
NOT_A_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", max_size=12).map(lambda t: "zz" + t)

POSITIVE_INT = st.one_of(NON_POSITIVE, NOT_A_NUMBER, FRACTIONAL)
NON_NEGATIVE_INT = st.one_of(NEGATIVE, NOT_A_NUMBER, FRACTIONAL)

BAD_FLAGS: dict[str, st.SearchStrategy[str]] = {
    **{f"model.{f}": POSITIVE_INT for f in ("d_vocab", "n_ctx", "d_model", "n_layers", "n_heads")},
    "model.d_mlp": POSITIVE_INT,
    "model.norm": NOT_A_NAME,
    "model.positional": NOT_A_NAME,
    "model.kernels": NOT_A_NAME,
    "model.init_std": NOT_POSITIVE_FLOAT,
    "model.attn_only": NOT_BOOL,
    "model.mlp": st.one_of(NOT_A_NAME.map(lambda k: json.dumps({"kind": k})),
                           NON_POSITIVE.map(lambda k: json.dumps({"kind": "transcoder", "k": int(k)}))),
    **{f"trainer.{f}": POSITIVE_INT for f in ("max_steps", "batch_size", "val_every", "val_batches", "log_every",
                                              "checkpoint_every")},
    "trainer.seed": NON_NEGATIVE_INT,
    "trainer.num_workers": NON_NEGATIVE_INT,
    "trainer.precision": NOT_A_NAME,
    "trainer.accelerator": NOT_A_NAME,
    "trainer.strategy": NOT_A_NAME,
    "trainer.devices": NOT_A_NAME,
    "trainer.loggers": NOT_A_NAME.map(lambda name: json.dumps([name])),
    "trainer.progress_bar": NOT_BOOL,
    "optim.lr": NOT_POSITIVE_FLOAT,
    "optim.eps": NOT_POSITIVE_FLOAT,
    "optim.weight_decay": st.one_of(st.floats(max_value=-1e-9).map(str), NOT_A_NUMBER),
    "optim.warmup_steps": NON_NEGATIVE_INT,
    "optim.schedule": NOT_A_NAME,
    "optim.min_lr_ratio": st.one_of(st.floats(min_value=1.0001, allow_infinity=False).map(str),
                                    st.floats(max_value=-1e-9, allow_infinity=False).map(str)),
    "optim.grad_clip": NOT_POSITIVE_FLOAT,
    "optim.betas": st.sampled_from(["[0.9]", "[0.9, 1.5]", "[-0.1, 0.9]", "abc", "[0.9, 0.95, 0.99]"]),
    "data.source": NOT_A_NAME,
    "data.val_fraction": st.one_of(st.floats(min_value=1.0).map(str), st.floats(max_value=0.0).map(str)),
    "data.max_bytes": st.one_of(NON_POSITIVE, NOT_A_NUMBER, st.integers(1, 4000).map(str)),
    "data.num_proc": POSITIVE_INT,
    "data.paths": NOT_A_NAME.map(lambda p: json.dumps([f"/nonexistent/{p}/*.py"])),
    "resume": NOT_BOOL,
}


@st.composite
def bad_flag(draw):
    field = draw(st.sampled_from(sorted(BAD_FLAGS)))
    value = draw(BAD_FLAGS[field])
    extra = ["--data.source", "files"] if field == "data.paths" else []
    return field, [*extra, f"--{field}", value]


@settings(max_examples=N_FLAG_CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bad_flag())
def test_invalid_flags_are_refused_naming_the_field_never_with_a_traceback(case, tmp_path, capsys):
    """Tries N_FLAG_CASES (field, invalid value) pairs over every config section and the resume flag."""
    field, flags = case
    out = tmp_path / "never"
    code, err = run_cli(capsys, "train", "--config", DEBUG_YAML, "--out", str(out), *flags)
    assert code == 2, (flags, err[-2000:])
    assert "Traceback" not in err
    assert field in err, (flags, err[-2000:])
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("flags, named", [
    (["--no_such_flag", "1"], "--no_such_flag"),
    (["--trainer.no_such_field", "1"], "trainer.no_such_field"),
    (["--model", "[1, 2]"], "model"),
])
def test_unknown_flags_are_named(flags, named, tmp_path, capsys):
    code, err = run_cli(capsys, "train", "--config", DEBUG_YAML, "--out", str(tmp_path / "x"), *flags)
    assert code == 2 and named in err and "Traceback" not in err


def test_out_and_cache_dir_that_are_files_are_named(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    for flags, named in ((["--out", str(a_file)], "out="), (["--data.cache_dir", str(a_file)], "data.cache_dir")):
        code, err = run_cli(capsys, "train", "--config", DEBUG_YAML, "--out", str(tmp_path / "run"), *flags)
        assert code == 2 and named in err and "Traceback" not in err, err[-2000:]


# --- truncated and corrupted model directories ----------------------------------------------------------------

@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    """A complete debug-preset model directory whose tokenizer and corpus are the cached 300 kB stdlib slice."""
    from glassformer.archs import build_model, presets, save_model_dir
    from glassformer.training.config import DataConfig
    from glassformer.training.corpus import prepare_data

    data = DataConfig(max_bytes=300_000)
    prepared = prepare_data(data, 512)
    path = tmp_path_factory.mktemp("models") / "good"
    save_model_dir(path, build_model(presets.get("debug")), tokenizer_json=prepared.tokenizer.to_str(),
                   training={"config": {"data": asdict(data)}})
    return path


def copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def corrupt_header(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[:8] + b"{garbage" + data[16:])


CORRUPTIONS = {
    "missing config.json": ("config.json", lambda p: p.unlink()),
    "missing weights": ("model.safetensors", lambda p: p.unlink()),
    "missing tokenizer": ("tokenizer.json", lambda p: p.unlink()),
    "config.json bad JSON": ("config.json", lambda p: p.write_text('{"d_model": 64,')),
    "config.json not an object": ("config.json", lambda p: p.write_text("[1, 2, 3]")),
    "config.json bad value": ("config.json", lambda p: p.write_text(
        json.dumps({**json.loads(p.read_text()), "n_heads": "four"}))),
    "config.json unknown field": ("config.json", lambda p: p.write_text(
        json.dumps({**json.loads(p.read_text()), "flux_capacitor": 1}))),
    "wrong tensor shape": ("config.json", lambda p: p.write_text(
        json.dumps({**json.loads(p.read_text()), "d_mlp": 128}))),
    "corrupt safetensors header": ("model.safetensors", corrupt_header),
    "truncated safetensors": ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "empty safetensors": ("model.safetensors", lambda p: p.write_bytes(b"")),
    "tokenizer garbage": ("tokenizer.json", lambda p: p.write_text("<html>not a tokenizer</html>")),
    "training.json bad JSON": ("training.json", lambda p: p.write_text("{")),
    "training.json bad data config": ("training.json", lambda p: p.write_text(
        json.dumps({"config": {"data": {"source": "python-stdlib", "warp_drive": True}}}))),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
@pytest.mark.parametrize("command", ["eval", "generate"])
def test_a_broken_model_directory_exits_2_naming_the_file(case, command, good_dir, tmp_path, capsys):
    name, damage = CORRUPTIONS[case]
    if command == "generate" and name == "training.json":
        pytest.skip("generate does not read training.json")
    bad = copy_dir(good_dir, tmp_path / "bad")
    damage(bad / name)
    code, err = run_cli(capsys, command, str(bad), *(["--batches", "1"] if command == "eval" else []))
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    assert name in err, err[-2000:]


def test_the_console_script_exits_2_on_a_broken_model_directory(good_dir, tmp_path):
    bad = copy_dir(good_dir, tmp_path / "bad")
    corrupt_header(bad / "model.safetensors")
    exe = Path(sys.executable).with_name("glassformer")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "glassformer.training.cli"]
    proc = subprocess.run([*argv, "eval", str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.safetensors" in proc.stderr and "Traceback" not in proc.stderr


def test_the_intact_directory_evaluates(good_dir, capsys):
    """The control for the corruption tests: the same directory, undamaged, works."""
    main(["eval", str(good_dir), "--batches", "1", "--batch_size", "2"])
    assert "perplexity" in capsys.readouterr().out


# --- loading never executes code from a directory ----------------------------------------------------------------

class _Trap:
    """Unpickling this runs ``Path(marker).touch()``: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant_traps(folder: Path, marker: Path) -> None:
    trap = pickle.dumps(_Trap(marker))
    for name in ("pytorch_model.bin", "model.pt", "model.pkl"):
        (folder / name).write_bytes(trap)
    for name in ("__init__.py", "modeling.py", "sitecustomize.py"):
        (folder / name).write_text(f"open({str(marker)!r}, 'w').close()\n")


def test_loading_a_model_directory_never_runs_code_from_it(good_dir, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    trapped = copy_dir(good_dir, tmp_path / "trapped")
    plant_traps(trapped, marker)
    main(["eval", str(trapped), "--batches", "1", "--batch_size", "2"])
    main(["generate", str(trapped), "--prompt", "def f(", "--max_new_tokens", "3"])
    (trapped / "model.safetensors").unlink()
    code, err = run_cli(capsys, "eval", str(trapped))
    assert code == 2 and "pickle files are never loaded" in err
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Trap(marker)))  # the control: the trap does fire when unpickled
    assert marker.exists()


def test_resuming_from_a_booby_trapped_or_corrupt_checkpoint_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    flags = ["train", "--config", DEBUG_YAML, "--out", str(out), "--data.max_bytes", "300000", "--resume", "true",
             "--trainer.progress_bar", "false"]
    (out / "checkpoints" / "last.ckpt").write_bytes(pickle.dumps({"state_dict": _Trap(marker)}))
    code, err = run_cli(capsys, *flags)
    assert code == 2 and "last.ckpt is not a readable checkpoint" in err and "Traceback" not in err
    assert not marker.exists()
    (out / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 truncated zip")
    code, err = run_cli(capsys, *flags)
    assert code == 2 and "last.ckpt is not a readable checkpoint" in err and "Traceback" not in err
    (out / "checkpoints" / "last.ckpt").unlink()
    code, err = run_cli(capsys, *flags)
    assert code == 2 and "last.ckpt does not exist" in err


def test_the_library_names_an_unknown_field_of_the_recorded_data_config(good_dir, tmp_path):
    from glassformer.archs.config import ConfigError
    from glassformer.training.evaluate import recorded_data_config

    bad = copy_dir(good_dir, tmp_path / "bad")
    CORRUPTIONS["training.json bad data config"][1](bad / "training.json")
    with pytest.raises(ConfigError, match=r"config\.data\.warp_drive"):
        recorded_data_config(bad)
    assert recorded_data_config(good_dir).max_bytes == 300_000
