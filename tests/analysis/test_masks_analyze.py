"""``analyze(level="node")``: results are added to analysis.json beside what is there (version-1 files included),
every number carries its level, method, ablation, target and controls, and bad input is refused before work."""

from __future__ import annotations

import inspect
import json
import shutil

import pytest
import torch

from glassformer.analysis import SCHEMA_VERSION, analyze, format_table, read_analysis
from glassformer.analysis.config import ABLATIONS_BY_LEVEL, LEVEL_NAMES, METHODS_BY_LEVEL
from glassformer.analysis.node.masks import MaskConfig
from glassformer.archs import ModelDirError

FAST = MaskConfig(steps=8, search=((1e-2, 5e-2),))
COMMON = dict(tasks=["quote_close"], n_pairs=6, seed=1, progress=False, size_gated_out=True)
"""size_gated_out: these random-init models have no capability, so the gate rejects every task; these tests check
the node-level machinery, so the rejected tasks are sized anyway (the gate: test_capability_gate.py)."""


def kinds(out: dict) -> list[str]:
    """The level/method/ablation of each run kept (keys end in a hash of the run's config)."""
    return sorted("/".join(k.split("/")[:3]) for k in out["results"])


def run_of(out: dict, kind: str) -> dict:
    (key,) = [k for k in out["results"] if k.startswith(kind + "/") or k == kind]
    return out["results"][key]


def corpus(n: int, T: int = 32) -> torch.Tensor:
    return torch.randint(0, 4096, (n, T), generator=torch.Generator().manual_seed(n))


@pytest.fixture
def model_dir(tmp_path, small_model_dir):
    path = tmp_path / "model"
    shutil.copytree(small_model_dir, path)
    return path


def test_node_run_is_added_beside_the_component_run(model_dir):
    first = analyze(model_dir, corpus_tokens=corpus(4), controls=False, selections=("topn",), **COMMON)
    component = run_of(first, "component/auto/mean")
    out = analyze(model_dir, level="node", corpus_tokens=corpus(4), val_tokens=corpus(2, 33), mask=FAST,
                  target_loss=0.3, **COMMON)
    assert json.loads((model_dir / "analysis.json").read_text()) == json.loads(json.dumps(out))
    assert out["schema_version"] == SCHEMA_VERSION == 3
    assert kinds(out) == ["component/auto/mean", "node/mask/mean"]
    assert json.loads(json.dumps(run_of(out, "component/auto/mean"))) == json.loads(json.dumps(component))
    assert out["latest"].startswith("node/mask/mean/")
    assert out["settings"] == run_of(out, "node/mask/mean")["settings"]
    s = out["settings"]
    assert (s["level"], s["method"], s["ablation"], s["target_loss"]) == ("node", "mask", "mean", 0.3)
    assert s["mask"]["steps"] == 8 and s["mask"]["search"] == [[1e-2, 5e-2]]
    c = out["tasks"]["quote_close"]["circuits"][0]
    for key in ("level", "method", "ablation", "target_loss", "controls", "holdout"):
        assert c[key] == s[key], key
    for key in ("nodes", "edges", "loss", "reached", "loss_full", "agreement"):
        assert set(c[key]) == {"model", "random_init", "shuffled_labels"}, key
    for who in ("model", "random_init", "shuffled_labels"):
        assert c["reached"][who] == (c["nodes"][who] is not None)
        assert c["reached"][who] == (c["loss"][who] <= 0.3)
    assert out["summary"][0]["target_loss"] == 0.3 and out["summary"][0]["n_tasks"] == 1
    assert out["graph"]["n_nodes"] == 2 * (32 * 7 + 64)  # 7 channel sites of d_model (q/k/v too) + 64 neurons
    layers = out["sparse_layers"]["layers"]
    assert [row["site"] for row in layers] == ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]
    table = format_table(out)
    assert "node-level circuits by mask" in table and "quote_close" in table and "sparse layers" in table


def test_zero_ablation_is_its_own_run_and_is_recorded(model_dir):
    analyze(model_dir, level="node", method="eap-ig", corpus_tokens=corpus(4), controls=False, **COMMON)
    out = analyze(model_dir, level="node", method="eap-ig", ablation="zero", controls=False, **COMMON)
    assert kinds(out) == ["node/eap-ig/mean", "node/eap-ig/zero"]
    assert out["tasks"]["quote_close"]["circuits"][0]["ablation"] == "zero"
    assert run_of(out, "node/eap-ig/mean")["tasks"]["quote_close"]["circuits"][0]["ablation"] == "mean"
    assert "sparse_layers" in out  # kept from the first run, which had corpus tokens


