"""Learned node masks (Gao et al. 2025) and the circuit size at a fixed task loss.

Training: every node i has a gate ``H(tau_i)``: the Heaviside step in the forward pass, the derivative of
``sigmoid(tau / temperature)`` in the backward pass (a surrogate gradient), ``tau`` clamped to [-1, 1] after each
step. Pruned nodes take their ablated value (mean over corpus tokens, or zero; see :class:`GatedModel`). The loss
is ``task loss + k_coef * (number of active nodes)`` with the task loss the binary cross-entropy over the two
answers; Adam (betas 0.9, 0.95), the learning rate decaying linearly to zero, every ``tau`` starting at ``init``
plus seeded noise (all nodes active).

Size at the target: nodes are ranked by ``tau`` (descending, ties by index) and the circuit C_k keeps the first k;
:func:`smallest_circuit` bisects k for the smallest circuit whose task loss, measured by running the model with
every other node ablated, is at most the target. The target is relative by default: the full model's own held-out
task loss plus ``margin`` (:data:`DEFAULT_TARGET_MARGIN`), so a circuit must come within the margin of the model it
explains and the whole model always meets it; an absolute target (Gao's 0.15) is the alternative mode. A circuit
whose loss lies more than ``artefact_margin`` below the full model's is flagged ``artefact``: it beats the model, so
it shows what ablation can do, not what the model does. The search starts from the bracket (empty
circuit, the learned mask); loss need not be monotone in k, so the answer is the smallest size found with the
size one below failing.

The seeded search (:data:`DEFAULT_SEARCH`): one mask per ``(k_coef, lr)`` pair, each with its own seed, trained on
the training pairs (all masks at once, as replicas of the batch in one forward); the mask with the fewest active
nodes among those whose task loss on the training pairs meets the target is chosen (the lowest loss when none
does), and the size of its ranking's circuit is then bisected on the held-out pairs (so a circuit that only fits
the pairs it was trained on does not count). Nothing else (temperature, init, steps, betas) is searched.

Example:
    >>> heaviside(torch.tensor([-0.5, 0.0, 0.5])).tolist()
    [0.0, 0.0, 1.0]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from glassformer.analysis.node.graph import GatedModel, frozen_weights
from glassformer.analysis.tasks.base import TaskBatch, logit_diff

DEFAULT_TARGET_LOSS = 0.15
"""Gao et al.'s absolute target task loss (nats, binary cross-entropy over the two answers); the absolute mode."""
DEFAULT_TARGET_MARGIN = 0.05
"""Relative target: a circuit's held-out task loss may exceed the full model's by at most this (nats). For a model
whose own loss is 0.10 it gives Gao's 0.15; for a weaker model it asks the same closeness to the model instead of a
loss the model itself never reaches."""
DEFAULT_ARTEFACT_MARGIN = 0.1
"""A circuit whose held-out task loss is more than this (nats) below the full model's is an artefact. Twice the
target margin: the flag marks circuits further below the model than the slack they are allowed above it, not the
pair-to-pair noise of a loss measured on the same held-out pairs as the model's."""
DEFAULT_SEARCH: tuple[tuple[float, float], ...] = ((1e-4, 1e-2), (1e-4, 5e-2), (1e-3, 1e-2), (1e-3, 5e-2))
"""(k_coef, learning rate) pairs tried per task. k_coef sets the loss at which pruning stops paying (a node stays
while its task-loss gradient outweighs about k_coef / 4); on a `tiny` model k_coef = 1e-2 pruned every node within
20 steps and 1e-3 kept a few hundred of 5,632, hence 1e-4 and 1e-3. The learning rate, with Adam, sets how many
steps a node takes to cross from +init to below zero (0.1 / lr: 10 or 2 steps)."""


