"""Build a training set in the project's own HDF5 format from labelled raw videos, audio files
and texts.

The labels CSV (one row per sample: path or text, label or emotion/sentiment, split, speaker,
segment, modalities) is read by ``mfsa_pipe.datasets.labels_table``; docs/build_dataset.md
describes it.

Every sample then goes through ``mfsa_pipe.presence.absent_modalities`` (the rule training and
``analyze`` apply): a modality that carries nothing (no words, a silent or unvoiced track, no
face) is stored empty and the reason is recorded in the sample's ``meta["absent"]`` and counted
in the build report.

Extraction uses the same extractors and configuration as ``analyze`` (the default
``ExtractionConfig()`` unless told otherwise). The build is failure-isolated (a clip that cannot
be decoded or extracted, a missing file, a row with no text and no path, an unknown label name
are recorded in ``DATASET.report.json`` / ``.report.csv``, with the CSV line, and skipped) and
resumable (samples already in the dataset are not extracted again; failed ones are retried).
Problems of the whole table (no usable column, duplicated ids, ...) raise
``labels_table.LabelsError``.
"""

from __future__ import annotations

import csv
import os
import platform
import time
import traceback
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from extractors.config import ExtractionConfig
from extractors.errors import MediaError
from extractors.hashing import file_sha256
from extractors.sequence import MODALITIES, Sequence
from extractors.text import words_to_sequence
from extractors.vectors import clean_word, load_vectors, normalize_punctuation
from mfsa_pipe.atomic import atomic_path, write_json
from mfsa_pipe.datasets.base import SPLITS, LabelSpec
from mfsa_pipe.datasets.h5 import DatasetWriter
from mfsa_pipe.datasets.labels_table import Row, assign_splits, label_spec_for, read_table, row_location
from mfsa_pipe.executors import ExecutorConfig, open_executor
from mfsa_pipe.json_values import json_safe
from mfsa_pipe.output_lock import dataset_lock_path, output_lock, workers_lock_path
from mfsa_pipe.presence import DEFAULT_RULE, absent_modalities
from mfsa_pipe.segmentation import Utterance, row_utterance_index
from mfsa_pipe.version import __version__

REPORT_VERSION = 2  # 2: line, modalities, absent per record; absent counts; row errors recorded
TEXT_WORD_SECONDS = 0.3  # the time span given to each word of a text-only row
TEXT_BATCH = 512  # text-only samples written per flush of the dataset file
NOT_REQUESTED = "not requested"


# --------------------------------------------------------------------------------------------
# slicing an extraction to a segment


def segment_rows(times: np.ndarray, start: float, end: float) -> np.ndarray:
    """Boolean mask of the rows (times (T, 2)) that belong to the segment [start, end): the rule
    `analyze` uses for an utterance (`mfsa_pipe.segmentation.row_utterance_index`, called with
    this one segment), so a training segment and an analyze utterance take the same rows."""
    segment = Utterance(index=0, start=float(start), end=float(end), text="", source="speech")
    return row_utterance_index(np.asarray(times, dtype=np.float64).reshape(-1, 2), [segment]) == 0


def slice_sequence(seq, start: float, end: float):
    """The rows of `seq` in the segment [start, end) (`segment_rows`), times shifted to start
    at 0. Per-row arrays in `meta` (e.g. the face boxes) are sliced alongside."""
    times = np.asarray(seq.times, dtype=np.float64)
    keep = segment_rows(times, start, end)
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


def _emptied(seq, reason: str):
    """`seq` with no rows, meta["empty_reason"] = reason (same columns, rate and source)."""
    return Sequence.empty(columns=seq.columns, rate=seq.rate, source=seq.source, reason=reason,
                          text=seq.tokens is not None)


def apply_presence(sequences: dict[str, Any], feature_spec: dict[str, Any],
                   requested: Iterable[str] = MODALITIES) -> tuple[dict[str, Any], dict[str, str]]:
    """(sequences, {modality: reason}): the modalities not in `requested` ("not requested") and
    those `mfsa_pipe.presence.absent_modalities` finds carrying nothing (no words, silent or
    unvoiced audio, no face) are emptied (T = 0), as training and analyze would see them."""
    requested = set(requested)
    absent = absent_modalities({m: sequences[m].features for m in MODALITIES}, feature_spec)
    for m in MODALITIES:
        if m not in requested:
            absent[m] = NOT_REQUESTED
    out = {}
    for m in MODALITIES:
        seq = sequences[m]
        out[m] = _emptied(seq, absent[m]) if m in absent and seq.length else seq
    return out, {m: absent[m] for m in MODALITIES if m in absent}