def test_a_version_1_file_is_read_and_kept(model_dir):
    v2 = analyze(model_dir, corpus_tokens=corpus(4), controls=False, selections=("topn",), **COMMON)
    v1 = {k: v for k, v in v2.items() if k not in ("results", "latest", "sparse_layers", "config", "finished")}
    v1["schema_version"] = 1
    (model_dir / "analysis.json").write_text(json.dumps(v1))
    assert read_analysis(model_dir)["results"]["component/auto/mean"]["tasks"] == v1["tasks"]
    out = analyze(model_dir, level="node", method="eap", ablation="zero", controls=False, **COMMON)
    assert kinds(out) == ["component/auto/mean", "node/eap/zero"]
    assert out["results"]["component/auto/mean"]["tasks"] == v1["tasks"]  # a version-1 run keeps its key


def test_node_level_refusals_name_the_allowed_values_and_write_nothing(model_dir):
    sentinel = json.dumps({"schema_version": 99})
    (model_dir / "analysis.json").write_text(sentinel)
    with pytest.raises(ValueError, match=r"method='exact' is not allowed: expected one of mask, eap, eap-ig "
                                         r"\(at level='node'\)"):
        analyze(model_dir, level="node", method="exact", progress=False)
    with pytest.raises(ValueError, match="ablation='corrupt' is not allowed: expected one of mean, zero"):
        analyze(model_dir, level="node", ablation="corrupt", progress=False)
    with pytest.raises(ValueError, match="level='edge' is not allowed: expected one of component, node"):
        analyze(model_dir, level="edge", progress=False)
    with pytest.raises(ValueError, match="target_loss=0 is not allowed"):
        analyze(model_dir, level="node", target_loss=0, progress=False)
    with pytest.raises(ModelDirError, match="schema_version 99; this glassformer reads 1 to 3"):
        analyze(model_dir, level="node", ablation="zero", **COMMON)
    assert (model_dir / "analysis.json").read_text() == sentinel


def test_cli_choices_come_from_the_registries(capsys):
    from glassformer.training import cli
    from glassformer.training.cli.analyze import analyze as analyze_command
    from glassformer.training.cli.argv import prepare_argv

    doc = inspect.getdoc(analyze_command)
    for level in LEVEL_NAMES:
        assert level in doc
        for name in (*METHODS_BY_LEVEL[level], *ABLATIONS_BY_LEVEL[level]):
            assert name in doc, name
    args = cli.build_parser().parse_args(prepare_argv(["analyze", "runs/x", "--level", "node", "--method", "eap-ig"]))
    assert (args.analyze.analysis.level, args.analyze.analysis.method) == ("node", "eap-ig")
    for flags, message in ((["--level", "node", "--method", "exact"],
                            "method='exact' is not allowed: expected one of mask, eap, eap-ig (at level='node')"),
                           (["--level", "edges"], "level='edges' is not allowed: expected one of component, node")):
        with pytest.raises(SystemExit) as e:
            cli.main(["analyze", "runs/does-not-matter", *flags])
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_two_analyses_with_different_task_lists_both_survive(model_dir):
    base = dict(n_pairs=6, seed=1, progress=False, controls=False, selections=("topn",), corpus_tokens=corpus(4))
    first = analyze(model_dir, tasks=["quote_close"], **base)
    second = analyze(model_dir, tasks=["induction"], **base)
    assert len(second["results"]) == 2 and first["latest"] in second["results"]
    assert second["latest"] != first["latest"] and kinds(second) == ["component/auto/mean"] * 2
    assert set(second["results"][first["latest"]]["tasks"]) >= {"quote_close"}
    assert second["results"][second["latest"]]["config"]["tasks"] == ["induction"]
    # Only a rerun with exactly the same settings replaces its predecessor (and moves to the end, as the newest).
    third = analyze(model_dir, tasks=["quote_close"], **base)
    assert list(third["results"]) == [second["latest"], first["latest"]] and third["latest"] == first["latest"]


def test_an_analysis_of_another_model_is_moved_aside_not_lost(model_dir):
    before = analyze(model_dir, tasks=["quote_close"], n_pairs=6, progress=False, controls=False,
                     selections=("topn",))
    data = json.loads((model_dir / "analysis.json").read_text())
    data["model"]["n_params"] += 1  # as if the model directory had been retrained in place
    (model_dir / "analysis.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="describes another model"):
        analyze(model_dir, tasks=["quote_close"], n_pairs=6, progress=False, controls=False, selections=("topn",))
    (aside,) = model_dir.glob("analysis.replaced-*.json")
    assert json.loads(aside.read_text())["results"] == json.loads(json.dumps(before["results"]))
