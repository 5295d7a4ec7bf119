"""A task written outside the library runs from the command line, following docs/adding-a-task.md literally."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from glassformer.training.cli import build_parser
from glassformer.training.cli.argv import plugin_modules, prepare_argv

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "adding-a-task.md"


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def plugin_folder(tmp_path: Path, monkeypatch) -> Path:
    """The doc's module, written where the doc says: the folder the command runs from. Whatever a test registers
    or imports from it is undone afterwards, so no plugin task leaks into other tests of this process."""
    from glassformer.analysis.tasks import TASKS
    from glassformer.training.cli import plugins

    (module,) = [b for b in doc_blocks("python") if b.startswith("# my_tasks.py")]
    (tmp_path / "my_tasks.py").write_text(module)
    monkeypatch.setattr(TASKS, "_tasks", dict(TASKS._tasks))
    monkeypatch.setattr(plugins, "_loaded", set(plugins._loaded))
    yield tmp_path
    for name in ("my_tasks", "bad_tasks"):
        sys.modules.pop(name, None)


@pytest.fixture
def model_dir(tmp_path: Path, small_model_dir: Path) -> Path:
    """A small model whose training.json names a small slice of the default corpus (cached across tests)."""
    path = tmp_path / "model"
    shutil.copytree(small_model_dir, path)
    data = {"source": "python-stdlib", "max_bytes": 300_000}
    (path / "training.json").write_text(json.dumps({"config": {"data": data}}))
    return path


def test_the_documented_task_runs_from_glassformer_analyze_end_to_end(plugin_folder, model_dir):
    (command,) = [line for b in doc_blocks("bash") for line in b.splitlines()
                  if line.startswith("glassformer analyze")]
    argv = shlex.split(command)[1:]
    argv[argv.index("runs/tiny")] = str(model_dir)
    argv += ["--corpus_windows", "4"]  # a small model and few windows: the test stays quick
    proc = subprocess.run([sys.executable, "-m", "glassformer.training.cli", *argv], cwd=plugin_folder,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^negated_bool\s", proc.stdout, flags=re.M), proc.stdout
    analysis = json.loads((model_dir / "analysis.json").read_text())
    task = analysis["tasks"]["negated_bool"]
    assert task["status"] == "ok" and task["n_pairs"] == 16
    assert analysis["results"][analysis["latest"]]["config"]["tasks"] == ["negated_bool"]
    corrects = {p for p in (task["example"]["correct"], task["example"]["alternative"])}
    assert corrects == {" True", " False"}


def test_an_unknown_plugin_module_is_refused_naming_it(plugin_folder, model_dir, capsys):
    from glassformer.training.cli import main

    with pytest.raises(SystemExit) as e:
        main(["analyze", str(model_dir), "--plugins", "no_such_plugin_module", "--tasks", "negated_bool"])
    assert e.value.code == 2 and "--plugins 'no_such_plugin_module' cannot be imported" in capsys.readouterr().err
    assert not (model_dir / "analysis.json").exists()


def test_a_plugin_task_is_a_valid_choice_of_the_sweep_and_a_bare_task_name_is_a_list(plugin_folder, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_folder))
    from glassformer.training.cli.plugins import load_plugins

    argv = ["sweep", "--plugins", "my_tasks", "--tasks", "negated_bool", "--out", str(plugin_folder / "s")]
    assert plugin_modules(argv) == ["my_tasks"]
    load_plugins(plugin_modules(argv))
    args = build_parser().parse_args(prepare_argv(argv))
    assert args.sweep.tasks == "negated_bool"
    from glassformer.training.orchestrate.sweep import PRESETS

    assert [c.tasks for c in PRESETS["quick"].analyses(["negated_bool"])] == [["negated_bool"]]
    parser = build_parser()
    parsed = parser.instantiate(parser.parse_args(prepare_argv(["analyze", "m", "--tasks", "induction"])))
    assert parsed.analyze.analysis.tasks == ["induction"]


def test_a_bad_task_is_refused_before_the_corpus_is_read(plugin_folder, model_dir, tmp_path, monkeypatch, capsys):
    """An unknown task, and a task the tokenizer cannot run, stop the command before any tokenising."""
    from glassformer.training.cli import main

    cache = tmp_path / "empty_cache"
    cache.mkdir()
    monkeypatch.setenv("GLASSFORMER_CACHE", str(cache))
    (model_dir / "training.json").write_text(json.dumps({"config": {"data": {"source": "python-stdlib"}}}))
    with pytest.raises(SystemExit) as e:
        main(["analyze", str(model_dir), "--tasks", "[nope]"])
    assert e.value.code == 2 and "tasks='nope' is not allowed" in capsys.readouterr().err
    monkeypatch.syspath_prepend(str(plugin_folder))
    (plugin_folder / "bad_tasks.py").write_text(
        "from glassformer.analysis.tasks import TASKS, TemplateTask\n"
        "class Long(TemplateTask):\n"
        "    name, description, answers = 'long_answer', 'x', (' qqqzzzxxyy', ' True')\n"
        "    def make(self, rng, pool):\n"
        "        return 'a', 'b', ' qqqzzzxxyy', ' True'\n"
        "TASKS.register(Long())\n")
    with pytest.raises(SystemExit) as e:
        main(["analyze", str(model_dir), "--plugins", "bad_tasks", "--tasks", "long_answer"])
    assert e.value.code == 2 and "answer ' qqqzzzxxyy' is not a single token" in capsys.readouterr().err
    assert list(cache.iterdir()) == []  # the corpus was never tokenised
    assert not (model_dir / "analysis.json").exists()
