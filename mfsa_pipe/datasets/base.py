"""What every dataset reader returns: a `DatasetBundle` of splits of `Sample`s, plus batching.

A sample holds each modality as a (T, D) float32 array of real rows only (T may be 0).
Readers of padded benchmark files derive T from the data: trailing all-zero rows are padding
(or from the lengths the file gives, for MMSA pickles). `collate` pads a batch back to the
longest sample and builds boolean masks (True = real row), the form every model takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence as Seq

import numpy as np

from extractors.errors import UserError
from extractors.sequence import MODALITIES
from mfsa_pipe.presence import absent_modalities

SPLITS = ("train", "valid", "test")
# each split's accepted spellings (labels.csv, benchmark pickles' keys), preferred first
SPLIT_ALIASES = {"train": ("train", "training"), "valid": ("valid", "dev", "val", "validation"),
                 "test": ("test", "testing")}
_SPLIT_OF = {alias: split for split, aliases in SPLIT_ALIASES.items() for alias in aliases}
# the label tasks of models/base.py (TASKS there); a copy, because importing `models` loads torch
# and label specs are read where torch is not (build-dataset, --help); tests pin the two equal
TASKS = ("regression", "classification", "multilabel", "multihead")


def canonical_split(name: str) -> str | None:
    """"train" / "valid" / "test" for any spelling of SPLIT_ALIASES (case and spaces aside), else None."""
    return _SPLIT_OF.get(str(name).strip().lower())


class DatasetError(UserError, ValueError):
    """A dataset file is missing, unreadable or not of the expected structure. The message is
    meant for the user: it names what was expected and what was found."""


@dataclass
class Sample:
    """One labelled example. `label`: float (regression), int class index (classification) or
    int array (num_labels,) of 0/1 (multilabel). `group`: speaker/video, for grouped splits."""

    id: str
    text: np.ndarray
    audio: np.ndarray
    vision: np.ndarray
    label: Any
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def features(self, modality: str) -> np.ndarray:
        return getattr(self, modality)


class Split(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


@dataclass
class DatasetBundle:
    """splits: name ("train"/"valid"/"test") -> indexable samples. feature_spec: per modality
    {id, version, config, dim, rate, columns}. label_spec: a LabelSpec (its stored dict form is
    read as one). source: {"format", "path", ...} for provenance."""

    splits: dict[str, Split]
    feature_spec: dict[str, dict[str, Any]]
    label_spec: LabelSpec
    source: dict[str, Any]

    def __post_init__(self) -> None:
        self.label_spec = LabelSpec.of(self.label_spec)

    @property
    def task(self) -> str:
        return self.label_spec.task

    @property
    def dims(self) -> tuple[int, int, int]:
        return tuple(int(self.feature_spec[m]["dim"]) for m in MODALITIES)  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.label_spec.classes)

    @property
    def num_labels(self) -> int:
        return len(self.label_spec.labels)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise DatasetError(
                f"{self.source.get('path')}: no split {name!r}; this dataset has {sorted(self.splits)}"
            )
        return self.splits[name]

    def describe(self) -> dict[str, Any]:
        return {
            "format": self.source.get("format"),
            "path": self.source.get("path"),
            "splits": {k: len(v) for k, v in self.splits.items()},
            "dims": dict(zip(MODALITIES, self.dims)),
            "label_spec": self.label_spec.to_dict(),
        }


@dataclass(frozen=True)
class LabelHead:
    """One softmax head of a multihead label spec: its name and its classes, in order."""

    name: str
    classes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "classes": list(self.classes)}


@dataclass(frozen=True)
class LabelSpec:
    """What the labels of a dataset are, and what a model trained on it predicts. Datasets and
    checkpoints store `to_dict()` as JSON; `from_dict` reads it back (checking it):

      {"task": "regression", "range": [lo, hi]} | {"task": "classification", "classes": [...]} |
      {"task": "multilabel", "labels": [...]} | {"task": "multihead", "heads": [{"name", "classes"}, ...]}

    Only the field of its task is set; the others stay empty (range: None)."""

    task: str
    range: tuple[float, float] | None = None  # regression: the scale predictions are clipped to ((-3, 3) when not given)
    classes: tuple[str, ...] = ()  # classification
    labels: tuple[str, ...] = ()  # multilabel
    heads: tuple[LabelHead, ...] = ()  # multihead

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DatasetError(f"label spec task must be one of {TASKS}, found {self.task!r}")
        if self.task == "regression" and self.range is None:
            object.__setattr__(self, "range", (-3.0, 3.0))
        if self.task == "classification" and len(self.classes) < 2:
            raise DatasetError(f"a classification label spec needs >= 2 classes, found {list(self.classes)}")
        if self.task == "multilabel" and not self.labels:
            raise DatasetError("a multilabel label spec needs a non-empty 'labels' list")
        if self.task == "multihead":
            if not self.heads:
                raise DatasetError("a multihead label spec needs a non-empty 'heads' list of {name, classes}")
            if len(set(self.head_names)) != len(self.heads):
                raise DatasetError(f"multihead head names must be distinct, found {list(self.head_names)}")

    @classmethod
    def of(cls, spec: "LabelSpec | dict[str, Any]") -> "LabelSpec":
        """`spec` itself, or `from_dict(spec)` for the stored (dict) form."""
        return spec if isinstance(spec, LabelSpec) else cls.from_dict(spec)

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "LabelSpec":
        """The spec a stored dict describes (names as str, the range as floats, [-3, 3] when a
        regression spec gives none); DatasetError says what is wrong with it."""
        task = spec.get("task")
        if task == "regression":
            lo, hi = spec.get("range", [-3, 3])
            return cls(task=task, range=(float(lo), float(hi)))
        if task == "classification":
            return cls(task=task, classes=tuple(str(c) for c in spec.get("classes", [])))
        if task == "multilabel":
            return cls(task=task, labels=tuple(str(c) for c in spec.get("labels", [])))
        if task == "multihead":
            heads = spec.get("heads")
            if not isinstance(heads, list) or not heads:
                raise DatasetError("a multihead label spec needs a non-empty 'heads' list of {name, classes}")
            return cls(task=task, heads=tuple(_label_head(head) for head in heads))
        raise DatasetError(f"label spec task must be one of {TASKS}, found {task!r}")

    def to_dict(self) -> dict[str, Any]:
        """The stored form (the keys in this order: datasets write it as it comes)."""
        if self.task == "regression":
            return {"task": self.task, "range": list(self.range)}
        if self.task == "classification":
            return {"task": self.task, "classes": list(self.classes)}
        if self.task == "multilabel":
            return {"task": self.task, "labels": list(self.labels)}
        return {"task": self.task, "heads": [h.to_dict() for h in self.heads]}

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def head_names(self) -> tuple[str, ...]:
        """The heads of a multihead spec, in order (empty for other tasks)."""
        return tuple(h.name for h in self.heads)

    @property
    def head_sizes(self) -> tuple[int, ...]:
        """Classes per head of a multihead spec, in order (empty for other tasks)."""
        return tuple(len(h.classes) for h in self.heads)

    def head_slices(self) -> list[tuple[str, slice]]:
        """(name, columns) of each head in the (N, sum of classes) multihead logits, in order."""
        out, start = [], 0
        for head in self.heads:
            out.append((head.name, slice(start, start + len(head.classes))))
            start += len(head.classes)
        return out

    def encode_heads(self, names: dict[str, str | None]) -> np.ndarray:
        """{head: class name or None} -> the (H,) int64 label of a multihead sample (-1 = unlabelled).
        Raises KeyError naming the head and its classes for an unknown name."""
        out = np.full(len(self.heads), -1, dtype=np.int64)
        for h, head in enumerate(self.heads):
            name = names.get(head.name)
            if name is None or name == "":
                continue
            if name not in head.classes:
                raise KeyError(f"{head.name} label {name!r} is not one of {list(head.classes)}")
            out[h] = head.classes.index(name)
        return out


def _label_head(head: Any) -> LabelHead:
    name, classes = str(head.get("name", "")), [str(c) for c in head.get("classes", [])]
    if not name or len(classes) < 2 or len(set(classes)) != len(classes):
        raise DatasetError(f"multihead head {head!r}: needs a name and >= 2 distinct classes")
    return LabelHead(name=name, classes=tuple(classes))


def clean(x: np.ndarray) -> np.ndarray:
    """float32 with -inf/+inf/NaN set to 0 (MulT's audio holds -inf; MulT itself zeroes it)."""
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x


class ArraySplit:
    """A split held in memory as padded (N, T, D) arrays plus per-sample real lengths."""

    def __init__(
        self,
        *,
        ids: Seq[str],
        arrays: dict[str, np.ndarray],
        lengths: dict[str, np.ndarray],
        labels: Seq[Any],
        groups: Seq[str | None] | None = None,
    ) -> None:
        self.ids = list(ids)
        self.arrays = arrays
        self.lengths = {m: np.asarray(v, dtype=np.int64) for m, v in lengths.items()}
        self.labels = list(labels)
        self.groups = list(groups) if groups is not None else [None] * len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        feats = {m: self.arrays[m][index, : self.lengths[m][index]] for m in MODALITIES}
        return Sample(id=self.ids[index], label=self.labels[index], group=self.groups[index], **feats)


def padded_spans(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of every sample's real rows in a zero-padded (N, T, D) array.

    Pickles pad at the end or at the front (some CMU pickles); one array has one layout, decided
    by its samples whose first and last rows differ in being all-zero: front when more of those
    start with zeros than end with them. All-zero rows at the padded end are padding; zero rows
    at the other end and inside are data."""
    n, t = x.shape[:2]
    if t == 0:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    nonzero = np.any(x != 0, axis=2)  # (N, T)
    has_any = nonzero.any(axis=1)
    first_real, last_real = nonzero[:, 0], nonzero[:, -1]
    front = int(np.sum(~first_real & last_real)) > int(np.sum(first_real & ~last_real))
    if front:
        starts = np.where(has_any, np.argmax(nonzero, axis=1), t)
        return np.where(has_any, starts, 0).astype(np.int64), (t - starts).astype(np.int64)
    ends = t - np.argmax(nonzero[:, ::-1], axis=1)
    return np.zeros(n, dtype=np.int64), np.where(has_any, ends, 0).astype(np.int64)


def padded_lengths(x: np.ndarray) -> np.ndarray:
    """Real length of every sample of a padded (N, T, D) array (`padded_spans`, either end)."""
    return padded_spans(x)[1]


def unpad_front(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(array with every sample's real rows moved to the front, lengths): the layout ArraySplit
    reads, whichever end the file padded. An end-padded array comes back as it is."""
    starts, lengths = padded_spans(x)
    if not starts.any():
        return x, lengths
    out = np.zeros_like(x)
    for i, (start, length) in enumerate(zip(starts, lengths)):
        out[i, :length] = x[i, start:start + length]
    return out, lengths


# ---------------------------------------------------------------------------- normalisation


@dataclass
class NormStats:
    """Per-modality mean/std over the real rows of the training split. Applied to real rows only
    (padding stays 0), identically at training and inference time."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    @classmethod
    def identity(cls, dims: dict[str, int]) -> "NormStats":
        return cls(
            mean={m: np.zeros(d, np.float32) for m, d in dims.items()},
            std={m: np.ones(d, np.float32) for m, d in dims.items()},
        )

    @classmethod
    def compute(cls, split: Split, *, dims: dict[str, int]) -> "NormStats":
        # float64 sums: MOSEI has ~10^7 audio rows; float32 sums would drift
        total = {m: np.zeros(d, np.float64) for m, d in dims.items()}
        sq = {m: np.zeros(d, np.float64) for m, d in dims.items()}
        count = dict.fromkeys(dims, 0)
        for i in range(len(split)):
            sample = split[i]
            for m in dims:
                x = sample.features(m).astype(np.float64)
                total[m] += x.sum(axis=0)
                sq[m] += (x * x).sum(axis=0)
                count[m] += x.shape[0]
        mean, std = {}, {}
        for m, d in dims.items():
            n = max(count[m], 1)
            mu = total[m] / n
            var = np.maximum(sq[m] / n - mu * mu, 0.0)
            sd = np.sqrt(var)
            # constant columns (e.g. one-hot flags never set) would divide by ~0
            sd[sd < 1e-6] = 1.0
            mean[m], std[m] = mu.astype(np.float32), sd.astype(np.float32)
        return cls(mean=mean, std=std)

    def apply(self, modality: str, x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 0:
            return np.asarray(x, dtype=np.float32)
        return ((x - self.mean[modality]) / self.std[modality]).astype(np.float32)

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        return {m: {"mean": self.mean[m].tolist(), "std": self.std[m].tolist()} for m in self.mean}


class PreparedSplit:
    """A split seen through normalisation and an optional modality selection (modalities left
    out become empty, T = 0, so the model sees them fully masked). Picklable for DataLoader workers."""

    def __init__(self, split: Split, *, norm: NormStats, modalities: Seq[str] = MODALITIES,
                 feature_spec: dict[str, Any] | None = None, presence: bool = True) -> None:
        self.split = split
        self.norm = norm
        self.modalities = tuple(modalities)
        # mfsa_pipe.presence: modalities that carry nothing are emptied (needs the column names)
        self.feature_spec = feature_spec
        self.presence = presence

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> Sample:
        return self.prepare(self.split[index])

    def absent(self, s: Sample) -> dict[str, str]:
        """{modality: reason} for the modalities this sample is fed without (see presence.py)."""
        raw = {m: s.features(m) for m in MODALITIES}
        absent = absent_modalities(raw, self.feature_spec, speech=s.meta.get("speech")) if self.presence else {
            m: "empty" for m in MODALITIES if raw[m].shape[0] == 0}
        for m in MODALITIES:
            if m not in self.modalities:
                absent.setdefault(m, "not used by the model")
        return absent

    def prepare(self, s: Sample) -> Sample:
        """One sample as the model sees it: absent modalities emptied, features normalised.
        meta["absent"] says which modalities were emptied and why."""
        absent = self.absent(s)
        feats = {m: self.norm.apply(m, s.features(m)[:0] if m in absent else s.features(m)) for m in MODALITIES}
        return Sample(id=s.id, label=s.label, group=s.group, meta={**s.meta, "absent": absent}, **feats)


# ---------------------------------------------------------------------------- batching


@dataclass
class Batch:
    ids: list[str]
    text: Any
    audio: Any
    vision: Any
    text_mask: Any
    audio_mask: Any
    vision_mask: Any
    labels: Any

    def inputs(self) -> dict[str, Any]:
        return {m: getattr(self, m) for m in MODALITIES}

    def masks(self) -> dict[str, Any]:
        return {f"{m}_mask": getattr(self, f"{m}_mask") for m in MODALITIES}

    def to(self, device: Any) -> "Batch":
        moved = {
            k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v)
            for k, v in self.__dict__.items()
            if k != "ids"
        }
        return Batch(ids=self.ids, **moved)


def label_tensor(labels: Seq[Any], task: str):
    import torch

    if task == "regression":
        return torch.tensor(np.asarray(labels, dtype=np.float32))
    if task == "classification":
        return torch.tensor(np.asarray(labels, dtype=np.int64))
    return torch.tensor(np.stack([np.asarray(v, dtype=np.int64) for v in labels]))


def collate(samples: Seq[Sample], *, task: str, dims: dict[str, int] | None = None) -> Batch:
    """Pad each modality to the longest sample of the batch (at least one row, so no tensor has a
    zero-length time axis) and build bool masks, True = real row."""
    import torch

    out: dict[str, Any] = {}
    for m in MODALITIES:
        xs = [s.features(m) for s in samples]
        d = xs[0].shape[1] if dims is None else dims[m]
        t = max(1, max(x.shape[0] for x in xs))
        arr = np.zeros((len(xs), t, d), dtype=np.float32)
        mask = np.zeros((len(xs), t), dtype=bool)
        for i, x in enumerate(xs):
            arr[i, : x.shape[0]] = x
            mask[i, : x.shape[0]] = True
        out[m] = torch.from_numpy(arr)
        out[f"{m}_mask"] = torch.from_numpy(mask)
    return Batch(ids=[s.id for s in samples], labels=label_tensor([s.label for s in samples], task), **out)


def make_collate(task: str, dims: dict[str, int]) -> Callable[[Seq[Sample]], Batch]:
    import functools

    return functools.partial(collate, task=task, dims=dims)
