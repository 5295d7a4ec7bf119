"""Random windows of ``n_ctx + 1`` tokens from a memory-mapped token array, served by a LightningDataModule.

Window ``i`` of a run is a pure function of ``(seed, i)``, so the data order is reproducible under a seed and a
resumed run continues from the exact window it stopped at. Step ``s`` of a run on ``W`` processes with ``b``
windows each reads windows ``s*W*b ... (s+1)*W*b - 1`` (rank ``r`` the ``r``-th block of ``b``): the same windows
a single process with batch ``W*b`` reads at step ``s``, and ``trainer.global_step * batch_size`` when ``W = 1``.

Resuming mid-run is what Lightning calls resuming mid-epoch: the whole run is one epoch of ``max_steps`` batches,
the checkpoint restores Lightning's batch counters, and the training loader starts at the first window not yet
used while still reporting the full epoch length, so Lightning's counters and the loader end together at
``max_steps`` (no batch repeated, none skipped). The number of windows consumed is saved in the checkpoint.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, Subset

from glassformer.training.windows import FixedWindows, RandomWindows


class StepBatches(Sampler[list[int]]):
    """Window indices of each step's batch on one process, from ``first_step`` to ``total_steps``.

    Step ``s`` on ``rank`` of ``world_size`` reads ``first_window + ((s - first_step) * world_size + rank) *
    batch_size`` onwards. ``len()`` is ``total_steps``, the whole run, although iteration starts at
    ``first_step``: Lightning counts the steps already taken in the epoch it restores from a checkpoint.

    Example:
        >>> list(StepBatches(batch_size=2, total_steps=3, first_step=1, first_window=2, rank=1, world_size=2))
        [[4, 5], [8, 9]]
    """

    def __init__(self, batch_size: int, total_steps: int, first_step: int = 0, first_window: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.batch_size, self.total_steps, self.first_step = batch_size, total_steps, first_step
        self.first_window, self.rank, self.world_size = first_window, rank, world_size

    def __len__(self) -> int:
        return self.total_steps

    def __iter__(self):
        for k in range(max(self.total_steps - self.first_step, 0)):
            start = self.first_window + (k * self.world_size + self.rank) * self.batch_size
            yield list(range(start, start + self.batch_size))


class ResumableLoader(DataLoader):
    """A DataLoader that tells Lightning it resumes mid-epoch (Lightning checks for ``state_dict``).

    Its position needs no state of its own: :class:`TokenWindowDataModule` restores the windows consumed from the
    checkpoint and builds the loader from there.

    Example:
        >>> ResumableLoader([1, 2, 3]).state_dict()
        {}
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TokenWindowDataModule(L.LightningDataModule):
    """Training windows drawn at random (seeded) and a fixed validation set.

    Under DDP every process reads its own block of each step's windows and of the validation windows, so ``W``
    processes with ``batch_size`` see exactly what one process with ``W * batch_size`` sees.

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
        self._restored: dict | None = None

    def _layout(self) -> tuple[int, int, int]:
        """``(global_step, rank, world_size)`` of the attached trainer, or a fresh single process."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 0, 1
        return int(trainer.global_step), int(trainer.global_rank), int(trainer.world_size)

    def windows_consumed(self) -> int:
        """Training windows used so far by all processes together (restored ones included).

        Example:
            >>> dm = TokenWindowDataModule(np.arange(100, dtype=np.uint16), np.arange(50, dtype=np.uint16), n_ctx=8,
            ...                            batch_size=4, seed=0, max_steps=10, val_batches=1)
            >>> dm.load_state_dict({"seed": 0, "global_step": 0, "windows_consumed": 12}); dm.windows_consumed()
            12
        """
        step, _, world = self._layout()
        if self._restored is not None:
            done = step - self._restored["global_step"]
            return self._restored["windows_consumed"] + done * world * self.batch_size
        return step * world * self.batch_size

    def state_dict(self) -> dict:
        step, _, world = self._layout()
        return {"seed": self.seed, "global_step": step, "windows_consumed": self.windows_consumed(),
                "windows_per_step": world * self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"trainer.seed={self.seed} but the checkpoint was trained with seed {state['seed']}: "
                             "resume with the same seed (it fixes the order of the training windows)")
        if "windows_consumed" in state:
            self._restored = {"global_step": int(state["global_step"]),
                              "windows_consumed": int(state["windows_consumed"])}

    def train_dataloader(self) -> DataLoader:
        step, rank, world = self._layout()
        first = self.windows_consumed()
        # Covers every index StepBatches can ask for; window i is a pure function of (seed, i).
        length = first + max(self.max_steps - step, 0) * world * self.batch_size
        ds = RandomWindows(self.train_tokens, self.n_ctx, max(length, 1), self.seed)
        batches = StepBatches(self.batch_size, self.max_steps, step, first, rank, world)
        # An explicit generator: otherwise every new iterator draws its base seed from the global torch RNG,
        # and a resumed run (one more iterator) would diverge from an uninterrupted one in anything random.
        return ResumableLoader(ds, batch_sampler=batches, num_workers=self.num_workers,
                               persistent_workers=self.num_workers > 0,
                               generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        _, rank, world = self._layout()
        ds = FixedWindows(self.val_tokens, self.n_ctx, self.val_batches * self.batch_size * world)
        if world > 1:
            # The windows a single process with batch world*batch_size would use, in equal blocks per rank, so
            # that the mean of the ranks' means (sync_dist) is the mean over all of them.
            per_rank = len(ds) // world
            if per_rank == 0:
                raise ValueError(f"the validation split has {len(ds)} windows, fewer than the {world} processes: "
                                 "use a larger corpus or data.val_fraction")
            ds = Subset(ds, range(rank * per_rank, (rank + 1) * per_rank))
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, num_workers=0,
                          generator=torch.Generator().manual_seed(self.seed))