def words_from_text(text: str, *, seconds_per_word: float = TEXT_WORD_SECONDS) -> list[dict[str, Any]]:
    """A transcript as the recogniser's words: split on whitespace, a piece that is only
    punctuation joined to the word before it, as Whisper attaches it ("God !" -> "God!"; one at
    the start is dropped), word i spanning [i * seconds_per_word, (i + 1) * seconds_per_word].
    Mis-encoded punctuation is repaired first (`normalize_punctuation`): Python splits on "\x85"."""
    words: list[str] = []
    for piece in normalize_punctuation(text).split():
        if clean_word(piece):
            words.append(piece)
        elif words:
            words[-1] += piece
    return [{"word": w, "start": round(i * seconds_per_word, 6), "end": round((i + 1) * seconds_per_word, 6)}
            for i, w in enumerate(words)]


def text_sequences(text: str, config, *, kv=None, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """The {text, audio, vision} Sequences of a text-only sample: the words through
    `extractors.text.words_to_sequence` (the path of recognised speech), audio and vision empty
    ("not requested"). `config`: the ExtractionConfig."""
    from extractors.pipeline import feature_spec  # lazy: the pipeline loads PyAV (FFmpeg)

    spec = spec or feature_spec(config)
    seq = words_to_sequence(words_from_text(text), config=config.text, kv=kv)
    empty = {
        m: Sequence.empty(columns=spec[m]["columns"], rate=spec[m]["rate"], reason=NOT_REQUESTED,
                          source={k: spec[m][k] for k in ("id", "version", "config")})
        for m in ("audio", "vision")
    }
    return {"text": seq, **empty}


# --------------------------------------------------------------------------------------------
# the work: one task per media file (a file with several segments is extracted once)


def _run_extract(file: str, config, cache_dir: str | bool, modalities: Iterable[str] | None = None):
    """The pipeline's `extract` (a seam for tests)."""
    from extractors.pipeline import extract  # lazy: the pipeline loads PyAV (FFmpeg)

    return extract(file, config=config, cache_dir=cache_dir, modalities=modalities)


def _extract_file(file: str, segments: list[tuple[str, float | None, float | None]],
                  config_dict: dict[str, Any], cache_dir: str | bool,
                  modalities: tuple[str, ...] = MODALITIES) -> dict[str, Any]:
    """Extract `modalities` of one file and return {ok, samples: {id: {sequences, meta}} | error}.
    Runs in a worker process when workers > 1; never raises for a bad clip."""
    t0 = time.perf_counter()
    try:
        config = ExtractionConfig.from_dict(config_dict)
        extraction = _run_extract(file, config, cache_dir, modalities)
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
    label_spec: LabelSpec
    split_rule: str
    split_counts: dict[str, int]
    seconds: float
    records: list[dict[str, Any]] = field(default_factory=list)
    # samples added in this run whose modality was stored empty: {modality: {reason: count}}
    absent: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "failed"]

    def to_dict(self) -> dict[str, Any]:
        # shallow: dataclasses.asdict deep-copies every record (2 s for 5,000 rows)
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["label_spec"] = self.label_spec.to_dict()
        d["version"] = REPORT_VERSION
        return d


_CSV_FIELDS = ("id", "line", "path", "start", "end", "label", "split", "group", "modalities", "status", "seconds",
               "absent", "error")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict):  # a multihead label, absent modalities
        return "; ".join(f"{k}={'' if v is None else v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value)
    return value


def _write_report(report: BuildReport) -> None:
    write_json(report.report_json, json_safe(report.to_dict()))
    with atomic_path(report.report_csv) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(_CSV_FIELDS))
            writer.writeheader()
            for rec in report.records:
                writer.writerow({k: _csv_value(rec.get(k)) for k in _CSV_FIELDS})


def report_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(out)
    return out.with_name(out.name + ".report.json"), out.with_name(out.name + ".report.csv")


# --------------------------------------------------------------------------------------------
# the entry point


