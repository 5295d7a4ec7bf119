"""``glassformer finetune``: convert a pretrained model's MLPs by distillation, add constraints, fine-tune."""

from __future__ import annotations

from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig
from glassformer.training.finetune import DistillConfig, FinetuneModelConfig


def finetune(
    parent: str | None = None,
    model: FinetuneModelConfig = FinetuneModelConfig(),
    distill: DistillConfig = DistillConfig(),
    kl_coef: float = 0.0,
    data: DataConfig = DataConfig(),
    optim: OptimConfig = OptimConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    out: str = "runs/finetune",
) -> None:
    """Convert a pretrained model's MLPs by distillation, add constraints, fine-tune it, write a model directory.

    Args:
        parent: The parent model, also spelled --from: a glassformer model directory or a local Hugging Face
            GPT-2 directory. Its shape and tokenizer are kept.
        model: What changes from the parent: the MLP variant (distilled from the parent's MLPs when its kind
            differs) and constraints (activation_sparsity, penalties, weight_sparsity); null keeps the parent's.
        distill: Distillation of the new MLPs: steps, learning rate, tokens, and the ablation of CE loss recovered.
        kl_coef: Weight of KL(parent || model) on next-token distributions added to the loss; 0 turns it off.
        data: Fine-tuning corpus, tokenised with the parent's tokenizer.
        optim: Optimiser and learning-rate schedule.
        trainer: Steps, batch size, logging, devices.
        out: Model directory to write; its training.json records the parent and the distillation report.
    """
    from lightning.pytorch.utilities import rank_zero_only

    from glassformer.training.finetune import finetune as run_finetune
    from glassformer.training.finetune import summary

    if parent is None:
        raise ValueError("--from PATH is required: the parent model directory or Hugging Face GPT-2 directory")
    path = run_finetune(parent, model, data, optim, trainer, out, kl_coef=kl_coef, distill=distill)
    if rank_zero_only.rank == 0:
        print(summary(path))
