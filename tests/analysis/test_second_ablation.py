"""The second ablation: a checked setting, the model scored and sized again under it (and only the model), and
skipped with its reason where its values cannot be had."""

from __future__ import annotations

import pytest
import torch
from test_acdc import _planted
from test_checks import capable_batch
from tests_analysis_support import VOCAB

from glassformer.analysis import AnalysisConfig
from glassformer.analysis.component.attribution import attribute
from glassformer.analysis.component.circuits import rank
from glassformer.analysis.component.faithfulness import Faithfulness, evaluate_ranking
from glassformer.analysis.component.run import AblatedValues, analyze_task
from glassformer.analysis.tasks.base import split_pairs


def test_the_second_ablation_is_a_checked_setting():
    assert AnalysisConfig().second_ablation == "corrupt"
    with pytest.raises(ValueError, match="second_ablation='mean' is not allowed with ablation='mean': .*expected "
                                         "one of position-mean, zero, corrupt or None"):
        AnalysisConfig(ablation="mean", second_ablation="mean")
    with pytest.raises(ValueError, match="second_ablation='half' is not allowed: expected one of mean, "
                                         "position-mean, zero, corrupt"):
        AnalysisConfig(second_ablation="half")
    with pytest.raises(ValueError, match="second_ablation='corrupt' is not allowed with ablation='corrupt'"):
        AnalysisConfig(ablation="corrupt", second_ablation="corrupt")
    # auto (the default) is corrupt beside any other ablation, and mean beside corrupt itself.
    assert AnalysisConfig(ablation="corrupt").second_ablation == "mean"
    assert AnalysisConfig(ablation="zero", second_ablation="auto").second_ablation == "corrupt"
    assert AnalysisConfig(ablation="corrupt", second_ablation=None).second_ablation is None
    # The fallback from mean to zero ablation (no corpus windows) switches a second zero ablation off.
    assert AnalysisConfig(second_ablation="zero").replace(ablation="zero").second_ablation is None
    assert AnalysisConfig().replace(ablation="zero").second_ablation == "corrupt"


@pytest.fixture(scope="module")
def planted_entries():
    model, graph = _planted()
    batch = capable_batch(model, B=12)
    corpus = torch.randint(0, VOCAB, (6, 7), generator=torch.Generator().manual_seed(2))
    base = AnalysisConfig(ablation="zero", controls=True, size_gated_out=True, n_subsets=4)
    subjects = {"model": model, "random_init": _planted()[0]}
    means = {who: AblatedValues(m, graph, corpus) for who, m in subjects.items()}
    entries = {second: analyze_task("planted", "", batch, graph, subjects, means, base.replace(second_ablation=second))
               for second in ("corrupt", "position-mean", None)}
    return model, graph, batch, corpus, entries


def test_the_model_is_sized_again_under_the_second_ablation(planted_entries):
    """Exact patching under corrupt ablation on the ranking pairs, each selection's ranking measured on the
    held-out pairs under corrupt ablation: the same numbers as the entry records."""
    model, graph, batch, _, entries = planted_entries
    entry = entries["corrupt"]
    train, heldout = split_pairs(batch, 0.5)
    att = attribute("exact", model, graph, train, "corrupt")
    fa = Faithfulness(model, graph, heldout, "corrupt")
    for c in entry["circuits"]:
        expected = evaluate_ranking(fa, rank(c["selection"], graph, att.scores))
        second = c["by_ablation"]["corrupt"]
        assert second["curve"] == expected["curve"]
        assert second["N_0.8"] == expected["N_0.8"] and second["N_0.9"] == expected["N_0.9"]
        assert c["by_ablation"]["zero"] == {"N_0.8": c["N_0.8"]["model"], "N_0.9": c["N_0.9"]["model"]}
        assert second["curve"] != c["faithfulness_curve"]["model"]  # another ablation, other numbers
    assert entry["attribution"]["second_ablation"]["ablation"] == "corrupt"
    assert set(entry["attribution"]["completeness"]) == {"model", "random_init", "shuffled_labels"}


def test_a_second_mean_ablation_reads_the_corpus_and_none_switches_it_off(planted_entries):
    model, graph, batch, corpus, entries = planted_entries
    train, heldout = split_pairs(batch, 0.5)
    means = AblatedValues(model, graph, corpus).get("position-mean")
    att = attribute("exact", model, graph, train, "position-mean", means)
    fa = Faithfulness(model, graph, heldout, "position-mean", means)
    c = entries["position-mean"]["circuits"][0]
    assert c["by_ablation"]["position-mean"]["curve"] == evaluate_ranking(fa, rank("topn", graph, att.scores))["curve"]
    assert all("by_ablation" not in c for c in entries[None]["circuits"])
    assert "second_ablation" not in entries[None]["attribution"]


def test_a_second_ablation_without_its_values_is_skipped_with_the_reason():
    model, graph = _planted()
    batch = capable_batch(model)
    config = AnalysisConfig(ablation="zero", second_ablation="mean", controls=False, size_gated_out=True)
    for means in (None, AblatedValues(model, graph, None)):
        entry = analyze_task("planted", "", batch, graph, {"model": model}, {"model": means}, config)
        reason = entry["circuits"][0]["by_ablation"]["mean"]["skipped"]
        assert "mean ablation needs" in reason
        assert entry["attribution"]["second_ablation"] == {"ablation": "mean", "skipped": reason}
        assert entry["circuits"][0]["N_0.8"]["model"]["edges"] is not None
