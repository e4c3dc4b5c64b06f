"""`mfsa-pipe train`, `mfsa-pipe evaluate`, `mfsa-pipe make-synthetic`. torch is imported only
when a command runs, so that `mfsa-pipe --help` stays fast."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from mfsa_pipe.commands.console import fail, plain_console, reported
from mfsa_pipe.datasets.base import LabelSpec
from mfsa_pipe.devices import check_device
from mfsa_pipe.training.evaluation import evaluate
from mfsa_pipe.json_values import json_safe
from mfsa_pipe.training.metrics import flatten, headline, is_percent
from mfsa_pipe.training.synthetic import SyntheticConfig, write_synthetic
from mfsa_pipe.training import parse_overrides, train

PICKLE_WARNING = (
    "Pickle datasets (MulT, MMSA) are loaded with Python's pickle, which runs code stored in the "
    "file: only open pickles from a source you trust."
)


# the registry's names, written out so that `--help` does not import torch (a test keeps them equal)
MODEL_NAMES = ("mfsa", "mult", "pmr", "mica", "raven", "mctn", "ef_lstm", "lf_lstm")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("train", help="Train a model on a dataset (MulT/MMSA pickle, .csd folder or mfsa-pipe HDF5; "
                "the format is detected). Writes OUT/model.ckpt (best epoch), OUT/log.jsonl, OUT/last.ckpt "
                "(rerun the same command to resume). " + PICKLE_WARNING)(train_command)
    app.command("evaluate", help="Score checkpoints on a dataset split; several checkpoints (seeds) give "
                "mean ± std. " + PICKLE_WARNING)(evaluate_command)
    app.command("ensemble", help="Combine trained checkpoints of one model and config (e.g. seeds; each keeps "
                "its own fields fitted after training, such as MFSA's text_logit_bias) into one checkpoint that "
                "averages their probabilities; --calibrate fits its temperatures on a dataset split.")(ensemble_command)
    app.command("calibrate", help="Fit temperature scaling on a dataset split (one temperature per head; "
                "where the split has sentences alone and other samples, one per group) and write the calibrated "
                "checkpoint. " + PICKLE_WARNING)(calibrate_command)
    app.command("fit-text-bias", help="Fit MFSA's decision bias for utterances with words (text_logit_bias): "
                "per --head, the per-class bias that maximises weighted F1 on the --split samples with words, times "
                "--scale; then refit the temperatures on --calibrate-split. Writes a new checkpoint. "
                + PICKLE_WARNING)(fit_text_bias_command)
    app.command("make-synthetic", help="Write the asynchronous-fusion task (MulT pickle format): the label "
                "needs events from all three modalities at unrelated times. See docs/datasets.md.")(make_synthetic_command)


def train_command(
    model: str = typer.Option("mfsa", "--model", help="One of: " + ", ".join(MODEL_NAMES) + "."),
    dataset: Path = typer.Option(..., "--dataset", help="Dataset path (file or .csd folder)."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Published settings for mosi, mosei or iemocap. MFSA: its paper's "
                                         "section 4.2, model and protocol (Adam, a fixed 100/100/60 epochs, the last epoch "
                                         "kept, no LR schedule, no clipping, no early stopping, raw features); MulT: its "
                                         "Table 5 model settings, trained with our recipe."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu or cuda."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    lr: Optional[float] = typer.Option(None, "--lr"),
    patience: Optional[int] = typer.Option(None, "--patience", min=1, help="Epochs without a better validation loss before "
                                           "stopping (default 10; none with an MFSA --preset)."),
    selection: Optional[str] = typer.Option(None, "--selection", help="model.ckpt: 'best' (lowest validation task "
                                            "loss; the default) or 'last' (the final epoch; the default with an MFSA --preset)."),
    set_: List[str] = typer.Option([], "--set", help="Model config override key=value (repeatable), e.g. --set use_wal=false."),
    modalities: Optional[str] = typer.Option(None, "--modalities", help="Comma-separated subset, e.g. text,audio (others fed empty)."),
    amp: str = typer.Option("auto", "--amp", help="CUDA mixed precision: auto, bf16, fp16 or off."),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start over even if OUT holds an interrupted run."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", min=0.0, help="Adam weight decay."),
    augment_crop: float = typer.Option(0.0, "--augment-crop", min=0.0, max=0.99,
                                       help="Training augmentation: random temporal crop cutting away up to this fraction of each clip (0 = off)."),
    augment_noise: float = typer.Option(0.0, "--augment-noise", min=0.0,
                                        help="Training augmentation: std of Gaussian noise on the normalised features (0 = off)."),
    modality_dropout: float = typer.Option(0.0, "--modality-dropout", min=0.0, max=1.0,
                                           help="Training augmentation: probability that a sample is fed a random non-empty "
                                                "proper subset of its present modalities (0 = off)."),
    column_dropout: float = typer.Option(0.0, "--column-dropout", min=0.0, max=1.0,
                                         help="Training augmentation: probability that a sample loses one --column-group "
                                              "(set to the training mean on every row; 0 = off)."),
    column_group: List[str] = typer.Option([], "--column-group",
                                           help="modality:prefix, the columns whose names start with prefix "
                                                "(repeatable), e.g. --column-group vision:au --column-group vision:emo_."),
    bucket_batches: bool = typer.Option(False, "--bucket-batches",
                                        help="Batch samples of similar length and modality pattern together "
                                             "(faster on mixes of sentences and clips; seeded, resumable)."),
    calibrate: bool = typer.Option(False, "--calibrate",
                                   help="After training, fit temperature scaling on the valid split (classification "
                                        "and multihead) and store it in model.ckpt."),
) -> None:
    with reported(on_interrupt=f"rerun the same command to resume from {out / 'last.ckpt'}"), _path_errors():
        check_device(device)  # before the dataset is read
        overrides = parse_overrides(set_)  # --set's model settings are validated (TrainingError) with the data
        if threads:
            import torch

            torch.set_num_threads(threads)
        result = train(
            model_name=model, dataset=dataset, out_dir=out, preset=preset,
            overrides=overrides, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
            device=device, patience=patience, resume=not no_resume, progress=not quiet, amp=amp,
            modalities=[m.strip() for m in modalities.split(",")] if modalities else None, num_workers=workers,
            weight_decay=weight_decay, augment_crop=augment_crop, augment_noise=augment_noise,
            modality_dropout=modality_dropout, column_dropout=column_dropout, column_groups=column_group,
            bucket_batches=bucket_batches, calibrate=calibrate,
            selection=selection,
        )
    if quiet and os.environ.get("RANK", "0") == "0":  # under torchrun: once
        typer.echo(f"best epoch {result.best_epoch}; checkpoint {result.checkpoint}")


def evaluate_command(
    checkpoints: List[str] = typer.Argument(..., help="One or more model.ckpt files; 'default' = the shipped default model."),
    dataset: Path = typer.Option(..., "--dataset", help="Dataset path (file or .csd folder)."),
    split: str = typer.Option("test", "--split", help="train, valid or test."),
    device: str = typer.Option("auto", "--device"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (nothing else)."),
) -> None:
    with reported(on_interrupt="nothing was written"), _path_errors():
        result = evaluate(list(checkpoints), dataset=dataset, split=split, device=device, batch_size=batch_size)
    if as_json:
        sys.stdout.write(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
        return
    _print_table(result)


def ensemble_command(
    checkpoints: List[str] = typer.Argument(..., help="Two or more model.ckpt files; 'default' = the shipped default model."),
    out: Path = typer.Option(..., "--out", help="The ensemble checkpoint to write (.ckpt)."),
    calibrate_on: Optional[Path] = typer.Option(None, "--calibrate", help="Dataset whose --split fits one temperature "
                                                "per head (classification and multihead)."),
    split: str = typer.Option("valid", "--split", help="The --calibrate split."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    from mfsa_pipe.checkpoint import load_checkpoint, save_checkpoint  # lazy: torch
    from mfsa_pipe.training.ensembling import ensemble_checkpoints
    from mfsa_pipe.training.evaluation import calibrate, resolve_checkpoint

    with reported(on_interrupt=f"nothing was written to {out}"), _path_errors():
        check_device(device)
        combined = ensemble_checkpoints([load_checkpoint(resolve_checkpoint(c)) for c in checkpoints])
        if calibrate_on is not None:
            combined = calibrate(combined, calibrate_on, split, device=device)
        save_checkpoint(combined, out)
    calibrated = f", calibrated on {calibrate_on} [{split}]" if calibrate_on is not None else " (not calibrated)"
    plain_console().print(f"ensemble of {len(checkpoints)} checkpoints -> {out}{calibrated}")


def calibrate_command(
    checkpoint: str = typer.Argument(..., help="A model.ckpt (classification or multihead); 'default' = the shipped one."),
    dataset: Path = typer.Option(..., "--dataset", help="Dataset path whose --split fits the temperatures."),
    out: Path = typer.Option(..., "--out", help="The calibrated checkpoint to write (.ckpt)."),
    split: str = typer.Option("valid", "--split"),
    by_group: bool = typer.Option(True, "--by-group/--one-temperature",
                                  help="Also one temperature per group (sentences alone / the rest) where the split has both."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    from mfsa_pipe.checkpoint import save_checkpoint  # lazy: torch
    from mfsa_pipe.training.evaluation import calibrate

    with _writing_checkpoint(out, device):
        calibrated = calibrate(checkpoint, dataset, split, device=device, by_group=by_group)
        save_checkpoint(calibrated, out)
    cal = calibrated.metrics["calibration"]
    lines = []
    for head, temperature in calibrated.calibration["temperature"].items():
        groups = {g: t[head] for g, t in (calibrated.calibration.get("temperature_by_group") or {}).items()}
        lines.append(f"{head}: T {temperature:.3f}" + "".join(f", {g} {t:.3f}" for g, t in groups.items())
                     + f"; ECE {cal[head]['ece_before']:.3f} -> {cal[head]['ece_after']:.3f}")
    plain_console().print(f"{checkpoint} -> {out} (calibrated on {dataset} [{split}])\n" + "\n".join(lines))


def fit_text_bias_command(
    checkpoint: str = typer.Argument(..., help="An MFSA model.ckpt; 'default' = the shipped default model."),
    dataset: Path = typer.Option(..., "--dataset", help="Dataset path whose --split sentences fit the bias."),
    out: Path = typer.Option(..., "--out", help="The checkpoint to write (.ckpt)."),
    heads: List[str] = typer.Option(..., "--head", help="A head to fit (repeat for several; single-head "
                                    "checkpoints: classification)."),
    split: str = typer.Option("train", "--split"),
    scale: float = typer.Option(1.0, "--scale", min=0.0, help="Shrinks the fitted bias towards none (0 < scale)."),
    calibrate_split: Optional[str] = typer.Option("valid", "--calibrate-split",
                                                  help="Split of --dataset that refits the temperatures ('' = keep)."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    from mfsa_pipe.checkpoint import save_checkpoint  # lazy: torch
    from mfsa_pipe.training.evaluation import calibrate, fit_text_logit_bias

    with _writing_checkpoint(out, device):
        fitted = fit_text_logit_bias(checkpoint, dataset, split, heads=heads, scale=scale, device=device)
        if calibrate_split:
            fitted = calibrate(fitted, dataset, calibrate_split, device=device)
        save_checkpoint(fitted, out)
    report = fitted.metrics["text_logit_bias"]
    lines = [f"{h}: weighted F1 on {report[h]['samples']} samples {report[h]['weighted_f1_before']:.3f} -> "
             f"{report[h]['weighted_f1_after']:.3f}, bias {report[h]['bias']}" for h in heads]
    plain_console().print(f"{checkpoint} -> {out} (text_logit_bias fitted on {dataset} [{split}], scale {scale}"
                          + (f"; temperatures on [{calibrate_split}])" if calibrate_split else ")") + "\n" + "\n".join(lines))


def make_synthetic_command(
    out: Path = typer.Argument(..., help="Output .pkl path."),
    seed: int = typer.Option(0, "--seed"),
    n_train: int = typer.Option(2000, "--n-train", min=1),
    n_valid: int = typer.Option(400, "--n-valid", min=1),
    n_test: int = typer.Option(600, "--n-test", min=1),
    text_len: int = typer.Option(50, "--text-len", min=4),
    audio_len: int = typer.Option(375, "--audio-len", min=4),
    vision_len: int = typer.Option(500, "--vision-len", min=4),
    text_dim: int = typer.Option(300, "--text-dim", min=4),
    task: str = typer.Option("regression", "--task", help="regression or classification (3 classes)."),
    noise: float = typer.Option(0.1, "--noise", min=0.0),
    event_frac: float = typer.Option(0.25, "--event-frac", help="Share of each sequence an event spans (smaller = harder)."),
) -> None:
    try:
        cfg = SyntheticConfig(seed=seed, n_train=n_train, n_valid=n_valid, n_test=n_test, text_len=text_len,
                              audio_len=audio_len, vision_len=vision_len, text_dim=text_dim, task=task, noise=noise,
                              event_frac=event_frac)
    except ValueError as exc:  # the options' own validation
        raise fail(str(exc)) from None
    with reported(on_interrupt=f"nothing was written to {out}"):
        try:
            path = write_synthetic(out, cfg)
        except OSError as exc:  # the output cannot be written
            raise fail(str(exc)) from None
    typer.echo(f"wrote {path} ({n_train}/{n_valid}/{n_test} samples, task {task})")


@contextlib.contextmanager
def _path_errors() -> Iterator[None]:
    """A path given on the command line that is missing or not allowed: one line, exit 2."""
    try:
        yield
    except (FileNotFoundError, PermissionError) as exc:
        raise fail(str(exc)) from None


@contextlib.contextmanager
def _writing_checkpoint(out: Path, device: str) -> Iterator[None]:
    """A command that writes one checkpoint: the device checked first; a bad input (a head, a split,
    a dataset that does not fit) as one line, exit 2; nothing written on an error or interrupt."""
    with reported(on_interrupt=f"nothing was written to {out}"), _path_errors():
        check_device(device)
        try:
            yield
        except ValueError as exc:
            raise fail(str(exc)) from None


def _print_table(result: dict) -> None:
    from rich.table import Table

    metrics = flatten(result["metrics"])  # multihead: "emotion.acc", ...
    n = len(result["checkpoints"])
    table = Table(title=f"{result['dataset']} [{result['split']}, {result['samples']} samples, "
                        f"{n} checkpoint{'s' if n > 1 else ''}]")
    table.add_column("metric")
    table.add_column("mean ± std" if n > 1 else "value", justify="right")
    spec = LabelSpec.from_dict(result["label_spec"])
    order = headline(spec.task, list(spec.labels), list(spec.head_names)) + ["loss"]
    for key in order + [k for k in metrics if k not in order]:
        if key not in metrics:
            continue
        m = metrics[key]
        if not isinstance(m, dict) or "mean" not in m:
            continue
        scale, unit = (100.0, "%") if is_percent(key) else (1.0, "")
        mean = m["mean"] * scale if m["mean"] is not None else float("nan")
        text = f"{mean:.2f}{unit}" if scale > 1 else f"{mean:.4f}"
        if n > 1:
            text += f" ± {m['std'] * scale:.2f}" if scale > 1 else f" ± {m['std']:.4f}"
        if key.rsplit(".", 1)[-1] == "n":  # a head's labelled samples
            text = f"{mean:.0f}"
        table.add_row(key, text)
    console = plain_console()  # the dataset path and class names print as they are
    console.print(table)
    confusions = result.get("confusion") or {}
    if "matrix" in confusions:
        confusions = {"": confusions}
    for head, cm in confusions.items():
        label = f"{head} " if head else ""
        t = Table(title=f"{label}confusion (rows: truth, columns: prediction; summed over checkpoints)")
        t.add_column("")
        for c in cm["classes"]:
            t.add_column(c, justify="right")
        for c, row in zip(cm["classes"], cm["matrix"]):
            t.add_row(c, *map(str, row))
        console.print(t)
