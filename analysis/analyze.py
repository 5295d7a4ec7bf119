"""``analyze``: capability and circuits of one model directory, with controls, added to ``analysis.json``.

Two levels (``LEVELS``), each with its methods (``METHODS_BY_LEVEL``):

- ``component`` (methods ``exact``, ``eap``, ``eap-ig``): for each task, edge scores, circuits by each selection
  (top-n, greedy growth from the logits), their measured faithfulness curve, N_0.8 / N_0.9 (edges and fraction
  of edges), CPR and CMD.
- ``node`` (methods ``mask``, ``eap-ig``, ``eap``): nodes are residual, q/k/v and neuron or latent channels
  (:mod:`glassformer.analysis.node.graph`); for each task the smallest circuit within ``target_margin`` of the
  full model's own held-out task loss (or at most an absolute ``target_loss``), in nodes and edges, by learned
  masks (:mod:`masks`) or attribution; circuits far below the model's loss are flagged as artefacts.

Every number has the same measurement on two controls beside it: a randomly initialised model of the same config
(``random_init``) and the task with shuffled labels (``shuffled_labels``). Beside the circuits, ``sparse_layers``
holds the interpretability metrics of the model's MLP layers (:mod:`sparse_metrics`).

analysis.json, ``schema_version`` 3 (:mod:`glassformer.analysis.results` reads versions 1 to 3)::

    {"schema_version": 3, "kind", "model_dir", "model": {shape, mlp kind, n_params},
     "results": {"<level>/<method>/<ablation>/<config hash>": RUN, ...},   # every run so far
     "latest": "<key of the most recent run>",
     "sparse_layers": {weight_density, layers: [{layer, site, tokens, l0, dead_fraction, dense_fraction,
                       histogram, interference}], parent, parent_note},
     "settings", "graph", "capability", "tasks", "summary"}  # = results[latest], the version-1 layout

Every run is added to ``results`` under a key that holds everything that changes its numbers (level, method,
ablation and a hash of the whole analysis config: tasks, pairs, seed, mask settings, ...), so no run replaces
another unless it was made with exactly the same settings. A file describing another model is never replaced:
the analysis refuses to write it. RUN::

    {"config": AnalysisConfig.record(), "finished": "<UTC time>", "settings": {level, method, ablation (used), ablation_requested, ablation_note, n_pairs, seed, controls,
                  corpus_windows, val_windows, ig_steps, ...
                  component: selections, metric, grid_percent, thresholds;
                  node: target_loss, holdout, mask: {steps, search: [[k_coef, lr], ...], temperature, ...}},
     "graph": component: {level, n_nodes, n_edges, edge_count_formula, ...};
              node: {level, n_nodes, nodes_by_kind, n_edges (non-zero weights), n_edges_dense, sites},
     "capability": {val_loss, val_tokens, random_init_val_loss},
     "tasks": {name: {"status": "ok", description, n_pairs, seed, example,
                      "capability": {"model" | control: {loss, accuracy, logit_diff}},
                      "circuits": [CIRCUIT], seconds} | {"status": "skipped", "reason"}},
     "summary": [component: {level, method, ablation, selection, n_pairs, seed, controls, n_tasks,
                             "geomean_N_0.8" | "geomean_N_0.9": {"model" | control: float}}
                 node: {level, method, ablation, target_loss, holdout, n_pairs, seed, controls, n_tasks,
                        "geomean_nodes" | "geomean_edges": {"model" | control: float | None},
                        "tasks_reached": {"model" | control: int}}],
     "seconds": float}

A component task entry also holds ``gate`` (per who, the capability gate), ``capable`` and ``attribution``
({method, ig_steps, ranked_on_pairs, measured_on_pairs, completeness: {who: ...}, acdc: {threshold, n_kept,
n_kept_pruned}, details: {who: ...} (eap-ig-gl+exact: how many edges were measured), second_ablation}). A
component CIRCUIT (one per selection): ``{level, method, ablation, n_pairs, seed, controls, selection,
n_edges_total, "N_0.8" | "N_0.9": {who: {edges (after dangling-edge pruning), k (the ranking prefix), fraction,
bracket}}, "CPR" | "CMD": {who: float}, signal, faithfulness_curve, baseline, top_edges, circuit_nodes, pairs
(the model's held-out logit differences per measured circuit, for bootstrap intervals), faithfulness_checks
(completeness and minimality of the N_0.8 circuit), by_ablation (N_0.8 / N_0.9 under each ablation), ood (the
circuits scored on the task's shifted pairs)}``. A node CIRCUIT: ``{level, method, ablation,
target_loss, holdout, n_pairs, seed, controls, selection, n_nodes_total, and per who ("model", "random_init",
"shuffled_labels"): nodes (None: target not reached), edges, fraction, loss (measured at that size; the lowest
found when not reached), reached, loss_full, loss_empty, bracket, nodes_by_kind, top_nodes, train_pairs,
heldout_pairs, seconds; with method mask also chosen ({k_coef, lr}), search, active, agreement ({method: eap-ig,
spearman, overlap, circuit_nodes}); circuit: the model's circuit as node names; ood: the model's circuit scored on
the task's shifted pairs}``. Every circuit entry carries
its own settings, so a report can mix runs.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch

from glassformer.analysis.capability import validation_loss
from glassformer.analysis.common import CONTROLS, Level, check_tokens
from glassformer.analysis.component.run import LEVEL as COMPONENT
from glassformer.analysis.config import AnalysisConfig
from glassformer.analysis.node.circuits import LEVEL as NODE
from glassformer.analysis.report.checks import check_summary
from glassformer.analysis.results import existing_analysis, merge_run
from glassformer.analysis.sparse_metrics import format_sparse_table, load_parent, sparse_layer_report
from glassformer.analysis.tasks import TASKS, TaskBatch, TaskError, with_shifted
from glassformer.archs import build_model, load_config, load_model_dir
from glassformer.archs.model_dir import ANALYSIS_FILE, TOKENIZER_FILE, ModelDirError, atomic_write_json

LEVELS: dict[str, Level] = {level.name: level for level in (COMPONENT, NODE)}
RANDOM_INIT_SEED_OFFSET = 7919


def analyze(model_dir: str | Path, config: AnalysisConfig | None = None, *,
            corpus_tokens: torch.Tensor | None = None, val_tokens: torch.Tensor | None = None,
            progress: bool = True, device: str = "cpu", **fields: Any) -> dict:
    """Analyse the model directory ``model_dir`` as ``config`` says (or an :class:`AnalysisConfig` built from
    ``fields``); add the run to ``analysis.json`` there and return the file's new content.

    Everything is validated before any work: a bad setting raises ValueError naming it and listing the allowed
    values (when the config is built); a folder that is not a model directory raises
    :class:`glassformer.archs.ModelDirError`; a named task whose answers are not single tokens raises
    :class:`~glassformer.analysis.tasks.AnswerTokenError` (with ``tasks=None`` it is skipped and the reason
    recorded). Mean ablation needs ``corpus_tokens`` (N, T); without them zero ablation is used, with a warning
    and a note in the result. The file is written atomically at the end: nothing is written on error.

    Example:
        >>> result = analyze("runs/demo/dense", tasks=["induction"], corpus_tokens=corpus)  # doctest: +SKIP
        >>> result = analyze("runs/demo/dense", AnalysisConfig(level="node"), corpus_tokens=corpus)  # doctest: +SKIP
        >>> print(format_table(result))  # doctest: +SKIP
    """
    if config is not None and fields:
        raise ValueError(f"pass either config or the fields {sorted(fields)}, not both")
    config = AnalysisConfig(**fields) if config is None else config
    if not isinstance(config, AnalysisConfig):
        raise ValueError(f"config={config!r} is not allowed: expected an AnalysisConfig")
    model_dir = Path(model_dir)
    cfg = load_config(model_dir)
    for name, tokens in (("corpus_tokens", corpus_tokens), ("val_tokens", val_tokens)):
        if tokens is not None:
            check_tokens(tokens, name, cfg)
    batches, skipped = task_batches(model_dir, config, cfg)
    # A file from a newer glassformer stops us before any work.
    existing_analysis(model_dir / ANALYSIS_FILE, set_aside=False)
    requested = config.ablation
    config, note = _resolve_ablation(config, corpus_tokens)

    started = time.perf_counter()
    level = LEVELS[config.level]
    model = load_model_dir(model_dir, device=device).eval()
    graph = level.graph.from_config(cfg)
    subjects = {"model": model}
    if config.controls:
        subjects["random_init"] = random_init_control(model, config.seed, device)
    means = {who: level.means(m, graph, corpus_tokens, config.ablation) for who, m in subjects.items()}
    run: dict[str, Any] = {
        "config": config.record(),
        "settings": {**_settings(config, level, corpus_tokens, val_tokens), "ablation_requested": requested,
                     "ablation_note": note},
        "graph": level.graph_record(graph, model),
        "capability": _capability(subjects, val_tokens),
        "tasks": {name: {"status": "skipped", "reason": reason} for name, reason in skipped.items()},
    }
    run["tasks"].update(_run_tasks(level, batches, graph, subjects, means, config, device, progress))
    run["summary"] = level.summary(run["tasks"], config)
    extra = {}
    if config.sparse_layers and corpus_tokens is not None:
        extra["sparse_layers"] = _sparse_layers(model, model_dir, corpus_tokens, val_tokens, config.ablation)
    run["seconds"] = time.perf_counter() - started
    header = _header(model_dir, cfg, model)
    run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = merge_run(existing_analysis(model_dir / ANALYSIS_FILE, header["model"]), run, header, extra)
    atomic_write_json(model_dir / ANALYSIS_FILE, result)
    return result


def task_batches(model_dir: Path, config: AnalysisConfig, cfg: Any) -> tuple[dict[str, TaskBatch], dict[str, str]]:
    """The minimal pairs of every task ``config`` names (default: every registered task), and the reasons the
    tasks that cannot run on this tokenizer were skipped. A task named explicitly that cannot run raises.

    Example:
        >>> batches, skipped = task_batches(Path("runs/demo/dense"), AnalysisConfig(), cfg)  # doctest: +SKIP
    """
    from tokenizers import Tokenizer

    path = model_dir / TOKENIZER_FILE
    if not path.is_file():
        raise ModelDirError(f"{path} is missing: analysis needs the model's tokenizer")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.encode_special_tokens = True  # as training loads it: document text never forges a special token
    batches: dict[str, TaskBatch] = {}
    skipped: dict[str, str] = {}
    for name in config.tasks if config.tasks is not None else TASKS.names():
        try:
            batch = TASKS[name].generate(tokenizer, config.n_pairs, config.seed, max_len=cfg.n_ctx,
                                         d_vocab=cfg.d_vocab)
        except TaskError as e:
            if config.tasks is not None:
                raise
            skipped[name] = str(e)
            continue
        batches[name] = with_shifted(batch, TASKS[name], tokenizer, config.n_pairs, config.seed,
                                     max_len=cfg.n_ctx, d_vocab=cfg.d_vocab)
    if not batches:
        raise TaskError(f"no task can run on this model: {skipped}")
    return batches, skipped


def _resolve_ablation(config: AnalysisConfig, corpus: torch.Tensor | None) -> tuple[AnalysisConfig, str | None]:
    if config.ablation in ("mean", "position-mean") and corpus is None:
        note = f"{config.ablation} ablation asked for but no corpus_tokens were passed: zero ablation used instead"
        warnings.warn(note, stacklevel=3)
        return config.replace(ablation="zero", method=config.method), note
    return config, None


def _settings(config: AnalysisConfig, level: Level, corpus: torch.Tensor | None, val: torch.Tensor | None
              ) -> dict[str, Any]:
    return {"level": config.level, "method": config.method, "ablation": config.ablation,
            "n_pairs": config.n_pairs, "seed": config.seed,
            "controls": list(CONTROLS) if config.controls else [],
            "corpus_windows": int(corpus.shape[0]) if corpus is not None else 0,
            "val_windows": int(val.shape[0]) if val is not None else 0, **level.settings(config)}


def random_init_control(model: Any, seed: int, device: str = "cpu") -> Any:
    """The random-init control of the trained ``model``: a freshly initialised model of its config (same MLP kind,
    same activation sparsity: ``build_model`` builds both from the config), seeded from the analysis seed, and, when
    the model was trained under weight sparsity, magnitude-pruned to the model's kept counts (:func:`kept_counts`).

    Training prunes (the weight-sparsity callback), ``build_model`` does not: without this the control of a
    weight-sparse model would be as dense as a dense model's and would not carry the constraint being measured.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> random_init_control(build_model(presets.get("debug")), 0).training
        False
    """
    from glassformer.archs import ModelConfig

    if isinstance(model, ModelConfig):
        raise TypeError("random_init_control(model, seed) takes the trained model (its kept counts prune the "
                        "control), not a ModelConfig")
    # A forked RNG: seeding here must not change the caller's random stream. The offset keeps the control from
    # repeating a model that was itself initialised with the analysis seed (seed 0 is everyone's default).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED_OFFSET + seed)
        control = build_model(model.cfg)
    if model.cfg.weight_sparsity is not None:
        _prune_to_counts_(control, kept_counts(model), model.cfg.weight_sparsity.min_per_neuron)
    return control.to(device).eval()


def kept_counts(model: Any) -> dict[str, int]:
    """Non-zero entries of every tensor the weight-sparsity projection covers, by parameter name.

    Example:
        >>> from glassformer.archs import build_model, presets
        >>> counts = kept_counts(build_model(presets.get("debug")))
        >>> counts["blocks.0.attn.W_Q.weight"] == build_model(presets.get("debug")).blocks[0].attn.W_Q.weight.numel()
        True
    """
    from glassformer.archs.weight_sparsity import prunable_parameters

    return {name: int(p.count_nonzero()) for name, p, _ in prunable_parameters(model)}


@torch.no_grad()
def _prune_to_counts_(control: Any, counts: dict[str, int], min_per_neuron: int) -> None:
    from glassformer import kernels
    from glassformer.archs.weight_sparsity import prunable_parameters

    for name, p, _ in prunable_parameters(control):
        keep = counts[name]
        if keep >= p.numel():
            continue
        W = p.data if p.dim() == 2 else p.data.view(1, -1)  # (rows, cols); a bias is one row, as project_ does
        # The projection's per-row minimum, lowered only where the model itself holds fewer (weights that are
        # exactly zero though kept), so the count is always met exactly.
        min_per_row = min(min_per_neuron, W.shape[1], keep // W.shape[0]) if p.dim() == 2 else 0
        kernels.magnitude_prune_(W, keep, min_per_row=min_per_row, impl="reference")


def _capability(subjects: dict[str, Any], val: torch.Tensor | None) -> dict[str, Any]:
    capability: dict[str, Any] = {"val_loss": None, "val_tokens": 0}
    if val is not None:
        measured = validation_loss(subjects["model"], val)
        capability.update(val_loss=measured["loss"], val_tokens=measured["tokens"])
        if "random_init" in subjects:
            capability["random_init_val_loss"] = validation_loss(subjects["random_init"], val)["loss"]
    return capability


def _run_tasks(level: Level, batches: dict[str, TaskBatch], graph: Any, subjects: dict[str, Any],
               means: dict[str, Any], config: AnalysisConfig, device: str, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    out: dict[str, Any] = {}
    bar = tqdm(total=len(batches), desc=f"analyze {config.level}/{config.method}", unit="task",
               disable=not progress)
    try:
        for name, batch in batches.items():
            bar.set_postfix_str(name)
            out[name] = level.analyze_task(name, TASKS[name].description, batch.to(device), graph, subjects,
                                           means, config)
            bar.update(1)
    finally:
        bar.close()
    return out


def _header(model_dir: Path, cfg: Any, model: Any) -> dict[str, Any]:
    return {"kind": "glassformer.analysis", "model_dir": str(model_dir),
            "model": {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_model": cfg.d_model,
                      "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx, "attn_only": cfg.attn_only,
                      "mlp": None if cfg.attn_only else cfg.mlp_config.kind,
                      "n_params": sum(p.numel() for p in model.parameters())}}


def _sparse_layers(model: Any, model_dir: Path, corpus: torch.Tensor, val: torch.Tensor | None,
                   ablation: str) -> dict[str, Any]:
    parent, note = load_parent(model_dir)
    if parent is not None and (parent.cfg.d_model != model.cfg.d_model or parent.cfg.n_layers != model.cfg.n_layers
                               or parent.cfg.attn_only or model.cfg.attn_only):
        parent, note = None, f"{note}: not the shape of this model, not compared"
    # The CE comparison reads next-token windows: the validation windows when there are some.
    eval_tokens = val if val is not None else corpus
    return sparse_layer_report(model, corpus, parent=parent, parent_note=note, eval_tokens=eval_tokens,
                               ablation="zero" if ablation == "zero" else "mean")


def format_table(result: dict[str, Any]) -> str:
    """The per-task table the CLI prints for the latest run (``result``'s top-level fields): capability, then
    circuit sizes with the controls beside them; then one line of circuit checks per task that passed the gate
    (:func:`~glassformer.analysis.report.checks.check_summary`); then the sparse-layer metrics when measured.

    Example:
        >>> print(format_table(analyze("runs/demo/dense", corpus_tokens=corpus)))  # doctest: +SKIP
    """
    s = result["settings"]
    level = LEVELS[s["level"]]
    lines = [f"level={s['level']}  method={s['method']}  ablation={s['ablation']}  n_pairs={s['n_pairs']}  "
             f"seed={s['seed']}  controls={','.join(s['controls']) or 'off'}"]
    if s.get("ablation_note"):
        lines.append(f"note: {s['ablation_note']}")
    cap = result["capability"]
    if cap.get("val_loss") is not None:
        rand = cap.get("random_init_val_loss")
        lines.append(f"validation loss {cap['val_loss']:.4f}" + (f" (random init {rand:.4f})" if rand else ""))
    lines += level.table(result)
    for name, t in result["tasks"].items():
        if t["status"] != "ok":
            lines.append(f"skipped {name}: {t['reason']}")
    lines += level.table_notes
    lines += check_summary(result)
    if result.get("sparse_layers", {}).get("layers"):
        lines += ["", *format_sparse_table(result["sparse_layers"])]
    return "\n".join(lines)


__all__ = ["analyze", "format_table", "task_batches", "random_init_control", "kept_counts", "LEVELS", "AnalysisConfig"]
