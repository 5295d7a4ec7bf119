"""Decomposition stability: do two seeds of the same variant learn the same dictionary?

A sparse layer (a transcoder's latents, a TopK MLP's neurons) is only a useful unit of explanation if the units
are not an accident of the seed. For each layer, the decoder directions of model A (one unit vector per latent)
are matched one-to-one with model B's by the assignment that maximises the summed cosine (the Hungarian
algorithm, ``scipy.optimize.linear_sum_assignment``); the report is the mean matched cosine and the fraction of
latents matched above 0.9. The same numbers on two independent random dictionaries of the same shapes (isotropic
Gaussian directions, seeded) are the chance level to read them against: a value near chance says the
decomposition is not unique at this scale. Random dictionaries rather than randomly initialised models, because a
transcoder's decoder starts at zero (it begins as a no-op), so a fresh model has no directions to match.

Example:
    >>> from glassformer.archs import build_model, presets
    >>> a = build_model(presets.get("debug"))
    >>> dictionary_stability(a, a)["layers"][0]["mean_cosine"]
    1.0
"""

from __future__ import annotations

from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

MATCH_THRESHOLD = 0.9
"""A latent counts as reproduced when its matched partner's decoder direction has at least this cosine."""


def matched_cosines(a: Tensor, b: Tensor) -> Tensor:
    """(n,) cosines of the one-to-one matching of the rows of ``a`` (n, d) with rows of ``b`` (m, d), m >= n, that
    maximises their sum. Directions are compared with their sign: a latent's output is added, never subtracted.

    Example:
        >>> a = torch.eye(3)
        >>> matched_cosines(a, a[[2, 0, 1]]).tolist()
        [1.0, 1.0, 1.0]
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or a.shape[0] > b.shape[0]:
        raise ValueError(f"directions of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be matched: expected "
                         "(n, d) and (m, d) with m >= n")
    cos = torch.nn.functional.normalize(a.double(), dim=1) @ torch.nn.functional.normalize(b.double(), dim=1).T
    rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
    return cos[torch.as_tensor(rows), torch.as_tensor(cols)].float()


def dictionary_stability(model_a: Any, model_b: Any) -> dict[str, Any]:
    """Per MLP layer, the matching of ``model_a``'s decoder directions with ``model_b``'s: mean cosine and the
    fraction above :data:`MATCH_THRESHOLD`; and their means over layers.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> torch.manual_seed(0); a = build_model(presets.get("debug"))
        >>> torch.manual_seed(1); b = build_model(presets.get("debug"))
        >>> dictionary_stability(a, b)["fraction_above"] < 0.1
        True
    """
    if model_a.cfg.to_dict() != model_b.cfg.to_dict():
        raise ValueError("dictionary stability compares two models of the same config (two seeds of one variant)")
    layers = []
    for i, (block_a, block_b) in enumerate(zip(model_a.blocks, model_b.blocks, strict=True)):
        if block_a.mlp is None:
            continue
        with torch.no_grad():
            cos = matched_cosines(block_a.mlp.output_weights().detach().cpu(),
                                  block_b.mlp.output_weights().detach().cpu())
        layers.append({"layer": i, "latents": int(cos.numel()), "mean_cosine": round(float(cos.mean()), 6),
                       "fraction_above": float((cos > MATCH_THRESHOLD).float().mean())})
    if not layers:
        raise ValueError("the models have no MLP layers: there is no dictionary to compare")
    return {"threshold": MATCH_THRESHOLD, "layers": layers,
            "mean_cosine": sum(r["mean_cosine"] for r in layers) / len(layers),
            "fraction_above": sum(r["fraction_above"] for r in layers) / len(layers)}


def stability_against_chance(model_a: Any, model_b: Any, seed: int = 0) -> dict[str, Any]:
    """:func:`dictionary_stability` of two trained seeds beside the chance level: the same matching of two
    independent random dictionaries of each layer's shape (seeded, without touching the global random stream).

    Example:
        >>> out = stability_against_chance(model_seed0, model_seed1)  # doctest: +SKIP
        >>> out["trained"]["mean_cosine"], out["chance"]["mean_cosine"]  # doctest: +SKIP
        (0.71, 0.32)
    """
    trained = dictionary_stability(model_a, model_b)
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for row in trained["layers"]:
        d = model_a.cfg.d_model
        cos = matched_cosines(torch.randn(row["latents"], d, generator=gen), torch.randn(row["latents"], d,
                                                                                          generator=gen))
        layers.append({"layer": row["layer"], "latents": row["latents"], "mean_cosine": round(float(cos.mean()), 6),
                       "fraction_above": float((cos > MATCH_THRESHOLD).float().mean())})
    chance = {"threshold": MATCH_THRESHOLD, "layers": layers, "seed": seed,
              "mean_cosine": sum(r["mean_cosine"] for r in layers) / len(layers),
              "fraction_above": sum(r["fraction_above"] for r in layers) / len(layers)}
    return {"trained": trained, "chance": chance}


DICTIONARY_KINDS = ("transcoder", "topk")
"""MLP kinds whose hidden units are meant as a dictionary of features."""


def has_dictionary(model_dir: Any) -> bool:
    """Whether the model directory's MLPs are a dictionary (a transcoder or a TopK MLP), from its config.json.

    Example:
        >>> has_dictionary("no/such/model")
        False
    """
    from pathlib import Path

    from glassformer.archs.model_dir import CONFIG_FILE, read_json

    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        return False
    cfg = read_json(path)
    return isinstance(cfg, dict) and (cfg.get("mlp") or {}).get("kind") in DICTIONARY_KINDS


def seed_stability(dir_a: Any, dir_b: Any, seed: int = 0) -> dict[str, Any]:
    """Report fields of :func:`stability_against_chance` for two model directories (two seeds of one variant):
    matched decoder cosines averaged over MLP layers, beside two random dictionaries of the same shapes (the
    chance level of two random inits: isotropic directions; a transcoder's own init has none, its decoder is zero).

    Example:
        >>> seed_stability("runs/s/transcoder-seed0", "runs/s/transcoder-seed1")["mean_best_cosine"]  # doctest: +SKIP
        0.71
    """
    from glassformer.archs import load_model_dir

    out = stability_against_chance(load_model_dir(dir_a), load_model_dir(dir_b), seed=seed)
    trained, chance = out["trained"], out["chance"]
    layers = ", ".join(str(r["layer"]) for r in trained["layers"])
    return {"mean_best_cosine": trained["mean_cosine"], "frac_above_0.9": trained["fraction_above"],
            "chance_mean_best_cosine": chance["mean_cosine"], "chance_frac_above_0.9": chance["fraction_above"],
            "site": f"decoder directions of MLP layer{'s' if len(trained['layers']) > 1 else ''} {layers}, "
                    "mean over layers",
            "chance": "two random dictionaries of the same shapes (isotropic Gaussian directions)"}
