"""The LightningModule: next-token cross-entropy plus the model's named auxiliary losses, AdamW, warmup + decay.

Besides the weights, optimizer and schedule that Lightning checkpoints by itself, every checkpoint carries what an
exact resume also needs (under ``checkpoint["glassformer"]``): the RNG states, the learning-rate multiplier that
callbacks set (``lr_scale``), and the dead-latent trackers of transcoder layers, which are kept out of the model's
state dict so that model directories stay weights-only.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from glassformer.archs import ModelConfig, build_model
from glassformer.archs.config import ConfigError
from glassformer.training.config import OptimConfig

log = logging.getLogger("glassformer")


def lr_factor(step: int, max_steps: int, cfg: OptimConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warmup, then cosine/linear decay to ``min_lr_ratio``.

    Example:
        >>> cfg = OptimConfig(warmup_steps=10, schedule="linear", min_lr_ratio=0.0)
        >>> lr_factor(5, 110, cfg), lr_factor(10, 110, cfg), lr_factor(110, 110, cfg)
        (0.5, 1.0, 0.0)
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return step / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(max_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


class LanguageModel(L.LightningModule):
    """Wraps a glassformer :class:`Transformer` for training; hyperparameters are saved in every checkpoint.

    ``lr_scale`` is a multiplier callbacks may set (weight sparsity scales the learning rate with density).

    Example:
        >>> from glassformer.archs import presets
        >>> lm = LanguageModel(presets.get("debug").to_dict(), asdict(OptimConfig()), max_steps=10)
        >>> lm.model.cfg.n_layers
        2
    """

    def __init__(self, model: dict[str, Any], optim: dict[str, Any], max_steps: int, log_every: int = 10):
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = ModelConfig.from_dict(model)
        self.optim_cfg = OptimConfig(**{**optim, "betas": tuple(optim.get("betas", (0.9, 0.95)))})
        self.model = build_model(self.model_cfg)
        self.max_steps, self.log_every = max_steps, log_every
        self.lr_scale = 1.0
        self.last_loss_terms: dict[str, Tensor] = {}
        self._resume_state: dict[str, Any] | None = None

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)

    def _cross_entropy(self, batch: Tensor) -> Tensor:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = self.model(inputs)  # (B, T, d_vocab)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        self.model.on_train_step(self.global_step, self.max_steps)
        ce = self._cross_entropy(batch)
        aux = self.model.aux_losses()
        loss = ce + sum(aux.values()) if aux else ce
        # Read by DivergenceGuard when the loss is not finite, to name the term that went first.
        self.last_loss_terms = {"cross_entropy": ce.detach(), **{name: value.detach() for name, value in aux.items()}}
        self.log("loss/train", ce, prog_bar=True)
        for name, value in aux.items():
            self.log(f"loss/{name}", value)
        if aux:
            self.log("loss/total", loss)
        self.log("lr", self.optimizers().param_groups[0]["lr"])
        if self.global_step % self.log_every == 0:
            for name, value in self.model.stats().items():
                self.log(name, float(value))
        return loss

    def validation_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        ce = self._cross_entropy(batch)
        # sync_dist: under DDP each rank holds an equal block of the validation windows (TokenWindowDataModule).
        self.log("loss/val", ce, prog_bar=True, on_epoch=True, batch_size=batch.shape[0], sync_dist=True)
        return ce

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optim_cfg
        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, self.max_steps, cfg) * self.lr_scale
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


    # --- exact resume -----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["glassformer"] = {"lr_scale": float(self.lr_scale), "rng": rng_states(),
                                     "trackers": tracker_states(self.model)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved, current = checkpoint.get("hyper_parameters", {}).get("model"), self.hparams["model"]
        # The kernel implementation may change between machines (triton on a GPU, reference on a CPU).
        diff = [f"model.{k}: checkpoint {saved.get(k)!r}, this run {current.get(k)!r}"
                for k in sorted(set(saved or {}) | set(current)) if k != "kernels" and saved is not None
                and saved.get(k) != current.get(k)]
        if diff:
            raise ConfigError(f"the checkpoint was trained with a different model config ({'; '.join(diff)}): "
                              "resume with the config it was trained with")
        old_optim = checkpoint.get("hyper_parameters", {}).get("optim")
        if old_optim is not None and old_optim != self.hparams["optim"]:
            log.warning("optim differs from the checkpoint's; the optimizer and learning-rate state come from the "
                        "checkpoint, so only the schedule's shape follows the new values")
        state = checkpoint.get("glassformer")
        if state is None:
            return
        load_tracker_states(self.model, state.get("trackers", {}))
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self._resume_state = state

    def on_train_start(self) -> None:
        # Applied here rather than in on_load_checkpoint: Lightning restores the module before on_fit_start
        # (where callbacks may still set lr_scale for step 0) and builds the data iterators after it.
        state, self._resume_state = self._resume_state, None
        if state is not None:
            self.lr_scale = float(state.get("lr_scale", 1.0))
            set_rng_states(state["rng"])


def rng_states() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU and CUDA) RNG states, as plain types a ``weights_only`` load accepts.

    Example:
        >>> s = rng_states(); a = torch.rand(1); set_rng_states(s); bool(torch.rand(1) == a)
        True
    """
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned (CUDA states only when as many devices are visible).

    Example:
        >>> s = rng_states(); a = random.random(); set_rng_states(s); random.random() == a
        True
    """
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def tracker_states(model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """Each dead-latent tracker's counts, by module name (they are not in the model's state dict).

    Example:
        >>> from glassformer.archs import presets
        >>> tracker_states(build_model(presets.get("debug")))
        {}
    """
    from glassformer.archs.mlp.dead_latents import DeadLatentTracker

    return {name: {"tokens_since_fired": m.tokens_since_fired.detach().cpu().clone(), "tokens_seen": m.tokens_seen}
            for name, m in model.named_modules() if isinstance(m, DeadLatentTracker)}


def load_tracker_states(model: torch.nn.Module, states: dict[str, dict[str, Any]]) -> None:
    """Put :func:`tracker_states` back; a tracker missing from ``states`` or of another size is an error.

    Example:
        >>> from glassformer.archs import presets
        >>> load_tracker_states(build_model(presets.get("debug")), {"blocks.0.mlp.tracker": {}})
        Traceback (most recent call last):
        ...
        ValueError: the checkpoint has dead-latent trackers ['blocks.0.mlp.tracker'] but the model has []: resume with the model config the checkpoint was trained with
    """
    from glassformer.archs.mlp.dead_latents import DeadLatentTracker

    trackers = {name: m for name, m in model.named_modules() if isinstance(m, DeadLatentTracker)}
    if set(trackers) != set(states):
        raise ValueError(f"the checkpoint has dead-latent trackers {sorted(states)} but the model has "
                         f"{sorted(trackers)}: resume with the model config the checkpoint was trained with")
    for name, m in trackers.items():
        counts = states[name]["tokens_since_fired"]
        if counts.shape != m.tokens_since_fired.shape:
            raise ValueError(f"dead-latent tracker {name} has {m.tokens_since_fired.shape[0]} latents but the "
                             f"checkpoint's has {counts.shape[0]}")
        m.tokens_since_fired.copy_(counts)
        m.tokens_seen = int(states[name]["tokens_seen"])


def optim_dict(cfg: OptimConfig) -> dict[str, Any]:
    """OptimConfig as the plain dict the module's hyperparameters store."""
    d = asdict(cfg)
    d["betas"] = list(cfg.betas)
    return d
