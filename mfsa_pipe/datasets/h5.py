"""The project's own dataset format: one HDF5 file, written by `build-dataset` via `DatasetWriter`,
read one sample at a time (streamed from disk). Layout (format "mfsa-pipe-dataset", version 1):

/ attrs: format, format_version, feature_spec (JSON: per modality {id, version, config, dim,
         rate, columns}), label_spec (JSON), extraction_config (JSON), provenance (JSON),
         created (ISO time)
/samples/<name>            one group per sample; <name> is the sample id percent-encoded
    attrs: id, label (JSON: number | class name | list of 0/1 (multilabel) | list of class
           indices, one per head, -1 = no label for that head (multihead)), split (train/valid/test),
           group (speaker/video, "" when none), source (media path), start, end (seconds,
           NaN when the whole file), meta (JSON)
    text/   features (T, D) float32, times (T, 2) float64, tokens (T,) UTF-8 strings
    audio/  features, times
    vision/ features, times
    A modality with no rows (T = 0) has no group: readers give a (0, D) array for it.
`add` writes one sample, `add_many` several with one flush (same crash safety, faster).
A sample is written under /samples/.tmp-<name>, flushed, then moved to its final name, so an
interrupted writer (even kill -9) never leaves a partial sample under a final name; leftover
temporary groups are deleted when the file is next opened for writing.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, unquote

import numpy as np

from mfsa_pipe.datasets.base import MODALITIES, SPLITS, DatasetBundle, DatasetError, LabelSpec, Sample

FORMAT = "mfsa-pipe-dataset"
FORMAT_VERSION = 1
TMP_PREFIX = ".tmp-"


def _h5py():
    import h5py

    return h5py


def encode_name(sample_id: str) -> str:
    # HDF5 names cannot hold "/" and "." alone is special; percent-encoding is reversible
    name = quote(sample_id, safe="-_=+,;:@[]()!~*'")
    return name.replace(".", "%2E") if name.startswith(".") else name


def decode_name(name: str) -> str:
    return unquote(name)


def _with_new_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded extraction config with the options added since it was written set to their
    defaults (e.g. `text.temperature_fallback`), so that a dataset built before an option existed
    can be resumed with that option at its default; a config that does not parse stays as it is."""
    from extractors.config import ExtractionConfig

    try:
        return _canon(ExtractionConfig.from_dict(config).to_dict())
    except (TypeError, ValueError):
        return config


