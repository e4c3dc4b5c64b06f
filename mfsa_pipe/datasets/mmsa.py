"""MMSA pickles (`unaligned_50.pkl`, thuiar/MMSA).

Layout: {"train"|"valid"|"test": {"raw_text", "audio" (N, Ta, Da), "vision" (N, Tv, Dv),
"id" ("video$_$clip"), "text" (N, 50, 768) BERT features, "text_bert" (N, 3, 50) token ids /
attention mask / segment ids, "audio_lengths", "vision_lengths", "regression_labels",
"classification_labels"}}. Real lengths are the given ones (text: the sum of the attention
mask text_bert[:, 1]). Labels: `regression_labels` in [-3, 3] -> regression.
Unpickling runs code from the file: open only pickles you trust.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mfsa_pipe.datasets.base import ArraySplit, DatasetBundle, DatasetError, LabelSpec, unpad_front
from mfsa_pipe.datasets.mult import find_splits, load_pickle, modality_arrays, pickle_feature_spec

MMSA_KEYS = ("audio", "vision", "id", "text", "audio_lengths", "vision_lengths", "regression_labels")


def _lengths(raw: Any, n: int, t: int, *, path: Path, split: str, key: str) -> np.ndarray:
    arr = np.asarray(raw).reshape(-1).astype(np.int64)
    if arr.shape[0] != n:
        raise DatasetError(f"{path}: {split}/{key} has {arr.shape[0]} entries for {n} samples")
    if arr.size and (arr.min() < 0 or arr.max() > t):
        raise DatasetError(f"{path}: {split}/{key} must lie in [0, {t}], found [{arr.min()}, {arr.max()}]")
    return arr


def read_mmsa(path: str | Path, data: Any | None = None) -> DatasetBundle:
    path = Path(path)
    if data is None:
        data = load_pickle(path)
    splits_raw = find_splits(data, path=path, expected_keys=MMSA_KEYS, fmt="MMSA")
    splits = {}
    dims: dict[str, int] = {}
    for name, raw in splits_raw.items():
        arrays = modality_arrays(raw, path=path, split=name, dims=dims)
        n = arrays["text"].shape[0]
        lengths = {
            "audio": _lengths(raw["audio_lengths"], n, arrays["audio"].shape[1], path=path, split=name, key="audio_lengths"),
            "vision": _lengths(raw["vision_lengths"], n, arrays["vision"].shape[1], path=path, split=name, key="vision_lengths"),
        }
        if "text_bert" in raw:
            bert = np.asarray(raw["text_bert"])
            if bert.ndim != 3 or bert.shape[0] != n or bert.shape[1] != 3:
                raise DatasetError(f"{path}: {name}/text_bert should be (N, 3, T), found shape {bert.shape}")
            lengths["text"] = np.minimum(bert[:, 1, :].sum(axis=1).astype(np.int64), arrays["text"].shape[1])
        else:
            arrays["text"], lengths["text"] = unpad_front(arrays["text"])
        labels = np.asarray(raw["regression_labels"], dtype=np.float32).reshape(-1)
        if labels.shape[0] != n:
            raise DatasetError(f"{path}: split {name!r} has {n} samples but {labels.shape[0]} regression_labels")
        ids = [str(v) for v in np.asarray(raw["id"]).reshape(-1)]
        groups = [i.split("$_$")[0] if "$_$" in i else None for i in ids]
        splits[name] = ArraySplit(
            ids=ids, arrays=arrays, lengths=lengths, labels=[float(v) for v in labels], groups=groups
        )
    return DatasetBundle(
        splits=splits,
        feature_spec=pickle_feature_spec("mmsa-pickle", dims),
        label_spec=LabelSpec(task="regression", range=(-3.0, 3.0)),
        source={"format": "mmsa-pickle", "path": str(path), "name": path.parent.name or path.stem},
    )
