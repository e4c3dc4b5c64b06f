"""`mfsa-pipe analyze VIDEO` and `mfsa-pipe batch FOLDER`: reports and annotated videos.

Bad input (a missing path, a folder given to analyze, unusable media, an output folder that
cannot be written, a checkpoint that is unreadable or trained on other features) ends with a
clear message on stderr and exit code 2, never a traceback. `batch` exits 1 when any video
failed (each failure is in its summary).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mfsa_pipe.analysis.model_choice import setup_model
from mfsa_pipe.analysis.video import analyze
from mfsa_pipe.atomic import fit_name
from mfsa_pipe.analysis.batch import run_batch
from mfsa_pipe.commands.console import fail, plain_console, reported, styled
from mfsa_pipe.commands.native_logs import held_stderr, quiet_native_logs
from mfsa_pipe.devices import check_device
from mfsa_pipe.executors import ExecutorConfig


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("analyze")(analyze_command)
    app.command("batch")(batch_command)


def analyze_command(
    video: Path = typer.Argument(..., help="One video file (mp4, mov, mkv, avi, mpg, webm, flv ...)."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", "-c", help="Model checkpoint (model.ckpt from `mfsa-pipe train`); default: the shipped default model, if any."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: ./<video name>_analysis)."),
    device: str = typer.Option("auto", "--device", help="Torch device for the model: auto (CUDA when available), cpu, cuda, cuda:1 ..."),
    no_video: bool = typer.Option(False, "--no-video", help="Skip the annotated video (the report, plot and features are still written)."),
    no_model: bool = typer.Option(False, "--no-model", help="Extract and report the signals only; make no fused prediction."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Extraction cache (default: $MFSA_PIPE_CACHE or ~/.cache/mfsa-pipe)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the extraction cache."),
) -> None:
    """Analyse one video: report.json, <name>.annotated.mp4, timeline.png, features.npz."""
    quiet_native_logs()
    console = plain_console()
    out_dir = out if out is not None else Path.cwd() / fit_name(video.stem, "_analysis")
    with reported(on_interrupt="nothing half-written was kept; run the same command again"):
        try:
            with held_stderr(), console.status(styled(f"analysing {video.name}"), spinner="dots") as status:
                report = analyze(
                    video, checkpoint=checkpoint, out_dir=out_dir, device=device, render_video=not no_video,
                    no_model=no_model, cache_dir=False if no_cache else cache_dir,
                    progress=lambda stage: status.update(styled(f"{stage}: {video.name}")),
                )
        except OSError as e:  # e.g. the disk filled up while writing
            raise fail(f"{getattr(e, 'filename', None) or out_dir}: {e.strerror or e}") from None
    print_summary(console, report)


def batch_command(
    folder: Path = typer.Argument(..., help="Folder of videos (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: one sub-folder per video, mirroring the input tree, plus summary.csv/json."),
    pattern: Optional[str] = typer.Option(None, "--pattern", help="Glob for the files to take, e.g. '*.mp4' (default: common video extensions)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Videos analysed in parallel (processes; 1 = in this process)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Model checkpoint; default: the shipped default model, if any."),
    force: bool = typer.Option(False, "--force", help="Redo every video, even those finished by an earlier run."),
    no_video: bool = typer.Option(False, "--no-video", help="Skip the annotated videos."),
    no_model: bool = typer.Option(False, "--no-model", help="Signals only; no fused prediction."),
    device: str = typer.Option("auto", "--device", help="Torch device for the model (auto: CUDA when available)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Extraction cache (default: $MFSA_PIPE_CACHE or ~/.cache/mfsa-pipe)."),
    executor: str = typer.Option("local", "--executor", help="local (processes on this machine) or ray (one Ray task per video; pip install \"mfsa-pipe[ray]\")."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster: 'auto' joins a running one; default $RAY_ADDRESS, else a local instance started for this run."),
    cpus_per_task: float = typer.Option(1.0, "--cpus-per-task", help="Ray: CPUs declared per video (fractions allowed)."),
    gpus_per_task: float = typer.Option(0.0, "--gpus-per-task", help="Ray: GPUs declared per video, e.g. 0.25 to share a GPU among 4."),
) -> None:
    """Analyse every video or audio file under FOLDER; resumable (finished ones are skipped), exit 1 if any failed."""
    quiet_native_logs()
    console = plain_console()
    plan = ExecutorConfig(kind=executor, workers=workers, ray_address=ray_address,
                          cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
    with reported(on_interrupt=f"finished videos are kept in {out}; run the same command again to continue"), held_stderr():
        loaded = _checked_model(checkpoint, no_model=no_model, device=device)
        result = run_batch(
            folder, out_dir=out, pattern=pattern, workers=workers, force=force,
            checkpoint=loaded if loaded is not None else checkpoint,
            render_video=not no_video, no_model=no_model, device=device, cache_dir=cache_dir,
            show_progress=True, executor=plan,
        )
    _print_batch_counts(console, result, folder=folder, pattern=pattern)
    raise typer.Exit(result.exit_code)


def _checked_model(checkpoint: Optional[Path], *, no_model: bool, device: str):
    """batch's up-front refusals, before its output folder is made: an unusable device or
    checkpoint would otherwise fail every video. The loaded checkpoint (or None) to pass on."""
    check_device(device)
    model, _ = setup_model(checkpoint, no_model=no_model, config=None)
    if model.checkpoint is not None:
        model.checkpoint.build_model()  # weights that do not fit the model are refused here
    return model.checkpoint


def _print_batch_counts(console, result, *, folder: Path, pattern: Optional[str]) -> None:
    c = result.counts
    if result.notice:
        console.print(styled(("note:", "yellow"), f" {result.notice}"), highlight=False)
    total = sum(c.values())
    if total == 0:
        console.print(f"no videos found under {folder}" + (f" matching {pattern!r}" if pattern else ""), soft_wrap=True)
    console.print(
        styled(f"{total} videos: ", (f"{c['ok']} ok", "green"), f", {c['skipped']} skipped (already done), ",
               (f"{c['failed']} failed", "red"), f". Summary: {result.out_dir / 'summary.csv'}"),
        highlight=False, soft_wrap=True,
    )


MAX_ROWS = 30  # the summary's utterance table; report.json holds them all
ORDER = ("text", "audio", "vision")


def print_summary(console, report) -> None:
    """A short human summary: the input, what was found, the prediction per utterance, the files."""
    for line in _header_lines(report):
        console.print(line, highlight=False)
    console.print(_utterance_table(report))
    if len(report.utterances) > MAX_ROWS:
        console.print(f"... {len(report.utterances) - MAX_ROWS} more in report.json")
    if report.overall is not None:
        console.print(styled((f"overall ({report.model.name}):", "bold"), f" {_answer(report.overall)}"
                             + _sentiment_words(report.overall)), highlight=False)
    files = [v for v in report.outputs.values() if v]
    console.print(f"wrote {', '.join(files)} to {report.out_dir} in {report.timings_s.get('total', 0):.1f} s",
                  highlight=False, soft_wrap=True)


def _header_lines(report) -> list:
    i, s = report.input, report.summary
    res = f", {i.width}x{i.height} @ {i.fps:.2f} fps" if i.width and i.fps else ""
    oov = f" ({s['text'].oov_rate:.0%} without a vector)" if s["text"].oov_rate is not None else ""
    face = f"face in {s['vision'].face_coverage:.0%} of frames" if s["vision"].face_coverage is not None else "no video"
    lines = [styled((i.name, "bold"), f": {i.duration_s:.1f} s{res}"),
             f"{s['text'].words or 0} words{oov}, speech {(s['text'].speech_coverage or 0):.0%} of the time, {face}, "
             f"{len(report.utterances)} utterances"]
    if report.model is None:
        lines.append(styled(("no model:", "yellow"), f" {report.notice}"))
    return lines


def _utterance_table(report):
    """One row per utterance (the first MAX_ROWS); a column only where some utterance fills it."""
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None)
    columns = [(title, cell) for title, cell, shown in _columns(report) if shown]
    for title, _ in columns:
        table.add_column(title, **({"overflow": "fold", "max_width": 50} if title == "text" else
                                   {"justify": "right"} if title == "#" else {}))
    for u in report.utterances[:MAX_ROWS]:
        table.add_row(*(cell(u) for _, cell in columns))
    return table


def _columns(report) -> list[tuple]:
    """(title, cell(utterance) -> str, shown) of every column the table can have, in order."""
    shown = report.utterances[:MAX_ROWS]
    model = report.model
    return [
        ("#", lambda u: str(u.index), True),
        ("time (s)", lambda u: f"{u.start:.1f}-{u.end:.1f}", True),
        ("text", lambda u: u.text or "(no speech)", True),
        ("prediction" if model else "face emotion (estimate)", _prediction_cell, True),
        ("sentiment", _sentiment_cell,
         bool(model) and any(u.prediction and u.prediction.sentiment() for u in report.utterances)),
        ("weights T/A/V", _weights_cell, bool(model and model.has_modality_weights)),
        ("each alone (T/A/V)", _alone_cell, any(u.by_modality for u in shown)),
        ("not used (T/A/V)" if model else "absent (T/A/V)", _unused_cell,
         any(use.reason for u in shown for use in (u.modalities or {}).values())),
    ]


def _answer(p, *, brackets: bool = True) -> str:
    """A prediction's main answer: the top class with its probability ('happy (82%)', in the
    table 'happy 82%'), or the regression score."""
    if p.label and p.probabilities:
        share = f"{p.probabilities[p.label]:.0%}"
        return f"{p.label} ({share})" if brackets else f"{p.label} {share}"
    return f"{p.score:+.2f}"


def _sentiment_words(p) -> str:
    s = p.sentiment()
    return f", sentiment {s[0]} ({s[1]:+.2f})" if s else ""


def _prediction_cell(u) -> str:
    if u.prediction is not None:
        return _answer(u.prediction, brackets=False)
    if u.signals.emotions:  # no model: the facial extractor's own estimate
        top = max(u.signals.emotions, key=u.signals.emotions.get)
        return f"{top} {u.signals.emotions[top]:.0%}"
    return "-"


def _sentiment_cell(u) -> str:
    s = u.prediction.sentiment() if u.prediction else None
    return f"{s[0]} {s[1]:+.2f}" if s else "-"


def _weights_cell(u) -> str:
    w = u.modality_weights
    return " / ".join(f"{w[m]:.2f}" for m in ORDER) if w else "-"


def _alone_cell(u) -> str:
    each = u.by_modality or {}
    return " / ".join(str(each[m].main()) if m in each else "-" for m in ORDER)


def _unused_cell(u) -> str:
    return ", ".join(f"{m[0].upper()} {use.reason}" for m, use in (u.modalities or {}).items() if use.reason) or "-"