def _library_versions(modules: Iterable[str]) -> dict[str, str]:
    """Installed versions, read from the package metadata: importing torch or mediapipe only to
    read `__version__` took ~10 s on a busy 2-core machine (a text-only build never needs them)."""
    import sys
    from importlib import metadata

    try:
        dists = metadata.packages_distributions()
    except Exception:  # noqa: BLE001
        dists = {}
    out = {}
    for mod in modules:
        loaded = sys.modules.get(mod)
        if loaded is not None and getattr(loaded, "__version__", None):
            out[mod] = str(loaded.__version__)
            continue
        for dist in dists.get(mod, []) + [mod, mod.replace("_", "-")]:
            try:
                out[mod] = metadata.version(dist)
                break
            except Exception:  # noqa: BLE001 - not installed under that name
                continue
    return out


def _provenance(labels_csv: Path, media_root: Path, split_rule: str, config_dict: dict) -> dict[str, Any]:
    versions = {"python": platform.python_version()}
    versions.update(_library_versions(("numpy", "torch", "opensmile", "faster_whisper", "gensim", "mediapipe", "av", "h5py")))
    return {
        "tool": "mfsa-pipe",
        "tool_version": __version__,
        "command": "build-dataset",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labels_csv": str(labels_csv),
        "labels_csv_sha256": file_sha256(labels_csv),
        "media_root": str(media_root),
        "split_rule": split_rule,
        "segment_rule": "whole file extracted once; rows chosen by mfsa_pipe.segmentation.row_utterance_index "
                        "(midpoint in [start, end], boundary rows within 0.25 s rescued), as analyze does; "
                        "times shifted to the segment start",
        "text_rule": f"text-only rows: words split on whitespace, then extractors.text.words_to_sequence "
                     f"(as recognised speech); {TEXT_WORD_SECONDS} s per word",
        "presence_rule": {"rule": "mfsa_pipe.presence.absent_modalities; absent modalities stored empty",
                          **DEFAULT_RULE.to_dict()},
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
    heads: dict[str, list[str]] | None = None,
    executor=None,
) -> BuildReport:
    """Extract every row of `labels_csv` and write the dataset `out` (own HDF5 format).

    `heads`: the classes of the multihead label columns, e.g. {"emotion": [...], "sentiment":
    [...]} (default: the sorted names seen); `task` / `classes`: the single `label` column's.
    `progress(done, total, message)` is called after each media sample and each batch of
    text-only samples. `cache_dir`: the pipeline's feature cache (default: `<out>.cache/` beside
    the dataset, so that a rebuild with another label file does not extract again; False: no
    cache). `executor`: an `mfsa_pipe.executors.ExecutorConfig` (default: local, `workers`
    processes); only the files' extraction runs there, the dataset is written here. One build at
    a time per `out` (OutputBusyError otherwise). Interrupting (Ctrl-C) leaves a valid partial dataset; running the same call again
    extracts only what is missing. Returns a `BuildReport`; the same is written to
    `<out>.report.json` and `<out>.report.csv`.
    """
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
    executor = executor or ExecutorConfig(workers=workers)
    executor.validate()

    build = _plan_build(labels_csv, media_root=media_root, out=out, config=config, config_dict=config_dict,
                        task=task, classes=classes, heads=heads, progress=progress, t_start=t_start)
    extraction = _MediaExtraction(config_dict=config_dict, cache_dir=cache_dir, workers=workers,
                                  executor=executor, media_root=media_root)
    return _write_dataset(build, config=config, extraction=extraction)


