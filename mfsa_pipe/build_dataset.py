"""Build a training set in the project's own HDF5 format from labelled raw videos.

One CSV row per sample (see docs/build_dataset.md):

- ``path`` (required): the media file, relative to ``media_root`` (absolute paths work too);
- ``start`` / ``end`` (optional, seconds): a segment of a longer file. The whole file is
  extracted once (the pipeline caches by content hash + configuration) and every Sequence is
  sliced by time: a row (word, acoustic frame, video frame) belongs to the segment when its
  midpoint lies in ``[start, end)``; its times are shifted so that the segment starts at 0, as
  if the segment were a clip of its own. Words, openSMILE frames and face tracks therefore keep
  the context of the whole file (no word is cut in half at a boundary); rows are never
  interpolated;
- ``label`` (required): a number (every row) -> regression, otherwise class names ->
  classification (classes sorted by name unless ``classes`` is given). The inferred label spec
  is recorded in the dataset;
- ``split`` (optional): train / valid / test (``val``, ``validation``, ``dev`` mean valid);
- ``speaker`` or ``group`` (optional): who is in the clip. Without a split column, whole groups
  are assigned to splits (groups sorted by the SHA-256 of their name, then ~70/15/15, at least
  one group in valid and test when there are 3 groups or more), so a speaker is never in two
  splits; without groups the same rule is applied to clips;
- ``id`` (optional): the sample id; default ``path`` (``path@start-end`` for segments).

Extraction uses the same extractors and configuration as ``analyze`` (the default
``ExtractionConfig()`` unless told otherwise). The build is failure-isolated (a clip that cannot
be decoded or extracted is recorded in ``DATASET.report.json`` / ``.report.csv`` and skipped)
and resumable (samples already in the dataset are not extracted again; failed ones are retried).
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import platform
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from extractors.hashing import file_sha256
from mfsa_pipe.metrics import json_safe

SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "valid": "valid", "val": "valid", "validation": "valid", "dev": "valid",
    "test": "test", "testing": "test",
}
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
REPORT_VERSION = 1


class LabelsError(ValueError):
    """The labels CSV is unusable: the message says which row/column and what is expected."""


# --------------------------------------------------------------------------------------------
# the labels table


@dataclass
class Row:
    id: str
    path: str  # as written in the CSV
    file: Path  # resolved media file
    label: Any  # float (regression) or class name (classification)
    split: str | None
    group: str | None
    start: float | None = None
    end: float | None = None
    line: int = 0  # 1-based CSV line (header = 1)
    extra: dict[str, str] = field(default_factory=dict)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _as_float(value: Any) -> float | None:
    try:
        out = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _fmt_time(t: float) -> str:
    return f"{t:.3f}"


def read_labels(labels_csv: str | os.PathLike, *, media_root: str | os.PathLike) -> list[Row]:
    """Parse and validate the generic labels CSV (see the module docstring)."""
    labels_csv = Path(labels_csv)
    media_root = Path(media_root)
    if not labels_csv.is_file():
        raise LabelsError(f"labels file not found: {labels_csv}")
    with open(labels_csv, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        raw_rows = [{(k or "").strip(): v for k, v in r.items()} for r in reader]
    for required in ("path", "label"):
        if required not in columns:
            raise LabelsError(
                f"{labels_csv}: a column named {required!r} is required (found columns: {columns}); "
                "see docs/build_dataset.md"
            )
    if ("start" in columns) != ("end" in columns):
        raise LabelsError(f"{labels_csv}: 'start' and 'end' go together (found only one of them)")
    group_col = "group" if "group" in columns else ("speaker" if "speaker" in columns else None)
    known = {"id", "path", "label", "split", "start", "end", "group", "speaker"}
    rows: list[Row] = []
    for i, r in enumerate(raw_rows):
        line = i + 2
        path = (r.get("path") or "").strip()
        if not path:
            raise LabelsError(f"{labels_csv}:{line}: empty 'path'")
        if _blank(r.get("label")):
            raise LabelsError(f"{labels_csv}:{line}: empty 'label' for {path}")
        start = end = None
        if "start" in columns and not (_blank(r.get("start")) and _blank(r.get("end"))):
            start, end = _as_float(r.get("start")), _as_float(r.get("end"))
            if start is None or end is None or start < 0 or end <= start:
                raise LabelsError(
                    f"{labels_csv}:{line}: start/end must be seconds with 0 <= start < end, "
                    f"got {r.get('start')!r}/{r.get('end')!r}"
                )
        split = None
        if "split" in columns and not _blank(r.get("split")):
            key = str(r["split"]).strip().lower()
            if key not in _SPLIT_ALIASES:
                raise LabelsError(
                    f"{labels_csv}:{line}: split must be one of train/valid/test, got {r['split']!r}"
                )
            split = _SPLIT_ALIASES[key]
        group = None
        if group_col and not _blank(r.get(group_col)):
            group = str(r[group_col]).strip()
        sample_id = (r.get("id") or "").strip()
        if not sample_id:
            sample_id = path if start is None else f"{path}@{_fmt_time(start)}-{_fmt_time(end)}"
        file = Path(path) if Path(path).is_absolute() else media_root / path
        extra = {k: v for k, v in r.items() if k not in known and k and v is not None}
        rows.append(Row(sample_id, path, file, str(r["label"]).strip(), split, group, start, end, line, extra))
    if not rows:
        raise LabelsError(f"{labels_csv}: no rows")
    seen: dict[str, int] = {}
    for row in rows:
        if row.id in seen:
            raise LabelsError(
                f"{labels_csv}: sample id {row.id!r} appears on lines {seen[row.id]} and {row.line}; "
                "give an 'id' column or distinct start/end"
            )
        seen[row.id] = row.line
    if "split" in columns:
        missing = [row.line for row in rows if row.split is None]
        if missing and len(missing) < len(rows):
            raise LabelsError(
                f"{labels_csv}: the split column is empty on lines {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}; fill it on every row or drop the column"
            )
    return rows


def infer_label_spec(
    labels: Iterable[str], *, task: str | None = None, classes: list[str] | None = None
) -> dict[str, Any]:
    """Numbers on every row -> regression (range = [min, max] of the labels); otherwise
    classification over the distinct names (sorted, or in the order of `classes`)."""
    labels = [str(x).strip() for x in labels]
    numbers = [_as_float(x) for x in labels]
    if task is None:
        task = "regression" if all(n is not None for n in numbers) and classes is None else "classification"
    if task == "regression":
        bad = [x for x, n in zip(labels, numbers) if n is None]
        if bad:
            raise LabelsError(f"regression labels must be numbers; not numbers: {sorted(set(bad))[:10]}")
        lo, hi = min(numbers), max(numbers)
        return {"task": "regression", "range": [float(lo), float(hi)]}
    if task != "classification":
        raise LabelsError(f"task must be 'regression' or 'classification', got {task!r}")
    found = sorted(set(labels))
    if classes is None:
        classes = found
    else:
        classes = [str(c) for c in classes]
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise LabelsError(f"labels {unknown} are not among the given classes {classes}")
    if len(classes) < 2:
        raise LabelsError(f"classification needs at least 2 classes, found {classes}")
    return {"task": "classification", "classes": list(classes)}


def encode_label(label: str, label_spec: dict[str, Any]) -> float | int:
    if label_spec["task"] == "regression":
        return float(label)
    return int(label_spec["classes"].index(label))


def _hash_key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def deterministic_split(names: Iterable[str], fractions=SPLIT_FRACTIONS) -> dict[str, str]:
    """Assign each name (a group, or a clip id) to train/valid/test: names sorted by the
    SHA-256 of the name (stable across machines and row orders), then the first ~70% to
    train, the next ~15% to valid, the rest to test; valid and test get at least one name
    each when there are 3 names or more."""
    names = sorted(set(names), key=lambda n: (_hash_key(n), n))
    n = len(names)
    if n < 3:
        return {name: "train" for name in names}
    n_valid = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    n_train = n - n_valid - n_test
    if n_train < 1:
        n_train, n_valid, n_test = 1, 1, n - 2
    out = {}
    for i, name in enumerate(names):
        out[name] = "train" if i < n_train else ("valid" if i < n_train + n_valid else "test")
    return out


def assign_splits(rows: list[Row]) -> str:
    """Fill `split` where the CSV has none; returns the rule used (recorded in provenance)."""
    if all(r.split is not None for r in rows):
        return "from the labels CSV's split column"
    if any(r.group is not None for r in rows):
        groups = {r.group if r.group is not None else f"__clip__:{r.id}" for r in rows}
        table = deterministic_split(groups)
        for r in rows:
            r.split = table[r.group if r.group is not None else f"__clip__:{r.id}"]
        return "by speaker/group: groups sorted by SHA-256 of the name, ~70/15/15 train/valid/test"
    table = deterministic_split([r.id for r in rows])
    for r in rows:
        r.split = table[r.id]
    return "by clip: sample ids sorted by SHA-256, ~70/15/15 train/valid/test"


# --------------------------------------------------------------------------------------------
# slicing an extraction to a segment


def slice_sequence(seq, start: float, end: float):
    """The rows of `seq` whose midpoint lies in [start, end), times shifted to start at 0.
    Per-row arrays in `meta` (e.g. the face boxes) are sliced alongside."""
    from extractors.sequence import Sequence

    times = np.asarray(seq.times, dtype=np.float64)
    mid = times.mean(axis=1) if len(times) else np.zeros(0)
    keep = (mid >= start) & (mid < end)
    n = len(times)
    meta = {}
    for key, value in (seq.meta or {}).items():
        if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n and n > 0:
            meta[key] = value[keep]
        elif isinstance(value, list) and len(value) == n and n > 0 and key != "segments":
            meta[key] = [v for v, k in zip(value, keep) if k]
        else:
            meta[key] = value
    meta["segment"] = [float(start), float(end)]
    meta["time_offset_s"] = float(start)
    if not keep.any():
        meta.setdefault("empty_reason", f"no rows in the segment [{start:.3f}, {end:.3f}) s")
    tokens = None if seq.tokens is None else [t for t, k in zip(seq.tokens, keep) if k]
    new_times = times[keep] - start
    if len(new_times):
        new_times = np.clip(new_times, 0.0, end - start)
    return Sequence(
        features=np.asarray(seq.features)[keep],
        times=new_times.reshape(-1, 2),
        columns=seq.columns,
        rate=seq.rate,
        source=seq.source,
        tokens=tokens,
        meta=meta,
    )


# --------------------------------------------------------------------------------------------
# the work: one task per media file (a file with several segments is extracted once)


def _run_extract(file: str, config, cache_dir: str | bool):
    """The pipeline's `extract` (a seam for tests)."""
    from extractors.pipeline import extract

    return extract(file, config=config, cache_dir=cache_dir)


