"""``AnalysisConfig``: every setting of an analysis, its default and its validation, in one place.

The command line (``glassformer analyze``, ``compare``, ``sweep``), the sweep presets and
:func:`glassformer.analysis.analyze` all take this one dataclass, and analysis.json records it (``record()``), so a
run can be told apart from another by everything that changes its numbers. Choices (levels, methods, ablations,
selections) are read from the registries of the two levels, :mod:`glassformer.analysis.component` and
:mod:`glassformer.analysis.node`.

Example:
    >>> cfg = AnalysisConfig(level="node", n_pairs=32)
    >>> cfg.method, cfg.mask.seed
    ('mask', 0)
    >>> AnalysisConfig(level="node", ablation="corrupt")
    Traceback (most recent call last):
    ...
    ValueError: ablation='corrupt' is not allowed: expected one of mean, zero (at level='node')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from glassformer.analysis.common import check_choice
from glassformer.analysis.component.ablation import ABLATIONS
from glassformer.analysis.component.acdc import DEFAULT_ACDC_THRESHOLD, check_threshold
from glassformer.analysis.component.attribution import (
    AUTO,
    DEFAULT_IG_STEPS,
    EXACT_MAX_EDGES,
    METHODS,
    RESCORE_EDGES,
)
from glassformer.analysis.component.checks import DEFAULT_SUBSETS
from glassformer.analysis.component.circuits import SELECTIONS
from glassformer.analysis.node.circuits import NODE_METHODS
from glassformer.analysis.node.graph import NODE_ABLATIONS
from glassformer.analysis.node.masks import DEFAULT_ARTEFACT_MARGIN, DEFAULT_TARGET_MARGIN, MaskConfig
from glassformer.analysis.tasks import TASKS

COMPONENT_METHODS: dict[str, Any] = {**METHODS, AUTO: "exact up to exact_max_edges edges, eap-ig-gl+exact above"}
METHODS_BY_LEVEL: dict[str, dict[str, Any]] = {"component": COMPONENT_METHODS, "node": NODE_METHODS}
ABLATIONS_BY_LEVEL: dict[str, dict[str, str]] = {"component": ABLATIONS, "node": NODE_ABLATIONS}
DEFAULT_METHOD = {"component": AUTO, "node": "mask"}
LEVEL_NAMES = tuple(METHODS_BY_LEVEL)


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed: expected a positive integer")


@dataclass
class AnalysisConfig:
    """How circuits are found and measured. Every field is recorded in analysis.json with the run.

    Example:
        >>> AnalysisConfig(tasks="induction").tasks
        ['induction']
    """

    tasks: list[str] | str | None = None
    """Task names (a list, or one name); None: every registered task the model's tokenizer supports."""
    level: str = "component"
    """component (embeddings, heads with q/k/v inputs, MLPs, logits; edges between them) or node (residual,
    q/k/v and neuron or transcoder-latent channels)."""
    method: str | None = None
    """Circuit discovery. component: auto, exact, eap, eap-ig, eap-ig-gl, eap-ig-act, eap-ig-gl+exact or acdc;
    node: mask, eap-ig or eap. None: the level's default (auto for components: exact patching up to
    ``exact_max_edges`` edges, eap-ig-gl+exact above: converged eap-ig-gl whose top ``rescore_edges`` edges are
    then measured exactly; mask for nodes). auto at node level is mask."""
    ablation: str = "mean"
    """How what lies outside the circuit is removed. component: mean, position-mean, zero or corrupt; node: mean
    or zero. Mean ablation needs corpus windows; without them zero is used (with a warning and a note)."""
    second_ablation: str | None = "auto"
    """component: a second ablation beside ``ablation`` (one of mean, position-mean, zero, corrupt, and not
    ``ablation`` itself): the model alone is scored, ranked and sized again under it, and each circuit entry records
    both (``by_ablation``), so a size can be seen to depend on the ablation or not. The default, auto, becomes
    corrupt (each writer patched from the paired corrupted prompt), or mean when ``ablation`` is corrupt. None: off.
    Mean and position-mean need corpus windows; without them the second ablation is skipped with the reason
    recorded."""
    n_pairs: int = 64
    """Minimal pairs per task."""
    seed: int = 0
    """Seed of task generation, of the shuffled-labels control, of the random-init control and of the mask
    search."""
    controls: bool = True
    """Also measure a random-init model of the same config and the task with shuffled labels."""
    corpus_windows: int = 64
    """Corpus windows read for mean ablation, validation loss and the sparse-layer metrics."""
    selections: list[str] = field(default_factory=lambda: ["topn", "greedy"])
    """component: how circuits grow from the edge scores (topn: by score; greedy: from the logits backwards)."""
    ig_steps: int | None = None
    """Integration steps of EAP-IG (component and node level). None: the method's default (component: 12 for
    eap-ig-gl and eap-ig-act, 5 for eap-ig, resolved with the graph and recorded per task; node: 5)."""
    exact_max_edges: int = EXACT_MAX_EDGES
    """component, method auto: graphs with at most this many edges get exact patching, larger ones
    eap-ig-gl+exact."""
    rescore_edges: int = RESCORE_EDGES
    """component, method eap-ig-gl+exact (auto above ``exact_max_edges``): how many of EAP-IG-GL's top edges are
    then measured by exact patching (one forward of the pairs each)."""
    acdc_threshold: float = DEFAULT_ACDC_THRESHOLD
    """component, method acdc: an edge is removed when its removal raises the KL divergence of the last-position
    next-token distribution from the model's by at most this (nats, mean over pairs); 0 keeps every edge that
    matters at all."""
    target_margin: float = DEFAULT_TARGET_MARGIN
    """node: the circuit size is the smallest circuit whose held-out task loss is at most the full model's own
    held-out task loss plus this (nats; the relative target, applied to each subject's own full model)."""
    target_loss: float | None = None
    """node: an absolute target instead (nats; Gao et al. use 0.15): a number replaces the relative rule, None
    keeps it. An absolute target can lie below the full model's loss, so only an ablation artefact reaches it."""
    artefact_margin: float = DEFAULT_ARTEFACT_MARGIN
    """node: a circuit whose held-out task loss is more than this (nats) below the full model's is flagged as an
    artefact and left out of the size averages."""
    n_subsets: int = DEFAULT_SUBSETS
    """component: random knockout sets K per circuit in the completeness check of the model's N_0.8 circuits
    (``|f(C \\ K) - f(M \\ K)|``, Wang et al. 2022; each member of C in K with probability 1/2, seeded by
    ``seed``). 0 leaves only the greedy knockout set."""
    holdout: float = 0.5
    """Fraction of pairs held out to measure circuits on; the rest rank edges (component) or train masks and
    attribution (node), so no circuit is scored on the pairs that chose it. 0 ranks and measures on the same pairs.
    The capability gate reads every pair."""
    mask: MaskConfig = field(default_factory=MaskConfig)
    """node, method mask: how masks are trained and searched (mask.steps: optimizer steps per mask)."""
    gate_alpha: float = 0.05
    """Significance level of the capability gate's two one-sided tests (model above the empty circuit; accuracy
    above chance): a task is sized only where the model passes the gate (docs/methods.md, "The capability gate")."""
    gate_min_logit_diff: float = 0.5
    """The gate's minimum effect: the mean logit difference of the model minus that of the empty circuit, in
    logits. 0.5 moves a two-answer choice from even odds to 62%; below it f divides noise by a small number."""
    size_gated_out: bool = False
    """Also size the circuits of tasks the gate rejects (a diagnostic: they are recorded but never averaged)."""
    sparse_layers: bool = True
    """Also measure the MLP layers' L0, dead/dense fractions, interference, weight density and, for a fine-tuned
    model, FVU and CE loss recovered against its parent (needs corpus windows)."""

    def __post_init__(self) -> None:
        check_choice("level", self.level, LEVEL_NAMES)
        if self.method is None or (self.method == AUTO and self.level != "component"):
            # auto is "the level's own choice" (at component level it is resolved by the graph's size): the command
            # line's defaults carry method auto, so `analyze --level node` must still mean the node default.
            self.method = DEFAULT_METHOD[self.level]
        where = f" (at level={self.level!r})"
        check_choice("method", self.method, METHODS_BY_LEVEL[self.level], where)
        check_choice("ablation", self.ablation, ABLATIONS_BY_LEVEL[self.level], where)
        if self.second_ablation == "auto":
            self.second_ablation = "mean" if self.ablation == "corrupt" else "corrupt"
        if self.second_ablation is not None:
            check_choice("second_ablation", self.second_ablation, ABLATIONS, " (auto, or None to switch it off)")
            if self.second_ablation == self.ablation:
                raise ValueError(f"second_ablation={self.second_ablation!r} is not allowed with "
                                 f"ablation={self.ablation!r}: the second ablation must differ from the first; "
                                 f"expected one of {', '.join(a for a in ABLATIONS if a != self.ablation)} or None")
        if isinstance(self.tasks, str):
            self.tasks = [self.tasks]
        if self.tasks is not None:
            if not self.tasks or not all(isinstance(t, str) for t in self.tasks):
                raise ValueError(f"tasks={self.tasks!r} is not allowed: expected a task name or a non-empty list "
                                 f"of task names")
            for t in self.tasks:
                check_choice("tasks", t, TASKS.names())
            self.tasks = list(self.tasks)
        self.selections = list(self.selections)
        for s in self.selections:
            check_choice("selections", s, SELECTIONS)
        if self.ig_steps is None and self.level == "node":
            self.ig_steps = DEFAULT_IG_STEPS
        for name in ("n_pairs", "corpus_windows", "exact_max_edges", "rescore_edges", *(("ig_steps",) if self.ig_steps is not None
                                                                       else ())):
            _positive_int(name, getattr(self, name))
        check_threshold(self.acdc_threshold)
        if not isinstance(self.n_subsets, int) or isinstance(self.n_subsets, bool) or self.n_subsets < 0:
            raise ValueError(f"n_subsets={self.n_subsets!r} is not allowed: expected an integer >= 0 (random "
                             "knockout sets per circuit in the completeness check)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed={self.seed!r} is not allowed: expected an integer")
        t = self.target_loss
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf")):
            raise ValueError(f"target_loss={t!r} is not allowed: expected None (the relative target) or a positive "
                             "finite number of nats")
        for name in ("target_margin", "artefact_margin"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
                raise ValueError(f"{name}={v!r} is not allowed: expected a finite number of nats >= 0")
        a = self.gate_alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a < 1:
            raise ValueError(f"gate_alpha={a!r} is not allowed: expected a significance level in (0, 1)")
        m = self.gate_min_logit_diff
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m < float("inf"):
            raise ValueError(f"gate_min_logit_diff={m!r} is not allowed: expected a finite number of logits >= 0")
        if not isinstance(self.size_gated_out, bool):
            raise ValueError(f"size_gated_out={self.size_gated_out!r} is not allowed: expected true or false")
        h = self.holdout
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 <= h < 1:
            raise ValueError(f"holdout={h!r} is not allowed: expected a fraction in [0, 1)")
        if isinstance(self.mask, dict):  # from a JSON record or a YAML mapping
            self.mask = MaskConfig(**self.mask)
        if not isinstance(self.mask, MaskConfig):
            raise ValueError(f"mask={self.mask!r} is not allowed: expected a MaskConfig")
        if self.mask.seed is None:
            self.mask = replace(self.mask, seed=self.seed)

    def replace(self, **changes: Any) -> AnalysisConfig:
        """A copy with ``changes`` applied and validated again (a method, and integration steps, left unset follow
        the new level; an ablation changed onto the second ablation, as the fallback to zero does, switches the
        second off).

        Example:
            >>> AnalysisConfig().replace(level="node").method
            'mask'
        """
        if "level" in changes and "method" not in changes:
            changes["method"] = None
        if changes.get("ablation") == self.second_ablation and "second_ablation" not in changes:
            # A fallback onto the second ablation (mean to zero without corpus windows) leaves one ablation.
            changes["second_ablation"] = None
        if changes.get("level", self.level) != self.level and "ig_steps" not in changes:
            changes["ig_steps"] = None
        return replace(self, **changes)

    def record(self) -> dict[str, Any]:
        """Every field as JSON-ready values (what analysis.json stores as the run's config).

        Example:
            >>> AnalysisConfig().record()["mask"]["steps"]
            100
        """
        out = asdict(self)
        out["mask"] = self.mask.record()
        return out
