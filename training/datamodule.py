"""Random windows of ``n_ctx + 1`` tokens from a memory-mapped token array, served by a LightningDataModule.

Window ``i`` of a run is a pure function of ``(seed, i)``, so the data order is reproducible under a seed and a
resumed run can continue from the exact sample it stopped at (the data module starts at
``trainer.global_step * batch_size``).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


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


class TokenWindowDataModule(L.LightningDataModule):
    """Training windows drawn at random (seeded) and a fixed validation set.

    Example:
        >>> dm = TokenWindowDataModule(np.arange(1000, dtype=np.uint16), np.arange(200, dtype=np.uint16),
        ...                            n_ctx=16, batch_size=4, seed=0, max_steps=10, val_batches=2)
        >>> tuple(next(iter(dm.train_dataloader())).shape)
        (4, 17)
    """

    def __init__(self, train_tokens: np.ndarray, val_tokens: np.ndarray, *, n_ctx: int, batch_size: int, seed: int,
                 max_steps: int, val_batches: int, num_workers: int = 0):
        super().__init__()
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.n_ctx, self.batch_size, self.seed = n_ctx, batch_size, seed
        self.max_steps, self.val_batches, self.num_workers = max_steps, val_batches, num_workers

    def _start_step(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_step) if trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        start = self._start_step()
        remaining = max(self.max_steps - start, 1)
        ds = RandomWindows(self.train_tokens, self.n_ctx, remaining * self.batch_size, self.seed,
                           start=start * self.batch_size)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          drop_last=True, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        ds = FixedWindows(self.val_tokens, self.n_ctx, self.val_batches * self.batch_size)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, num_workers=0)
