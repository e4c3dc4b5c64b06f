"""`mfsa-pipe build-dataset`, `labels-from-cmu` and `labels-from-meld`: training sets from labelled media."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer

from extractors.config import ExtractionConfig
from mfsa_pipe.datasets.build import build_dataset
from mfsa_pipe.commands.console import fail, plain_console, reported, styled
from mfsa_pipe.executors import ExecutorConfig
from mfsa_pipe.datasets.label_adapters import (AdapterError, apply_cmu_folds, detect_format, meld_labels, mmsa_labels,
                                               mosei_labels, write_generic_csv)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("build-dataset")(build_dataset_command)
    app.command("labels-from-cmu")(labels_from_cmu_command)
    app.command("labels-from-meld")(labels_from_meld_command)


def build_dataset_command(
    labels: Path = typer.Argument(..., help="Labels CSV: path and/or text; label, or emotion and/or sentiment; optional modalities, start, end, split, speaker/group, id."),
    media_root: Optional[Path] = typer.Option(None, "--media-root", help="Folder the CSV's paths are relative to (default: the CSV's folder)."),
    out: Path = typer.Option(..., "--out", help="Dataset file to write (own HDF5 format); resumed if it exists."),
    workers: int = typer.Option(1, "--workers", min=1, help="Files extracted in parallel (processes)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Feature cache (default: OUT.cache beside the dataset)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not cache extracted features."),
    task: Optional[str] = typer.Option(None, "--task", help="regression|classification (default: inferred from the labels)."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated class order (classification)."),
    emotion_classes: Optional[str] = typer.Option(None, "--emotion-classes", help="Comma-separated classes of the emotion head, in order (default: the names in the CSV, sorted)."),
    sentiment_classes: Optional[str] = typer.Option(None, "--sentiment-classes", help="Comma-separated classes of the sentiment head, in order (default: the names in the CSV, sorted)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Extraction config JSON (default: the same defaults as analyze)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Build for this checkpoint ('default': the shipped one): its classes (heads) and its extraction config, so that `evaluate` takes the dataset as it is."),
    executor: str = typer.Option("local", "--executor", help="local (processes on this machine) or ray (one Ray task per file; pip install \"mfsa-pipe[ray]\")."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster: 'auto' joins a running one; default $RAY_ADDRESS, else a local instance started for this run."),
    cpus_per_task: float = typer.Option(1.0, "--cpus-per-task", help="Ray: CPUs declared per file (fractions allowed)."),
    gpus_per_task: float = typer.Option(0.0, "--gpus-per-task", help="Ray: GPUs declared per file, e.g. 0.25 to share a GPU among 4."),
) -> None:
    """Extract features for every clip of LABELS and write a training set (resumable; bad clips are reported and skipped)."""
    console = plain_console(stderr=True)
    cfg = _extraction_config(config)
    class_list = [c.strip() for c in classes.split(",")] if classes else None
    heads = {name: [c.strip() for c in value.split(",") if c.strip()]
             for name, value in (("emotion", emotion_classes), ("sentiment", sentiment_classes)) if value}
    if checkpoint is not None:
        if cfg is not None or task or class_list or heads:
            raise fail("--checkpoint takes the classes and the extraction config from the checkpoint: "
                       "leave out --config, --task, --classes and --emotion-/--sentiment-classes")
        task, class_list, heads, cfg = _as_checkpoint(checkpoint)
    media_root = media_root if media_root is not None else labels.parent
    plan = ExecutorConfig(kind=executor, workers=workers, ray_address=ray_address,
                          cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
    with reported(on_interrupt=f"{out} holds what was finished; run the same command again to continue"), \
            _progress_bar(console) as progress:
        report = build_dataset(
            labels, media_root=media_root, out=out, workers=workers, config=cfg, progress=progress,
            cache_dir=False if no_cache else cache_dir, task=task, classes=class_list, heads=heads or None,
            executor=plan,
        )
    _print_build_report(console, report)
    if report.failed:
        raise typer.Exit(1)


def _as_checkpoint(name: str) -> tuple[str, Optional[list[str]], dict[str, list[str]], ExtractionConfig]:
    """(task, classes, heads, extraction config) of checkpoint `name` (a path or `default`)."""
    from mfsa_pipe.analysis.model_choice import config_for
    from mfsa_pipe.checkpoint import CheckpointError, load_checkpoint
    from mfsa_pipe.training.evaluation import resolve_checkpoint

    try:
        ckpt = load_checkpoint(resolve_checkpoint(name))
    except (CheckpointError, OSError) as exc:
        raise fail(f"--checkpoint {name}: {exc}") from None
    spec = ckpt.label_spec
    if spec.task not in ("classification", "multihead", "regression"):
        raise fail(f"--checkpoint {name}: a {spec.task} checkpoint; build-dataset writes classification, "
                   "two-head or regression labels")
    heads = {h.name: list(h.classes) for h in spec.heads} if spec.task == "multihead" else {}
    return spec.task, list(spec.classes) or None, heads, config_for(ckpt, None)


def _extraction_config(path: Optional[Path]) -> Optional[ExtractionConfig]:
    """--config's ExtractionConfig (None: the defaults)."""
    try:
        return ExtractionConfig.from_dict(json.loads(path.read_text())) if path else None
    except (OSError, ValueError, TypeError) as exc:  # unreadable file, bad JSON, unknown or invalid options
        raise fail(f"--config {path}: {exc}") from None


