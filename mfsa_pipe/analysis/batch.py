"""`batch`: analyse every video under a folder, resumably.

    result = run_batch("videos/", out_dir="analysis/", workers=2)
    result.exit_code  # 1 when any video failed

One output folder per video mirrors the input tree (videos/a/b.mp4 -> analysis/a/b/). A video is
finished when its report.json exists (analyze writes it last, atomically) and records the same
input hash and run key (extraction config, checkpoint, video option); finished videos are
skipped, so re-running the same command after an interrupt, even kill -9, redoes only what
was not finished. `DIR/summary.csv` and `DIR/summary.json` are rewritten atomically after each
video (for very large batches, as often as keeps the rewriting under ~10 % of the time). A failing video is recorded (status "failed", the error message) and the rest continue.

Files under the folder that are not taken (hidden, broken links, link loops, other extensions)
are listed with the reason in summary.json ("ignored") and in the terminal. Audio files (.wav,
.flac, .mp3, .m4a, .ogg) are taken as well as videos. One run at a time per output folder
(`mfsa_pipe.output_lock`); the work runs in this process, in local worker processes that die
with it, or on Ray (`mfsa_pipe.executors`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from extractors.config import ExtractionConfig
from extractors.errors import UserError
from extractors.hashing import file_sha256
from mfsa_pipe.analysis.report import REPORT_NAME, Prediction, ReportValidationError, read_report, validate_report
from mfsa_pipe.analysis.checks import AnalyzeError, prepare_out_dir
from mfsa_pipe.analysis.model_choice import checkpoint_info, model_notice, resolve_model, setup_model
from mfsa_pipe.analysis.video import analyze, run_key
from mfsa_pipe.atomic import write_json, write_text
from mfsa_pipe.executors import ExecutorConfig, TaskLostError, open_executor
from mfsa_pipe.output_lock import BATCH_LOCK_NAME, output_lock, workers_lock_path

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".mts", ".3gp", ".ogv",
})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".m4a", ".ogg"})  # analyze takes audio-only files too
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS
SUMMARY_COLUMNS = ("path", "status", "duration_s", "prediction", "sentiment", "sentiment_score", "error")


@dataclass
class BatchRow:
    path: str  # relative to the input folder, POSIX separators
    status: str  # "ok" | "failed" | "skipped" (finished by an earlier run)
    duration_s: float | None = None
    prediction: str | float | None = None  # main label (multihead: the emotion) or score; None without a model
    sentiment: str | None = None  # the overall sentiment label; None without a sentiment head
    sentiment_score: float | None = None  # its score, p(positive) - p(negative) in [-1, 1]
    error: str | None = None
    out_dir: str | None = field(default=None, repr=False)  # relative to the batch's out folder
    seconds: float = field(default=0.0, repr=False)  # wall time spent on it in this run


@dataclass(frozen=True, order=True)
class Ignored:
    """A file under the input folder that batch did not take, and why."""

    path: str  # relative to the input folder, POSIX separators
    reason: str


@dataclass
class BatchResult:
    rows: list[BatchRow]
    out_dir: Path
    notice: str | None = None  # e.g. no model was used
    ignored: list[Ignored] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return _counts(self.rows)

    @property
    def exit_code(self) -> int:
        return 1 if any(r.status == "failed" for r in self.rows) else 0


def _counts(rows: list[BatchRow]) -> dict[str, int]:
    out = {"ok": 0, "failed": 0, "skipped": 0}
    for r in rows:
        out[r.status] = out.get(r.status, 0) + 1
    return out


def find_videos(folder: Path, *, pattern: str | None = None, exclude: Path | None = None) -> list[Path]:
    """The media files `batch` takes under `folder` (see `scan_folder`)."""
    return scan_folder(folder, pattern=pattern, exclude=exclude)[0]


def scan_folder(
    folder: Path, *, pattern: str | None = None, exclude: Path | None = None
) -> tuple[list[Path], list[Ignored]]:
    """Files under `folder` (recursive) matching `pattern`, or with a video or audio extension,
    and what was left out and why: hidden files and folders (temporary and partial files among
    them), broken links and link loops, links to folders (not followed), other files. The
    folder `exclude` (the output) is left out silently."""
    found: list[Path] = []
    ignored: list[Ignored] = []

    def ignore(path: Path, reason: str) -> None:
        ignored.append(Ignored(path.relative_to(folder).as_posix(), reason))

    for root, dirs, files in os.walk(folder):
        base = Path(root)
        for d in sorted(dirs):
            p = base / d
            if exclude is not None and p == exclude:
                dirs.remove(d)
            elif d.startswith("."):
                ignore(p, "hidden folder")
                dirs.remove(d)
            elif p.is_symlink():
                ignore(p, "link to a folder (not followed)")
        for name in files:
            p = base / name
            reason = _why_not_taken(p, pattern=pattern, rel=p.relative_to(folder))
            if reason is None:
                found.append(p)
            else:
                ignore(p, reason)
    return sorted(found), sorted(ignored)


def _why_not_taken(path: Path, *, pattern: str | None, rel: Path) -> str | None:
    if path.name.startswith("."):
        return "hidden file"
    if pattern is not None and not rel.match(pattern):
        return f"does not match --pattern {pattern}"
    if pattern is None and path.suffix.lower() not in MEDIA_EXTENSIONS:
        return "not a video or audio file (by its extension)"
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "link loop (the link points to itself)"
        if path.is_symlink():
            return "broken link (its target is missing)"
        return f"cannot be read ({e.strerror or e})"
    if not path.is_file():
        return "not a regular file"
    return None


def output_dirs(videos: list[Path], *, folder: Path, out_dir: Path) -> dict[Path, Path]:
    """videos/a/b.mp4 -> out/a/b; two videos with one stem in one folder keep their extension."""
    stems: dict[tuple[Path, str], int] = {}
    for v in videos:
        key = (v.parent, v.stem)
        stems[key] = stems.get(key, 0) + 1
    result = {}
    for v in videos:
        rel = v.relative_to(folder)
        name = v.stem if stems[(v.parent, v.stem)] == 1 else f"{v.stem}_{v.suffix.lstrip('.').lower()}"
        result[v] = out_dir / rel.parent / name
    return result


def finished_report(out: Path, *, sha256: str, key: str) -> dict[str, Any] | None:
    """The report of a finished matching run in `out` (valid against the schema), else None."""
    data = read_report(out / REPORT_NAME)
    if not data:
        return None
    try:
        validate_report(data)
    except ReportValidationError:
        return None
    if data.get("input", {}).get("sha256") != sha256 or data.get("run", {}).get("key") != key:
        return None
    outputs = data.get("outputs") or {}
    # the report is written last, but check that the files it names are really there
    for name in outputs.values():
        if name and not (out / name).is_file():
            return None
    return data


def _clear_partial(out: Path) -> None:
    """Remove what an interrupted run left behind: temp files and a stale report."""
    if not out.is_dir():
        return
    for p in out.iterdir():
        if p.name.startswith(".") and ".partial" in p.name and p.is_file():
            p.unlink(missing_ok=True)

    (out / REPORT_NAME).unlink(missing_ok=True)


def _set_sentiment(row: BatchRow, sentiment: tuple[str, float] | None) -> BatchRow:
    if sentiment is not None:
        row.sentiment, row.sentiment_score = sentiment[0], _round(sentiment[1])
    return row


@dataclass
class _Job:
    video: str
    rel: str
    out: str
    checkpoint: Any  # a path for worker processes, the loaded Checkpoint in-process
    no_model: bool
    render_video: bool
    device: str
    config: dict[str, Any]
    cache_dir: Any


_CHECKPOINTS: dict[str, Any] = {}  # per worker process: each checkpoint file is loaded once


def _loaded_checkpoint(checkpoint: Any) -> Any:
    if not isinstance(checkpoint, str):
        return checkpoint
    if checkpoint not in _CHECKPOINTS:
        _CHECKPOINTS[checkpoint] = resolve_model(checkpoint, no_model=False).checkpoint
    return _CHECKPOINTS[checkpoint]


def _run_job(job: _Job) -> BatchRow:
    """Analyse one video; any failure becomes a 'failed' row, never an exception."""
    started = time.perf_counter()
    row = BatchRow(path=job.rel, status="failed", out_dir=job.out)
    try:
        _clear_partial(Path(job.out))
        report = analyze(
            job.video, checkpoint=_loaded_checkpoint(job.checkpoint), out_dir=job.out, device=job.device,
            render_video=job.render_video, no_model=job.no_model,
            config=ExtractionConfig.from_dict(job.config), cache_dir=job.cache_dir,
        )
        row.status = "ok"
        row.duration_s = round(report.input.duration_s, 3)
        row.prediction = _round(report.prediction_main)
        _set_sentiment(row, report.overall.sentiment() if report.overall else None)
    except Exception as e:  # noqa: BLE001 - one bad video must not stop the batch
        row.error = user_message(e)
    row.seconds = time.perf_counter() - started
    return row


def user_message(error: BaseException) -> str:
    """One line for a summary cell: user-facing errors as they are, others with their type."""
    known = (UserError, TaskLostError)
    text = str(error).strip() or type(error).__name__
    text = " ".join(text.split())
    return text if isinstance(error, known) else f"{type(error).__name__}: {text}"


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def write_summary(out_dir: Path, rows: list[BatchRow], *, folder: Path, notice: str | None,
                  ignored: list[Ignored] = ()) -> None:
    rows = sorted(rows, key=lambda r: r.path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if getattr(r, k) is None else getattr(r, k)) for k in SUMMARY_COLUMNS})
    write_text(out_dir / "summary.csv", buf.getvalue())
    write_json(out_dir / "summary.json", {
        "folder": str(folder),
        "out_dir": str(out_dir),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "notice": notice,
        "counts": _counts(rows),
        "videos": [{**{k: getattr(r, k) for k in SUMMARY_COLUMNS}, "output": r.out_dir} for r in rows],
        "ignored": [{"path": i.path, "reason": i.reason} for i in ignored],
    })


def run_batch(
    folder: str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    pattern: str | None = None,
    workers: int = 1,
    checkpoint: str | os.PathLike | None = None,
    force: bool = False,
    render_video: bool = True,
    no_model: bool = False,
    device: str = "auto",
    config: Any | None = None,
    cache_dir: str | os.PathLike | bool | None = None,
    show_progress: bool = False,
    on_row: Callable[[BatchRow], None] | None = None,
    executor: Any | None = None,
) -> BatchResult:
    """Analyse every video under `folder` into `out_dir` (see the module docstring).

    `executor`: an `ExecutorConfig` (default: local, `workers` processes). Raises AnalyzeError
    for a missing folder or an unwritable out folder, OutputBusyError when another run holds
    `out_dir`, ExecutorError for an unusable executor, and the checkpoint errors (unreadable,
    feature spec mismatch) before any video is touched.
    """
    folder_p = Path(folder).expanduser()
    if not folder_p.exists():
        raise AnalyzeError(f"{folder_p}: no such folder; check the path")
    if not folder_p.is_dir():
        raise AnalyzeError(f"{folder_p}: not a folder; use `mfsa-pipe analyze` for one video")
    if workers < 1:
        raise AnalyzeError(f"--workers must be >= 1, got {workers}")
    executor = executor or ExecutorConfig(workers=workers)
    executor.validate()
    folder_p = folder_p.resolve()
    out = prepare_out_dir(out_dir)
    lock = out / BATCH_LOCK_NAME
    with output_lock(lock, what="batch", option="--out"):
        plan = _plan(folder_p, out, pattern=pattern, checkpoint=checkpoint, force=force, render_video=render_video,
                     no_model=no_model, device=device, config=config, cache_dir=cache_dir)
        in_process = not plan.todo or (executor.kind == "local" and (executor.workers == 1 or len(plan.todo) <= 1))
        with (contextlib.nullcontext() if in_process else open_executor(executor, workers_lock=workers_lock_path(lock))) as ex:
            if ex is not None:
                ex.check_paths(shared=[out], readable=[folder_p])
            _report_ignored(plan.ignored, show=show_progress)
            _execute(plan, ex, out=out, folder=folder_p, show_progress=show_progress, on_row=on_row)
    return BatchResult(rows=sorted(plan.rows.values(), key=lambda r: r.path), out_dir=out, notice=plan.notice,
                       ignored=plan.ignored)


@dataclass
class _Plan:
    rows: dict[str, BatchRow]  # finished by an earlier run ("skipped"); then every result
    todo: list[_Job]
    notice: str | None
    ignored: list[Ignored]
    model: Any


def _plan(folder: Path, out: Path, *, pattern, checkpoint, force, render_video, no_model, device, config,
          cache_dir) -> _Plan:
    """Load the model, find the videos, and tell the finished ones (skipped) from the rest."""
    model, config = setup_model(checkpoint, no_model=no_model, config=config)
    config_dict = config.to_dict()
    ckpt_sha = checkpoint_info(model).sha256 if model.checkpoint is not None else None
    videos, ignored = scan_folder(folder, pattern=pattern, exclude=out)
    outs = output_dirs(videos, folder=folder, out_dir=out)
    plan = _Plan(rows={}, todo=[], notice=model_notice(model), ignored=ignored, model=model)
    for v in videos:
        rel = v.relative_to(folder).as_posix()
        vout = outs[v]
        job = _Job(
            video=str(v), rel=rel, out=str(vout),
            checkpoint=str(model.path) if model.checkpoint is not None else None,
            no_model=model.checkpoint is None, render_video=render_video, device=device,
            config=config_dict, cache_dir=cache_dir,
        )
        # hash only where a report could match: analyze hashes every video it extracts anyway
        if not force and (vout / REPORT_NAME).is_file():
            try:
                sha = file_sha256(v)
                key = run_key(sha256=sha, config=config_dict, checkpoint_sha256=ckpt_sha, render_video=render_video)
                done = finished_report(vout, sha256=sha, key=key)
            except OSError:
                done = None  # unreadable: let analyze report it as a failure
            if done is not None:
                overall = Prediction.from_dict(done["overall"]) if done["overall"] else None
                plan.rows[rel] = _set_sentiment(BatchRow(
                    path=rel, status="skipped", duration_s=done["input"]["duration_s"],
                    prediction=_round(overall.main() if overall else None), out_dir=str(vout.relative_to(out)),
                ), overall.sentiment() if overall else None)
                continue
        plan.todo.append(job)
    return plan


def _execute(plan: _Plan, ex: Any, *, out: Path, folder: Path, show_progress: bool,
             on_row: Callable[[BatchRow], None] | None) -> None:
    """Run the plan's jobs in this process (ex None) or on the executor; record each row as it
    arrives (the summary rewritten atomically, throttled for very large batches)."""
    rows = plan.rows
    summary = _Throttled(lambda: write_summary(out, list(rows.values()), folder=folder, notice=plan.notice,
                                               ignored=plan.ignored))

    def record(row: BatchRow) -> None:
        row.out_dir = str(Path(row.out_dir).relative_to(out)) if row.out_dir and Path(row.out_dir).is_absolute() else row.out_dir
        rows[row.path] = row
        summary()
        if on_row:
            on_row(row)

    for r in rows.values():
        if on_row:
            on_row(r)
    summary()
    try:
        _run_todo(plan, ex, record=record, show_progress=show_progress)
    finally:
        summary(final=True)


class _Throttled:
    """Call `write` now, unless the last call was too recent: the time between writes is at least
    9x the last write's, so writing takes at most ~10 % of the driver's time (a 100,000-row
    summary took 74 s to write on a busy 2-core machine; a few rows take milliseconds, and
    are then written after every video). `final=True` always writes."""

    def __init__(self, write: Callable[[], None]) -> None:
        self.write, self.next_at = write, 0.0

    def __call__(self, *, final: bool = False) -> None:
        if time.monotonic() < self.next_at and not final:
            return
        started = time.monotonic()
        self.write()
        self.next_at = time.monotonic() + 9 * (time.monotonic() - started)


def _run_todo(plan: _Plan, ex: Any, *, record: Callable[[BatchRow], None], show_progress: bool) -> None:
    todo, rows = plan.todo, plan.rows
    sizes = {j.rel: max(1, _size(j.video)) for j in todo}
    with _progress(show_progress, total=sum(sizes.values()), count=len(todo), skipped=len(rows)) as bar:
        if ex is None:
            for job in todo:
                if plan.model.checkpoint is not None:
                    job.checkpoint = plan.model.checkpoint  # loaded once, reused for every video
                bar.start(job.rel)
                row = _run_job(job)
                record(row)
                bar.advance(sizes[job.rel], row)
            return
        bar.start(f"{len(todo)} videos on {ex.describe()}")
        for i, row, error in ex.map(_run_job, [(job,) for job in todo]):
            job = todo[i]
            if error is not None:  # a lost worker (killed, node down) fails its video only
                row = BatchRow(path=job.rel, status="failed", error=user_message(error), out_dir=job.out)
            record(row)
            bar.advance(sizes[job.rel], row)


def _report_ignored(ignored: list[Ignored], *, show: bool, examples: int = 3) -> None:
    """In the terminal: what was not taken, one line per reason with a few examples."""
    if not show or not ignored:
        return
    from rich.console import Console
    from rich.text import Text

    by_reason: dict[str, list[str]] = {}
    for i in ignored:
        by_reason.setdefault(i.reason, []).append(i.path)
    console = Console(markup=False, emoji=False)  # paths are the user's text
    for reason, paths in sorted(by_reason.items()):
        more = f" and {len(paths) - examples} more" if len(paths) > examples else ""
        console.print(Text(f"not taken ({reason}): {len(paths)}: " + ", ".join(paths[:examples]) + more, style="yellow"),
                      soft_wrap=True)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start(self, name: str) -> None:
        pass

    def advance(self, amount: int, row: BatchRow) -> None:
        pass


class _RichBar(_NoBar):
    """One overall bar; its ETA is weighted by file size (a proxy for each video's work)."""

    def __init__(self, *, total: int, count: int, skipped: int) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.count, self.done, self.failed = count, 0, 0
        self.progress = Progress(
            TextColumn("[bold]{task.fields[counter]}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.description}", markup=False),
            transient=False,
        )
        self.skipped = skipped
        self.task = self.progress.add_task("", total=max(total, 1), counter=self._counter())

    def _counter(self) -> str:
        extra = f", {self.skipped} skipped" if self.skipped else ""
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.done}/{self.count} videos{extra}{failed}"

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start(self, name: str) -> None:
        self.progress.update(self.task, description=name)

    def advance(self, amount: int, row: BatchRow) -> None:
        self.done += 1
        self.failed += row.status == "failed"
        self.progress.update(self.task, advance=amount, counter=self._counter())
        if row.status == "failed":
            from rich.text import Text

            self.progress.console.print(Text.assemble(("failed", "red"), f" {row.path}: {row.error}"), highlight=False)


def _progress(show: bool, *, total: int, count: int, skipped: int):
    return _RichBar(total=total, count=count, skipped=skipped) if show else _NoBar()


__all__ = ["AUDIO_EXTENSIONS", "BatchResult", "BatchRow", "Ignored", "MEDIA_EXTENSIONS", "VIDEO_EXTENSIONS", "find_videos",
           "output_dirs", "run_batch", "scan_folder", "write_summary"]
