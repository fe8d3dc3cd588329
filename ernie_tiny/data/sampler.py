"""A data-parallel batch sampler that can stop and resume mid-epoch.

Each epoch shuffles all sequence indices with ``seed + epoch``; rank r takes every
``world``-th index from position r (the tail that does not divide evenly is dropped, so all
ranks take the same number of steps) and reads them in batches. Its state is two integers.
"""
from __future__ import annotations

import numpy as np


def batches_per_epoch(num_samples: int, batch_size: int, world_size: int = 1) -> int:
    """Whole batches each rank takes per epoch (0: fewer samples than one batch on every rank)."""
    return num_samples // world_size // batch_size


class ResumableBatchSampler:
    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.batches_per_epoch = batches_per_epoch(num_samples, batch_size, world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{num_samples} sequences are fewer than one batch of {batch_size} on each of {world_size} ranks")
        self.epoch, self.position = 0, 0  # position: batches already taken in this epoch
        self._order = None

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            perm = np.random.default_rng(self.seed + self.epoch).permutation(self.num_samples)
            mine = perm[self.rank::self.world_size]
            self._order = mine[: self.batches_per_epoch * self.batch_size]
        return self._order

    def next_batch(self) -> np.ndarray:
        if self.position == self.batches_per_epoch:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        start = self.position * self.batch_size
        self.position += 1
        return self._epoch_order()[start:start + self.batch_size]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_samples": self.num_samples, "world_size": self.world_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "num_samples", "world_size", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"cannot resume the data order: the checkpoint has {key}={state[key]}, "
                                 f"this run has {getattr(self, key)}")
        self.epoch, self.position, self._order = state["epoch"], state["position"], None