@contextlib.contextmanager
def _progress_bar(console) -> Iterator[Callable[[int, int, str], None]]:
    """A rich progress bar on `console`; yields build_dataset's progress callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]build-dataset"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.description}", markup=False), console=console,
    ) as bar:
        task_id = bar.add_task("", total=None)

        def progress(done: int, total: int, message: str) -> None:
            bar.update(task_id, completed=done, total=total, description=message[-60:])

        yield progress


def _print_build_report(console, report) -> None:
    console.print(
        f"{report.out}: {report.added} added, {report.already_present} already present, "
        f"{report.failed} failed of {report.total} ({report.seconds:.0f} s); splits {report.split_counts}; "
        f"labels {report.label_spec.to_dict()}"
    )
    if report.absent:
        console.print("stored empty (presence rule): " + "; ".join(
            f"{m}: " + ", ".join(f"{reason} {n}" for reason, n in reasons.items()) for m, reasons in report.absent.items()))
    for rec in report.failures[:20]:
        console.print(styled("  ", ("failed", "red"), f" {rec['id']}: {rec['error']}"))
    console.print(f"report: {report.report_json}")


def labels_from_meld_command(
    meld_csv: Path = typer.Argument(..., help="A MELD split CSV (train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv)."),
    out: Path = typer.Option(..., "--out", help="Labels CSV to write (input of build-dataset)."),
    split: str = typer.Option("test", "--split", help="The split its rows go to: train, valid or test."),
) -> None:
    """Convert a MELD CSV into build-dataset's labels CSV: text-only rows, the default model's emotion names."""
    console = plain_console(stderr=True)
    with reported(on_interrupt=f"nothing was written to {out}"):
        result = meld_labels(meld_csv, split=split)
    write_generic_csv(result, out)
    console.print(f"{out}: {len(result.rows)} rows, splits {result.counts()}; " + "; ".join(result.notes))


def labels_from_cmu_command(
    labels: Path = typer.Argument(..., help="CMU_MOSEI_Labels.csv (s3prl), an MMSA label.csv, or a generic labels CSV."),
    out: Path = typer.Option(..., "--out", help="Generic labels CSV to write (input of build-dataset)."),
    folds: Optional[Path] = typer.Option(None, "--folds", help="cmu_std_folds.json: take the split from the CMU standard folds."),
    dataset: str = typer.Option("mosei", "--dataset", help="mosi|mosei: which standard folds."),
    target: str = typer.Option("sentiment", "--target", help="MOSEI CSV: sentiment (label7 in [-3,3], regression) | binary | ternary | emotion."),
    layout: str = typer.Option("full", "--layout", help="MOSEI CSV: full (videos + start/end) | segmented (one file per segment)."),
    path_template: Optional[str] = typer.Option(None, "--path-template", help="File naming, e.g. '{file}.mp4' (MOSEI) or 'Raw/{video_id}/{clip_id}.mp4' (MMSA)."),
) -> None:
    """Convert CMU-MOSI/MOSEI label layouts (and the CMU standard folds) into build-dataset's labels CSV."""
    console = plain_console(stderr=True)
    with reported(on_interrupt=f"nothing was written to {out}"):
        fmt = detect_format(labels)
        if fmt == "mosei":
            result = mosei_labels(labels, target=target, layout=layout, path_template=path_template, folds_json=folds)
        elif fmt == "mmsa":
            kw = {"path_template": path_template} if path_template else {}
            result = mmsa_labels(labels, folds_json=folds, dataset=dataset, **kw)
        else:
            if folds is None:
                raise AdapterError("a generic labels CSV needs --folds (there is nothing else to convert)")
            result = apply_cmu_folds(labels, folds_json=folds, dataset=dataset)
    write_generic_csv(result, out)
    console.print(f"{out}: {len(result.rows)} rows ({fmt} layout), splits {result.counts()}; " + "; ".join(result.notes))
