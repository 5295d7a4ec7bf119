"""`glassformer finetune`: end to end through the CLI from a debug dense parent, a GPT-2 directory as the parent,
the KL term, and refusal of bad input before any work."""

import copy
import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.archs import (
    ConfigError,
    ModelDirError,
    TopKMLPConfig,
    TranscoderConfig,
    build_model,
    load_model_dir,
    presets,
    save_model_dir,
)
from glassformer.training.cli import build_parser, main
from glassformer.training.cli.argv import map_flag_aliases, prepare_argv
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig
from glassformer.training.finetune import DistillConfig, FinetuneModelConfig, finetune

ROOT = Path(__file__).resolve().parents[2]
DATA = DataConfig(max_bytes=300_000)
SHORT = ["--trainer.max_steps", "3", "--trainer.batch_size", "4", "--trainer.val_every", "3",
         "--trainer.val_batches", "2", "--trainer.log_every", "1", "--trainer.checkpoint_every", "3",
         "--trainer.progress_bar", "false", "--distill.steps", "20", "--distill.tokens", "2048",
         "--distill.eval_tokens", "512", "--distill.batch_tokens", "1024", "--data.max_bytes", "300000"]


pytestmark = pytest.mark.usefixtures("one_thread")  # debug-sized tensors (the root conftest's one_thread)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tokenizer():
    from glassformer.training.corpus import prepare_data

    return prepare_data(DATA, 512).tokenizer


@pytest.fixture(scope="module")
def parent(tmp_path_factory, tokenizer):
    """A randomly initialised debug dense model directory with a tokenizer trained on the corpus slice."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("parent")
    return save_model_dir(path, build_model(presets.get("debug")), tokenizer_json=tokenizer.to_str(),
                          training={"corpus": {"fingerprint": "f" * 64}})


@pytest.mark.parametrize("name", ["finetune_transcoder.yaml", "finetune_gpt2_transcoder.yaml"])
def test_every_shipped_finetune_yaml_parses(name):
    args = prepare_argv(["finetune", "--from", "some/dir", "--config", str(ROOT / "configs" / name),
                              "--model.mlp.k", "16"])
    parser = build_parser()
    cfg = parser.instantiate(parser.parse_args(args)).finetune
    assert cfg.parent == "some/dir"
    assert cfg.model.mlp.kind == "transcoder" and cfg.model.mlp.k == 16 and cfg.model.mlp.expansion_factor == 4
    assert cfg.distill.steps > 0 and cfg.kl_coef > 0 and cfg.trainer.max_steps > 0


def test_from_is_mapped_to_parent_only_after_the_finetune_command():
    assert map_flag_aliases(["finetune", "--from=a", "--out", "b"]) == ["finetune", "--parent=a", "--out", "b"]
    assert map_flag_aliases(["train", "--from", "a"]) == ["train", "--from", "a"]


def test_finetune_end_to_end_through_the_cli_records_the_parent(parent, tmp_path, capsys):
    out = tmp_path / "child"
    main(["finetune", "--from", str(parent), "--config", str(ROOT / "configs" / "finetune_transcoder.yaml"),
          "--out", str(out), "--model.mlp.k", "8", *SHORT])
    for f in ("config.json", "model.safetensors", "tokenizer.json", "training.json"):
        assert (out / f).is_file(), f
    assert (out / "tokenizer.json").read_text() == (parent / "tokenizer.json").read_text()
    model = load_model_dir(out)
    assert model.cfg.mlp.kind == "transcoder" and model.cfg.mlp.k == 8 and model.cfg.d_model == 64
    training = json.loads((out / "training.json").read_text())
    recorded = training["parent"]
    assert recorded["path"] == str(parent.resolve()) and recorded["format"] == "glassformer"
    assert recorded["weights_sha256"] == {"model.safetensors": sha256(parent / "model.safetensors")}
    parent_config = json.loads((parent / "config.json").read_text())
    parent_config.pop("format_version")
    assert recorded["config"] == parent_config and recorded["corpus_fingerprint"] == "f" * 64
    report = training["distillation"]
    assert report["ablation"] == "mean" and report["variant"]["k"] == 8
    assert [row["layer"] for row in report["layers"]] == [0, 1]
    for row in [*report["layers"], report["all_layers"]]:
        assert math.isfinite(row["ce_recovered"]) and math.isfinite(row["loss_spliced"])
    assert all(0 <= row["fvu"] < 1 and 0 < row["l0"] <= 8 for row in report["layers"])
    val = training["finetune"]["val_loss"]
    assert all(math.isfinite(val[k]) for k in ("parent", "converted", "finetuned"))
    # The before/after numbers use the windows fit() validates on: its own final loss agrees.
    assert val["finetuned"] == pytest.approx(training["final"]["loss/val"], abs=1e-3)
    assert training["finetune"]["kl_coef"] == 1.0 and training["steps"] == 3
    assert "loss/kl" in (out / "logs" / "metrics.csv").read_text().splitlines()[0]
    printed = capsys.readouterr().out
    assert "CE recovered (mean ablation)" in printed and "fine-tuned" in printed


def test_a_gpt2_directory_can_be_the_parent(tmp_path, tokenizer):
    transformers = pytest.importorskip("transformers")
    hf_dir = tmp_path / "gpt2"
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=512, bos_token_id=0, eos_token_id=0))
    hf.save_pretrained(hf_dir)
    (hf_dir / "tokenizer.json").write_text(tokenizer.to_str())
    trainer = TrainerConfig(max_steps=2, batch_size=4, val_every=2, val_batches=2, log_every=1, checkpoint_every=2,
                            progress_bar=False)
    distill = DistillConfig(steps=10, tokens=1024, eval_tokens=256, batch_tokens=512)
    out = finetune(hf_dir, FinetuneModelConfig(mlp=TopKMLPConfig(k=16)), DATA, OptimConfig(warmup_steps=1), trainer,
                   tmp_path / "child", kl_coef=0.5, distill=distill)
    training = json.loads((out / "training.json").read_text())
    assert training["parent"]["format"] == "huggingface" and training["parent"]["model_type"] == "gpt2"
    assert training["parent"]["weights_sha256"] == {"model.safetensors": sha256(hf_dir / "model.safetensors")}
    assert training["parent"]["config"]["mlp"] == {"kind": "dense", "activation": "gelu_tanh"}
    model = load_model_dir(out)
    assert model.cfg.mlp == TopKMLPConfig(k=16) and model.cfg.tie_embeddings  # GPT-2's shape is kept
    assert [row["warm_start"] for row in training["distillation"]["layers"]][0][0] == "W_in.weight"


def test_the_same_mlp_kind_skips_distillation_and_loads_the_parent_weights(parent, tmp_path):
    trainer = TrainerConfig(max_steps=1, batch_size=2, val_every=1, val_batches=1, checkpoint_every=1,
                            progress_bar=False)
    out = finetune(parent, FinetuneModelConfig(weight_sparsity={"fraction": 0.5, "anneal_start": 0.0,
                                                                "anneal_end": 0.0, "lr_scaling": False}),
                   DATA, OptimConfig(lr=1e-9, warmup_steps=0), trainer, tmp_path / "child")
    training = json.loads((out / "training.json").read_text())
    assert "skipped" in training["distillation"]
    assert training["finetune"]["val_loss"]["converted"] == pytest.approx(training["finetune"]["val_loss"]["parent"])
    child, mother = load_model_dir(out), load_model_dir(parent)
    assert child.cfg.weight_sparsity.fraction == 0.5
    # Annealed from the pretrained weights: what survives the projection is the parent's own values.
    W, W0 = child.blocks[0].mlp.W_in.weight, mother.blocks[0].mlp.W_in.weight
    kept = W != 0
    assert 0.4 < kept.float().mean() < 0.6
    torch.testing.assert_close(W[kept], W0[kept], rtol=0, atol=1e-6)


def make_module(kl_coef=1.0):
    from glassformer.training.finetune_module import FinetuneModule

    cfg = presets.get("debug")
    return FinetuneModule(cfg.to_dict(), asdict(OptimConfig()), max_steps=10, kl_coef=kl_coef)


def test_the_kl_term_is_zero_when_student_equals_teacher_and_the_teacher_is_not_trained_or_saved():
    module = make_module()
    module.set_teacher(copy.deepcopy(module.model))
    tokens = torch.randint(0, 512, (2, 9))
    module.train()
    with torch.no_grad():
        assert float(module.teacher_kl(tokens, module.model(tokens))) == 0.0
    assert not any(k.startswith("teacher") for k in module.state_dict())
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in module.model.parameters())
    with torch.no_grad():
        module.model.unembed.weight.mul_(2.0)
        assert float(module.teacher_kl(tokens, module.model(tokens))) > 0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6), v=st.integers(2, 12))
def test_kl_to_teacher_matches_the_categorical_kl(seed, n, v):
    from glassformer.training.finetune_module import kl_to_teacher

    gen = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(n, 3, v, generator=gen) * 3, torch.randn(n, 3, v, generator=gen) * 3
    expected = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=teacher),
                                                 torch.distributions.Categorical(logits=student)).mean()
    assert float(kl_to_teacher(student, teacher)) == pytest.approx(float(expected), rel=1e-4, abs=1e-6)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the corpus is ever read: errors must come before any work."""
    import glassformer.training.corpus as corpus

    def refuse(*args, **kwargs):
        raise AssertionError("prepare_data was called before the bad input was refused")

    monkeypatch.setattr(corpus, "prepare_data", refuse)


