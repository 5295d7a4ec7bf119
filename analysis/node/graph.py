"""The node-level graph: residual stream channels, attention q/k/v channels, MLP neurons or transcoder latents.

A node is one channel at one site; the sites of layer ``l``, in forward order (Gao et al. 2025's node sites, the
same places activation sparsity acts):

| site | hook | nodes |
| --- | --- | --- |
| ``a{l}.in`` | ``blocks.{l}.ln1.hook_normalized`` | the d_model residual channels attention reads (after its norm) |
| ``a{l}.q``, ``a{l}.k``, ``a{l}.v`` | ``blocks.{l}.attn.hook_q|k|v`` | n_heads * d_head channels each |
| ``a{l}.out`` | ``blocks.{l}.hook_attn_out`` | the d_model residual channels attention writes |
| ``m{l}.in`` | ``blocks.{l}.ln2.hook_normalized`` | the d_model residual channels the MLP reads |
| ``m{l}.hidden`` | ``blocks.{l}.mlp.hook_post``, or ``hook_latents`` for transcoders | neurons or latents |
| ``m{l}.out`` | ``blocks.{l}.hook_mlp_out`` | the d_model residual channels the MLP writes |

An ablated node is replaced at its site by its mean over corpus tokens (or by zero); downstream sites see the
result. Edges are the non-zero weights between nodes, so a weight-sparse model has fewer of them:
``in -> q|k|v`` (W_Q, W_K, W_V), ``v -> out`` (W_O), ``q <-> k`` (the score pairs channel j of a head's query with
channel j of its key; with rotary positions both channels of a rotation pair), ``m.in -> hidden`` (W_in or W_enc),
``hidden -> m.out`` (W_out or W_dec), ``m.in -> m.out`` (W_skip), and ``residual``: a write channel c (``a.out``,
``m.out``) to channel c of every later read site (``a.in``, ``m.in``) whose norm gain on c is non-zero.

Example:
    >>> from glassformer.archs import presets
    >>> g = NodeGraph.from_config(presets.get("debug"))
    >>> g.n_nodes, g.site("m1.hidden").hook
    (1408, 'blocks.1.mlp.hook_post')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from glassformer.analysis.tasks.base import TaskBatch

NODE_ABLATIONS: dict[str, str] = {
    "mean": "each pruned node replaced by its mean over every position of corpus windows",
    "zero": "each pruned node replaced by zero",
}


@dataclass(frozen=True)
class Site:
    """One place where nodes live: ``shape`` is the trailing shape of the activation at ``hook``."""

    name: str
    hook: str
    kind: str
    """"read" (a.in, m.in), "q", "k", "v", "write" (a.out, m.out) or "hidden" (neurons / latents)."""
    layer: int
    shape: tuple[int, ...]
    start: int
    """Index of the site's first node."""

    @property
    def size(self) -> int:
        return int(torch.Size(self.shape).numel())

    @property
    def nodes(self) -> slice:
        return slice(self.start, self.start + self.size)


def hidden_site(cfg: Any) -> tuple[str, int]:
    """(hook name under ``blocks.{l}.mlp``, width) of the MLP variant's neurons or latents, read from a module
    built on the meta device (no memory), so any registered variant works.

    Example:
        >>> from glassformer.archs import TranscoderConfig, presets
        >>> hidden_site(presets.get("debug", mlp=TranscoderConfig(expansion_factor=2)))
        ('hook_latents', 128)
    """
    mlp = _meta_mlp(cfg)
    return mlp.hidden_hook, mlp.hidden_width


def _meta_mlp(cfg: Any) -> Any:
    """The MLP of ``cfg``'s variant built on the meta device (no memory): its contract answers shape questions."""
    from glassformer.archs import MLP_REGISTRY

    with torch.device("meta"):
        return MLP_REGISTRY.build(cfg.mlp_config, cfg)


