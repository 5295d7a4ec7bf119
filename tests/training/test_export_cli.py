"""`glassformer export`: a dense model directory becomes a folder transformers opens; others are refused by name."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from glassformer.archs import build_model, presets, save_model_dir  # noqa: E402
from glassformer.training.cli import main  # noqa: E402
from glassformer.training.tokenizer import train_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["def add(a, b):\n    return a + b\n"] * 40, 300)


def test_export_writes_a_folder_transformers_opens_with_the_same_logits(tmp_path, tokenizer, capsys, one_thread):
    cfg = presets.get("debug", d_vocab=300)
    model = build_model(cfg).eval()
    save_model_dir(tmp_path / "model", model, tokenizer_json=tokenizer.to_str())
    main(["export", str(tmp_path / "model"), "--out", str(tmp_path / "hf")])
    assert "wrote" in capsys.readouterr().out
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    tokens = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model(tokens))


def test_export_refuses_a_transcoder_model_naming_the_constraint_and_writes_nothing(tmp_path, tokenizer, capsys):
    cfg = presets.get("debug", d_vocab=300, mlp={"kind": "transcoder", "k": 8, "expansion_factor": 2})
    save_model_dir(tmp_path / "model", build_model(cfg), tokenizer_json=tokenizer.to_str())
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "model"), "--out", str(tmp_path / "hf")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "model.mlp.kind='transcoder'" in err, err
    assert not (tmp_path / "hf").exists()
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "model"), "--out", str(tmp_path / "x"), "--format", "onnx"])
    assert e.value.code == 2
