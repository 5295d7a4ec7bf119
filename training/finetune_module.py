"""The fine-tuning LightningModule: the language-model loss plus a KL term to a frozen teacher's logits.

Kept apart from ``training/finetune.py`` because that module's config classes build the CLI's parser, and the CLI
must start without importing Lightning.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.training.module import LanguageModel


def kl_to_teacher(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean over positions of ``KL(p_teacher || p_student)`` between next-token distributions, in float32.

    Example:
        >>> logits = torch.randn(2, 3, 5)
        >>> float(kl_to_teacher(logits, logits))
        0.0
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    log_p_student = F.log_softmax(student_logits.flatten(0, -2).float(), dim=-1)  # (N, d_vocab)
    log_p_teacher = F.log_softmax(teacher_logits.flatten(0, -2).float(), dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")


class FinetuneModule(LanguageModel):
    """:class:`LanguageModel` whose training loss adds ``kl_coef * KL(teacher || student)``, logged as ``loss/kl``.

    The teacher (the parent model) is frozen and kept out of the module's submodules: it is neither trained nor
    saved in checkpoints, and it follows the student to its device when fitting starts. ``loss/total`` is the
    language-model objective (cross-entropy plus auxiliary losses); the KL term is added after it.

    Example:
        >>> from dataclasses import asdict
        >>> from glassformer.archs import presets
        >>> from glassformer.training.config import OptimConfig
        >>> lm = FinetuneModule(presets.get("debug").to_dict(), asdict(OptimConfig()), max_steps=10, kl_coef=0.5)
        >>> lm.kl_coef, lm.teacher is None
        (0.5, True)
    """

    def __init__(self, model: dict[str, Any], optim: dict[str, Any], max_steps: int, log_every: int = 10,
                 kl_coef: float = 0.0):
        super().__init__(model, optim, max_steps, log_every)
        if not kl_coef >= 0:
            raise ValueError(f"kl_coef={kl_coef!r} is not allowed: expected a non-negative float")
        self.kl_coef = kl_coef
        self.__dict__["teacher"] = None
        self._kl: Tensor | None = None

    def set_teacher(self, teacher: nn.Module) -> None:
        """Freeze ``teacher`` and use it for the KL term (assigned through ``__dict__`` so it is no submodule)."""
        teacher.requires_grad_(False)
        self.__dict__["teacher"] = teacher.eval()

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)

    @torch.no_grad()
    def teacher_logits(self, inputs: Tensor) -> Tensor:
        return self.teacher.eval()(inputs)

    def teacher_kl(self, inputs: Tensor, student_logits: Tensor) -> Tensor:
        """KL from the teacher's next-token distribution on ``inputs`` (B, T) to the student's logits."""
        if self.teacher is None:
            raise ValueError("no teacher is set: call set_teacher(parent_model) first")
        return kl_to_teacher(student_logits, self.teacher_logits(inputs))

    def _cross_entropy(self, batch: Tensor) -> Tensor:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = self.model(inputs)  # (B, T, d_vocab)
        if self.training and self.teacher is not None and self.kl_coef > 0:
            self._kl = self.teacher_kl(inputs, logits)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        self._kl = None
        loss = super().training_step(batch, batch_idx)
        if self._kl is not None:
            self.log("loss/kl", self._kl)
            loss = loss + self.kl_coef * self._kl
        return loss