class NodeGraph:
    """The nodes of a model built from ``cfg`` (a :class:`glassformer.archs.ModelConfig`), site by site.

    Example:
        >>> from glassformer.archs import ModelConfig
        >>> g = NodeGraph.from_config(ModelConfig(d_model=8, n_heads=2, n_layers=1, d_mlp=16))
        >>> [s.name for s in g.sites], g.n_nodes
        (['a0.in', 'a0.q', 'a0.k', 'a0.v', 'a0.out', 'm0.in', 'm0.hidden', 'm0.out'], 72)
    """

    level = "node"

    def __init__(self, cfg: Any):
        self.cfg = cfg
        D, H, dh = cfg.d_model, cfg.n_heads, cfg.head_dim
        self.hidden_hook, self.hidden_width = (None, 0) if cfg.attn_only else hidden_site(cfg)
        self.sites: list[Site] = []
        start = 0

        def add(name: str, hook: str, kind: str, layer: int, shape: tuple[int, ...]) -> None:
            nonlocal start
            self.sites.append(Site(name, hook, kind, layer, shape, start))
            start += self.sites[-1].size

        for l in range(cfg.n_layers):
            add(f"a{l}.in", f"blocks.{l}.ln1.hook_normalized", "read", l, (D,))
            for ch in "qkv":
                add(f"a{l}.{ch}", f"blocks.{l}.attn.hook_{ch}", ch, l, (H, dh))
            add(f"a{l}.out", f"blocks.{l}.hook_attn_out", "write", l, (D,))
            if not cfg.attn_only:
                add(f"m{l}.in", f"blocks.{l}.ln2.hook_normalized", "read", l, (D,))
                add(f"m{l}.hidden", f"blocks.{l}.mlp.{self.hidden_hook}", "hidden", l, (self.hidden_width,))
                add(f"m{l}.out", f"blocks.{l}.hook_mlp_out", "write", l, (D,))
        self.n_nodes = start
        self._by_name = {s.name: s for s in self.sites}

    @classmethod
    def from_config(cls, cfg: Any) -> NodeGraph:
        return cls(cfg)

    def site(self, name: str) -> Site:
        if name not in self._by_name:
            raise KeyError(f"site {name!r} is not in this graph; sites: {', '.join(self._by_name)}")
        return self._by_name[name]

    def node_name(self, i: int) -> str:
        """``a0.q[h1.3]`` (head 1, channel 3), ``m1.hidden[17]``, ``a0.in[5]``.

        Example:
            >>> from glassformer.archs import ModelConfig
            >>> NodeGraph(ModelConfig(d_model=8, n_heads=2, n_layers=1)).node_name(8 + 5)
            'a0.q[h1.1]'
        """
        for s in self.sites:
            if s.start <= i < s.start + s.size:
                j = i - s.start
                return f"{s.name}[h{j // s.shape[1]}.{j % s.shape[1]}]" if len(s.shape) == 2 else f"{s.name}[{j}]"
        raise IndexError(f"node {i} is out of range: the graph has {self.n_nodes} nodes")

    def node_index(self, name: str) -> int:
        """Inverse of :meth:`node_name`.

        Example:
            >>> from glassformer.archs import ModelConfig
            >>> NodeGraph(ModelConfig(d_model=8, n_heads=2, n_layers=1)).node_index("a0.q[h1.1]")
            13
        """
        site, _, rest = name.partition("[")
        s = self.site(site)
        body = rest.rstrip("]")
        if len(s.shape) == 2:
            h, j = body.lstrip("h").split(".")
            return s.start + int(h) * s.shape[1] + int(j)
        return s.start + int(body)

    def kinds(self, keep: Tensor | None = None) -> dict[str, int]:
        """Nodes per site kind (kept ones only when ``keep`` (n_nodes,) bool is given)."""
        out: dict[str, int] = {}
        for s in self.sites:
            n = s.size if keep is None else int(keep[s.nodes].sum())
            out[s.kind] = out.get(s.kind, 0) + n
        return out

    def describe(self, model: Any = None) -> dict[str, Any]:
        """What analysis.json records about the graph; edges counted on ``model``'s weights when given."""
        out = {"level": self.level, "n_nodes": self.n_nodes, "nodes_by_kind": self.kinds(),
               "n_edges_dense": self.edges()["total"], "sites": [s.name for s in self.sites],
               "hidden_hook": self.hidden_hook}
        if model is not None:
            out["n_edges"] = self.edges(model)["total"]
        return out

    def edges(self, model: Any = None, keep: Tensor | None = None) -> dict[str, int]:
        """Edges between kept nodes, by family and in total: non-zero weights of ``model`` (every weight counts
        as non-zero without a model: the count of a dense model of this shape).

        Example:
            >>> from glassformer.archs import ModelConfig
            >>> NodeGraph(ModelConfig(d_model=4, n_heads=1, n_layers=1, d_mlp=2, attn_only=True)).edges()
            {'qkv': 48, 'qk': 4, 'ov': 16, 'mlp_in': 0, 'mlp_out': 0, 'skip': 0, 'residual': 0, 'total': 68}
        """
        keep = torch.ones(self.n_nodes, dtype=torch.bool) if keep is None else keep.bool().cpu()
        if keep.shape != (self.n_nodes,):
            raise ValueError(f"keep has shape {tuple(keep.shape)}: expected ({self.n_nodes},)")
        weights = _weights(model) if model is not None else None
        counts = dict.fromkeys(("qkv", "qk", "ov", "mlp_in", "mlp_out", "skip", "residual"), 0)

        def k(name: str) -> Tensor:
            return keep[self.site(name).nodes].float()

        def between(key: str, W: Tensor | None, out_site: str, in_site: str) -> None:
            kout, kin = k(out_site), k(in_site)
            if W is None:
                counts[key] += int(kout.sum() * kin.sum())
            else:
                counts[key] += int(kout @ (W != 0).float() @ kin)

        rotary = self.cfg.positional == "rotary"
        # Without a model, the variant's own MLP (on the meta device) says whether it has a skip path.
        skip_in_config = (weights is None and not self.cfg.attn_only
                          and _meta_mlp(self.cfg).skip_weights() is not None)
        for l in range(self.cfg.n_layers):
            w = weights[l] if weights is not None else {}
            for ch in "qkv":
                between("qkv", w.get(f"W_{ch.upper()}"), f"a{l}.{ch}", f"a{l}.in")
            between("ov", w.get("W_O"), f"a{l}.out", f"a{l}.v")
            q = k(f"a{l}.q").view(self.cfg.n_heads, -1, 2 if rotary else 1)  # (H, pairs, 2) or (H, d_head, 1)
            kk = k(f"a{l}.k").view_as(q)
            counts["qk"] += int((q.sum(-1) * kk.sum(-1)).sum())
            if not self.cfg.attn_only:
                between("mlp_in", w.get("W_in"), f"m{l}.hidden", f"m{l}.in")
                between("mlp_out", w.get("W_out"), f"m{l}.out", f"m{l}.hidden")
                has_skip = w.get("W_skip") is not None if weights is not None else skip_in_config
                if has_skip:
                    between("skip", w.get("W_skip"), f"m{l}.out", f"m{l}.in")
        written = torch.zeros(self.cfg.d_model)  # (d_model,) kept write sites so far, per channel
        for s in self.sites:
            if s.kind == "write":
                written += keep[s.nodes].float()
            elif s.kind == "read":
                gain = weights[s.layer][f"gain_{s.name[0]}"] if weights is not None else None
                live = keep[s.nodes].float() * ((gain != 0).float() if gain is not None else 1.0)
                counts["residual"] += int((live * written).sum())
        counts["total"] = sum(counts.values())
        return counts


