"""Training-time augmentation of the train split (validation and test data are never augmented)."""

from __future__ import annotations

import math

import numpy as np

from mfsa_pipe.datasets.base import MODALITIES, PreparedSplit, Sample


class AugmentedSplit:
    """Training-time augmentation over a PreparedSplit (features already normalised). Each sample
    draws its own random numbers from (seed, epoch, index), so an epoch is the same on resume and
    with DataLoader workers. Off unless one of the settings is non-zero:
      crop             up to this fraction of the clip's duration is cut away: a random window of
                       relative length U(1 - crop, 1), at a random place, the same relative window
                       for every modality (they stay roughly in step); at least one row is kept
      noise            standard deviation of Gaussian noise added to the real rows (in units of
                       the normalised features, i.e. training-set standard deviations)
      modality_dropout probability that a sample is fed only a subset of its non-empty
                       modalities (uniform over the non-empty proper subsets: with three, any
                       one or any two), so the model learns to decide from whatever analyze finds;
                       a sample whose meta has `whole=True` is always fed whole (its label holds
                       only for its modalities together, e.g. words and a voice that disagree)
      column_dropout   probability that a sample loses one of `column_groups` ((modality, column
                       indices), drawn uniformly among the groups whose modality has rows): those
                       columns are set to 0, the training mean, on every row, so the model cannot
                       lean on one group of cues alone (e.g. action units learned from few faces)
    """

    def __init__(self, split: PreparedSplit, *, seed: int, crop: float = 0.0, noise: float = 0.0,
                 modality_dropout: float = 0.0, column_dropout: float = 0.0,
                 column_groups: list[tuple[str, np.ndarray]] | None = None) -> None:
        self.split = split
        self.seed = int(seed)
        self.crop, self.noise, self.modality_dropout = float(crop), float(noise), float(modality_dropout)
        self.column_dropout, self.column_groups = float(column_dropout), list(column_groups or [])
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> Sample:
        s = self.split[index]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        feats = {m: s.features(m) for m in MODALITIES}
        if self.crop > 0:
            frac = rng.uniform(1.0 - self.crop, 1.0)
            start = rng.uniform(0.0, 1.0 - frac)
            for m, x in feats.items():
                t = x.shape[0]
                if t > 1:
                    a = min(int(math.floor(start * t)), t - 1)
                    b = max(a + 1, min(t, int(math.ceil((start + frac) * t))))
                    feats[m] = x[a:b]
        if self.noise > 0:
            feats = {m: (x + rng.normal(0.0, self.noise, x.shape)).astype(np.float32) if x.shape[0] else x
                     for m, x in feats.items()}
        if self.modality_dropout > 0 and not s.meta.get("whole"):
            present = [m for m in MODALITIES if feats[m].shape[0] > 0]
            drop = rng.random() < self.modality_dropout
            subsets = [k for k in range(1, 2 ** len(present) - 1)]  # bit masks of proper subsets
            keep = subsets[int(rng.integers(len(subsets)))] if subsets else 0
            if drop and len(present) > 1:
                for bit, m in enumerate(present):
                    if not keep >> bit & 1:
                        feats[m] = feats[m][:0]
        if self.column_dropout > 0:
            feats = self._drop_columns(feats, np.random.default_rng([self.seed, self.epoch, int(index), 1]))
        return Sample(id=s.id, label=s.label, group=s.group, meta=s.meta, **feats)

    def _drop_columns(self, feats: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        # its own random stream: the draws above are the same with or without it
        groups = [(m, idx) for m, idx in self.column_groups if feats[m].shape[0] > 0]
        if not groups or rng.random() >= self.column_dropout:
            return feats
        m, idx = groups[int(rng.integers(len(groups)))]
        x = feats[m].copy()
        x[:, idx] = 0.0
        return {**feats, m: x}
