"""The component-level computational graph of a model (as in EAP-IG, see docs/methods.md).

Nodes are the input (token plus position embeddings), every attention head, every MLP (any variant: dense, TopK,
SoLU, transcoder; one node read through ``hook_mlp_in`` and written through ``hook_mlp_out``) and the logits.
Writers put something into the residual stream (input, heads, MLPs); readers take it out (each head's q, k and v
inputs separately, each MLP, the logits). An edge joins every writer to every reader downstream of it. Because
each reader applies its own pre-norm, the input of a reader is a sum over writers and each edge can be patched
alone.

Example:
    >>> g = ComponentGraph(n_layers=2, n_heads=4)
    >>> g.n_edges, edge_count(2, 4)
    (110, 110)
    >>> g.edge_names()[0]
    'input->a0.h0<q>'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def edge_count(n_layers: int, n_heads: int, attn_only: bool = False) -> int:
    """Number of edges of the component graph: ``(3H+1)(H+1)L(L-1)/2 + L(5H+2) + 1`` (docs/methods.md).

    Attention-only models have no MLP nodes: ``3H^2 L(L-1)/2 + 4HL + 1`` (each head reads the input and the
    heads of earlier layers through q, k and v; the logits read every writer).

    Example:
        >>> edge_count(12, 12), edge_count(2, 4), edge_count(4, 8), edge_count(2, 4, attn_only=True)
        (32491, 110, 1519, 81)
    """
    L, H = n_layers, n_heads
    if attn_only:
        return 3 * H * H * L * (L - 1) // 2 + 4 * H * L + 1
    return (3 * H + 1) * (H + 1) * L * (L - 1) // 2 + L * (5 * H + 2) + 1


@dataclass(frozen=True)
class Node:
    """A node of the graph: ``input``, ``a{layer}.h{head}``, ``m{layer}`` or ``logits``."""

    name: str
    kind: str
    """"input", "head", "mlp" or "logits"."""
    layer: int | None = None
    head: int | None = None


@dataclass(frozen=True)
class Reader:
    """Where a node reads the residual stream: a head through its q, k or v input, an MLP, or the logits."""

    node: Node
    channel: str | None = None
    """"q", "k" or "v" for heads; None otherwise."""

    @property
    def name(self) -> str:
        return f"{self.node.name}<{self.channel}>" if self.channel else self.node.name


class ComponentGraph:
    """Writers, readers and edges of a model with ``n_layers`` blocks of ``n_heads`` heads (and MLPs unless
    ``attn_only``).

    Writers are ordered as the forward pass produces them (input; per layer its heads, then its MLP). Readers are
    ordered per layer as q of every head, k of every head, v of every head, then the MLP; the logits come last.
    Edges are ordered by reader, then by writer; ``edge_writer[e]`` and ``edge_reader[e]`` index the two lists.

    Example:
        >>> g = ComponentGraph(n_layers=1, n_heads=2, attn_only=True)
        >>> [w.name for w in g.writers], [r.name for r in g.readers]
        (['input', 'a0.h0', 'a0.h1'], ['a0.h0<q>', 'a0.h1<q>', 'a0.h0<k>', 'a0.h1<k>', 'a0.h0<v>', 'a0.h1<v>', 'logits'])
        >>> g.n_edges
        9
    """

    level = "component"

    def __init__(self, n_layers: int, n_heads: int, attn_only: bool = False):
        for name, value in (("n_layers", n_layers), ("n_heads", n_heads)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is not allowed: expected a positive integer")
        self.n_layers, self.n_heads, self.attn_only = n_layers, n_heads, attn_only
        self.input = Node("input", "input")
        self.logits = Node("logits", "logits")
        self.writers: list[Node] = [self.input]
        self.readers: list[Reader] = []
        self._head_writer: dict[tuple[int, int], int] = {}
        self._mlp_writer: dict[int, int] = {}
        self._qkv_readers: dict[int, int] = {}  # layer -> index of its first q reader
        self._mlp_reader: dict[int, int] = {}
        upstream: list[int] = []  # writers whose upstream set each reader sees (count of writers before it)
        for layer in range(n_layers):
            heads = [Node(f"a{layer}.h{h}", "head", layer, h) for h in range(n_heads)]
            self._qkv_readers[layer] = len(self.readers)
            n_before = len(self.writers)
            for channel in ("q", "k", "v"):
                for node in heads:
                    self.readers.append(Reader(node, channel))
                    upstream.append(n_before)
            for h, node in enumerate(heads):
                self._head_writer[(layer, h)] = len(self.writers)
                self.writers.append(node)
            if not attn_only:
                mlp = Node(f"m{layer}", "mlp", layer)
                self._mlp_reader[layer] = len(self.readers)
                self.readers.append(Reader(mlp))
                upstream.append(len(self.writers))
                self._mlp_writer[layer] = len(self.writers)
                self.writers.append(mlp)
        self.logits_reader = len(self.readers)
        self.readers.append(Reader(self.logits))
        upstream.append(len(self.writers))
        self.n_upstream = torch.tensor(upstream)  # (n_readers,) how many writers (a prefix) each reader sees
        writer_idx = [w for r, n in enumerate(upstream) for w in range(n)]
        reader_idx = [r for r, n in enumerate(upstream) for _ in range(n)]
        self.edge_writer = torch.tensor(writer_idx, dtype=torch.long)  # (n_edges,)
        self.edge_reader = torch.tensor(reader_idx, dtype=torch.long)  # (n_edges,)
        writer_of = {w.name: i for i, w in enumerate(self.writers)}
        # The node each reader belongs to, as a writer index (the logits: len(writers)), for pruning.
        self._reader_node = torch.tensor([writer_of.get(r.node.name, len(self.writers)) for r in self.readers])
        edge_node = self._reader_node[self.edge_reader]
        self._edges_into = [(edge_node == w).nonzero().flatten() for w in range(len(self.writers))]
        self._edges_out = [(self.edge_writer == w).nonzero().flatten() for w in range(len(self.writers))]

    @classmethod
    def from_config(cls, cfg: Any) -> ComponentGraph:
        """The graph of a model built from ``cfg`` (a :class:`glassformer.archs.ModelConfig`).

        Example:
            >>> from glassformer.archs import presets
            >>> ComponentGraph.from_config(presets.get("gpt2-small")).n_edges
            32491
        """
        return cls(cfg.n_layers, cfg.n_heads, attn_only=cfg.attn_only)

    @property
    def n_edges(self) -> int:
        return int(self.edge_writer.numel())

    @property
    def nodes(self) -> list[Node]:
        """Every node once: the writers, then the logits."""
        return [*self.writers, self.logits]

    def describe(self) -> dict[str, Any]:
        """What analysis.json records about the graph."""
        return {"level": self.level, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "attn_only": self.attn_only, "n_nodes": len(self.nodes), "n_edges": self.n_edges,
                "n_writers": len(self.writers), "n_readers": len(self.readers)}

    def head_writer(self, layer: int, head: int) -> int:
        return self._head_writer[(layer, head)]

    def mlp_writer(self, layer: int) -> int:
        return self._mlp_writer[layer]

    def qkv_readers(self, layer: int) -> slice:
        """The 3 * n_heads readers of a layer's attention: q of each head, then k, then v."""
        start = self._qkv_readers[layer]
        return slice(start, start + 3 * self.n_heads)

    def head_reader(self, layer: int, head: int, channel: str) -> int:
        return self._qkv_readers[layer] + "qkv".index(channel) * self.n_heads + head

    def mlp_reader(self, layer: int) -> int:
        return self._mlp_reader[layer]

    def edge_names(self) -> list[str]:
        """``writer->reader`` for every edge, e.g. ``a0.h1->a1.h3<k>``."""
        return [f"{self.writers[w].name}->{self.readers[r].name}"
                for w, r in zip(self.edge_writer.tolist(), self.edge_reader.tolist(), strict=True)]

    def edge_index(self, name: str) -> int:
        """The index of the edge called ``name``.

        Example:
            >>> ComponentGraph(2, 4).edge_index("a0.h1->a1.h3<k>") >= 0
            True
        """
        names = self.edge_names()
        if name not in names:
            raise KeyError(f"edge {name!r} is not in this graph ({self.n_edges} edges, e.g. {names[0]!r})")
        return names.index(name)

    def scores_to_edges(self, matrix: Tensor) -> Tensor:
        """(..., n_writers, n_readers) -> (..., n_edges): the entries that are edges."""
        return matrix[..., self.edge_writer, self.edge_reader]

    def weights(self, keep: Tensor) -> Tensor:
        """Edge keep-weights (..., n_edges) in [0, 1] -> a (..., n_writers, n_readers) matrix.

        1 keeps an edge, 0 ablates it; entries that are not edges are 1 (they are never read).

        Example:
            >>> g = ComponentGraph(1, 1, attn_only=True)  # a head cannot read itself: those entries stay 1
            >>> g.weights(torch.zeros(g.n_edges)).tolist()
            [[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
        """
        shape = (*keep.shape[:-1], len(self.writers), len(self.readers))
        out = torch.ones(shape, dtype=torch.float32, device=keep.device)
        out[..., self.edge_writer, self.edge_reader] = keep.to(torch.float32)
        return out

    def prune(self, mask: Tensor) -> Tensor:
        """Drop the dangling edges of boolean circuits ``mask`` (..., n_edges): an edge ``u -> v`` survives when
        ``u`` is reached from the input through kept edges (the input counts as reached) and ``v``'s node reaches
        the logits through kept edges. An edge into a head's q, k or v input reaches that head's node.

        One forward sweep (writers in the order the model computes them) and one backward sweep decide every node;
        the result is a subset of ``mask``, pruning it again changes nothing, and pruning is monotone (a larger
        circuit never loses an edge the smaller one keeps).

        Example:
            >>> g = ComponentGraph(1, 1, attn_only=True)  # input->a0.h0<q|k|v>, input->logits, a0.h0->logits
            >>> g.prune(torch.tensor([True, False, False, False, False])).tolist()  # the head feeds nothing
            [False, False, False, False, False]
            >>> g.prune(torch.tensor([False, False, False, False, True])).tolist()  # nothing feeds the head
            [False, False, False, False, False]
            >>> g.prune(torch.tensor([True, False, False, True, True])).tolist()
            [True, False, False, True, True]
        """
        keep = mask.to(torch.bool)
        flat = keep.reshape(-1, self.n_edges).cpu()  # (K, n_edges)
        n_w = len(self.writers)
        edge_node = self._reader_node[self.edge_reader]  # (n_edges,) the node each edge feeds; n_w: the logits
        writer = self.edge_writer
        reached = torch.zeros(flat.shape[0], n_w + 1, dtype=torch.bool)
        reached[:, 0] = True
        for w in range(1, n_w):  # writer w's readers read only writers before w
            into = self._edges_into[w]
            reached[:, w] = (flat[:, into] & reached[:, writer[into]]).any(dim=1)
        alive = torch.zeros_like(reached)
        alive[:, n_w] = True
        for w in reversed(range(n_w)):  # every edge out of writer w feeds a later node
            out = self._edges_out[w]
            alive[:, w] = (flat[:, out] & alive[:, edge_node[out]]).any(dim=1)
        kept = flat & reached[:, writer] & alive[:, edge_node]
        return kept.reshape(keep.shape).to(keep.device)

    def edge_nodes(self, mask: Tensor) -> set[str]:
        """Names of the nodes touched by the edges in a boolean ``mask`` (n_edges,).

        Example:
            >>> g = ComponentGraph(1, 1, attn_only=True)
            >>> sorted(g.edge_nodes(torch.tensor([True, False, False, False, False])))
            ['a0.h0', 'input']
        """
        idx = mask.nonzero().flatten().tolist()
        out = set()
        for e in idx:
            out.add(self.writers[int(self.edge_writer[e])].name)
            out.add(self.readers[int(self.edge_reader[e])].node.name)
        return out