def _weights(model: Any) -> list[dict[str, Tensor]]:
    """Per layer, every matrix an edge family reads, as (out, in), plus the readers' norm gains."""
    out = []
    for block in model.blocks:
        attn = block.attn
        w = {"W_Q": attn.W_Q.weight, "W_K": attn.W_K.weight, "W_V": attn.W_V.weight, "W_O": attn.W_O.weight,
             "gain_a": block.ln1.weight}
        mlp = block.mlp
        if mlp is not None:
            w["gain_m"] = block.ln2.weight
            w["W_in"] = mlp.input_weights()  # (width, d_model): W_in of neurons, W_enc of latents
            w["W_out"] = mlp.output_weights().T  # (d_model, width)
            skip = mlp.skip_weights()  # (d_model, d_model) or None
            if skip is not None:
                w["W_skip"] = skip
        out.append({k: v.detach().cpu() for k, v in w.items()})
    return out


@contextmanager
def frozen_weights(model: Any) -> Iterator[None]:
    """No gradient for ``model``'s weights inside the block (gates get theirs; the weights' would be computed
    and thrown away); the flags are restored afterwards.

    Example:
        >>> lin = torch.nn.Linear(2, 2)
        >>> with frozen_weights(lin):
        ...     lin.weight.requires_grad
        False
    """
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


