"""MulT pickles (`<ds>_data_noalign.pkl`, Tsai et al. 2019).

Layout: {"train"|"valid"|"test": {"text", "audio", "vision": (N, T, D) float arrays,
"labels", "id"}}. Audio holds -inf (set to 0 here, as MulT does). Labels:
- (N, 1, 1) (or (N, 1) / (N,)) floats in [-3, 3]: MOSI/MOSEI sentiment -> regression;
- (N, K, 2) one-hot per label: IEMOCAP (K = 4, order Neutral, Happy, Sad, Angry) -> multilabel,
  K two-way heads (label = argmax of the last axis, as MulT does);
- (N, C) one-hot rows, C >= 2: single-label classification (this project's extension, used by
  the synthetic classification variant).
An optional top-level "meta" dict ({"name", "classes", "labels", "range"}) names classes/labels;
MulT's own loader ignores it. Unpickling runs code from the file: open only pickles you trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from mfsa_pipe.datasets.base import (
    MODALITIES,
    SPLIT_ALIASES,
    ArraySplit,
    DatasetBundle,
    DatasetError,
    LabelSpec,
    clean,
    unpad_front,
)

IEMOCAP_LABELS = ["Neutral", "Happy", "Sad", "Angry"]
MULT_KEYS = ("text", "audio", "vision", "labels", "id")


def load_pickle(path: Path) -> Any:
    """Unpickle `path`. Unpickling executes code embedded in the file: callers document that."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except Exception as exc:  # truncated/foreign files raise many different types
        raise DatasetError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def find_splits(data: Any, *, path: Path, expected_keys: tuple[str, ...], fmt: str) -> dict[str, dict]:
    """Map train/valid/test to the split dicts, with an error naming what was expected/found."""
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: expected a {fmt} pickle holding a dict with keys train/valid/test, "
            f"found a {type(data).__name__}"
        )
    splits: dict[str, dict] = {}
    for name, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if alias in data:
                splits[name] = data[alias]
                break
    if "train" not in splits:
        raise DatasetError(
            f"{path}: expected a {fmt} pickle with splits train/valid/test, found keys {sorted(map(str, data))}"
        )
    for name, split in splits.items():
        if not isinstance(split, dict):
            raise DatasetError(f"{path}: split {name!r} should be a dict, found {type(split).__name__}")
        missing = [k for k in expected_keys if k not in split]
        if missing:
            raise DatasetError(
                f"{path}: split {name!r} of a {fmt} pickle needs keys {list(expected_keys)}; "
                f"missing {missing}, found {sorted(map(str, split))}"
            )
    return splits


