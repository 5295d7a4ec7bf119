"""The pieces of the GPU check that a CPU can judge: targets, the summary, step counts, FLOP counts, speed-ups."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from glassformer.archs import build_model
from glassformer.archs.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def kernel_row(op, variant="triton", **figures):
    return {"op": op, "variant": variant, "shape": f"{op} shape", "refused": None, **figures}


def test_targets_judge_each_bound_from_the_kernel_rows(bench):
    summary = bench("gpu_check_summary")
    rows = [kernel_row("sparse_decode", vs_dense=3.5, x_floor=2.5),
            kernel_row("magnitude_prune_", vs_dense=4.9),
            kernel_row("cos_margin_penalty", vs_reference=2.0, peak_mib=40.0, shape="M=16384 D=512")]
    got = {t["target"]: (t["value"], t["met"]) for t in summary.targets({"rows": rows})}
    assert got["sparse decode: speed-up over the dense decode"] == (3.5, True)
    assert got["sparse decode: time over its bandwidth floor"] == (2.5, False)
    assert got["weight projection: speed-up over a flattened topk"] == (4.9, False)
    assert got["|cos| penalty: speed-up over the reference"] == (2.0, True)
    # 40 MiB against a 16384^2 float32 Gram matrix of 1024 MiB.
    assert got["|cos| penalty: peak memory over the M x M Gram matrix"] == (40 / 1024, True)


def test_targets_are_unjudged_when_an_op_was_refused_or_not_run(bench):
    summary = bench("gpu_check_summary")
    refused = kernel_row("sparse_decode", vs_dense=9.0, x_floor=1.0, refused="triton tensor 0: ...")
    for t in summary.targets({"rows": [refused]}) + summary.targets(None):
        assert t["value"] is None and t["met"] is None


def test_summary_of_a_run_whose_steps_all_failed_still_writes_both_files(bench, tmp_path):
    summary = bench("gpu_check_summary")
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "steps.tsv").write_text("tests\t124\t100\t100\nkernels\t1\t3\t120\n")
    fig = summary.summarise(work, out, "device", "bash benchmarks/gpu_check.sh")
    assert fig["steps"][0] == {"step": "tests", "exit": 124, "seconds": 100, "limit": 100}
    assert json.loads((out / "figures.json").read_text())["pytest"] is None
    text = (out / "summary.md").read_text()
    assert "| tests | 124 | 100 | 100 |" in text and "no models (the step failed)" in text


def test_summary_reads_pytest_counts_from_junit_xml(bench, tmp_path):
    xml = ('<testsuites><testsuite name="pytest" tests="7" failures="1" errors="0" skipped="2">'
           "</testsuite></testsuites>")
    (tmp_path / "pytest.xml").write_text(xml)
    counts = bench("gpu_check_summary").read_pytest(tmp_path / "pytest.xml")
    assert counts == {"tests": 7, "failures": 1, "errors": 0, "skipped": 2, "passed": 4}


def test_training_steps_follow_the_slowest_measured_variant(bench, tmp_path):
    check = bench("gpu_check")
    path = tmp_path / "throughput.json"
    path.write_text(json.dumps({"variants": [{"variant": "dense", "lightning": {"steps_per_sec": 20.0}},
                                             {"variant": "weight_sparse", "lightning": {"steps_per_sec": 7.7}}]}))
    assert check.steps_for(path, ["dense", "weight_sparse"], 40, 50, 3000, 400)[0] == 300  # 40 s * 7.7, to 10s
    assert check.steps_for(path, ["dense"], 40, 50, 3000, 400)[0] == 800
    assert check.steps_for(path, ["dense"], 1000, 50, 3000, 400)[0] == 3000
    assert check.steps_for(path, ["transcoder"], 40, 50, 3000, 400)[0] == 400  # not measured: the fallback


def test_prepared_corpus_refuses_another_vocabulary_and_restores_prepare_data(bench, tmp_path):
    from glassformer.training import corpus

    check = bench("gpu_check")
    original = corpus.prepare_data
    meta = {"vocab_size": 2048, "preset": "small"}
    with pytest.raises(ConfigError, match=r"model.d_vocab=512 but .* vocabulary of 2048"):
        with check.prepared_corpus(tmp_path, meta):
            corpus.prepare_data(None, 512)
    assert corpus.prepare_data is original


def test_train_refuses_a_folder_that_was_never_prepared(bench, tmp_path):
    with pytest.raises(FileNotFoundError, match="gpu_check.sh --prepare"):
        bench("gpu_check").read_meta(tmp_path)


@pytest.mark.parametrize("variant", ["dense", "weight_sparse", "transcoder"])
def test_flop_count_matches_torch_flop_counter(bench, variant):
    """The formula against torch's own count of one forward (attention through the math kernel, which it counts).

    The TopK transcoder's decode is an embedding bag in the reference, which the counter does not see; the
    formula's ``sparse_decode`` term is its 2 k d_model per token, checked by hand."""
    throughput = bench("train_throughput")
    cfg = throughput.variant_config("debug", variant)
    cfg.kernels = "reference"
    model = build_model(cfg).eval()
    tokens = torch.randint(0, cfg.d_vocab, (2, cfg.n_ctx))
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        model(tokens)
    terms = throughput.forward_flops_per_token(cfg)
    assert counter.get_total_flops() / tokens.numel() == terms["matmul"] + terms["attention"]
    assert terms["sparse_decode"] == (cfg.n_layers * 2 * 32 * cfg.d_model if variant == "transcoder" else 0)


def test_kernel_speedups_compare_each_row_with_its_reference_and_dense_alternative(bench):
    kernels = bench("kernels")
    rows = [(kernels.Result("op", "s", "reference", {"fwd": 1.0, "both": 6.0}), 1.0, 1.0),
            (kernels.Result("op", "s", "triton", {"fwd": 0.5, "both": 2.0}), 1.0, 1.0),
            (kernels.Result("op", "s", "dense", {"fwd": 1.0, "both": 8.0}), 1.0, 1.0),
            (kernels.Result("op", "s", "flat (baseline)", {"fwd": 3.0}), 1.0, 1.0)]
    assert kernels.speedups(rows, {"op": "dense"})[1] == (3.0, 4.0)
    assert kernels.speedups(rows, {"op": "flat"})[1] == (3.0, 1.5)
    table = kernels.format_results(rows, markdown=True, dense={"op": "dense"})
    assert "| op | s | triton | 0.500 | - | 2.000 | - | 2.00 | 2.00 | 3.00 | 4.00 |" in table


def test_gpu_check_refuses_an_unknown_argument():
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--fast"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown argument '--fast'" in proc.stderr