class HeavisideSurrogate(torch.autograd.Function):
    """``H(tau) = 1[tau > 0]`` forward; ``sigmoid'(tau / T) / T`` times the incoming gradient backward."""

    @staticmethod
    def forward(ctx: Any, tau: Tensor, temperature: float) -> Tensor:
        ctx.save_for_backward(tau)
        ctx.temperature = temperature
        return (tau > 0).to(tau.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (tau,) = ctx.saved_tensors
        s = torch.sigmoid(tau / ctx.temperature)
        return grad * s * (1 - s) / ctx.temperature, None


def heaviside(tau: Tensor, temperature: float = 1.0) -> Tensor:
    """Gates ``H(tau)`` with the sigmoid surrogate gradient (see :class:`HeavisideSurrogate`).

    Example:
        >>> tau = torch.tensor([0.0], requires_grad=True)
        >>> heaviside(tau, 1.0).sum().backward(); tau.grad.tolist()  # sigmoid'(0) = 1/4
        [0.25]
    """
    return HeavisideSurrogate.apply(tau, temperature)


@dataclass
class MaskConfig:
    """How masks are trained and searched; every field is recorded in analysis.json."""

    steps: int = 100
    """Optimizer steps per mask (one step sees every training pair). On a `tiny` model the active count settles
    within about 60 steps at lr 5e-2 and 100 at lr 1e-2."""
    search: tuple[tuple[float, float], ...] = DEFAULT_SEARCH
    """(k_coef, learning rate) pairs tried; one mask each."""
    temperature: float = 1.0
    """Temperature of the sigmoid whose derivative is the surrogate gradient (1: nearly straight-through on
    [-1, 1], where sigmoid' stays within [0.20, 0.25])."""
    init: float = 0.1
    """Starting tau of every node (positive: the mask starts as the whole model)."""
    init_noise: float = 0.01
    """Std of the seeded noise added to ``init``, so ties between nodes break by chance, not by index."""
    betas: tuple[float, float] = (0.9, 0.95)
    seed: int | None = None
    """Seed of the mask search; None: the analysis seed (``AnalysisConfig.seed``)."""
    probes: int = 7
    """Circuit sizes measured per bisection round (one batched forward)."""

    def __post_init__(self) -> None:
        # YAML and the command line give lists; the search is a tuple of pairs everywhere else.
        self.search = tuple(tuple(float(x) for x in p) for p in self.search)
        self.betas = tuple(float(b) for b in self.betas)
        for name in ("steps", "probes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"mask {name}={value!r} is not allowed: expected a positive integer")
        if not self.search or any(len(p) != 2 or p[0] < 0 or p[1] <= 0 for p in self.search):
            raise ValueError(f"mask search={self.search!r} is not allowed: expected a non-empty list of "
                             "(k_coef >= 0, lr > 0) pairs")
        if not self.temperature > 0 or not 0 < self.init <= 1 or self.init_noise < 0:
            raise ValueError(f"mask temperature={self.temperature}, init={self.init}, init_noise={self.init_noise} "
                             "are not allowed: expected temperature > 0, 0 < init <= 1, init_noise >= 0")

    def record(self) -> dict[str, Any]:
        return {"steps": self.steps, "search": [list(p) for p in self.search], "temperature": self.temperature,
                "init": self.init, "init_noise": self.init_noise, "betas": list(self.betas), "seed": self.seed,
                "probes": self.probes, "tau_clamp": [-1.0, 1.0], "optimizer": "adam, linear decay to 0"}


def task_loss(logits: Tensor, batch: TaskBatch) -> Tensor:
    """(K, B, d_vocab) last-position logits -> (K,) mean binary cross-entropy over the two answers.

    Example:
        >>> b = TaskBatch("t", torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long),
        ...               torch.zeros(1, dtype=torch.long), torch.tensor([0]), torch.tensor([1]))
        >>> round(task_loss(torch.tensor([[[0.0, 0.0]]]), b).item(), 4)  # log 2
        0.6931
    """
    return torch.stack([F.softplus(-logit_diff(lg[:, None], batch).float()).mean() for lg in logits])


@dataclass
class MaskRun:
    """One trained mask: ``tau`` (n_nodes,) after the last step, and the loss terms along the way."""

    tau: Tensor
    k_coef: float
    lr: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def active(self) -> int:
        return int((self.tau > 0).sum())


def train_masks(gated: GatedModel, search: tuple[tuple[float, float], ...], settings: MaskConfig) -> list[MaskRun]:
    """Train one node mask per ``(k_coef, lr)`` in ``search`` on ``gated``'s batch (every pair, every step), all
    at once: each mask gates its own replica of the batch in one forward, and the summed losses of independent
    replicas give each mask its own gradient. Mask i starts from seed ``settings.seed + i``; the model's
    weights stay frozen.

    Example:
        >>> runs = train_masks(GatedModel(model, graph, batch, "mean", means), ((1e-3, 1e-2), (1e-2, 5e-2)),
        ...                    MaskConfig(steps=50))  # doctest: +SKIP
        >>> [r.tau.abs().max() <= 1 for r in runs]  # doctest: +SKIP
        [tensor(True), tensor(True)]
    """
    start = time.perf_counter()
    n, device = gated.graph.n_nodes, gated.base.device
    taus = []
    for i in range(len(search)):
        gen = torch.Generator().manual_seed((settings.seed or 0) + i)
        tau = (settings.init + settings.init_noise * torch.randn(n, generator=gen)).clamp(-1, 1)
        taus.append(tau.to(device).requires_grad_(True))
    opt = torch.optim.Adam([{"params": [t], "lr": lr} for t, (_, lr) in zip(taus, search, strict=True)],
                           betas=settings.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / settings.steps)
    k_coef = torch.tensor([k for k, _ in search], device=device)  # (K,)
    histories: list[list[dict[str, float]]] = [[] for _ in search]
    every = max(1, settings.steps // 10)
    with frozen_weights(gated.model), torch.enable_grad():
        for step in range(settings.steps):
            gates = torch.stack([heaviside(t, settings.temperature) for t in taus])  # (K, n_nodes)
            loss_task = task_loss(gated.logits(gates), gated.batch)  # (K,)
            active = gates.sum(dim=1)  # (K,)
            loss = (loss_task + k_coef * active).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                for t in taus:
                    t.clamp_(-1.0, 1.0)
            if step % every == 0 or step + 1 == settings.steps:
                for h, lt, a in zip(histories, loss_task.tolist(), active.tolist(), strict=True):
                    h.append({"step": step, "task_loss": lt, "active": a})
    seconds = time.perf_counter() - start
    return [MaskRun(t.detach(), k, lr, seconds, h) for t, (k, lr), h in zip(taus, search, histories, strict=True)]


def rank_nodes(scores: Tensor) -> Tensor:
    """Node indices by descending score, ties by index: C_k is the first k.

    Example:
        >>> rank_nodes(torch.tensor([0.5, 1.0, 0.5, -1.0])).tolist()
        [1, 0, 2, 3]
    """
    return torch.sort(scores.float().cpu(), descending=True, stable=True).indices


def circuit_loss_fn(gated: GatedModel, ranking: Tensor, max_tokens: int = 16384) -> Callable[[list[int]], list[float]]:
    """A function sizes -> measured task loss of each circuit C_k (everything else ablated), batched.

    Example:
        >>> loss_at = circuit_loss_fn(GatedModel(model, graph, batch, "zero"), ranking)  # doctest: +SKIP
        >>> loss_at([0, graph.n_nodes])  # doctest: +SKIP
        [0.69, 0.03]
    """
    per = max(1, max_tokens // max(1, gated.batch.clean.numel()))
    ranking = ranking.to(gated.base.device)

    @torch.no_grad()
    def loss_at(sizes: list[int]) -> list[float]:
        out: list[float] = []
        for first in range(0, len(sizes), per):
            logits = gated.circuit_logits(ranking, sizes[first:first + per])
            out.extend(task_loss(logits, gated.batch).tolist())
        return out

    return loss_at


def smallest_circuit(loss_at: Callable[[list[int]], list[float]], n_nodes: int, target: float | None,
                     hint: int | None = None, probes: int = 7, margin: float = DEFAULT_TARGET_MARGIN,
                     artefact_margin: float = DEFAULT_ARTEFACT_MARGIN) -> dict[str, Any]:
    """The smallest k whose measured loss is at most the target, bisecting between the empty circuit and ``hint``
    (the learned mask's size; the whole model when it fails or is not given). ``target`` None: the relative rule,
    ``loss_full + margin``; a number: that absolute target.

    Returns ``nodes`` (None when neither the hint nor the whole model reaches the target), ``loss`` (at ``nodes``,
    else the lowest loss measured), ``reached``, ``loss_full`` (the whole model), ``loss_empty``, ``target`` (its
    value), ``target_rule`` ("relative" or "absolute"), ``artefact`` (the circuit's loss is more than
    ``artefact_margin`` below ``loss_full``), ``bracket`` ([largest failing size below, nodes]) and
    ``evaluations`` (sizes measured).

    Example:
        >>> losses = [0.9, 0.7, 0.4, 0.2, 0.1, 0.05]  # C_0 .. C_5
        >>> smallest_circuit(lambda ks: [losses[k] for k in ks], 5, 0.15)["nodes"]
        4
        >>> r = smallest_circuit(lambda ks: [losses[k] for k in ks], 5, None, margin=0.1)  # 0.05 + 0.1
        >>> r["nodes"], round(r["target"], 2), r["target_rule"], r["artefact"]
        (4, 0.15, 'relative', False)
    """
    known: dict[int, float] = {}

    def measure(ks: list[int]) -> None:
        ks = sorted({k for k in ks if k not in known})
        if ks:
            known.update(zip(ks, loss_at(ks), strict=True))

    hint = n_nodes if hint is None else max(0, min(int(hint), n_nodes))
    measure([0, hint, n_nodes])
    full = known[n_nodes]
    rule = "relative" if target is None else "absolute"
    target = full + margin if target is None else target
    base = {"loss_full": full, "loss_empty": known[0], "target": target, "target_rule": rule}

    def found(k: int, bracket: list[int]) -> dict[str, Any]:
        return {**base, "nodes": k, "loss": known[k], "reached": True, "bracket": bracket,
                "artefact": known[k] < full - artefact_margin, "evaluations": len(known)}

    if known[0] <= target:
        return found(0, [0, 0])
    hi = hint if known[hint] <= target else n_nodes
    if known[hi] > target:
        return {**base, "nodes": None, "loss": min(known.values()), "reached": False, "bracket": None,
                "artefact": False, "evaluations": len(known)}
    lo = 0
    while hi - lo > 1:
        step = (hi - lo) / (probes + 1)
        measure([lo + round(step * i) for i in range(1, probes + 1)] + [(lo + hi) // 2])
        inside = sorted(k for k in known if lo <= k <= hi)
        hi = next(k for k in inside if known[k] <= target)
        lo = max(k for k in inside if k < hi)
    return found(hi, [lo, hi])


@torch.no_grad()
def circuit_kl(gated: GatedModel, ranking: Tensor, k: int) -> float:
    """Mean over ``gated``'s pairs of KL(full model || circuit C_k) of the last-position next-token distribution
    (nats): how far the circuit's whole prediction, not only the two answers, lies from the model's.

    Example:
        >>> circuit_kl(GatedModel(model, graph, heldout, "mean", means), ranking, graph.n_nodes)  # doctest: +SKIP
        0.0
    """
    ranking = ranking.to(gated.base.device)
    full = torch.log_softmax(gated.circuit_logits(ranking, [gated.graph.n_nodes])[0].double(), dim=-1)
    circ = torch.log_softmax(gated.circuit_logits(ranking, [int(k)])[0].double(), dim=-1)
    return float((full.exp() * (full - circ)).sum(-1).mean())


def choose_mask(train_losses: list[float], active: list[int], target: float) -> int:
    """Index of the mask a search keeps: the smallest (fewest active nodes, then lowest loss) among those whose
    training-pair loss meets ``target``; if none does, the one with the lowest loss.

    Example:
        >>> choose_mask([0.10, 0.05, 0.30], [50, 80, 10], target=0.15)  # 0 and 1 meet it; 0 is smaller
        0
        >>> choose_mask([0.30, 0.20], [5, 9], target=0.15)  # none meets it: the lowest loss
        1
    """
    meets = [i for i, loss in enumerate(train_losses) if loss <= target]
    if meets:
        return min(meets, key=lambda i: (active[i], train_losses[i]))
    return min(range(len(train_losses)), key=train_losses.__getitem__)


def learn_circuit(model: Any, graph: Any, train: TaskBatch, heldout: TaskBatch, ablation: str,
                  means: Tensor | None, target: float | None = None, settings: MaskConfig | None = None,
                  margin: float = DEFAULT_TARGET_MARGIN,
                  artefact_margin: float = DEFAULT_ARTEFACT_MARGIN) -> dict[str, Any]:
    """The seeded search over ``settings.search``, then the size at the target on the held-out pairs (``target``
    None: the relative rule, full model's loss + ``margin``, on the training pairs to choose the mask and on the
    held-out pairs to size it; see :func:`smallest_circuit`).

    Returns the held-out result of :func:`smallest_circuit` plus ``tau`` (the chosen mask), ``ranking``, ``keep``
    (bool (n_nodes,), the circuit; None when the target is not reached), ``chosen`` ({k_coef, lr}) and ``search``
    (per pair: active nodes after training and the task loss of that mask on the training pairs) and
    ``train_target`` (the target the mask was chosen at, on the training pairs).

    Example:
        >>> out = learn_circuit(model, graph, train, heldout, "mean", means)  # doctest: +SKIP
        >>> out["nodes"], out["loss"] <= 0.15  # doctest: +SKIP
        (12, True)
    """
    settings = settings or MaskConfig()
    gated_train = GatedModel(model, graph, train, ablation, means)
    runs = train_masks(gated_train, settings.search, settings)
    with torch.no_grad():  # every final mask on the training pairs, and the full model last, in one forward
        gates = torch.stack([(r.tau > 0).float() for r in runs] + [torch.ones(graph.n_nodes)])
        *final, train_full = task_loss(gated_train.logits(gates), train).tolist()
    train_target = train_full + margin if target is None else target
    search = [{"k_coef": r.k_coef, "lr": r.lr, "active": r.active, "train_loss": loss}
              for r, loss in zip(runs, final, strict=True)]
    run = runs[choose_mask(final, [r.active for r in runs], train_target)]
    ranking = rank_nodes(run.tau)
    gated_eval = GatedModel(model, graph, heldout, ablation, means)
    result = smallest_circuit(circuit_loss_fn(gated_eval, ranking), graph.n_nodes, target, hint=run.active,
                              probes=settings.probes, margin=margin, artefact_margin=artefact_margin)
    keep = None
    if result["reached"]:
        keep = torch.zeros(graph.n_nodes, dtype=torch.bool)
        keep[ranking[: result["nodes"]]] = True
    return {**result, "tau": run.tau.cpu(), "ranking": ranking, "keep": keep, "active": run.active,
            "chosen": {"k_coef": run.k_coef, "lr": run.lr}, "search": search, "train_target": train_target}
