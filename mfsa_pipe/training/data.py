"""The data a run trains on: the dataset checked for training, its fingerprint, the normalised
(and maybe augmented) splits, and each epoch's loader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from extractors.hashing import file_sha256
from mfsa_pipe.datasets.base import MODALITIES, DatasetBundle, NormStats, PreparedSplit, make_collate
from mfsa_pipe.training.augmentation import AugmentedSplit
from mfsa_pipe.training.batching import BucketBatchSampler, sample_lengths
from mfsa_pipe.training.evaluation import as_bundle
from mfsa_pipe.training.settings import TrainingError, TrainSettings, split_column_group


def open_training_data(dataset: str | os.PathLike | DatasetBundle, settings: TrainSettings) -> DatasetBundle:
    bundle = as_bundle(dataset)
    if settings.calibrate and bundle.task not in ("classification", "multihead"):
        raise TrainingError(f"calibrate: temperature scaling is for classification and multihead data, not {bundle.task!r}")
    for name in ("train", "valid"):
        if name not in bundle.splits or len(bundle.splits[name]) == 0:
            raise TrainingError(
                f"{bundle.source.get('path')}: training needs non-empty train and valid splits; found {bundle.describe()['splits']}"
            )
    return bundle


def dataset_sha256(bundle: DatasetBundle) -> str | None:
    path = bundle.source.get("path")
    return file_sha256(path) if path and Path(path).exists() else None


def dims_of(bundle: DatasetBundle) -> dict[str, int]:
    return dict(zip(MODALITIES, bundle.dims))


def fit_normalization(bundle: DatasetBundle, settings: TrainSettings) -> NormStats:
    """Per-feature mean/std of the training split's real rows, or the identity."""
    dims = dims_of(bundle)
    return NormStats.compute(bundle.splits["train"], dims=dims) if settings.normalize else NormStats.identity(dims)


def prepare_split(bundle: DatasetBundle, name: str, norm: NormStats, settings: TrainSettings) -> PreparedSplit:
    return PreparedSplit(bundle.splits[name], norm=norm, modalities=settings.modalities, feature_spec=bundle.feature_spec)


def training_split(bundle: DatasetBundle, norm: NormStats, settings: TrainSettings) -> Any:
    split = prepare_split(bundle, "train", norm, settings)
    if settings.augmenting:
        return AugmentedSplit(split, seed=settings.seed, crop=settings.augment_crop, noise=settings.augment_noise,
                              modality_dropout=settings.modality_dropout, column_dropout=settings.column_dropout,
                              column_groups=column_group_indices(bundle, settings.column_groups))
    return split


def column_group_indices(bundle: DatasetBundle, groups: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
    """(modality, column indices) of each "modality:prefix" group, from the dataset's column names."""
    out = []
    for group in groups:
        modality, prefix = split_column_group(group)
        columns = list((bundle.feature_spec.get(modality) or {}).get("columns") or [])
        index = np.array([i for i, c in enumerate(columns) if str(c).startswith(prefix)], dtype=np.int64)
        if index.size == 0:
            raise TrainingError(f"column group {group!r}: no {modality} column of this dataset starts with {prefix!r} "
                                f"(its columns: {', '.join(map(str, columns[:12]))}{' ...' if len(columns) > 12 else ''})")
        out.append((modality, index))
    return out


def epoch_loader(split: Any, bundle: DatasetBundle, settings: TrainSettings, *, epoch: int, device: Any,
                 processes: Any = None, lengths: np.ndarray | None = None) -> Any:
    """The training DataLoader of `epoch`: its order depends on (seed, epoch) only, so a resumed
    run sees what an uninterrupted one would. Under torchrun each process loads its share of that
    order (`processes.sampler`). `lengths`: the split's `sample_lengths`, which bucketed batches
    need (computed here when not given)."""
    import torch
    from torch.utils.data import DataLoader

    if isinstance(split, AugmentedSplit):
        split.epoch = epoch  # set before the loader pickles it for workers
    generator = torch.Generator().manual_seed(int(settings.seed) * 100_003 + epoch)
    collate = make_collate(bundle.task, dims_of(bundle))
    if settings.bucket_batches:
        rank, world = (processes.rank, processes.world_size) if processes is not None and processes.active else (0, 1)
        batches = BucketBatchSampler(sample_lengths(split) if lengths is None else lengths, batch_size=settings.batch_size, generator=generator,
                                     rank=rank, world_size=world)
        return DataLoader(split, batch_sampler=batches, num_workers=settings.num_workers, collate_fn=collate,
                          pin_memory=device.type == "cuda")
    sampler = processes.sampler(len(split), generator) if processes is not None else None
    return DataLoader(
        split, batch_size=settings.batch_size, shuffle=sampler is None, sampler=sampler, generator=generator,
        num_workers=settings.num_workers,
        collate_fn=collate, pin_memory=device.type == "cuda",
    )


def first_batch(split: Any, bundle: DatasetBundle, settings: TrainSettings) -> Any:
    """The split's first `batch_size` samples as one batch (unshuffled, not augmented)."""
    base = split.split if isinstance(split, AugmentedSplit) else split
    return make_collate(bundle.task, dims_of(bundle))([base[i] for i in range(min(len(base), settings.batch_size))])
