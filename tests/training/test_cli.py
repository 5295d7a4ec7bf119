"""The command line: every shipped YAML parses and builds; bad configs fail before any work, naming the field."""

import json
from pathlib import Path

import pytest
import torch

from glassformer.archs import build_model, load_model_dir
from glassformer.training.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").glob("**/*.yaml")
                 if not p.name.startswith("finetune_"))


def parse_train(*args: str):
    """Parse `glassformer train ARGS` through the real CLI parser and return its instantiated configs."""
    from glassformer.training.cli import build_parser

    parser = build_parser()
    cfg = parser.parse_args(["train", *args])
    return parser.instantiate_classes(cfg).train


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_yaml_parses_and_builds(name):
    cfg = parse_train("--config", str(ROOT / "configs" / name))
    model = build_model(cfg.model)
    assert model.num_params() > 0
    assert cfg.trainer.max_steps > 0


def test_a_flag_on_the_mlp_variant_keeps_the_yaml_kind_and_other_fields():
    from glassformer.training.cli.argv import merge_union_flags

    base = parse_train("--config", str(ROOT / "configs" / "transcoder.yaml")).model.mlp
    args = merge_union_flags(["--config", str(ROOT / "configs" / "transcoder.yaml"), "--model.mlp.k", "16",
                              "--model.mlp.skip=true"])
    mlp = parse_train(*args).model.mlp
    assert mlp.kind == "transcoder" == base.kind
    assert (mlp.k, mlp.skip) == (16, True)
    assert mlp.expansion_factor == base.expansion_factor and mlp.activation == base.activation


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--model.d_model", "-8"], "model.d_model"),
        (["--model.n_heads", "5"], "model.n_heads"),
        (["--model.n_layers", "0"], "model.n_layers"),
        (["--data.source", "files"], "data.paths"),
        (["--trainer.batch_size", "0"], "trainer.batch_size"),
        (["--optim.lr", "-1"], "optim.lr"),
    ],
)
def test_bad_config_fails_before_training_and_names_the_field(flags, field, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(ROOT / "configs" / "debug.yaml"), "--out", str(out), *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert field in err
    assert "Traceback" not in err
    assert not out.exists()


def test_unknown_mlp_kind_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(ROOT / "configs" / "debug.yaml"), "--out", str(out),
              "--model.mlp", '{"kind": "no-such-mlp"}'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "no-such-mlp" in err and "kind" in err
    assert not out.exists()


def test_train_eval_generate_end_to_end(tmp_path, capsys):
    out = tmp_path / "debug"
    main(["train", "--config", str(ROOT / "configs" / "debug.yaml"), "--out", str(out),
          "--trainer.max_steps", "20", "--trainer.val_every", "10", "--trainer.checkpoint_every", "10",
          "--trainer.progress_bar", "false", "--data.max_bytes", "300000"])
    for f in ("config.json", "model.safetensors", "tokenizer.json", "training.json"):
        assert (out / f).is_file(), f
    training = json.loads((out / "training.json").read_text())
    assert training["steps"] == 20
    assert training["tokens_seen"] == 20 * 16 * 64
    assert len(training["corpus"]["fingerprint"]) == 64
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "logs" / "metrics.csv").is_file()
    printed = capsys.readouterr().out
    assert "validation loss" in printed and "unigram entropy" in printed

    main(["eval", str(out), "--batches", "2"])
    assert "perplexity" in capsys.readouterr().out
    main(["generate", str(out), "--prompt", "def f(x):", "--max_new_tokens", "10", "--temperature", "0"])
    assert capsys.readouterr().out.startswith("def f(x):")
    model = load_model_dir(out)
    assert model(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 512)


def test_analyze_level_node_alone_takes_the_node_default_method():
    # The command line's default AnalysisConfig carries method auto (the component default); `--level node` must
    # not turn that into a refusal, nor into another node method.
    from glassformer.training.cli import build_parser
    from glassformer.training.cli.argv import prepare_argv

    parser = build_parser()
    for argv in (["analyze", "m", "--level", "node"], ["analyze", "m", "--level", "node", "--method", "auto"]):
        parsed = parser.instantiate_classes(parser.parse_args(prepare_argv(argv)))
        assert (parsed.analyze.analysis.level, parsed.analyze.analysis.method) == ("node", "mask")
    parsed = parser.instantiate_classes(parser.parse_args(prepare_argv(["analyze", "m", "--level", "node",
                                                                        "--method", "eap-ig"])))
    assert parsed.analyze.analysis.method == "eap-ig"
