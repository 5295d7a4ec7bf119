"""Lightning callbacks for the constraints that act between optimizer steps.

``WeightSparsityCallback`` applies ``glassformer.archs.weight_sparsity`` to the LightningModule's ``model``.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from glassformer.archs.weight_sparsity import (
    WeightSparsityConfig,
    anneal_progress,
    density,
    lr_scale_at,
    project_,
    zero_pruned_state_,
)


class WeightSparsityCallback(Callback):
    """Project the weights after every optimizer step and once at fit start, zeroing pruned entries' Adam state;
    with ``refresh_every`` N > 1 the kept entries are selected every N steps and the last masks re-applied in between.

    Reads ``pl_module.model.cfg.weight_sparsity`` unless a config is given. Sets ``pl_module.lr_scale`` (the
    module multiplies it into its schedule) to ``sqrt(target / current)`` when ``lr_scaling`` is on, and logs
    ``weights/density`` (kept fraction of every covered tensor) and ``weights/lr_scale``. With gradient
    accumulation it projects only on batches that ended with an optimizer step.

    Example:
        >>> from lightning.pytorch import Trainer  # doctest: +SKIP
        >>> Trainer(callbacks=[WeightSparsityCallback()])  # doctest: +SKIP
    """

    def __init__(self, cfg: WeightSparsityConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self._last_step: int | None = None
        self.last_density = 1.0
        self.masks: dict[str, Any] | None = None
        """The kept masks of the last selection; re-applied between selections when ``refresh_every`` > 1."""

    @staticmethod
    def _model(pl_module: LightningModule) -> Any:
        return getattr(pl_module, "model", pl_module)

    def _config(self, model: Any) -> WeightSparsityConfig:
        cfg = self.cfg if self.cfg is not None else getattr(getattr(model, "cfg", None), "weight_sparsity", None)
        if cfg is None:
            raise ValueError("WeightSparsityCallback needs cfg=WeightSparsityConfig(...) or a model whose "
                             "cfg.weight_sparsity is set (model.weight_sparsity in the YAML)")
        return cfg

    @staticmethod
    def _max_steps(trainer: Trainer, pl_module: LightningModule) -> int:
        max_steps = getattr(trainer, "max_steps", -1)
        if max_steps is None or max_steps < 0:
            max_steps = getattr(pl_module, "max_steps", None)
        if not max_steps or max_steps < 0:
            raise ValueError("WeightSparsityCallback needs trainer.max_steps (or pl_module.max_steps) to anneal")
        return int(max_steps)

    def project(self, trainer: Trainer, pl_module: LightningModule, step: int) -> float:
        """Project to the scheduled fraction at ``step``; returns the density of the covered weights."""
        model = self._model(pl_module)
        cfg = self._config(model)
        max_steps = self._max_steps(trainer, pl_module)
        # By schedule position, not matrix fraction: with a matrix target of 1.0 the biases and embeddings still
        # anneal to theirs.
        masks = project_(model, cfg=cfg, progress=anneal_progress(step, max_steps, cfg))
        self.masks = masks
        for optimizer in trainer.optimizers:  # project_ already zeroed the pruned weights
            zero_pruned_state_(optimizer, model, masks)
        pl_module.lr_scale = lr_scale_at(step, max_steps, cfg)
        self.last_density = density(model, masks)
        return self.last_density

    def reapply(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Zero the entries the last selection pruned, and their optimizer state (a cheap in-place fill)."""
        model = self._model(pl_module)
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            params[name].data.masked_fill_(~mask, 0)
        for optimizer in trainer.optimizers:
            zero_pruned_state_(optimizer, model, self.masks)

    def state_dict(self) -> dict[str, Any]:
        # Between selections the masks are state: a resumed run must re-apply the same ones, not select anew.
        return {"masks": self.masks} if self.masks is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.masks = state_dict.get("masks")

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # So the very first forward already sees the scheduled density (and the scaled learning rate).
        self._last_step = trainer.global_step
        if self.masks is not None:
            # Resumed (the checkpoint's masks were loaded; the trainer's step is not restored yet at this point):
            # they hold until the next selection, which may lie a few steps ahead.
            self.reapply(trainer, pl_module)
            return
        self.project(trainer, pl_module, trainer.global_step)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step  # already counts the optimizer step that just ran
        if step == self._last_step:
            return
        self._last_step = step
        if self.masks is not None and step % (self._config(self._model(pl_module)).refresh_every) != 0:
            self.reapply(trainer, pl_module)
            return
        value = self.project(trainer, pl_module, step)
        pl_module.log("weights/density", value)
        pl_module.log("weights/lr_scale", float(pl_module.lr_scale))