@torch.no_grad()
def node_means(model: Any, graph: NodeGraph, tokens: Tensor, batch_size: int = 16) -> Tensor:
    """Mean of every node over every position of corpus windows ``tokens`` (N, T): (n_nodes,).

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> model = build_model(presets.get("debug")); g = NodeGraph.from_config(model.cfg)
        >>> tuple(node_means(model, g, torch.randint(0, 512, (2, 8))).shape)
        (1408,)
    """
    from glassformer.analysis.common import check_tokens

    check_tokens(tokens, "corpus_tokens", model.cfg)
    device = next(model.parameters()).device
    tokens = tokens[:, : model.cfg.n_ctx].to(device)
    total = torch.zeros(graph.n_nodes, dtype=torch.float64, device=device)

    def add(site: Site) -> Callable:
        def fn(x: Tensor, hook: Any) -> None:
            total[site.nodes] += x.reshape(-1, site.size).double().sum(dim=0)
        return fn

    with model.hooks([(s.hook, add(s)) for s in graph.sites]):
        for start in range(0, tokens.shape[0], batch_size):
            model(tokens[start:start + batch_size])
    return (total / tokens.numel()).float()


class GatedModel:
    """Runs ``model`` on a task batch with every node gated: ``x -> base + g * (x - base)`` at each node, where
    ``base`` is the node's ablated value (mean or zero) and ``g`` in [0, 1] (1 keeps the node, 0 ablates it).
    Many gate settings run as replicas of the batch in one forward.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> model = build_model(presets.get("debug")); g = NodeGraph.from_config(model.cfg)
        >>> b = TaskBatch("t", torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long),
        ...               torch.tensor([2, 1]), torch.tensor([1, 1]), torch.tensor([2, 2]))
        >>> tuple(GatedModel(model, g, b, "zero").logits(torch.ones(3, g.n_nodes)).shape)
        (3, 2, 512)
    """

    def __init__(self, model: Any, graph: NodeGraph, batch: TaskBatch, ablation: str, means: Tensor | None = None):
        if ablation not in NODE_ABLATIONS:
            raise ValueError(f"ablation={ablation!r} is not allowed at node level: expected one of "
                             f"{', '.join(NODE_ABLATIONS)}")
        if ablation == "mean" and means is None:
            raise ValueError("ablation='mean' needs the node means (see node_means)")
        if means is not None and means.shape != (graph.n_nodes,):
            raise ValueError(f"means has shape {tuple(means.shape)}: expected ({graph.n_nodes},)")
        self.model, self.graph, self.batch, self.ablation = model, graph, batch, ablation
        device = batch.clean.device
        self.base = means.to(device) if ablation == "mean" else torch.zeros(graph.n_nodes, device=device)

    def logits(self, gates: Tensor) -> Tensor:
        """Last-position logits (K, B, d_vocab) for K gate settings ``gates`` (K, n_nodes); differentiable with
        respect to ``gates`` when it requires grad."""
        K = gates.shape[0]
        B = self.batch.clean.shape[0]
        gates = gates.to(self.base.device)

        def gate(site: Site) -> Callable:
            g = gates[:, site.nodes].reshape(K, 1, 1, *site.shape)  # (K, 1, 1, *shape)
            base = self.base[site.nodes].view(site.shape)

            def fn(x: Tensor, hook: Any) -> Tensor:
                y = x.view(K, B, *x.shape[1:])  # (K, B, T, *shape)
                return torch.lerp(base.expand_as(y), y, g).reshape(x.shape)  # base + g (y - base), one kernel
            return fn

        rows = torch.arange(K * B, device=self.base.device)
        last = self.batch.last.repeat(K)  # (K * B,)

        def take_last(x: Tensor, hook: Any) -> Tensor:
            return x[rows, last][:, None]  # (K * B, 1, d_model): only the answer position reaches the unembedding

        hooks = [(s.hook, gate(s)) for s in self.graph.sites] + [("ln_final.hook_normalized", take_last)]
        with self.model.hooks(hooks):
            logits = self.model(self.batch.clean.repeat(K, 1))  # (K * B, 1, d_vocab)
        return logits[:, 0].view(K, B, -1)

    def circuit_logits(self, ranking: Tensor, sizes: list[int]) -> Tensor:
        """(len(sizes), B, d_vocab) logits with only the first ``k`` nodes of ``ranking`` kept, for each k."""
        position = torch.empty_like(ranking)
        position[ranking] = torch.arange(len(ranking), device=ranking.device)
        keep = position[None, :] < torch.tensor(sizes, device=ranking.device)[:, None]  # (K, n_nodes)
        return self.logits(keep.float())
