"""Windows of ``n_ctx + 1`` tokens from a token array: random ones for training, fixed ones for validation.

A leaf module (numpy and torch only), so evaluation and analysis read windows without loading Lightning.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class RandomWindows(Dataset):
    """Sample ``start + i`` is a window at an offset drawn from a generator seeded by ``(seed, start + i)``.

    Example:
        >>> ds = RandomWindows(np.arange(100, dtype=np.uint16), n_ctx=8, length=4, seed=0)
        >>> tuple(ds[0].shape)
        (9,)
    """

    def __init__(self, tokens: np.ndarray, n_ctx: int, length: int, seed: int, start: int = 0):
        if len(tokens) < n_ctx + 2:
            raise ValueError(f"the token array has {len(tokens)} tokens; windows of n_ctx+1={n_ctx + 1} need more "
                             "(use a larger corpus or a smaller model.n_ctx)")
        self.tokens, self.n_ctx, self.length, self.seed, self.start = tokens, n_ctx, length, seed, start

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, self.start + i))
        offset = int(rng.integers(0, len(self.tokens) - self.n_ctx - 1))
        return torch.from_numpy(self.tokens[offset : offset + self.n_ctx + 1].astype(np.int64))


class FixedWindows(Dataset):
    """``count`` windows at evenly spaced offsets: the same validation set at every evaluation.

    Example:
        >>> len(FixedWindows(np.arange(100, dtype=np.uint16), n_ctx=8, count=5))
        5
    """

    def __init__(self, tokens: np.ndarray, n_ctx: int, count: int):
        if len(tokens) < n_ctx + 1:
            raise ValueError(f"the validation split has {len(tokens)} tokens, fewer than one window of "
                             f"n_ctx+1={n_ctx + 1}; use a larger corpus or data.val_fraction")
        last = len(tokens) - n_ctx - 1
        max_windows = last // (n_ctx + 1) + 1
        count = min(count, max_windows)
        self.offsets = np.linspace(0, last, count).astype(np.int64) if count > 1 else np.zeros(1, dtype=np.int64)
        self.tokens, self.n_ctx = tokens, n_ctx

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> torch.Tensor:
        o = int(self.offsets[i])
        return torch.from_numpy(self.tokens[o : o + self.n_ctx + 1].astype(np.int64))