def _canon(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def json_differences(expected: Any, found: Any, prefix: str = "") -> list[str]:
    """Human-readable list of where two JSON-like specs differ."""
    if isinstance(expected, dict) and isinstance(found, dict):
        out = []
        for k in sorted(set(expected) | set(found), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in found:
                out.append(f"{key}: missing (the file has {expected[k]!r})")
            elif k not in expected:
                out.append(f"{key}: not in the file (given {found[k]!r})")
            else:
                out.extend(json_differences(expected[k], found[k], key))
        return out
    if expected != found:
        return [f"{prefix or 'value'}: the file has {expected!r}, given {found!r}"]
    return []


def normalize_label(label: Any, label_spec: LabelSpec) -> Any:
    task = label_spec.task
    if task == "regression":
        value = float(label)
        if not math.isfinite(value):
            raise ValueError(f"regression label must be finite, got {label!r}")
        return value
    if task == "classification":
        classes = list(label_spec.classes)
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            if not 0 <= int(label) < len(classes):
                raise ValueError(f"class index {label} out of range for {len(classes)} classes")
            return classes[int(label)]
        if str(label) not in classes:
            raise ValueError(f"label {label!r} is not one of the classes {classes}")
        return str(label)
    if task == "multihead":
        heads = label_spec.heads
        if isinstance(label, Mapping):
            unknown = sorted(set(label) - set(label_spec.head_names))
            if unknown:
                raise ValueError(f"multihead label names heads {unknown}; the heads are {list(label_spec.head_names)}")
            try:
                return [int(v) for v in label_spec.encode_heads(dict(label))]
            except KeyError as exc:
                raise ValueError(exc.args[0]) from None
        values = np.asarray(label).reshape(-1)
        if values.dtype.kind not in "iu" or len(values) != len(heads) or any(
                not -1 <= int(v) < len(h.classes) for v, h in zip(values, heads)):
            raise ValueError(
                f"multihead label must be {len(heads)} class indices, -1 = none, for heads "
                f"{[(h.name, len(h.classes)) for h in heads]}, got {label!r}"
            )
        return [int(v) for v in values]
    names = list(label_spec.labels)
    if isinstance(label, Mapping):
        label = [label[n] for n in names]
    values = [int(v) for v in np.asarray(label).reshape(-1)]
    if len(values) != len(names) or any(v not in (0, 1) for v in values):
        raise ValueError(f"multilabel label must be {len(names)} values in {{0, 1}} ({names}), got {label!r}")
    return values


def decode_label(raw: Any, label_spec: LabelSpec) -> Any:
    value = json.loads(raw)
    task = label_spec.task
    if task == "regression":
        return float(value)
    if task == "classification":
        return label_spec.classes.index(value) if isinstance(value, str) else int(value)
    return np.asarray(value, dtype=np.int64)  # multilabel (0/1 per label), multihead (class per head, -1 = none)


class DatasetWriter:
    """Append samples to an own-format dataset file; resumable.

    Opening an existing file checks that its feature spec, label spec and extraction config
    equal the given ones (else `DatasetError` listing the differences) and removes temporary
    groups left by an interrupted writer; `has(id)` tells what is already there.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        feature_spec: dict[str, Any],
        label_spec: LabelSpec | dict[str, Any],
        extraction_config: dict[str, Any],
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.feature_spec = _canon(feature_spec)
        self.label_spec = LabelSpec.of(label_spec)
        self.extraction_config = _canon(extraction_config)
        self.provenance = _canon(provenance or {})
        missing = [m for m in MODALITIES if m not in self.feature_spec]
        if missing:
            raise ValueError(f"feature_spec needs {list(MODALITIES)}, missing {missing}")
        self._file: Any = None

    def __enter__(self) -> "DatasetWriter":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> None:
        h5py = _h5py()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        exists = self.path.exists() and self.path.stat().st_size > 0
        try:
            f = h5py.File(self.path, "a" if exists else "w")
        except OSError as exc:
            raise DatasetError(f"{self.path}: cannot open for writing ({exc})") from None
        try:
            if exists and f.attrs.get("format") != FORMAT:
                raise DatasetError(
                    f"{self.path}: exists and is not an {FORMAT} file (format attribute "
                    f"{f.attrs.get('format')!r}); refusing to append to it"
                )
            if exists:
                diffs = []
                for key, given in (
                    ("feature_spec", self.feature_spec),
                    ("label_spec", self.label_spec.to_dict()),
                    ("extraction_config", self.extraction_config),
                ):
                    recorded = json.loads(f.attrs[key])
                    if key == "extraction_config":  # both sides: options missing on either are at their defaults
                        recorded, given = _with_new_defaults(recorded), _with_new_defaults(given)
                    diffs += json_differences(recorded, given, key)
                if diffs:
                    raise DatasetError(
                        f"{self.path} was written with another specification; resuming would mix "
                        "incompatible samples. Differences:\n  " + "\n  ".join(diffs)
                        + "\nWrite to a new file, or delete this one to start over."
                    )
                samples = f.require_group("samples")
                for name in [n for n in samples if n.startswith(TMP_PREFIX)]:
                    del samples[name]  # a sample the previous writer never finished
            else:
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["feature_spec"] = json.dumps(self.feature_spec)
                f.attrs["label_spec"] = json.dumps(self.label_spec.to_dict())
                f.attrs["extraction_config"] = json.dumps(self.extraction_config)
                f.attrs["provenance"] = json.dumps(self.provenance)
                f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                f.create_group("samples")
            f.flush()
        except BaseException:
            f.close()
            raise
        self._file = f

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None

    def _samples(self) -> Any:
        if self._file is None:
            raise RuntimeError("DatasetWriter is not open: use it as a context manager")
        return self._file["samples"]

    def has(self, sample_id: str) -> bool:
        return encode_name(sample_id) in self._samples()

    def __len__(self) -> int:
        return sum(1 for n in self._samples() if not n.startswith(TMP_PREFIX))

    def add(
        self,
        sample_id: str,
        *,
        sequences: Mapping[str, Any],
        label: Any,
        split: str,
        group: str | None = None,
        meta: dict[str, Any] | None = None,
        source: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> None:
        """Write one sample. `sequences`: modality -> extractors.Sequence (all three). `label`: a
        number (regression), class name or index (classification), list/dict of 0/1 (multilabel),
        (H,) class indices with -1 = none or {head: class name | None} (multihead).
        `source`, `start`, `end` default to meta["path"], meta["start"], meta["end"]."""
        self.add_many([dict(sample_id=sample_id, sequences=sequences, label=label, split=split, group=group,
                            meta=meta, source=source, start=start, end=end)])

    def add_many(self, samples: "list[dict[str, Any]]") -> None:
        """Write several samples (each a dict of `add`'s arguments) with one flush: each is
        written under its temporary name, the file flushed, then all are moved to their final
        names and the file flushed again. Every sample is complete and visible when this returns;
        an interruption leaves only whole samples. Much faster than `add` for small samples."""
        checked = [self._check(**kw) for kw in samples]
        names = [s[0] for s in checked]
        if len(set(names)) != len(names):
            raise ValueError("add_many: the same sample id twice in one call")
        written = []
        try:
            for name, kw, label_value in checked:
                written.append(self._write_tmp(name, label_value, **kw))
        except BaseException:
            samples_group = self._samples()
            for tmp in written:  # leave nothing half-done behind (the next open would delete it anyway)
                if tmp in samples_group:
                    del samples_group[tmp]
            raise
        self._file.flush()
        group = self._samples()
        for tmp, (name, _, _) in zip(written, checked):
            group.move(tmp, name)
        self._file.flush()

    def _check(self, *, sample_id: str, sequences: Mapping[str, Any], label: Any, split: str,
               **rest: Any) -> tuple[str, dict[str, Any], Any]:
        samples = self._samples()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        name = encode_name(sample_id)
        if name in samples:
            raise ValueError(f"sample {sample_id!r} is already in {self.path}")
        missing = [m for m in MODALITIES if m not in sequences]
        if missing:
            raise ValueError(f"sample {sample_id!r}: sequences for {missing} are missing")
        for m in MODALITIES:
            dim = sequences[m].features.shape[1]
            if dim != self.feature_spec[m]["dim"]:
                raise ValueError(
                    f"sample {sample_id!r}: {m} features are {dim}-d, the dataset's feature spec says {self.feature_spec[m]['dim']}"
                )
        label_value = normalize_label(label, self.label_spec)
        return name, dict(sample_id=sample_id, sequences=sequences, split=split, **rest), label_value

    def _write_tmp(self, name: str, label_value: Any, *, sample_id: str, sequences: Mapping[str, Any], split: str,
                   group: str | None = None, meta: dict[str, Any] | None = None, source: str | None = None,
                   start: float | None = None, end: float | None = None) -> str:
        h5py = _h5py()
        samples = self._samples()
        meta = dict(meta or {})
        tmp = TMP_PREFIX + name
        if tmp in samples:
            del samples[tmp]
        g = samples.create_group(tmp)
        # h5py's low-level calls write exactly what `g.attrs[k] = v` / `create_dataset` write
        # (UTF-8 variable-length strings, float64, float32) at half the cost per object
        _put_attr(g, "id", str(sample_id))
        _put_attr(g, "label", json.dumps(label_value))
        _put_attr(g, "split", split)
        _put_attr(g, "group", "" if group is None else str(group))
        _put_attr(g, "source", str(source if source is not None else meta.get("path", "")))
        _put_attr(g, "start", _seconds(start if start is not None else meta.get("start")))
        _put_attr(g, "end", _seconds(end if end is not None else meta.get("end")))
        _put_attr(g, "meta", json.dumps(meta, default=str))
        for m in MODALITIES:
            seq = sequences[m]
            if seq.features.shape[0] == 0:
                continue  # no rows: no group (readers give (0, D)); a third of the time and space of a text-only sample
            mg = g.create_group(m)
            _put_dataset(mg, "features", np.ascontiguousarray(seq.features, np.float32))
            _put_dataset(mg, "times", np.ascontiguousarray(seq.times, np.float64))
            if m == "text":
                tokens = list(seq.tokens) if seq.tokens is not None else [""] * seq.features.shape[0]
                _put_dataset(mg, "tokens", np.array(tokens, dtype=object), h5py.string_dtype("utf-8"))
        return tmp


def _put_attr(group: Any, name: str, value: str | float) -> None:
    """A scalar attribute: a str as a variable-length UTF-8 string, a float as float64."""
    h5py = _h5py()
    dtype = h5py.string_dtype("utf-8") if isinstance(value, str) else np.dtype("f8")
    attr = h5py.h5a.create(group.id, name.encode(), h5py.h5t.py_create(dtype, logical=True),
                           h5py.h5s.create(h5py.h5s.SCALAR))
    attr.write(np.array(value, dtype=dtype))


def _put_dataset(group: Any, name: str, data: np.ndarray, dtype: Any = None) -> None:
    """A contiguous dataset holding `data` (stored as `dtype`, default its own)."""
    h5py = _h5py()
    tid = h5py.h5t.py_create(dtype if dtype is not None else data.dtype, logical=True)
    dset = h5py.h5d.create(group.id, name.encode(), tid, h5py.h5s.create_simple(data.shape))
    if data.size:
        dset.write(h5py.h5s.ALL, h5py.h5s.ALL, data)


def _seconds(value: Any) -> float:
    """A time attribute: NaN when unknown (None); 0.0 stays 0.0."""
    return math.nan if value is None else float(value)


class H5Split:
    """One split of an own-format file. The HDF5 file is opened lazily, once per process (so each
    DataLoader worker has its own handle), and read one sample per access."""

    def __init__(self, *, path: Path, names: list[str], label_spec: LabelSpec, dims: dict[str, int]) -> None:
        self.path = path
        self.names = names
        self.label_spec = label_spec
        self.dims = dims
        self._pid: int | None = None
        self._file: Any = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.names)

    def _samples(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            self._file = _h5py().File(self.path, "r")
            self._pid = os.getpid()
        return self._file["samples"]

    def read(self, index: int, *, times: bool = False) -> Sample:
        g = self._samples()[self.names[index]]
        feats = {}
        extra: dict[str, Any] = {}
        for m in MODALITIES:
            x = g[m]["features"][()] if m in g else np.zeros((0, self.dims[m]), np.float32)
            feats[m] = np.asarray(x, dtype=np.float32).reshape(-1, self.dims[m])
            if times:
                extra[f"{m}_times"] = g[m]["times"][()] if m in g else np.zeros((0, 2), np.float64)
        meta = json.loads(g.attrs.get("meta", "{}"))
        meta.update(extra)
        meta.update(source=str(g.attrs.get("source", "")), start=float(g.attrs["start"]), end=float(g.attrs["end"]))
        group = str(g.attrs.get("group", "")) or None
        return Sample(
            id=str(g.attrs["id"]),
            label=decode_label(g.attrs["label"], self.label_spec),
            group=group,
            meta=meta,
            **feats,
        )

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self.read(index)


def read_h5(path: str | os.PathLike) -> DatasetBundle:
    path = Path(path)
    try:
        f = _h5py().File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise DatasetError(
                f"{path}: expected an {FORMAT} file (root attribute format={FORMAT!r}), found "
                f"format={f.attrs.get('format')!r} and top-level entries {list(f.keys())[:10]}"
            )
        version = int(f.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise DatasetError(f"{path}: format version {version} is newer than this reader ({FORMAT_VERSION}); upgrade mfsa-pipe")
        feature_spec = json.loads(f.attrs["feature_spec"])
        label_spec = LabelSpec.from_dict(json.loads(f.attrs["label_spec"]))
        by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
        for name in sorted(f["samples"]):
            if name.startswith(TMP_PREFIX):
                continue  # unfinished: the writer was interrupted
            split = str(f["samples"][name].attrs.get("split", ""))
            if split in by_split:
                by_split[split].append(name)
        source = {
            "format": FORMAT,
            "format_version": version,
            "path": str(path),
            "name": path.stem,
            "extraction_config": json.loads(f.attrs.get("extraction_config", "{}")),
            "provenance": json.loads(f.attrs.get("provenance", "{}")),
        }
    dims = {m: int(feature_spec[m]["dim"]) for m in MODALITIES}
    splits = {
        s: H5Split(path=path, names=names, label_spec=label_spec, dims=dims) for s, names in by_split.items() if names
    }
    if not splits:
        raise DatasetError(f"{path}: holds no complete sample")
    return DatasetBundle(splits=splits, feature_spec=feature_spec, label_spec=label_spec, source=source)
