"""Length-bucketed batches: an epoch's batches made of samples of similar length and modality pattern.

A batch is padded to its longest sequence per modality, and attention costs grow with the padded
lengths: one 120-row voice clip in a batch of 60 short sentences pads every sentence's audio to
120 rows. Bucketing (as `group_by_length` does in Hugging Face's Trainer) draws a seeded
permutation, sorts windows of `window` batches by (modality pattern, total rows), cuts them into
batches and shuffles the batch order: each epoch still visits every sample once, in an order that
depends on (seed, epoch) only, so a resumed run sees what an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from mfsa_pipe.datasets.base import MODALITIES


def sample_lengths(split: Any) -> np.ndarray:
    """(N, 3) int: rows per modality of every sample of `split` (before augmentation)."""
    base = split
    while hasattr(base, "split") and not hasattr(base, "features"):  # AugmentedSplit / PreparedSplit
        base = base.split
    rows = np.zeros((len(base), len(MODALITIES)), np.int64)
    for i in range(len(base)):
        sample = base[i]
        rows[i] = [sample.features(m).shape[0] for m in MODALITIES]
    return rows


class BucketBatchSampler:
    """Batches of indices (a DataLoader `batch_sampler`); under torchrun each process takes every
    `world_size`-th batch of the same list, which is padded by repetition to a multiple of it."""

    def __init__(self, lengths: np.ndarray, *, batch_size: int, generator: Any, window: int = 50,
                 rank: int = 0, world_size: int = 1) -> None:
        self.lengths, self.batch_size, self.generator = np.asarray(lengths), int(batch_size), generator
        self.window, self.rank, self.world_size = int(window), int(rank), int(world_size)
        self.last: list[int] = []  # the indices of the latest iteration (this process's share)

    def _batches(self) -> list[list[int]]:
        import torch

        n = len(self.lengths)
        order = torch.randperm(n, generator=self.generator).numpy()
        pattern = (self.lengths > 0) @ (1 << np.arange(self.lengths.shape[1]))  # which modalities a sample has
        total = self.lengths.sum(1)
        batches = []
        step = self.window * self.batch_size
        for start in range(0, n, step):
            chunk = order[start:start + step]
            chunk = chunk[np.lexsort((total[chunk], pattern[chunk]))]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        shuffle = torch.randperm(len(batches), generator=self.generator).tolist()
        return [batches[i] for i in shuffle]

    def __len__(self) -> int:
        # every window but the last holds whole batches: as many batches as plain batching
        return math.ceil(math.ceil(len(self.lengths) / self.batch_size) / self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        need = math.ceil(len(batches) / self.world_size) * self.world_size
        batches += batches[: need - len(batches)]
        mine = batches[self.rank::self.world_size]
        self.last = [i for batch in mine for i in batch]
        return iter(mine)