def _extract_file(file: str, segments: list[tuple[str, float | None, float | None]],
                  config_dict: dict[str, Any], cache_dir: str | bool) -> dict[str, Any]:
    """Extract one file and return {ok, samples: {id: {sequences, meta}} | error}. Runs in a
    worker process when workers > 1; never raises for a bad clip."""
    from extractors.config import ExtractionConfig

    t0 = time.perf_counter()
    try:
        from extractors.errors import MediaError
    except ImportError:  # pragma: no cover
        MediaError = ValueError  # type: ignore[assignment]
    try:
        config = ExtractionConfig.from_dict(config_dict)
        extraction = _run_extract(file, config, cache_dir)
        seqs = extraction.sequences()
        media = getattr(extraction, "media", None)
        duration = getattr(media, "duration_s", None)
        sha = getattr(media, "sha256", None)
        samples = {}
        for sample_id, start, end in segments:
            meta: dict[str, Any] = {"path": file, "media_sha256": sha, "media_duration_s": duration}
            if start is None:
                out = seqs
            else:
                if duration is not None and start >= float(duration):
                    samples[sample_id] = {
                        "error": f"segment [{start}, {end}) s starts after the end of the media ({duration:.3f} s)"
                    }
                    continue
                out = {m: slice_sequence(s, start, end) for m, s in seqs.items()}
                if duration is not None and end > float(duration):
                    meta["segment_clipped_to_s"] = float(duration)
            samples[sample_id] = {"sequences": out, "meta": meta}
        return {"ok": True, "samples": samples, "seconds": time.perf_counter() - t0,
                "timings": dict(getattr(extraction, "timings", {}) or {})}
    except MediaError as exc:
        return {"ok": False, "error": str(exc), "kind": "media", "seconds": time.perf_counter() - t0}
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - failure isolation: record and go on
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "kind": "extraction",
            "traceback": traceback.format_exc(limit=8),
            "seconds": time.perf_counter() - t0,
        }


