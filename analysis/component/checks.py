"""Completeness and minimality of a component circuit, measured as in the IOI circuit work (Wang et al. 2022,
"Interpretability in the Wild"), on top of its faithfulness.

f(C) >= 0.8 says the circuit C reproduces the model's logit difference; it does not say that C holds everything
the model uses (backup paths can stay silent until something is knocked out) or that every member is needed.

- **Completeness**: knock the same set K of C's members out of C and out of the whole model M. A complete circuit
  behaves like the model under every knockout, so the incompleteness ``|f(C \\ K) - f(M \\ K)|`` stays near 0. K is
  drawn at random (each member with probability 1/2, seeded) and grown greedily (up to ``GREEDY_MAX`` members,
  each time the member that most raises the incompleteness).
- **Minimality**: the drop ``f(C) - f(C \\ {e})`` of every member e. A member whose drop is below ``MIN_DROP`` does
  not matter alone (it may still matter together with others).

Knockouts are not pruned: K is the intervention, and pruning C \\ K would remove more than K. Every f is measured
with :class:`~glassformer.analysis.component.faithfulness.Faithfulness`, many circuits per forward.

Example:
    >>> checks = faithfulness_checks(fa, circuit, graph.edge_names(), n_subsets=20, seed=0)  # doctest: +SKIP
    >>> checks["completeness"]["greedy"]["incompleteness"] < 0.1  # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from glassformer.analysis.component.circuits import circuit_mask
from glassformer.analysis.component.faithfulness import THRESHOLDS
from glassformer.analysis.component.graph import ComponentGraph

DEFAULT_SUBSETS = 20
"""Random knockout sets per circuit."""
GREEDY_MAX = 5
"""The greedy knockout set grows to at most this many members."""
MIN_DROP = 0.01
"""A member whose removal lowers f by less than this does not matter alone."""


class CachedF:
    """``f`` of circuits through ``fa`` (a Faithfulness), each distinct circuit measured once: the selections of
    a task often end on the same N_0.8 circuit, and random knockouts repeat.

    Example:
        >>> class Stub:  # f = the number of edges kept
        ...     calls = 0
        ...     def f(self, masks):
        ...         self.calls += 1
        ...         return masks.sum(dim=1).float()
        >>> cached = CachedF(Stub())
        >>> cached.f(torch.tensor([[True, False], [True, False]])).tolist(), cached.f(torch.ones(1, 2).bool()).tolist()
        ([1.0, 1.0], [2.0])
        >>> cached.f(torch.tensor([[True, False], [True, True]])).tolist(), cached.fa.calls
        ([1.0, 2.0], 2)
    """

    def __init__(self, fa: Any):
        self.fa = fa
        self.known: dict[bytes, float] = {}

    def f(self, masks: Tensor) -> Tensor:
        keys = [np.packbits(m.cpu().numpy()).tobytes() for m in masks]
        todo = {k: i for i, k in enumerate(keys) if k not in self.known}
        if todo:
            values = self.fa.f(masks[list(todo.values())]).tolist()
            self.known.update(zip(todo, values, strict=True))
        return torch.tensor([self.known[k] for k in keys])


def without(circuit: Tensor, members: Tensor) -> Tensor:
    """(K, n_edges) copies of boolean ``circuit`` (n_edges,) with each row's ``members`` (K, n_edges) removed.

    Example:
        >>> without(torch.tensor([True, True, False]), torch.tensor([[True, False, False]])).tolist()
        [[False, True, False]]
    """
    return circuit[None] & ~members


def completeness(fa: Any, circuit: Tensor, names: list[str], n_subsets: int = DEFAULT_SUBSETS, seed: int = 0,
                 greedy_max: int = GREEDY_MAX) -> dict[str, Any]:
    """Incompleteness ``|f(C \\ K) - f(M \\ K)|`` of ``circuit`` (bool (n_edges,)) over ``n_subsets`` random K
    (mean, max and each K's numbers) and over a greedily grown K (each step and its largest value).

    Example:
        >>> completeness(fa, circuit, graph.edge_names(), n_subsets=4)["random"]["mean"]  # doctest: +SKIP
        0.03
    """
    members = circuit.nonzero().flatten()
    full = torch.ones_like(circuit)
    gen = torch.Generator().manual_seed(seed)
    knock = torch.zeros(n_subsets, circuit.numel(), dtype=torch.bool)
    for i in range(n_subsets):
        knock[i, members[torch.rand(len(members), generator=gen) < 0.5]] = True
    f = fa.f(torch.cat([without(circuit, knock), without(full, knock)])).tolist() if n_subsets else []
    subsets = [{"size": int(knock[i].sum()), "f_circuit": f[i], "f_model": f[n_subsets + i],
                "incompleteness": abs(f[i] - f[n_subsets + i])} for i in range(n_subsets)]
    values = [s["incompleteness"] for s in subsets]
    random = {"n_subsets": n_subsets, "seed": seed, "mean": sum(values) / len(values) if values else None,
              "max": max(values, default=None), "subsets": subsets}
    return {"random": random, "greedy": _greedy(fa, circuit, members, names, min(len(members), greedy_max))}


def _greedy(fa: Any, circuit: Tensor, members: Tensor, names: list[str], steps: int) -> dict[str, Any]:
    """Grow K one member at a time, each time the member of C that most raises ``|f(C \\ K) - f(M \\ K)|``."""
    full, chosen = torch.ones_like(circuit), torch.zeros_like(circuit)
    trajectory = []
    for _ in range(steps):
        candidates = members[~chosen[members]]
        knock = chosen[None].repeat(len(candidates), 1)
        knock[torch.arange(len(candidates)), candidates] = True
        f = fa.f(torch.cat([without(circuit, knock), without(full, knock)]))
        f_c, f_m = f[: len(candidates)], f[len(candidates):]
        best = int((f_c - f_m).abs().argmax())
        e = int(candidates[best])
        chosen[e] = True
        trajectory.append({"member": names[e], "f_circuit": f_c[best].item(), "f_model": f_m[best].item(),
                           "incompleteness": abs(f_c[best].item() - f_m[best].item())})
    value = max((t["incompleteness"] for t in trajectory), default=None)
    return {"incompleteness": value, "steps": trajectory}


def minimality(fa: Any, circuit: Tensor, names: list[str], min_drop: float = MIN_DROP) -> dict[str, Any]:
    """The drop ``f(C) - f(C \\ {e})`` of every member e of ``circuit``, largest first, and the fraction of members
    whose drop is below ``min_drop``.

    Example:
        >>> minimality(fa, circuit, graph.edge_names())["drops"][0]  # doctest: +SKIP
        ['a1.h2->logits', 0.61]
    """
    members = circuit.nonzero().flatten()
    knock = torch.zeros(len(members), circuit.numel(), dtype=torch.bool)
    knock[torch.arange(len(members)), members] = True
    f = fa.f(torch.cat([circuit[None], without(circuit, knock)])).tolist()
    drops = sorted(([names[int(e)], f[0] - f[1 + i]] for i, e in enumerate(members)), key=lambda d: -d[1])
    below = sum(d < min_drop for _, d in drops)
    return {"f_circuit": f[0], "min_drop": min_drop, "drops": drops,
            "fraction_below": below / len(drops) if drops else None}


def faithfulness_checks(fa: Any, circuit: Tensor, names: list[str], n_subsets: int = DEFAULT_SUBSETS,
                        seed: int = 0) -> dict[str, Any]:
    """Completeness and minimality of ``circuit`` (bool (n_edges,)) measured by ``fa`` (a Faithfulness on the
    held-out pairs): what a circuit entry records under ``faithfulness_checks``.

    Example:
        >>> faithfulness_checks(fa, circuit, graph.edge_names())["minimality"]["fraction_below"]  # doctest: +SKIP
        0.25
    """
    return {"edges": int(circuit.sum()), "completeness": completeness(fa, circuit, names, n_subsets, seed),
            "minimality": minimality(fa, circuit, names)}


SIZE_KEYS = tuple(f"N_{p:g}" for p in THRESHOLDS)


def n08_circuit(graph: ComponentGraph, ranking: Tensor, result: dict[str, Any],
                key: str = SIZE_KEYS[0]) -> Tensor | None:
    """The pruned N_0.8 circuit (or the one of size ``key``, e.g. "N_0.9"; bool (n_edges,)) of an
    :func:`evaluate_ranking` ``result`` of ``ranking``; None where it has no such size.

    Example:
        >>> g = ComponentGraph(1, 1, attn_only=True)
        >>> n08_circuit(g, torch.tensor([4, 0, 3, 1, 2]), {"N_0.8": {"k": 3}}).tolist()
        [True, False, False, True, True]
    """
    k = (result.get(key) or {}).get("k")
    return None if k is None else graph.prune(circuit_mask(ranking, k))


def by_ablation(selection: str, primary: dict[str, Any], second: dict[str, Any], graph: ComponentGraph,
                config: Any) -> dict[str, Any]:
    """A circuit entry's ``by_ablation``: the model's N_0.8 and N_0.9 under the primary ablation (``primary``, its
    :func:`evaluate_ranking` result) and, under the second, its sizes, curve, signal and the completeness of its
    own N_0.8 circuit (``second``: the model sized again, or why it was skipped).

    Example:
        >>> by_ablation("greedy", result, second, graph, config)["corrupt"]["N_0.8"]["edges"]  # doctest: +SKIP
        9
    """
    out: dict[str, Any] = {config.ablation: {k: primary[k] for k in SIZE_KEYS}}
    if "skipped" in second:
        out[second["ablation"]] = {"skipped": second["skipped"]}
        return out
    res = second["results"][selection]
    entry = {**{k: res[k] for k in SIZE_KEYS}, "curve": res["curve"], "signal": res["signal"], "completeness": None}
    circuit = n08_circuit(graph, second["rankings"][selection], res)
    if circuit is not None:
        entry["completeness"] = completeness(second["cached"], circuit, graph.edge_names(), config.n_subsets,
                                             config.seed)
    out[second["ablation"]] = entry
    return out
