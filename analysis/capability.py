"""Capability: next-token loss on held-out corpus tokens, loss/accuracy on each task, and the capability gate
(:func:`capability_gate`) that decides whether a task is worth sizing a circuit for (docs/methods.md).

Example:
    >>> from glassformer.archs import build_model, presets
    >>> model = build_model(presets.get("debug"))
    >>> abs(validation_loss(model, torch.randint(0, 512, (2, 9)))["loss"] - math.log(512)) < 0.5  # at init
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from scipy.special import stdtr
from torch import Tensor

from glassformer.analysis.common import check_tokens
from glassformer.analysis.tasks.base import TaskBatch, logit_diff, task_metrics


@torch.no_grad()
def validation_loss(model: Any, val_tokens: Tensor, batch_size: int = 16) -> dict[str, float]:
    """Mean next-token cross-entropy (nats) over windows ``val_tokens`` (N, T): each window predicts its
    tokens 1..T-1 from the ones before (windows longer than n_ctx + 1 are cut).
    """
    check_tokens(val_tokens, "val_tokens", model.cfg)
    if val_tokens.shape[1] < 2:
        raise ValueError(f"val_tokens has windows of {val_tokens.shape[1]} token: expected at least 2")
    device = next(model.parameters()).device
    tokens = val_tokens[:, : model.cfg.n_ctx + 1].to(device)
    total, count = 0.0, 0
    for start in range(0, tokens.shape[0], batch_size):
        window = tokens[start:start + batch_size]
        logits = model(window[:, :-1])  # (b, T-1, d_vocab)
        total += F.cross_entropy(logits.flatten(0, 1).float(), window[:, 1:].flatten(), reduction="sum").item()
        count += window[:, 1:].numel()
    return {"loss": total / count, "tokens": count}


@torch.no_grad()
def task_capability(model: Any, batch: TaskBatch) -> dict[str, float]:
    """Task loss (BCE over the two answers), accuracy and mean logit difference on the clean prompts.

    Example:
        >>> task_capability(model, TASKS["induction"].generate(tokenizer, 16))["accuracy"]  # doctest: +SKIP
        0.9375
    """
    return task_metrics(model(batch.clean), batch)


# --- The capability gate ------------------------------------------------------------------------------------------
# A circuit's size is only meaningful where there is something for it to explain: the model must do the task
# better than the model with everything ablated (the empty circuit), beat chance, and by a margin in logits that is
# not noise over noise. The gate is one-sided on purpose: a model *worse* than its empty circuit has a large |gap|
# but no capability, and a two-sided test would size it.

GATE_TEST = ("paired one-sided Student t on per-pair (model - empty circuit) logit differences; exact one-sided "
             "binomial on accuracy against chance 0.5 (ties count as wrong); gap >= min_logit_diff")


def binomial_sf(k: int, n: int, p: float = 0.5) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly term by term (``math.comb``).

    Example:
        >>> binomial_sf(8, 10)   # (45 + 10 + 1) / 1024
        0.0546875
        >>> binomial_sf(0, 10), binomial_sf(11, 10)
        (1.0, 0.0)
    """
    if n < 0 or not 0 <= p <= 1:
        raise ValueError(f"binomial_sf(k={k}, n={n}, p={p}): expected n >= 0 and p in [0, 1]")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p == 0.5:  # integers throughout: exact up to the final division
        return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n
    return min(1.0, sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def student_t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (``scipy.special.stdtr``, the t distribution's CDF,
    at -t).

    Example:
        >>> round(student_t_sf(1.0, 1), 12)           # Cauchy: 1/2 - atan(1)/pi
        0.25
        >>> round(student_t_sf(1.812461, 10), 4)   # the tabulated one-sided 5% point of t(10)
        0.05
    """
    if not isinstance(df, int) or isinstance(df, bool) or df < 1:
        raise ValueError(f"df={df!r} is not allowed: expected a positive integer")
    if math.isnan(t):
        raise ValueError("t is nan: expected a number")
    return float(stdtr(df, -t))


def paired_one_sided_t(diffs: Tensor | list[float]) -> dict[str, float]:
    """One-sided paired t test of mean(diffs) > 0: mean, standard error, t and p. Fewer than two pairs cannot be
    tested (p = 1); differences all equal give p = 0 when positive, else 1.

    Example:
        >>> r = paired_one_sided_t([1.0, 2.0, 3.0])   # t = 2 / (1 / sqrt 3); p = (1 - t / sqrt(2 + t^2)) / 2 at df 2
        >>> round(r["t"], 6), round(r["p"], 6)
        (3.464102, 0.03709)
    """
    d = [float(x) for x in (diffs.flatten().tolist() if isinstance(diffs, Tensor) else diffs)]
    n = len(d)
    mean = sum(d) / n if n else float("nan")
    if n < 2:
        return {"mean": mean, "stderr": float("inf"), "t": float("nan"), "p": 1.0, "df": max(n - 1, 0)}
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    if se == 0:
        return {"mean": mean, "stderr": 0.0, "t": math.copysign(math.inf, mean) if mean else 0.0,
                "p": 0.0 if mean > 0 else 1.0, "df": n - 1}
    t = mean / se
    return {"mean": mean, "stderr": se, "t": t, "p": student_t_sf(t, n - 1), "df": n - 1}


def capability_gate(model_ld: Tensor, empty_ld: Tensor, *, alpha: float = 0.05,
                    min_logit_diff: float = 0.5) -> dict[str, Any]:
    """Whether a subject has capability on a task worth sizing a circuit for, from per-pair logit differences of
    the whole model (``model_ld``, (B,)) and of the empty circuit (everything ablated, ``empty_ld``, (B,)).

    Passes only if all three hold: (1) the paired one-sided t test of mean(model - empty) > 0 gives p < alpha;
    (2) the exact one-sided binomial test of accuracy (pairs with model_ld > 0) above chance 0.5 gives p < alpha;
    (3) the gap mean(model - empty) is at least ``min_logit_diff``. ``reasons`` names each that failed.

    Example:
        >>> g = capability_gate(torch.tensor([0.9, 0.8, 0.9, 0.8]), torch.tensor([2.3, 2.4, 2.3, 2.4]))
        >>> g["passed"], g["reasons"][0].split(":")[0]
        (False, 'not above the empty circuit')
    """
    model_ld, empty_ld = model_ld.detach().flatten().double().cpu(), empty_ld.detach().flatten().double().cpu()
    if model_ld.shape != empty_ld.shape or model_ld.numel() == 0:
        raise ValueError(f"model_ld {tuple(model_ld.shape)} and empty_ld {tuple(empty_ld.shape)}: expected two "
                         f"non-empty (B,) tensors of the same pairs")
    n = model_ld.numel()
    test = paired_one_sided_t(model_ld - empty_ld)
    correct = int((model_ld > 0).sum())
    p_acc = binomial_sf(correct, n, 0.5)
    gap = test["mean"]
    reasons = []
    if not test["p"] < alpha:
        reasons.append(f"not above the empty circuit: gap {gap:+.3f} (one-sided paired t p={test['p']:.3g}, "
                       f"alpha {alpha:g})")
    if not p_acc < alpha:
        reasons.append(f"accuracy not above chance: {correct}/{n} (one-sided binomial p={p_acc:.3g}, "
                       f"alpha {alpha:g})")
    if not gap >= min_logit_diff:
        reasons.append(f"gap below the minimum effect: {gap:+.3f} < {min_logit_diff:g} logits")
    return {"passed": not reasons, "reasons": reasons, "n_pairs": n, "accuracy": correct / n,
            "n_correct": correct, "p_accuracy": p_acc, "logit_diff": model_ld.mean().item(),
            "logit_diff_empty": empty_ld.mean().item(), "gap": gap, "gap_stderr": test["stderr"],
            "p_gap": test["p"], "alpha": alpha, "min_logit_diff": min_logit_diff}


@torch.no_grad()
def model_logit_diffs(model: Any, batch: TaskBatch) -> Tensor:
    """(B,) logit difference of the whole model on each clean prompt (what accuracy counts)."""
    return logit_diff(model(batch.clean), batch).float()


GATE_HEADER = f"{'gate':<4} {'acc':>5} {'gap':>6}"
"""The gate's columns in the printed tables: verdict, the model's accuracy, model minus empty circuit (logits)."""


def gate_columns(task: dict[str, Any]) -> str:
    """A task's gate columns (``in``/``out``, accuracy, gap) under :data:`GATE_HEADER`; ``?`` where the analysis
    predates the gate.

    Example:
        >>> gate_columns({"gate": {"model": {"passed": False, "accuracy": 0.5, "gap": -1.47}}})
        'out   0.50 -1.470'
    """
    g = (task.get("gate") or {}).get("model")
    if g is None:
        acc = (task.get("capability") or {}).get("model", {}).get("accuracy")
        return f"{'?':<4} {acc if acc is not None else float('nan'):>5.2f} {'-':>6}"
    return f"{'in' if g['passed'] else 'out':<4} {g['accuracy']:>5.2f} {g['gap']:>6.3f}"


def gate_notes(tasks: dict[str, Any]) -> list[str]:
    """Lines under a table: each task the model failed the gate on, with the reasons (never sized, never
    averaged), and each control that passed the gate (a sanity check that must not happen).

    Example:
        >>> gate_notes({"t": {"gate": {"model": {"passed": False, "reasons": ["accuracy not above chance"]},
        ...                            "random_init": {"passed": True, "reasons": []}}}})
        ['no capability, t: accuracy not above chance', 'sanity check FAILED, t: the control random_init passed the capability gate']
    """
    lines = []
    for name, t in tasks.items():
        gate = t.get("gate") or {}
        if "model" in gate and not gate["model"]["passed"]:
            lines.append(f"no capability, {name}: " + "; ".join(gate["model"]["reasons"]))
        for who, g in gate.items():
            if who != "model" and g["passed"]:
                lines.append(f"sanity check FAILED, {name}: the control {who} passed the capability gate")
    return lines