# --------------------------------------------------------------------------------------------
# the report


@dataclass
class BuildReport:
    out: str
    report_json: str
    report_csv: str
    total: int
    added: int
    already_present: int
    failed: int
    label_spec: dict[str, Any]
    split_rule: str
    split_counts: dict[str, int]
    seconds: float
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "failed"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = REPORT_VERSION
        return d


_CSV_FIELDS = ("id", "path", "start", "end", "label", "split", "group", "status", "seconds", "error")


def _write_report(report: BuildReport) -> None:
    from mfsa_pipe.atomic import atomic_path, write_json

    write_json(report.report_json, json_safe(report.to_dict()))
    with atomic_path(report.report_csv) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(_CSV_FIELDS))
            writer.writeheader()
            for rec in report.records:
                writer.writerow({k: ("" if rec.get(k) is None else rec.get(k)) for k in _CSV_FIELDS})


def report_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(out)
    return out.with_name(out.name + ".report.json"), out.with_name(out.name + ".report.csv")


# --------------------------------------------------------------------------------------------
# the entry point




def _provenance(labels_csv: Path, media_root: Path, split_rule: str, config_dict: dict) -> dict[str, Any]:
    from mfsa_pipe import __version__

    versions = {"python": platform.python_version()}
    for mod in ("numpy", "torch", "opensmile", "faster_whisper", "gensim", "mediapipe", "av", "h5py"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return {
        "tool": "mfsa-pipe",
        "tool_version": __version__,
        "command": "build-dataset",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labels_csv": str(labels_csv),
        "labels_csv_sha256": file_sha256(labels_csv),
        "media_root": str(media_root),
        "split_rule": split_rule,
        "segment_rule": "whole file extracted once; rows whose midpoint lies in [start, end) kept; times shifted to the segment start",
        "extraction_config": config_dict,
        "platform": platform.platform(),
        "versions": versions,
    }


ProgressFn = Callable[[int, int, str], None]


def build_dataset(
    labels_csv: str | os.PathLike,
    *,
    media_root: str | os.PathLike,
    out: str | os.PathLike,
    workers: int = 1,
    config=None,
    progress: ProgressFn | None = None,
    cache_dir: str | os.PathLike | bool | None = None,
    task: str | None = None,
    classes: list[str] | None = None,
) -> BuildReport:
    """Extract every clip of `labels_csv` and write the dataset `out` (own HDF5 format).

    `progress(done, total, message)` is called after each sample. `cache_dir`: the pipeline's
    feature cache (default: `<out>.cache/` beside the dataset, so that a rebuild with another
    label file does not extract again; False: no cache). Interrupting (Ctrl-C) leaves a valid partial dataset;
    running the same call again extracts only what is missing. Returns a `BuildReport`; the
    same is written to `<out>.report.json` and `<out>.report.csv`.
    """
    from extractors.config import ExtractionConfig
    from extractors.pipeline import feature_spec
    from mfsa_pipe.datasets.h5 import DatasetWriter

    t_start = time.perf_counter()
    labels_csv = Path(labels_csv)
    media_root = Path(media_root)
    out = Path(out)
    config = config if config is not None else ExtractionConfig()
    config_dict = config.to_dict()
    if cache_dir is None:
        cache_dir = out.with_name(out.name + ".cache")
    cache_dir = False if cache_dir is False else str(cache_dir)  # False: no feature cache
    workers = max(1, int(workers))

    rows = read_labels(labels_csv, media_root=media_root)
    label_spec = infer_label_spec([r.label for r in rows], task=task, classes=classes)
    split_rule = assign_splits(rows)
    split_counts = {s: sum(1 for r in rows if r.split == s) for s in SPLITS}
    spec = feature_spec(config)
    provenance = _provenance(labels_csv, media_root, split_rule, config_dict)
    json_path, csv_path = report_paths(out)

    records: dict[str, dict[str, Any]] = {}
    for r in rows:
        records[r.id] = {
            "id": r.id, "path": r.path, "start": r.start, "end": r.end, "label": r.label,
            "split": r.split, "group": r.group, "status": "pending", "seconds": None, "error": None,
        }

    def make_report() -> BuildReport:
        recs = list(records.values())
        return BuildReport(
            out=str(out), report_json=str(json_path), report_csv=str(csv_path), total=len(recs),
            added=sum(r["status"] == "added" for r in recs),
            already_present=sum(r["status"] == "already present" for r in recs),
            failed=sum(r["status"] == "failed" for r in recs),
            label_spec=label_spec, split_rule=split_rule, split_counts=split_counts,
            seconds=round(time.perf_counter() - t_start, 3), records=recs,
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    total = len(rows)
    interrupted = True
    try:
        with DatasetWriter(
            out, feature_spec=spec, label_spec=label_spec, extraction_config=config_dict, provenance=provenance
        ) as writer:
            # group the missing samples by media file: each file is extracted once
            by_file: dict[str, list[Row]] = {}
            for r in rows:
                if writer.has(r.id):
                    records[r.id]["status"] = "already present"
                    done += 1
                    continue
                if not r.file.is_file():
                    records[r.id].update(status="failed", error=f"media file not found: {r.file}")
                    done += 1
                    continue
                by_file.setdefault(str(r.file), []).append(r)
            if progress and done:
                progress(done, total, "already present or missing")

            def handle(file: str, result: dict[str, Any]) -> None:
                nonlocal done
                todo = by_file[file]
                per = (result.get("seconds") or 0.0) / max(1, len(todo))
                for r in todo:
                    rec = records[r.id]
                    rec["seconds"] = round(per, 3)
                    if not result["ok"]:
                        rec.update(status="failed", error=result["error"])
                    else:
                        sample = result["samples"].get(r.id)
                        if sample is None or "error" in sample:
                            rec.update(status="failed", error=(sample or {}).get("error", "no sample returned"))
                        else:
                            meta = {**sample["meta"], "path": r.path, "label_raw": r.label, **r.extra}
                            writer.add(
                                r.id,
                                sequences=sample["sequences"],
                                label=encode_label(r.label, label_spec),
                                split=r.split,
                                group=r.group,
                                meta=json_safe(meta),
                                source=r.path,
                                start=r.start,
                                end=r.end,
                            )
                            rec["status"] = "added"
                    done += 1
                    if progress:
                        progress(done, total, f"{rec['status']}: {r.id}")

            tasks = [(file, [(r.id, r.start, r.end) for r in todo]) for file, todo in by_file.items()]
            if workers == 1 or len(tasks) <= 1:
                for file, segs in tasks:
                    handle(file, _extract_file(file, segs, config_dict, cache_dir))
            else:
                from mfsa_pipe.batch import run_in_processes

                jobs = [(file, segs, config_dict, cache_dir) for file, segs in tasks]
                for i, result, exc in run_in_processes(_extract_file, jobs, workers=workers):
                    if exc is not None:  # a crashed worker
                        result = {"ok": False, "error": f"worker failed: {type(exc).__name__}: {exc}"}
                    handle(tasks[i][0], result)
        interrupted = False
    finally:
        if interrupted:
            for rec in records.values():
                if rec["status"] == "pending":
                    rec["status"] = "not done (interrupted)"
        report = make_report()
        try:
            _write_report(report)
        except Exception:  # noqa: BLE001 - never hide the original error behind a report error
            if not interrupted:
                raise
    return report
