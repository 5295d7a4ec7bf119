"""Null tests of the verdict on real trained models: models of one config that differ only in their seed (one
against one, two against two, two against one), and one model analysed with two analysis seeds, must all be
"not distinguishable".

The models are the 2-layer attention-only induction models of test_induction_circuit.py (the smallest the suite
trains that passes the capability gate: a model trained a few steps on text passes none, and a comparison with no
usable task would say "not distinguishable" for no reason), trained here 250 steps with seeds 0 to 3
(initialisation and data order), analysed at component level with exact patching on the induction task.

Measured (this file as it is; N_0.8 of seeds 0-3: 37, 44, 24, 26 edges; seed 0 analysed with analysis seed 1: 45):
seed 1 against seed 0, ratio 1.19 with pairs-bootstrap interval 1.08 to 1.19; analysis seed 1 against 0, 1.22,
1.08 to 1.24; seeds 2 and 3 against 0 and 1, ratio 0.62, Welch t interval over seeds 0.33 to 1.16 (1.41 df),
pairs bootstrap 0.52 to 0.70; seed 2 against 0 and 1, 0.60, pairs bootstrap 0.52 to 0.69, the baseline's seed
spread 0.84 to 1.19. Every pairs-bootstrap interval excludes 1 and both multi-seed ratios lie
outside the baseline's seed spread: the rule before the Welch interval (pairs bootstrap and spread) called the
last two "smaller". The pairs bootstrap holds each model and its ranking fixed, so it does not cover a change of
seed; the call now comes only from the Welch interval over seeds, and with one seed a side there is none. (At
100 steps seeds 0 and 1 had the same size, 31, and every pairs interval included 1: too easy a null.)

Per-pair records (INTERFACES section 1) come from the analysis when it writes them; where it does not yet, the
fixture records them while the analysis measures its circuits (every circuit measured on the ranking, with the
whole model and the empty circuit), and checks that they give the N_0.8 the analysis wrote.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from test_induction_circuit import T, V, induction_windows

from glassformer.analysis import analyze
from glassformer.analysis.component import run as component_run
from glassformer.analysis.report import build_report
from glassformer.analysis.report.intervals import PairRecord, size_at
from glassformer.archs import ModelConfig, build_model, save_model_dir

STEPS = 250
N_PAIRS = 48


def train_induction(seed: int, path):
    """test_induction_circuit's model and training loop, with ``seed`` for the initialisation and the data."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(seed)
    model = build_model(ModelConfig(d_vocab=V, n_ctx=T, d_model=64, n_layers=2, n_heads=4, attn_only=True))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        x, target = induction_windows(gen, 128)
        loss = F.cross_entropy(model(x[:, :-1])[target[:, 1:]], x[:, 1:][target[:, 1:]])
        opt.zero_grad()
        loss.backward()
        opt.step()
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(V)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    save_model_dir(path, model.eval(), tokenizer_json=tok.to_str())
    val, _ = induction_windows(torch.Generator().manual_seed(99), 16)
    with torch.no_grad():
        val_loss = F.cross_entropy(model(val[:, :-1]).flatten(0, 1), val[:, 1:].flatten()).item()
    return path, val_loss


def recording(monkeypatch):
    """Patch the component level so that each task's circuit entry gets ``pairs`` when the analysis wrote none:
    every per-pair logit difference its faithfulness measurement computes is kept (first subject: the model)."""
    captured: list[dict] = []
    evaluate, analyze_task = component_run.evaluate_ranking, component_run.LEVEL.analyze_task

    def evaluate_recorded(fa, ranking, *args, **kwargs):
        measured, per_pair = {}, fa.per_pair

        def keep(masks):
            out = per_pair(masks)
            measured.update(zip(masks.sum(dim=1).tolist(), out.tolist(), strict=True))
            return out

        fa.per_pair = keep
        result = evaluate(fa, ranking, *args, **kwargs)
        full, empty = per_pair(torch.stack([torch.ones(fa.graph.n_edges, dtype=torch.bool),
                                            torch.zeros(fa.graph.n_edges, dtype=torch.bool)]))
        measured.update({0: empty.tolist(), fa.graph.n_edges: full.tolist()})
        ks = sorted(measured)
        captured.append({"edges": ks, "ld": [measured[k] for k in ks], "ld_model": full.tolist(),
                         "ld_empty": empty.tolist()})
        return result

    def analyze_recorded(*args, **kwargs):
        captured.clear()
        entry = analyze_task(*args, **kwargs)
        for circuit, rec in zip(entry.get("circuits", []), captured, strict=False):
            circuit.setdefault("pairs", {"model": rec})
        return entry

    levels = importlib.import_module("glassformer.analysis.analyze").LEVELS
    monkeypatch.setattr(component_run, "evaluate_ranking", evaluate_recorded)
    monkeypatch.setitem(levels, "component", dataclasses.replace(levels["component"], analyze_task=analyze_recorded))


