"""Edge patching through hook points: run the model with any set of edges ablated, fully or in part.

Every reader's input is the residual stream, a sum over upstream writers (plus biases). Ablating edge u -> v
replaces writer u's contribution to reader v's input, and to nothing else, by its ablated value:

    input_v = resid_v - sum_u (1 - w_uv) * (a_u - a_u_ablated)

where ``a_u`` is what u writes in the current (patched) run and ``w_uv`` in [0, 1] keeps the edge (1) or removes
it (0). Writers are captured at ``hook_embed`` + ``hook_pos_embed`` (the input), ``blocks.{l}.attn.hook_result``
(each head) and ``blocks.{l}.hook_mlp_out``; readers are patched at ``blocks.{l}.hook_q_input|k_input|v_input``
(one copy of the stream per head), ``blocks.{l}.hook_mlp_in`` and, for the logits, the last block's
``hook_resid_post``. Terms that belong to no node (W_O's bias, and the difference AbsTopK at ``attn_out`` makes
to the sum of the heads) stay as the current run computes them.

Ablated values (``ABLATIONS``): ``mean`` over corpus tokens (one vector per writer, averaged over every position
of the windows the caller passes), ``position-mean`` (one vector per writer and position: what the writer holds
on average at that position of a corpus window, so positional information survives the ablation), ``zero``, or
``corrupt`` (the writer's value on the corrupted prompt, position by position). Many edge settings run as
replicas of the batch in one forward (``weights`` of shape (K, ...)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from glassformer.analysis.common import check_tokens
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.tasks.base import TaskBatch

ABLATIONS: dict[str, str] = {
    "mean": "each writer replaced by its mean over corpus tokens (all positions)",
    "position-mean": "each writer replaced by its mean over corpus windows at the same position",
    "zero": "each writer replaced by zero",
    "corrupt": "each writer replaced by its value on the corrupted prompt (position by position)",
}


def check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation={ablation!r} is not allowed: expected one of {', '.join(ABLATIONS)}")


def _writer_capture(graph: ComponentGraph, store: dict[str, Tensor]) -> list[tuple[str, Callable]]:
    def save(x: Tensor, hook: Any) -> None:
        store[hook.name] = x

    names = ["hook_embed", "hook_pos_embed"]
    for layer in range(graph.n_layers):
        names.append(f"blocks.{layer}.attn.hook_result")
        if not graph.attn_only:
            names.append(f"blocks.{layer}.hook_mlp_out")
    return [(n, save) for n in names]


def _stack_writers(graph: ComponentGraph, store: dict[str, Tensor]) -> Tensor:
    """Captured hooks -> (n_writers, B, T, d_model) in graph order."""
    first = store["hook_embed"]
    parts = [(first + store["hook_pos_embed"] if "hook_pos_embed" in store else first)[None]]
    for layer in range(graph.n_layers):
        parts.append(store[f"blocks.{layer}.attn.hook_result"].permute(2, 0, 1, 3))  # (H, B, T, d_model)
        if not graph.attn_only:
            parts.append(store[f"blocks.{layer}.hook_mlp_out"][None])
    return torch.cat(parts)


@torch.no_grad()
def writer_activations(model: Any, graph: ComponentGraph, tokens: Tensor) -> Tensor:
    """What every writer puts into the residual stream: (n_writers, B, T, d_model).

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> model = build_model(presets.get("debug")); g = ComponentGraph.from_config(model.cfg)
        >>> tuple(writer_activations(model, g, torch.zeros(2, 3, dtype=torch.long)).shape)
        (11, 2, 3, 64)
    """
    store: dict[str, Tensor] = {}
    with model.hooks(_writer_capture(graph, store)):
        model(tokens)
    return _stack_writers(graph, store)


@torch.no_grad()
def writer_means(model: Any, graph: ComponentGraph, tokens: Tensor, batch_size: int = 16,
                 per_position: bool = False) -> Tensor:
    """Mean of every writer over all tokens of corpus windows ``tokens`` (N, T): (n_writers, d_model); with
    ``per_position`` the mean at each position over the windows: (n_writers, T, d_model).

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> model = build_model(presets.get("debug")); g = ComponentGraph.from_config(model.cfg)
        >>> tuple(writer_means(model, g, torch.randint(0, 512, (4, 8))).shape)
        (11, 64)
    """
    check_tokens(tokens, "corpus_tokens", model.cfg)
    tokens = tokens[:, : model.cfg.n_ctx].to(next(model.parameters()).device)
    total, count = None, 0
    for start in range(0, tokens.shape[0], batch_size):
        acts = writer_activations(model, graph, tokens[start:start + batch_size]).double()
        s = acts.sum(dim=1) if per_position else acts.sum(dim=(1, 2))  # (n_writers, [T,] d_model)
        total = s if total is None else total + s
        count += acts.shape[1] if per_position else acts.shape[1] * acts.shape[2]
    return (total / count).float()


@dataclass(frozen=True)
class CleanPrefix:
    """What a patched run from a later block reuses of the clean run (:meth:`Patcher.clean_prefix`)."""

    resid: list[Tensor]
    """The residual stream entering block l, (B, T, d_model), for l < n_layers; then the last block's output."""
    deltas: Tensor
    """a_u(clean) - a_u(ablated) for every writer: (n_writers, B, T, d_model)."""