def as_3d(x: Any, *, path: Path, split: str, key: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise DatasetError(f"{path}: {split}/{key} should be (N, T, D), found shape {arr.shape}")
    return clean(arr)


def modality_arrays(raw: dict, *, path: Path, split: str, dims: dict[str, int]) -> dict[str, np.ndarray]:
    """The split's three (N, T, D) arrays, checked: one N across modalities, one D across splits."""
    arrays = {m: as_3d(raw[m], path=path, split=split, key=m) for m in MODALITIES}
    n = arrays["text"].shape[0]
    for m, arr in arrays.items():
        if arr.shape[0] != n:
            raise DatasetError(f"{path}: split {split!r} has {n} text samples but {arr.shape[0]} {m} samples")
        if dims.setdefault(m, arr.shape[2]) != arr.shape[2]:
            raise DatasetError(f"{path}: {m} is {dims[m]}-d in one split and {arr.shape[2]}-d in {split!r}")
    return arrays


def pickle_feature_spec(fmt: str, dims: dict[str, int]) -> dict[str, dict]:
    """Feature spec of a benchmark pickle: it records no extractor, version or column names."""
    return {
        m: {"id": f"{fmt}/{m}", "version": "unknown", "config": {}, "dim": dims[m], "rate": None, "columns": None}
        for m in MODALITIES
    }


def parse_ids(raw: Any, n: int) -> tuple[list[str], list[str | None]]:
    """MulT ids are (N,) strings or (N, k) rows [video, start, end]; the video is the group."""
    arr = np.asarray(raw)
    if arr.shape[0] != n:
        raise DatasetError(f"{n} samples but {arr.shape[0]} ids")

    def text(v: Any) -> str:
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    if arr.ndim == 1:
        return [text(v) for v in arr], [None] * n
    ids = ["_".join(text(v) for v in row) for row in arr.reshape(n, -1)]
    groups = [text(row[0]) for row in arr.reshape(n, -1)]
    return ids, groups


def label_convention(labels: np.ndarray, meta: dict, *, path: Path) -> tuple[LabelSpec, list[Any]]:
    """Return (label_spec, per-sample labels) from MulT's label array shape."""
    n = labels.shape[0]
    if labels.ndim == 1 or (labels.ndim >= 2 and int(np.prod(labels.shape[1:])) == 1):
        lo, hi = meta.get("range", [-3.0, 3.0])
        values = labels.reshape(n).astype(np.float32)
        return LabelSpec(task="regression", range=(float(lo), float(hi))), [float(v) for v in values]
    if labels.ndim == 3 and labels.shape[2] == 2:
        k = labels.shape[1]
        names = meta.get("labels") or (IEMOCAP_LABELS if k == 4 else [f"label_{i}" for i in range(k)])
        values = np.argmax(labels, axis=2).astype(np.int64)
        return LabelSpec(task="multilabel", labels=tuple(map(str, names))), list(values)
    if labels.ndim == 2 and labels.shape[1] >= 2:
        c = labels.shape[1]
        names = meta.get("classes") or [f"class_{i}" for i in range(c)]
        return LabelSpec(task="classification", classes=tuple(map(str, names))), [int(v) for v in np.argmax(labels, 1)]
    raise DatasetError(
        f"{path}: labels should be (N, 1, 1) sentiment scores, (N, K, 2) one-hot per label "
        f"(IEMOCAP) or (N, C) one-hot classes; found shape {labels.shape}"
    )


def read_mult(path: str | Path, data: Any | None = None) -> DatasetBundle:
    path = Path(path)
    if data is None:
        data = load_pickle(path)
    splits_raw = find_splits(data, path=path, expected_keys=MULT_KEYS, fmt="MulT")
    meta = data.get("meta", {}) if isinstance(data.get("meta", {}), dict) else {}
    splits = {}
    label_spec: LabelSpec | None = None
    dims: dict[str, int] = {}
    for name, raw in splits_raw.items():
        arrays = modality_arrays(raw, path=path, split=name, dims=dims)
        n = arrays["text"].shape[0]
        spec, labels = label_convention(np.asarray(raw["labels"]), meta, path=path)
        if label_spec is None:
            label_spec = spec
        elif spec.task != label_spec.task:
            raise DatasetError(f"{path}: split {name!r} labels are {spec.task}, others {label_spec.task}")
        if len(labels) != n:
            raise DatasetError(f"{path}: split {name!r} has {n} samples but {len(labels)} labels")
        try:
            ids, groups = parse_ids(raw["id"], n)
        except DatasetError as exc:
            raise DatasetError(f"{path}: split {name!r}: {exc}") from None
        lengths = {}
        for m in MODALITIES:  # padded at either end -> real rows first
            arrays[m], lengths[m] = unpad_front(arrays[m])
        splits[name] = ArraySplit(ids=ids, arrays=arrays, lengths=lengths, labels=labels, groups=groups)
    assert label_spec is not None
    return DatasetBundle(
        splits=splits,
        feature_spec=pickle_feature_spec("mult-pickle", dims),
        label_spec=label_spec,
        source={"format": "mult-pickle", "path": str(path), "name": meta.get("name", path.stem)},
    )
