"""CMU-MultimodalSDK computational sequences (`.csd`, HDF5), one folder per dataset.

Each .csd file: /<root>/data/<video_id>/features (n, D) and intervals (n, 2) seconds,
/<root>/metadata/<key> JSON strings (e.g. "dimension names", "computational sequence version").
The folder holds one file per modality plus a labels file; samples are the label intervals
(one per segment), each modality keeping its rows whose interval midpoint falls in the segment:
nothing is aligned to words.

Which file is which: an optional `csd.json` in the folder, e.g.
  {"text": "CMU_MOSI_TimestampedWordVectors.csd", "audio": "CMU_MOSI_COVAREP.csd",
   "vision": "CMU_MOSI_Visual_Facet_41.csd", "labels": "CMU_MOSI_Opinion_Labels.csd",
   "label_column": 0, "folds": "mosi"}
otherwise the file names decide (case-insensitive substrings, first match wins):
  labels: "label"; text: "word", "glove", "text"; audio: "covarep", "opensmile", "audio",
  "acoustic"; vision: "facet", "openface", "visual", "vision".
Splits ("folds"): "mosi" / "mosei" (the CMU standard folds, shipped with the package), a path to
a JSON {"train": [video ids], "valid": [...], "test": [...]}, or that dict inline. Without one,
the standard folds that cover the videos are used; failing that, a deterministic 80/10/10 split
by video id (hash), recorded in the bundle's source.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfsa_pipe.datasets.base import MODALITIES, DatasetBundle, DatasetError, LabelSpec, Sample, clean

PATTERNS = {
    "labels": ("label",),
    "text": ("word", "glove", "text"),
    "audio": ("covarep", "opensmile", "audio", "acoustic"),
    "vision": ("facet", "openface", "visual", "vision"),
}
FOLDS_FILE = Path(__file__).with_name("cmu_std_folds.json")
FOLD_KEYS = {"train": "standard_train_fold", "valid": "standard_valid_fold", "test": "standard_test_fold"}


def _h5py():
    import h5py

    return h5py


def _text(v: Any) -> str:
    if isinstance(v, np.ndarray):
        v = v.reshape(-1)[0] if v.size else ""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def read_metadata(group: Any) -> dict[str, Any]:
    meta = {}
    for key in group:
        raw = _text(group[key][()])
        try:
            meta[key] = json.loads(raw)
        except (json.JSONDecodeError, TypeError):
            meta[key] = raw
    return meta


def csd_root(f: Any, path: Path) -> Any:
    roots = [k for k in f.keys() if isinstance(f[k], _h5py().Group)]
    for k in roots:
        if "data" in f[k]:
            return f[k]
    raise DatasetError(
        f"{path}: expected a CMU-MultimodalSDK computational sequence (/<root>/data/<video>/"
        f"{{features, intervals}}), found top-level entries {list(f.keys())}"
    )


def assign_files(folder: Path, mapping: dict[str, Any]) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csd")
    chosen: dict[str, Path] = {}
    for role in ("labels", "text", "audio", "vision"):
        if role in mapping:
            p = folder / mapping[role]
            if not p.exists():
                raise DatasetError(f"{folder}/csd.json names {role} file {mapping[role]!r}, which does not exist")
            chosen[role] = p
            continue
        for pat in PATTERNS[role]:
            hit = [p for p in files if pat in p.name.lower() and p not in chosen.values()]
            if hit:
                chosen[role] = hit[0]
                break
    missing = [r for r in ("labels", "text", "audio", "vision") if r not in chosen]
    if missing:
        raise DatasetError(
            f"{folder}: a .csd folder needs a labels file and one file per modality; could not tell "
            f"which file is {missing} among {[p.name for p in files]}. Name them (see docs/datasets.md) "
            "or add a csd.json mapping, e.g. {\"text\": \"words.csd\", \"audio\": ..., \"vision\": ..., \"labels\": ...}"
        )
    return chosen


def resolve_folds(spec: Any, videos: list[str], folder: Path) -> tuple[dict[str, set[str]], str]:
    if isinstance(spec, dict):
        return {k: set(spec.get(k, [])) for k in ("train", "valid", "test")}, "inline"
    if isinstance(spec, str) and spec not in ("mosi", "mosei"):
        p = Path(spec) if Path(spec).is_absolute() else folder / spec
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"folds file {p}: {exc}") from None
        return {k: set(data.get(k, data.get(FOLD_KEYS[k], []))) for k in FOLD_KEYS}, str(p)
    std = json.loads(FOLDS_FILE.read_text())
    keys = [spec] if spec else list(std)
    best, best_cover = None, 0.0
    for key in keys:
        ids = set().union(*std[key].values())
        cover = len(ids & set(videos)) / max(len(videos), 1)
        if cover > best_cover:
            best, best_cover = key, cover
    if best is not None and (spec or best_cover >= 0.5):
        return {k: set(std[best][v]) for k, v in FOLD_KEYS.items()}, f"cmu-standard-folds:{best}"
    # no standard fold covers these videos: a stable split by video id
    folds: dict[str, set[str]] = {"train": set(), "valid": set(), "test": set()}
    for vid in videos:
        h = int(hashlib.sha256(vid.encode()).hexdigest(), 16) % 10
        folds["train" if h < 8 else "valid" if h == 8 else "test"].add(vid)
    return folds, "hash-by-video-80/10/10"


@dataclass
class Segment:
    video: str
    index: int
    start: float
    end: float
    label: float


class CsdSplit:
    """Samples = label segments; features are read lazily, one segment at a time, from files
    opened on first use in each process (so DataLoader workers each get their own handles)."""

    def __init__(self, *, files: dict[str, Path], segments: list[Segment]) -> None:
        self.files = files
        self.segments = segments
        self._pid: int | None = None
        self._handles: dict[str, Any] = {}
        self._intervals: dict[tuple[str, str], np.ndarray] = {}

    def __getstate__(self) -> dict:
        return {"files": self.files, "segments": self.segments, "_pid": None, "_handles": {}, "_intervals": {}}

    def __len__(self) -> int:
        return len(self.segments)

    def _root(self, modality: str) -> Any:
        if self._pid != os.getpid():
            self._handles, self._intervals, self._pid = {}, {}, os.getpid()
        if modality not in self._handles:
            f = _h5py().File(self.files[modality], "r")
            self._handles[modality] = csd_root(f, self.files[modality])
        return self._handles[modality]

    def rows(self, modality: str, seg: Segment) -> np.ndarray:
        root = self._root(modality)
        data = root["data"]
        if seg.video not in data:
            return np.zeros((0, data[next(iter(data))]["features"].shape[1]), np.float32)
        key = (modality, seg.video)
        if key not in self._intervals:
            self._intervals[key] = np.asarray(data[seg.video]["intervals"][()], dtype=np.float64)
        iv = self._intervals[key]
        mid = iv.mean(axis=1) if len(iv) else np.zeros(0)
        sel = np.flatnonzero((mid >= seg.start) & (mid <= seg.end))
        feats = data[seg.video]["features"]
        if sel.size == 0:
            return np.zeros((0, feats.shape[1]), np.float32)
        if np.all(np.diff(sel) == 1):
            return clean(feats[sel[0] : sel[-1] + 1])
        return clean(feats[()][sel])

    def __getitem__(self, index: int) -> Sample:
        seg = self.segments[index]
        feats = {m: self.rows(m, seg) for m in MODALITIES}
        return Sample(
            id=f"{seg.video}[{seg.index}]",
            label=seg.label,
            group=seg.video,
            meta={"start": seg.start, "end": seg.end},
            **feats,
        )


def read_csd_folder(folder: str | Path) -> DatasetBundle:
    h5py = _h5py()
    folder = Path(folder)
    mapping: dict[str, Any] = {}
    if (folder / "csd.json").exists():
        try:
            mapping = json.loads((folder / "csd.json").read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{folder}/csd.json is not valid JSON: {exc}") from None
    files = assign_files(folder, mapping)
    column = int(mapping.get("label_column", 0))
    feature_spec: dict[str, dict] = {}
    for m in MODALITIES:
        try:
            with h5py.File(files[m], "r") as f:
                root = csd_root(f, files[m])
                meta = read_metadata(root["metadata"]) if "metadata" in root else {}
                first = next(iter(root["data"]), None)
                if first is None:
                    raise DatasetError(f"{files[m]}: holds no videos")
                dim = int(root["data"][first]["features"].shape[1])
                names = meta.get("dimension names")
                feature_spec[m] = {
                    "id": f"csd/{meta.get('root name', root.name.strip('/'))}",
                    "version": str(meta.get("computational sequence version", "unknown")),
                    "config": {},
                    "dim": dim,
                    "rate": None,
                    "columns": list(map(str, names)) if isinstance(names, list) and len(names) == dim else None,
                }
        except OSError as exc:
            raise DatasetError(f"{files[m]}: not an HDF5 computational sequence ({exc})") from None
    segments: list[Segment] = []
    try:
        with h5py.File(files["labels"], "r") as f:
            root = csd_root(f, files["labels"])
            for vid in root["data"]:
                iv = np.asarray(root["data"][vid]["intervals"][()], dtype=np.float64)
                feats = np.asarray(root["data"][vid]["features"][()], dtype=np.float64).reshape(len(iv), -1)
                if column >= feats.shape[1]:
                    raise DatasetError(f"{files['labels']}: label_column {column} but labels are {feats.shape[1]}-d")
                for i, ((s, e), row) in enumerate(zip(iv, feats)):
                    segments.append(Segment(vid, i, float(s), float(e), float(row[column])))
    except OSError as exc:
        raise DatasetError(f"{files['labels']}: not an HDF5 computational sequence ({exc})") from None
    videos = sorted({s.video for s in segments})
    folds, fold_source = resolve_folds(mapping.get("folds"), videos, folder)
    split_files = {m: files[m] for m in MODALITIES}
    splits = {}
    for name in ("train", "valid", "test"):
        segs = [s for s in segments if s.video in folds[name]]
        if segs:
            splits[name] = CsdSplit(files=split_files, segments=segs)
    if "train" not in splits:
        raise DatasetError(f"{folder}: no labelled segment falls in the training fold ({fold_source})")
    return DatasetBundle(
        splits=splits,
        feature_spec=feature_spec,
        label_spec=LabelSpec(task="regression", range=(-3.0, 3.0)),
        source={
            "format": "csd-folder",
            "path": str(folder),
            "name": folder.name,
            "files": {k: v.name for k, v in files.items()},
            "folds": fold_source,
            "label_column": column,
        },
    )