def analysed(path, seed: int, corpus) -> None:
    analyze(path, tasks=["induction"], n_pairs=N_PAIRS, seed=seed, controls=False, selections=["greedy"],
            method="exact", corpus_tokens=corpus, progress=False, sparse_layers=False)


def write_training(path, variant: str, seed: int, val_loss: float) -> None:
    (path / "training.json").write_text(json.dumps({"steps": STEPS, "seed": seed, "variant": variant,
                                                    "val_loss": val_loss}))


@pytest.fixture(scope="module")
def null_dirs(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("null")
    corpus, _ = induction_windows(torch.Generator().manual_seed(1), 64)
    with pytest.MonkeyPatch.context() as mp:
        recording(mp)
        try:
            dirs = {}
            for seed in (0, 1, 2, 3):
                path, loss = train_induction(seed, root / f"seed{seed}")
                analysed(path, 0, corpus)
                write_training(path, f"seed{seed}", seed, loss)
                dirs[f"seed{seed}"] = path
            again = root / "seed0-analysis-seed1"
            shutil.copytree(dirs["seed0"], again)
            (again / "analysis.json").unlink()
            analysed(again, 1, corpus)
            write_training(again, "analysis-seed1", 0, json.loads((dirs["seed0"] / "training.json").read_text())[
                "val_loss"])
            dirs["analysis-seed1"] = again
        finally:
            torch.set_num_threads(threads)
    return dirs


def test_the_per_pair_records_give_the_size_the_analysis_wrote(null_dirs):
    for path in null_dirs.values():
        run = next(iter(json.loads((path / "analysis.json").read_text())["results"].values()))
        task = run["tasks"]["induction"]
        assert task["capable"], task["gate"]["model"]["reasons"]  # the comparison has a task to compare
        circuit = task["circuits"][0]
        rec = PairRecord.parse(circuit["pairs"]["model"])
        assert rec is not None and rec.n_pairs == task["attribution"]["measured_on_pairs"]
        everything = torch.arange(rec.n_pairs).numpy()[None]
        assert size_at(rec, everything).tolist() == [circuit["N_0.8"]["model"]["edges"]]


@pytest.mark.parametrize("other", ["seed1", "analysis-seed1"])
def test_a_model_against_its_own_config_is_not_distinguishable(null_dirs, other):
    report = build_report([null_dirs["seed0"], null_dirs[other]], baseline=null_dirs["seed0"])
    (c,) = report["comparisons"]
    assert c["tasks"] == ["induction"] and c["lo"] is not None and c["resampled"] == "pairs"
    assert c["interval_method"] == "pairs bootstrap, seed variation not included"
    assert c["call"] == "not distinguishable", c["reason"]
    assert "seed-to-seed variation cannot be estimated from one seed" in c["why"]


def regrouped(null_dirs, root, groups: dict[str, list[int]]) -> list:
    """Copies of the trained seeds with training.json naming ``groups`` as variants (the fixture's are shared)."""
    out = []
    for variant, seeds in groups.items():
        for seed in seeds:
            path = shutil.copytree(null_dirs[f"seed{seed}"], root / f"{variant}-seed{seed}")
            loss = json.loads((path / "training.json").read_text())["val_loss"]
            write_training(path, variant, seed, loss)
            out.append(path)
    return out


@pytest.mark.parametrize("groups", [{"dense": [0, 1], "other": [2, 3]}, {"dense": [0, 1], "other": [2]}],
                         ids=["2v2", "2v1"])
def test_two_groups_of_seeds_of_one_config_are_not_distinguishable(null_dirs, tmp_path, groups):
    """Seeds 0 and 1 as the baseline against seeds 2 and 3 (or seed 2 alone) of the same config: the call is made
    from the seeds' spread (Welch t over seeds), or not at all from one seed."""
    dirs = regrouped(null_dirs, tmp_path, groups)
    (c,) = build_report(dirs, baseline=dirs[0])["comparisons"]
    assert c["tasks"] == ["induction"] and c["seeds"] == groups["other"] and c["baseline_seeds"] == [0, 1]
    assert c["interval_method"] == ("welch-t over seeds" if len(groups["other"]) > 1 else
                                    "pairs bootstrap, seed variation not included")
    assert c["call"] == "not distinguishable", c["reason"]