@dataclass
class _Build:
    """One build's bookkeeping: what the table says, a report record per row, the absent-modality
    counts and the progress count."""

    labels_csv: Path
    out: Path
    rows: list[Row]
    label_spec: LabelSpec
    encoded: dict[str, Any]  # {row id: stored label}
    split_rule: str
    split_counts: dict[str, int]
    spec: dict[str, Any]  # the feature spec
    provenance: dict[str, Any]
    progress: ProgressFn | None
    t_start: float
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    absent_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    done: int = 0

    def advance(self, n: int, message: str) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, len(self.rows), message)

    def fail(self, r: Row, error: str) -> None:
        self.records[r.id].update(status="failed", error=error)

    def sample_args(self, r: Row, sequences: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """The writer's arguments for row `r`, after the presence rule; notes its absent modalities."""
        empty = {m: sequences[m].meta.get("empty_reason") for m in MODALITIES
                 if m in r.modalities and sequences[m].length == 0}  # why extraction gave no rows
        sequences, absent = apply_presence(sequences, self.spec, r.modalities)
        meta = {**meta, "modalities": list(r.modalities), "absent": absent, "label_raw": r.label, **r.extra}
        if r.text is not None:
            meta["text"] = r.text
        if empty:
            meta["empty_reasons"] = empty
        self.records[r.id]["absent"] = absent or None
        for m, reason in absent.items():
            self.absent_counts.setdefault(m, {}).setdefault(reason, 0)
            self.absent_counts[m][reason] += 1
        return dict(sample_id=r.id, sequences=sequences, label=self.encoded[r.id], split=r.split, group=r.group,
                    meta=json_safe(meta), source=r.path, start=r.start, end=r.end)

    def report(self, *, interrupted: bool) -> BuildReport:
        """The report as it stands; after an interrupt the rows not reached say so."""
        if interrupted:
            for rec in self.records.values():
                if rec["status"] == "pending":
                    rec["status"] = "not done (interrupted)"
        recs = list(self.records.values())
        json_path, csv_path = report_paths(self.out)
        return BuildReport(
            out=str(self.out), report_json=str(json_path), report_csv=str(csv_path), total=len(recs),
            added=sum(r["status"] == "added" for r in recs),
            already_present=sum(r["status"] == "already present" for r in recs),
            failed=sum(r["status"] == "failed" for r in recs),
            label_spec=self.label_spec, split_rule=self.split_rule,
            split_counts=self.split_counts,
            seconds=round(time.perf_counter() - self.t_start, 3), records=recs, absent=self.absent_counts,
        )


def _plan_build(labels_csv: Path, *, media_root: Path, out: Path, config, config_dict: dict[str, Any], task,
                classes, heads, progress: ProgressFn | None, t_start: float) -> _Build:
    """Read and label the table, assign splits, and open a pending record for every row."""
    from extractors.pipeline import feature_spec  # lazy: the pipeline loads PyAV (FFmpeg)

    table = read_table(labels_csv, media_root=media_root)
    rows = table.rows
    label_spec, encoded = label_spec_for(table, task=task, classes=classes, heads=heads, labels_csv=labels_csv)
    split_rule = assign_splits(rows)
    build = _Build(
        labels_csv=labels_csv, out=out, rows=rows, label_spec=label_spec, encoded=encoded, split_rule=split_rule,
        split_counts={s: sum(1 for r in rows if r.split == s) for s in SPLITS}, spec=feature_spec(config),
        provenance=_provenance(labels_csv, media_root, split_rule, config_dict), progress=progress, t_start=t_start,
    )
    for r in rows:
        build.records[r.id] = {
            "id": r.id, "line": r.line, "path": r.path, "start": r.start, "end": r.end, "label": r.label,
            "split": r.split, "group": r.group, "modalities": list(r.modalities), "status": "pending",
            "seconds": None, "absent": None, "error": None,
        }
    return build


@dataclass
class _MediaExtraction:
    """Where and how the media files are extracted (the dataset itself is written here)."""

    config_dict: dict[str, Any]
    cache_dir: str | bool
    workers: int
    executor: Any  # mfsa_pipe.executors.ExecutorConfig
    media_root: Path


def _write_dataset(build: _Build, *, config, extraction: _MediaExtraction) -> BuildReport:
    """Hold the output's lock, add what is missing, and write the report even when interrupted
    (the report then marks the rows not reached)."""
    out = build.out
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = dataset_lock_path(out)
    held = output_lock(lock, what="build-dataset", option="--out")
    held.__enter__()  # released in the finally below, after the report is written
    interrupted = True
    try:
        with DatasetWriter(
            out, feature_spec=build.spec, label_spec=build.label_spec, extraction_config=extraction.config_dict,
            provenance=build.provenance,
        ) as writer:
            text_rows, by_file = _rows_to_build(build, writer)
            _add_text_rows(build, writer, text_rows, config)
            _add_media_rows(build, writer, by_file, extraction, lock=lock)
        interrupted = False
    finally:
        report = build.report(interrupted=interrupted)
        try:
            _write_report(report)
        except Exception:  # noqa: BLE001 - never hide the original error behind a report error
            if not interrupted:
                raise
        finally:
            held.__exit__(None, None, None)
    return report


def _rows_to_build(build: _Build, writer) -> tuple[list[Row], dict[str, list[Row]]]:
    """(text-only rows, {media file: its rows}) still to build. Row problems, samples already in
    the dataset (resume) and missing files are recorded here and counted as done."""
    by_file: dict[str, list[Row]] = {}
    text_rows: list[Row] = []
    settled = 0
    for r in build.rows:
        if r.error is not None:
            build.fail(r, r.error)
        elif writer.has(r.id):
            build.records[r.id]["status"] = "already present"
        elif r.text_only:
            text_rows.append(r)
            continue
        elif not r.file.is_file():
            build.fail(r, f"{row_location(build.labels_csv, r.line)}: media file not found: {r.file}")
        else:
            by_file.setdefault(str(r.file), []).append(r)
            continue
        settled += 1
    if settled:
        build.advance(settled, "already present, failed or missing")
    return text_rows, by_file


def _add_text_rows(build: _Build, writer, text_rows: list[Row], config) -> None:
    """Text-only rows, in this process: the word vectors loaded once, samples written in batches."""
    if not text_rows:
        return
    kv = load_vectors(config.text.vectors)
    for i in range(0, len(text_rows), TEXT_BATCH):
        t0 = time.perf_counter()
        todo = text_rows[i: i + TEXT_BATCH]
        batch = []
        for r in todo:
            seqs = text_sequences(r.text, config, kv=kv, spec=build.spec)
            if seqs["text"].length == 0:
                build.fail(r, f"{row_location(build.labels_csv, r.line)}: the text has no words once punctuation is "
                              f"stripped: {r.text[:60]!r}")
                continue
            batch.append(build.sample_args(r, seqs, {"path": "", "seconds_per_word": TEXT_WORD_SECONDS}))
        writer.add_many(batch)
        per = round((time.perf_counter() - t0) / max(1, len(todo)), 5)
        for r in todo:
            rec = build.records[r.id]
            rec["seconds"] = per
            if rec["status"] == "pending":
                rec["status"] = "added"
        build.advance(len(todo), f"text rows: {todo[-1].id}")


def _add_media_rows(build: _Build, writer, by_file: dict[str, list[Row]], extraction: _MediaExtraction, *,
                    lock: Path) -> None:
    """Each file extracted once, with every modality one of its rows asks for: here when local with
    one worker (or one file), else on the executor; each result is written here as it comes."""
    tasks = []
    for file, todo in by_file.items():
        wanted = {m for r in todo for m in r.modalities}
        tasks.append((file, [(r.id, r.start, r.end) for r in todo], tuple(m for m in MODALITIES if m in wanted)))
    config_dict, cache_dir = extraction.config_dict, extraction.cache_dir
    if extraction.executor.kind == "local" and (extraction.workers == 1 or len(tasks) <= 1):
        for file, segs, mods in tasks:
            _add_file_result(build, writer, by_file[file], _extract_file(file, segs, config_dict, cache_dir, mods))
    elif tasks:
        jobs = [(file, segs, config_dict, cache_dir, mods) for file, segs, mods in tasks]
        for i, result, exc in _map_files(jobs, executor=extraction.executor, media_root=extraction.media_root,
                                          cache_dir=cache_dir, lock=lock):
            if exc is not None:  # a lost worker (killed, node down)
                result = {"ok": False, "error": f"worker failed: {type(exc).__name__}: {exc}"}
            _add_file_result(build, writer, by_file[tasks[i][0]], result)


def _add_file_result(build: _Build, writer, todo: list[Row], result: dict[str, Any]) -> None:
    """Write the samples of one file's extraction (`_extract_file`); record its failures."""
    per = (result.get("seconds") or 0.0) / max(1, len(todo))
    for r in todo:
        rec = build.records[r.id]
        rec["seconds"] = round(per, 3)
        if not result["ok"]:
            build.fail(r, result["error"])
        else:
            sample = result["samples"].get(r.id)
            if sample is None or "error" in sample:
                build.fail(r, (sample or {}).get("error", "no sample returned"))
            else:
                writer.add(**build.sample_args(r, sample["sequences"], {**sample["meta"], "path": r.path}))
                rec["status"] = "added"
        build.advance(1, f"{rec['status']}: {r.id}")


def _map_files(jobs, *, executor, media_root: Path, cache_dir, lock: Path):
    """`_extract_file` for each job on the executor; the nodes are checked first (they read the
    media; the dataset is written here; the feature cache may be shared or a node's own)."""
    with open_executor(executor, workers_lock=workers_lock_path(lock)) as ex:
        ex.check_paths(readable=[media_root.resolve()])
        yield from ex.map(_extract_file, jobs)
