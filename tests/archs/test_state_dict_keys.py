"""The parameter names of every preset and variant, written out by hand: a model directory's
``model.safetensors`` is keyed by them, so a rename would orphan every saved model. The order is pinned too: the
model initialises its parameters in this order, so reordering them would change every initial weight."""

from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from glassformer.archs import MLP_REGISTRY, ModelConfig, build_model, presets, save_model_dir

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

ATTN = ["ln1.weight", "ln1.bias",
        "attn.W_Q.weight", "attn.W_Q.bias", "attn.W_K.weight", "attn.W_K.bias",
        "attn.W_V.weight", "attn.W_V.bias", "attn.W_O.weight", "attn.W_O.bias"]
LN2 = ["ln2.weight", "ln2.bias"]
MLP_KEYS = {
    "dense": ["mlp.W_in.weight", "mlp.W_in.bias", "mlp.W_out.weight", "mlp.W_out.bias"],
    "topk": ["mlp.W_in.weight", "mlp.W_in.bias", "mlp.W_out.weight", "mlp.W_out.bias"],
    "solu": ["mlp.W_in.weight", "mlp.W_in.bias", "mlp.ln.weight", "mlp.ln.bias", "mlp.W_out.weight",
             "mlp.W_out.bias"],
    "transcoder": ["mlp.W_enc", "mlp.b_enc", "mlp.W_dec", "mlp.b_dec"],
}
"""Per MLP kind, with its default config; every registered kind must be listed."""
TRANSCODER_EXTRA = {
    "topk": [], "relu": [], "jumprelu": ["mlp.log_threshold"],
    "batchtopk": ["mlp.threshold", "mlp.threshold_updates"],  # persistent buffers: saved with the weights
}


def expected_keys(n_layers: int, block: list[str], positions: bool = True, final_bias: bool = True) -> list[str]:
    head = ["embed.weight"] + (["pos_embed.weight"] if positions else [])
    tail = ["ln_final.weight"] + (["ln_final.bias"] if final_bias else []) + ["unembed.weight"]
    return head + [f"blocks.{i}.{k}" for i in range(n_layers) for k in block] + tail


CASES = {
    # name: (config factory, expected ordered keys)
    "preset debug": (lambda: presets.get("debug"), expected_keys(2, ATTN + LN2 + MLP_KEYS["dense"])),
    "preset tiny": (lambda: presets.get("tiny"), expected_keys(4, ATTN + LN2 + MLP_KEYS["dense"])),
    "preset small": (lambda: presets.get("small"), expected_keys(8, ATTN + LN2 + MLP_KEYS["dense"])),
    "preset gpt2-small": (lambda: presets.get("gpt2-small"), expected_keys(12, ATTN + LN2 + MLP_KEYS["dense"])),
    "rotary rmsnorm attn_only": (
        lambda: presets.get("debug", positional="rotary", norm="rmsnorm", attn_only=True),
        expected_keys(2, ["ln1.weight", "attn.W_Q.weight", "attn.W_Q.bias", "attn.W_K.weight", "attn.W_K.bias",
                          "attn.W_V.weight", "attn.W_V.bias", "attn.W_O.weight", "attn.W_O.bias"],
                      positions=False, final_bias=False)),
    "transcoder skip": (lambda: presets.get("debug", mlp={"kind": "transcoder", "skip": True}),
                        expected_keys(2, ATTN + LN2 + MLP_KEYS["transcoder"] + ["mlp.W_skip"])),
}
for _yaml, _block in {
    "topk": MLP_KEYS["topk"], "solu": MLP_KEYS["solu"], "act_sparsity": MLP_KEYS["dense"],
    "ortho": MLP_KEYS["dense"], "weight_sparse": MLP_KEYS["dense"],
    "transcoder": MLP_KEYS["transcoder"] + TRANSCODER_EXTRA["topk"],
    "transcoder_relu": MLP_KEYS["transcoder"] + TRANSCODER_EXTRA["relu"],
    "transcoder_jumprelu": MLP_KEYS["transcoder"] + TRANSCODER_EXTRA["jumprelu"],
    "transcoder_batchtopk": MLP_KEYS["transcoder"] + TRANSCODER_EXTRA["batchtopk"],
}.items():
    CASES[f"configs/{_yaml}.yaml"] = (
        lambda name=_yaml: ModelConfig.from_dict(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["model"]),
        expected_keys(4, ATTN + LN2 + _block))


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_keys_are_unchanged(case):
    make_cfg, expected = CASES[case]
    with torch.device("meta"):  # names only: no memory, even for gpt2-small
        model = build_model(make_cfg())
    assert list(model.state_dict()) == expected


@pytest.mark.parametrize("kind", MLP_REGISTRY.names())
def test_every_registered_kind_has_its_keys_written_here(kind):
    assert kind in MLP_KEYS, f"add the parameter names of MLP kind {kind!r} to MLP_KEYS"
    with torch.device("meta"):
        model = build_model(presets.get("debug", mlp={"kind": kind}, d_mlp=128))
    assert [k for k in model.state_dict() if k.startswith("blocks.0.mlp.")] == [f"blocks.0.{k}" for k in MLP_KEYS[kind]]


@pytest.mark.parametrize("mlp", [None, {"kind": "transcoder", "activation": "batchtopk", "skip": True}])
def test_safetensors_holds_the_state_dict_names(tmp_path, mlp):
    cfg = presets.get("debug", mlp=mlp, d_vocab=64, d_model=16, n_heads=2, d_mlp=32)
    path = save_model_dir(tmp_path / "m", build_model(cfg))
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    extra = ["mlp.threshold", "mlp.threshold_updates", "mlp.W_skip"]
    block = ATTN + LN2 + (MLP_KEYS["dense"] if mlp is None else MLP_KEYS["transcoder"] + extra)
    assert saved == set(expected_keys(2, block))