class Patcher:
    """Runs ``model`` on a task batch with edges of ``graph`` ablated as ``weights`` say.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> model = build_model(presets.get("debug")); g = ComponentGraph.from_config(model.cfg)
        >>> batch = TaskBatch("t", torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long),
        ...                   torch.tensor([2, 2]), torch.tensor([1, 1]), torch.tensor([2, 2]))
        >>> p = Patcher(model, g, batch, "zero")
        >>> tuple(p.run(g.weights(torch.ones(3, g.n_edges))).shape)  # three settings at once
        (3, 2, 512)
    """

    def __init__(self, model: Any, graph: ComponentGraph, batch: TaskBatch, ablation: str,
                 means: Tensor | None = None):
        check_ablation(ablation)
        self.model, self.graph, self.batch, self.ablation = model, graph, batch, ablation
        self.device = batch.clean.device
        d_model = model.cfg.d_model
        if ablation in ("mean", "position-mean"):
            if means is None:
                raise ValueError(f"ablation={ablation!r} needs the writer means (see writer_means)")
            means = means.to(self.device)
            if ablation == "mean":
                self.ablated = means.reshape(len(graph.writers), 1, 1, d_model)  # (n_writers, 1, 1, d_model)
            else:
                T = batch.clean.shape[1]
                if means.dim() != 3 or means.shape[1] < T:
                    raise ValueError(f"ablation='position-mean' needs means per position for {T} positions "
                                     f"(corpus windows at least as long as the prompts), got {tuple(means.shape)}")
                self.ablated = means[:, None, :T]  # (n_writers, 1, T, d_model)
        elif ablation == "zero":
            self.ablated = torch.zeros(len(graph.writers), 1, 1, d_model, device=self.device)
        else:
            self.ablated = writer_activations(model, graph, batch.corrupt)  # (n_writers, B, T, d_model)

    def delta(self) -> Tensor:
        """a_u(ablated) - a_u(clean) for every writer: (n_writers, B, T, d_model)."""
        # Computed on demand: only gradient attribution needs the clean writers, patched runs recompute them.
        return self.ablated - writer_activations(self.model, self.graph, self.batch.clean)

    @torch.no_grad()
    def clean_prefix(self) -> CleanPrefix:
        """The clean run's residual stream entering every block, and every writer's difference from its ablated
        value, for :meth:`run` from a later block (``start``).

        Example:
            >>> from glassformer.archs import build_model, presets
            >>> model = build_model(presets.get("debug")); g = ComponentGraph.from_config(model.cfg)
            >>> batch = TaskBatch("t", torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long),
            ...                   torch.tensor([2, 2]), torch.tensor([1, 1]), torch.tensor([2, 2]))
            >>> p = Patcher(model, g, batch, "zero"); prefix = p.clean_prefix()
            >>> full, late = p.run(g.weights(torch.ones(1, g.n_edges))), p.run(g.weights(torch.ones(1, g.n_edges)), start=1, prefix=prefix)
            >>> torch.allclose(full, late, atol=1e-5)
            True
        """
        store: dict[str, Tensor] = {}
        L = self.graph.n_layers

        def save(x: Tensor, hook: Any) -> None:
            store[hook.name] = x

        stages = [f"blocks.{layer}.hook_resid_pre" for layer in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
        with self.model.hooks(_writer_capture(self.graph, store) + [(n, save) for n in stages]):
            self.model(self.batch.clean)
        return CleanPrefix([store[n] for n in stages], _stack_writers(self.graph, store) - self.ablated)

    def run(self, weights: Tensor, grad: bool = False, start: int = 0,
            prefix: CleanPrefix | None = None) -> Tensor | tuple[Tensor, list[tuple[slice, Tensor]]]:
        """Logits at each prompt's last position, (K, B, d_vocab), for K edge settings ``weights``
        (K, n_writers, n_readers). With ``grad`` also every reader's input, as ``(reader slice, tensor of shape
        (K, B, T, n, d_model))``, kept in the autograd graph so metrics can be differentiated with respect to it.

        With ``start`` = l > 0 and the batch's ``prefix`` (:meth:`clean_prefix`) the run begins at block l (l =
        n_layers: at the logits) from the clean stream: exact when no setting removes an edge into a block before
        l, and the blocks before it cost nothing.
        """
        run = _Run(self, weights, grad)
        if not start:
            with torch.set_grad_enabled(grad), self.model.hooks(run.hooks()):
                logits = self.model(self.batch.clean.repeat(run.K, 1))  # (N, 1, d_vocab), replica-major
            logits = logits[:, 0].view(run.K, run.B, -1)  # (K, B, d_vocab)
            return (logits, run.inputs) if grad else logits
        if grad or prefix is None or not 0 < start <= self.graph.n_layers:
            raise ValueError(f"start={start!r} needs the clean prefix, no grad, and 0 < start <= n_layers "
                             f"({self.graph.n_layers})")
        g = self.graph
        first = g.logits_reader if start == g.n_layers else g.qkv_readers(start).start  # first reader recomputed
        n_before = int(g.n_upstream[first])
        early = g.edge_reader < first
        if weights[:, g.edge_writer[early], g.edge_reader[early]].ne(1).any():
            raise ValueError(f"a setting removes an edge into a block before start={start}: the run from there "
                             "would not see it")
        run.buffer[:, :n_before] = prefix.deltas[:n_before]  # writers before block ``start`` are clean
        run.store["input"] = None
        model = self.model
        with torch.no_grad(), model.hooks(run.hooks()):
            x = prefix.resid[start].repeat(run.K, 1, 1)
            for block in model.blocks[start:]:
                x = block(x)
            if start == g.n_layers:
                x = model.blocks[-1].hook_resid_post(x)  # the logits reader's patch
            logits = model.unembed(model.ln_final(x))  # (N, 1, d_vocab)
        return logits[:, 0].view(run.K, run.B, -1)


def default_max_tokens(cfg: Any, graph: ComponentGraph, budget: int = 2**26) -> int:
    """Tokens per patched forward (replicas x pairs x positions) that keep its activations near ``budget``
    floats: the writer deltas, the per-head q/k/v inputs and the MLP dominate.

    Example:
        >>> from glassformer.archs import presets
        >>> default_max_tokens(presets.get("tiny"), ComponentGraph.from_config(presets.get("tiny")))
        6168
    """
    per_token = (len(graph.writers) + 12 * cfg.n_heads + 16) * cfg.d_model
    return max(64, budget // per_token)


class _Run:
    """The state of one patched forward: writer deltas as they are produced, and the hooks that use them."""

    def __init__(self, patcher: Patcher, weights: Tensor, grad: bool):
        self.p, self.graph, self.grad = patcher, patcher.graph, grad
        self.K = weights.shape[0]
        self.B, self.T = patcher.batch.clean.shape
        self.coef = 1.0 - weights.to(patcher.device)  # (K, n_writers, n_readers)
        self.store: dict[str, Tensor | None] = {}
        self.inputs: list[tuple[slice, Tensor]] = []
        d_model = patcher.model.cfg.d_model
        # Without autograd every delta is written once into one buffer, so a reader takes a prefix of it as a
        # view; with autograd in-place writes are unsafe, so deltas are kept by group and joined when read.
        self.buffer = None if grad else torch.empty(self.K, len(self.graph.writers), self.B, self.T, d_model,
                                                    device=patcher.device)
        self.groups: list[tuple[int, Tensor]] = []  # (first writer, (K, count, B, T, d_model))

    def write(self, start: int, acts: Tensor) -> None:
        """Record the writers ``start ..`` whose outputs are ``acts`` (N, T, count, d_model)."""
        count = acts.shape[2]
        acts = acts.view(self.K, self.B, self.T, count, -1).permute(0, 3, 1, 2, 4)  # (K, count, B, T, d_model)
        ablated = self.p.ablated[start:start + count][None]  # (1, count, B|1, T|1, d_model)
        if self.buffer is not None:
            torch.sub(acts, ablated, out=self.buffer[:, start:start + count])
        else:
            self.groups.append((start, acts - ablated))

    def deltas(self, rows: list[int]) -> Tensor:
        """(K, len(rows), B, T, d_model) deltas of writers ``rows`` (ascending)."""
        if self.buffer is not None:
            if rows == list(range(len(rows))):
                return self.buffer[:, : len(rows)]
            return self.buffer[:, rows]
        parts = []
        for start, d in self.groups:
            local = [w - start for w in rows if start <= w < start + d.shape[1]]
            if local:
                parts.append(d if len(local) == d.shape[1] else d[:, local])
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def correction(self, readers: slice) -> Tensor | None:
        """sum over upstream writers u of (1 - w_uv) * delta_u for readers v: (K, B, T, R, d_model)."""
        if "input" not in self.store:
            emb = self.store["hook_embed"]
            self.write(0, (emb + self.store["hook_pos_embed"] if "hook_pos_embed" in self.store else emb)[:, :, None])
            self.store["input"] = None
        n_up = int(self.graph.n_upstream[readers.start])
        c = self.coef[:, :n_up, readers]  # (K, n_up, R)
        rows = c.ne(0).any(dim=2).any(dim=0).nonzero().flatten().tolist()  # writers some replica ablates
        if not rows:
            return None
        D = self.deltas(rows)
        R = c.shape[-1]
        corr = torch.bmm(c[:, rows].transpose(1, 2), D.reshape(self.K, len(rows), -1))  # (K, R, B * T * d_model)
        return corr.view(self.K, R, self.B, self.T, -1).permute(0, 2, 3, 1, 4)  # (K, B, T, R, d_model)

    def patch(self, readers: slice, x: Tensor, corr: Tensor | None) -> Tensor:
        """x (N, T, R, d_model) minus the correction; with grad the result is recorded as the reader input."""
        if corr is None and not self.grad:
            return x
        y = x.view(self.K, self.B, self.T, *x.shape[2:])  # (K, B, T, R, d_model)
        y = y.clone() if corr is None else y - corr
        if self.grad:
            self.inputs.append((readers, y))
        return y.reshape(x.shape)

    def hooks(self) -> list[tuple[str, Callable]]:
        graph, K = self.graph, self.K
        H = graph.n_heads

        def save(x: Tensor, hook: Any) -> None:
            self.store[hook.name] = x

        def on_result(layer: int) -> Callable:
            return lambda x, hook: self.write(graph.head_writer(layer, 0), x)  # x (N, T, H, d_model)

        def on_mlp_out(layer: int) -> Callable:
            return lambda x, hook: self.write(graph.mlp_writer(layer), x[:, :, None])

        def on_qkv(layer: int, channel: int) -> Callable:
            sl = graph.qkv_readers(layer)
            part = slice(sl.start + channel * H, sl.start + (channel + 1) * H)

            def fn(x: Tensor, hook: Any) -> Tensor:  # x (N, T, H, d_model)
                if channel == 0:
                    self.store[f"corr{layer}"] = self.correction(sl)
                corr = self.store[f"corr{layer}"]
                return self.patch(part, x, None if corr is None else corr[..., channel * H:(channel + 1) * H, :])
            return fn

        def on_single(reader: int) -> Callable:
            sl = slice(reader, reader + 1)
            return lambda x, hook: self.patch(sl, x[:, :, None], self.correction(sl))[:, :, 0]  # x (N, T, d_model)

        rows = torch.arange(K * self.B, device=self.p.device)
        last = self.p.batch.last.repeat(K)  # (N,)

        def take_last(x: Tensor, hook: Any) -> Tensor:
            return x[rows, last][:, None]  # (N, 1, d_model): only the answer position reaches the unembedding

        hooks: list[tuple[str, Callable]] = [("hook_embed", save), ("hook_pos_embed", save)]
        for layer in range(graph.n_layers):
            for channel, ch in enumerate("qkv"):
                hooks.append((f"blocks.{layer}.hook_{ch}_input", on_qkv(layer, channel)))
            hooks.append((f"blocks.{layer}.attn.hook_result", on_result(layer)))
            if not graph.attn_only:
                hooks.append((f"blocks.{layer}.hook_mlp_in", on_single(graph.mlp_reader(layer))))
                hooks.append((f"blocks.{layer}.hook_mlp_out", on_mlp_out(layer)))
        hooks.append((f"blocks.{graph.n_layers - 1}.hook_resid_post", on_single(graph.logits_reader)))
        hooks.append(("ln_final.hook_normalized", take_last))
        return hooks
