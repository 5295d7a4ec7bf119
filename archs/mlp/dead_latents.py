"""Which hidden units fire: the dead-unit tracker and the ``l0`` / ``dead_fraction`` stats it reports.

Shared by every variant whose hidden units are sparse (the TopK MLP's neurons, the transcoder's latents), so the
two report the same stats, computed the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DeadLatentTracker(nn.Module):
    """Training tokens since each latent last fired; a latent is dead after ``window_tokens`` of silence.

    Counts are buffers (they follow the model's device) but not saved: a model directory stays weights-only.
    ``last_l0`` is what the owning MLP measured on its last forward (train or eval).

    Example:
        >>> t = DeadLatentTracker(3, window_tokens=10)
        >>> t.update(10, torch.tensor([True, False, False])); t.dead().tolist()
        [False, True, True]
        >>> t.last_l0 = torch.tensor(1.0); t.stats()
        {'dead_fraction': 0.6666666865348816, 'l0': 1.0}
    """

    def __init__(self, n_latents: int, window_tokens: int):
        super().__init__()
        self.window = window_tokens
        self.register_buffer("tokens_since_fired", torch.zeros(n_latents, dtype=torch.long), persistent=False)
        self.tokens_seen = 0  # on the host, so "could anything be dead yet?" needs no device sync
        self.last_l0: Tensor | None = None
        """Mean non-zero units per token of the last forward, a 0-dim tensor (read as a float only when logged,
        so a GPU step does not wait for it); None before the first forward."""

    @torch.no_grad()
    def update(self, n_tokens: int, fired: Tensor) -> None:
        """Advance by ``n_tokens``; ``fired`` (n_latents,) bool marks latents non-zero on any of them."""
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired.masked_fill_(fired, 0)
        self.tokens_seen += n_tokens

    def may_have_dead(self) -> bool:
        return self.tokens_seen >= self.window

    def dead(self) -> Tensor:
        """(n_latents,) bool."""
        return self.tokens_since_fired >= self.window

    def dead_fraction(self) -> float:
        return float(self.dead().float().mean()) if self.may_have_dead() else 0.0

    def stats(self) -> dict[str, float]:
        """``dead_fraction``, and ``l0`` once a forward has measured it: what a sparse MLP's ``stats()`` returns."""
        out = {"dead_fraction": self.dead_fraction()}
        if self.last_l0 is not None:
            out["l0"] = float(self.last_l0)
        return out