def test_a_path_that_is_no_parent_is_refused(tmp_path, no_work):
    with pytest.raises(ModelDirError, match="no such folder"):
        finetune(tmp_path / "missing", out=tmp_path / "out")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(ModelDirError, match="neither format_version .glassformer. nor model_type"):
        finetune(tmp_path / "plain", out=tmp_path / "out")
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelDirError, match="model_type='llama'.*supported: gpt2"):
        finetune(tmp_path / "llama", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_parent_without_its_tokenizer_is_refused(parent, tmp_path, no_work):
    bare = tmp_path / "bare"
    save_model_dir(bare, load_model_dir(parent))
    with pytest.raises(ModelDirError, match="no tokenizer.json"):
        finetune(bare, out=tmp_path / "out")


def test_an_unregistered_or_unfitting_target_is_refused_before_any_work(parent, tmp_path, capsys, no_work):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--from", str(parent), "--out", str(out), "--model.mlp", '{"kind": "no-such-mlp"}'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "no-such-mlp" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="model.mlp.kind='no-such-mlp'"):
        FinetuneModelConfig(mlp={"kind": "no-such-mlp"})
    with pytest.raises(ConfigError, match="model.mlp.k=5000"):
        finetune(parent, FinetuneModelConfig(mlp=TranscoderConfig(k=5000)), out=out)
    with pytest.raises(ConfigError, match="kl_coef=-1"):
        finetune(parent, out=out, kl_coef=-1)
    with pytest.raises(ConfigError, match="parent's own folder"):
        finetune(parent, FinetuneModelConfig(mlp=TopKMLPConfig(k=4)), out=parent)
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--out", str(out)])
    assert e.value.code == 2 and "--from PATH is required" in capsys.readouterr().err
    assert not out.exists()
