"""``optim.grad_clip`` reaches the optimizer: every step of ``fit`` updates with a gradient of norm at most the clip.

AdamW divides the update by the gradient's running scale, so clipping hardly shows in the weights; what it changes
is the gradient the optimizer is handed. Lightning clips after ``on_before_optimizer_step`` and leaves the clipped
gradients in place until the next step's ``zero_grad``, so a module hook reads the norm before clipping and
``on_train_batch_end`` the norm the optimizer stepped with.
"""

import math

import pytest
import torch

from glassformer.archs import presets
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig
from glassformer.training.module import LanguageModel, optim_dict
from glassformer.training.train import fit

CLIP = 0.05  # far below the gradient norm of a freshly initialised model, so every step needs clipping
STEPS = 3


def grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.cat(grads)))


class NormProbe(LanguageModel):
    """Records, for every step, the gradient norm before clipping and the one the optimizer stepped with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.norms: list[tuple[float, float]] = []
        self._before = math.nan

    def on_before_optimizer_step(self, optimizer):
        self._before = grad_norm(self)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.norms.append((self._before, grad_norm(self)))


@pytest.mark.parametrize("clip", [CLIP, None])
def test_every_training_step_steps_with_the_gradient_clipped_to_optim_grad_clip(tmp_path, one_thread, clip):
    model_cfg, optim_cfg = presets.get("debug"), OptimConfig(grad_clip=clip, warmup_steps=1)
    trainer_cfg = TrainerConfig(max_steps=STEPS, batch_size=4, val_every=100, val_batches=1, checkpoint_every=100,
                                progress_bar=False, loggers=[])
    probe = NormProbe(model_cfg.to_dict(), optim_dict(optim_cfg), STEPS)
    fit(model_cfg, DataConfig(max_bytes=300_000), optim_cfg, trainer_cfg, tmp_path / "run", module=probe)
    assert len(probe.norms) == STEPS
    for before, stepped in probe.norms:
        assert before > 10 * CLIP  # the test means something only if clipping had work to do
        if clip is None:
            assert stepped == before
        else:
            # clip_grad_norm_ scales the whole gradient to the clip (not each value, not to zero).
            assert stepped == pytest.approx(CLIP, rel=1e-4)
