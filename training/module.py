"""The LightningModule: next-token cross-entropy plus the model's named auxiliary losses, AdamW, warmup + decay."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from glassformer.archs import ModelConfig, build_model
from glassformer.training.config import OptimConfig


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

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)

    def _cross_entropy(self, batch: Tensor) -> Tensor:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = self.model(inputs)  # (B, T, d_vocab)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        on_step = getattr(self.model, "on_train_step", None)
        if on_step is not None:
            on_step(self.global_step, self.max_steps)
        ce = self._cross_entropy(batch)
        aux = self.model.aux_losses()
        loss = ce + sum(aux.values()) if aux else ce
        self.log("loss/train", ce, prog_bar=True)
        for name, value in aux.items():
            self.log(f"loss/{name}", value)
        if aux:
            self.log("loss/total", loss)
        self.log("lr", self.optimizers().param_groups[0]["lr"])
        stats = getattr(self.model, "stats", None)
        if stats is not None and self.global_step % self.log_every == 0:
            for name, value in stats().items():
                self.log(name, float(value))
        return loss

    def validation_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        ce = self._cross_entropy(batch)
        self.log("loss/val", ce, prog_bar=True, on_epoch=True, batch_size=batch.shape[0])
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


def optim_dict(cfg: OptimConfig) -> dict[str, Any]:
    """OptimConfig as the plain dict the module's hyperparameters store."""
    d = asdict(cfg)
    d["betas"] = list(cfg.betas)
    return d
