import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.archs import ModelConfig, ModelDirError, build_model, load_model_dir, save_model_dir


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 1000),
    tie=st.booleans(),
    norm=st.sampled_from(["layernorm", "rmsnorm"]),
    positional=st.sampled_from(["learned", "rotary"]),
)
def test_save_load_round_trips_weights_and_logits_exactly(tmp_path_factory, seed, tie, norm, positional):
    torch.manual_seed(seed)
    cfg = ModelConfig(d_vocab=40, n_ctx=12, d_model=16, n_layers=2, n_heads=2, d_mlp=32, tie_embeddings=tie,
                      norm=norm, positional=positional)
    model = build_model(cfg)
    path = save_model_dir(tmp_path_factory.mktemp("m"), model)
    loaded = load_model_dir(path)
    assert loaded.cfg == cfg
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    tokens = torch.randint(0, 40, (2, 12))
    assert torch.equal(model(tokens), loaded(tokens))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelDirError, match="not a model directory"):
        load_model_dir(tmp_path / "nope")


def test_bad_json_wrong_shapes_and_pickles_are_refused(tmp_path):
    cfg = ModelConfig(d_vocab=40, n_ctx=12, d_model=16, n_layers=1, n_heads=2)
    path = save_model_dir(tmp_path / "m", build_model(cfg))

    (path / "config.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="not valid JSON"):
        load_model_dir(path)

    bigger = {**cfg.to_dict(), "d_model": 32}
    (path / "config.json").write_text(json.dumps(bigger))
    with pytest.raises(ModelDirError, match="does not match config.json"):
        load_model_dir(path)

    (path / "config.json").write_text(json.dumps({**cfg.to_dict(), "n_heads": 3}))
    with pytest.raises(ModelDirError, match="n_heads"):
        load_model_dir(path)

    (path / "config.json").write_text(json.dumps(cfg.to_dict()))
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelDirError, match="pickle files are never loaded"):
        load_model_dir(path)


def test_corrupt_safetensors_header_is_refused(tmp_path):
    cfg = ModelConfig(d_vocab=40, n_ctx=12, d_model=16, n_layers=1, n_heads=2)
    path = save_model_dir(tmp_path / "m", build_model(cfg))
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:8] + b"{garbage" + data[16:])
    with pytest.raises(ModelDirError, match="safetensors"):
        load_model_dir(path)
