"""The training run: `fit(settings, ...)` reads top to bottom; `train(...)` is the keyword
interface callers have always used, turned into TrainSettings."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence as Seq

import numpy as np

from mfsa_pipe.atomic import write_json
from mfsa_pipe.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mfsa_pipe.datasets.base import DatasetBundle
from mfsa_pipe.devices import resolve_device
from mfsa_pipe.json_values import json_safe
from mfsa_pipe.presence import DEFAULT_RULE
from mfsa_pipe.training.batching import sample_lengths
from mfsa_pipe.training.data import (dataset_sha256, dims_of, epoch_loader, first_batch, fit_normalization,
                                     open_training_data, prepare_split, training_split)
from mfsa_pipe.training.distributed import Processes, processes
from mfsa_pipe.training.evaluation import calibrate as fit_calibration, calibrated_prediction, run_model
from mfsa_pipe.training.log import EpochLog
from mfsa_pipe.training.loop import (amp_settings, determinism, make_optimizer, scheduler_name, seed_everything,
                                     train_one_epoch, validate)
from mfsa_pipe.training.metrics import compute_metrics
from mfsa_pipe.training.progress import SHOWN, Progress, fmt_metrics
from mfsa_pipe.training.settings import TrainingError, TrainSettings, build_config
from mfsa_pipe.training.state import TrainState, rng_state
from mfsa_pipe.training.stopping import EarlyStopping
from mfsa_pipe.version import __version__


@dataclass
class TrainResult:
    out_dir: str
    checkpoint: str
    best_epoch: int
    epochs_run: int  # epochs finished in total (across resumptions)
    stopped_early: bool
    valid_metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0  # epoch the run continued from (0 = fresh start)
    seconds_per_epoch: float = 0.0  # mean training+validation time of the epochs run in this call

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunFiles:
    """The files of `out_dir` (see the package docstring); only the main process writes them."""

    def __init__(self, out: Path, *, writes: bool = True) -> None:
        self.out, self.writes = out, writes
        self.best, self.last, self.result = out / "model.ckpt", out / "last.ckpt", out / "result.json"
        self.log = EpochLog(out / "log.jsonl")
        out.mkdir(parents=True, exist_ok=True)

    def start_fresh(self) -> list[dict[str, Any]]:
        if not self.writes:
            return []
        for stale in (self.best, self.last, self.result):
            if stale.exists():
                stale.unlink()  # a previous run's outputs must not pass for this one's
        return self.log.start()

    def resume_log(self, upto: int) -> list[dict[str, Any]]:
        return self.log.resume(upto) if self.writes else self.log.read(upto)


@dataclass
class Run:
    """What every epoch of a run works with."""

    settings: TrainSettings
    bundle: DatasetBundle
    config: Any
    processes: Processes
    device: Any
    amp_dtype: Any
    files: RunFiles
    resume_key: dict[str, Any]
    info: dict[str, Any]  # the checkpoint's `training` record
    model: Any
    net: Any  # the model that trains: `model`, or its DistributedDataParallel wrapper
    optimizer: Any
    scheduler: Any
    scaler: Any
    train_split: Any = None
    valid_split: Any = None
    stopper: EarlyStopping | None = None
    train_lengths: np.ndarray | None = None  # rows per modality of each training sample (bucketed batches)


def fit(settings: TrainSettings, *, dataset: str | os.PathLike | DatasetBundle, out_dir: str | os.PathLike) -> TrainResult:
    """Train as `settings` say on `dataset`, writing model.ckpt, last.ckpt, log.jsonl and
    result.json in `out_dir`; rerunning with the same settings resumes. Under torchrun, every
    process runs this (see distributed.py)."""
    bundle = open_training_data(dataset, settings)
    config = build_config(settings.model_name, bundle, preset=settings.preset, overrides=dict(settings.model_overrides))
    requested = resolve_device(settings.device)
    with processes(requested) as procs, determinism(settings.deterministic, requested):
        run, state, history = start_run(settings, bundle, config, procs, procs.device(requested), Path(out_dir))
        start_epoch = state.epoch
        with Progress(enabled=settings.progress and procs.is_main, total_epochs=settings.epochs, start=start_epoch,
                      header=settings.describe()) as bar:
            while state.epoch < settings.epochs and not state.stopped_early:
                history.append(run_epoch(run, state, bar))
        result = end_run(run, state, history, start_epoch=start_epoch)
        if settings.progress and procs.is_main:
            bar.summary(result, SHOWN[bundle.task])
        return result


def start_run(settings: TrainSettings, bundle: DatasetBundle, config: Any, procs: Processes, dev: Any,
              out: Path) -> tuple[Run, TrainState, list[dict[str, Any]]]:
    """The run's model, optimizer and data, fresh or restored from last.ckpt (when its resume key
    fits), with the state and epoch log to continue from."""
    from models.base import UsesInputNormalization
    from models.registry import build_model  # lazy: torch

    amp_dtype, use_scaler = amp_settings(dev, settings.amp)
    data_hash = dataset_sha256(bundle)
    key = settings.resume_key(model_config=config.to_dict(), dataset_sha256=data_hash, world_size=procs.world_size)
    files = RunFiles(out, writes=procs.is_main)
    saved = TrainState.load(files.last, resume_key=key, cfg_cls=type(config)) if (
        settings.resume and files.last.exists()) else None
    procs.barrier()  # every process has read last.ckpt before the main one may delete it
    seed_everything(settings.seed + procs.rank)
    model = build_model(settings.model_name, config).to(dev)
    optimizer, scheduler, scaler = make_optimizer(model, settings, use_scaler=use_scaler)
    if saved is not None:
        state, payload = saved
        TrainState.restore(payload, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                           rank=procs.rank)
        history = files.resume_log(state.epoch)
    else:
        state, history = TrainState(norm=fit_normalization(bundle, settings)), files.start_fresh()
    if isinstance(model, UsesInputNormalization):
        model.use_input_normalization(state.norm.mean, state.norm.std)
    train_split = training_split(bundle, state.norm, settings)
    run = Run(settings=settings, bundle=bundle, config=config, processes=procs, device=dev, amp_dtype=amp_dtype,
              files=files, resume_key=key, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
              net=procs.wrap(model, dev, probe=first_batch(train_split, bundle, settings)) if procs.active else model,
              info=training_info(settings, bundle, dataset_hash=data_hash, device=dev, amp_dtype=amp_dtype, processes=procs),
              stopper=EarlyStopping(patience=settings.patience, selection=settings.selection),
              train_split=train_split, valid_split=prepare_split(bundle, "valid", state.norm, settings),
              train_lengths=sample_lengths(train_split) if settings.bucket_batches else None)
    return run, state, history


def end_run(run: Run, state: TrainState, history: list[dict[str, Any]], *, start_epoch: int) -> TrainResult:
    """After the last epoch: the best checkpoint finished (calibrated, tested), result.json written."""
    procs, files, settings = run.processes, run.files, run.settings
    if not procs.broadcast(files.best.exists()):
        raise TrainingError("no epoch gave a finite validation loss; no checkpoint was written")
    test_metrics = procs.broadcast(finish(files.best, model=run.model, bundle=run.bundle, settings=settings,
                                          device=run.device, amp_dtype=run.amp_dtype) if procs.is_main else None)
    times = [row["seconds"] for row in history if row["epoch"] > start_epoch]
    result = TrainResult(
        out_dir=str(files.out), checkpoint=str(files.best), best_epoch=state.best_epoch, epochs_run=state.epoch,
        stopped_early=state.stopped_early, valid_metrics=state.best_valid, test_metrics=test_metrics,
        history=history, resumed_from=start_epoch, seconds_per_epoch=float(np.mean(times)) if times else 0.0,
    )
    if procs.is_main:
        write_json(files.result, json_safe({**{k: v for k, v in result.to_dict().items() if k != "history"},
                                            "protocol": settings.protocol, "protocol_description": settings.describe()}))
    return result


def run_epoch(run: Run, state: TrainState, bar: Progress) -> dict[str, Any]:
    """One epoch: train, validate, select and maybe stop, then (main process) model.ckpt,
    log.jsonl and last.ckpt; returns the epoch's log row."""
    settings, procs, epoch, t0 = run.settings, run.processes, state.epoch + 1, time.perf_counter()
    loader = epoch_loader(run.train_split, run.bundle, settings, epoch=epoch, device=run.device, processes=procs,
                          lengths=run.train_lengths)
    bar.start_epoch(epoch, len(loader))
    train_losses, seen, skipped = train_one_epoch(
        run.net, loader, optimizer=run.optimizer, scaler=run.scaler, device=run.device, amp_dtype=run.amp_dtype,
        clip_grad=settings.clip_grad, on_batch=bar.advance, agree=procs.agree)
    train_losses, seen = procs.mean_losses(train_losses, seen)
    if not seen:
        raise TrainingError(f"epoch {epoch}: every batch gave a non-finite loss; lower the learning rate")
    sizes = tuple(getattr(run.config, "head_sizes", ()) or ()) if run.bundle.task == "multihead" else ()
    val_loss, val_losses, val_metrics = validate(
        run.model, procs.share(run.valid_split), task=run.bundle.task, label_spec=run.bundle.label_spec,
        dims=dims_of(run.bundle), batch_size=settings.batch_size, device=run.device, amp_dtype=run.amp_dtype,
        num_workers=settings.num_workers, gather=lambda part: procs.gather_predictions(part, head_sizes=sizes))
    val_loss = procs.broadcast(val_loss)
    if run.scheduler is not None:
        run.scheduler.step(val_loss if math.isfinite(val_loss) else math.inf)
    kept = run.stopper.update(state, epoch=epoch, loss=val_loss, metrics=json_safe(val_metrics))
    state.stopped_early = procs.broadcast(state.stopped_early)  # decided once, for every process
    row = json_safe({"epoch": epoch, "train_loss": train_losses.get("total"), "train_losses": train_losses,
                     "valid_loss": val_loss, "valid_losses": val_losses, "valid": val_metrics,
                     "lr": run.optimizer.param_groups[0]["lr"], "best": kept, "best_epoch": state.best_epoch,
                     "skipped_batches": skipped, "seconds": round(time.perf_counter() - t0, 3),
                     "protocol": settings.protocol, **procs.shard_report(loader.batch_sampler if settings.bucket_batches else loader.sampler)})
    rng_states = procs.all_gather(rng_state())
    state.epoch = epoch
    if procs.is_main:
        if kept:
            save_model(run.files.best, model=run.model, config=run.config, bundle=run.bundle, settings=settings,
                       norm=state.norm, info=run.info, metrics={"valid": state.best_valid, "epoch": epoch})
        run.files.log.append(row)
        # state last: an interrupt before this line redoes the epoch (deterministically)
        state.save(run.files.last, resume_key=run.resume_key, model=run.model, optimizer=run.optimizer,
                   scheduler=run.scheduler, scaler=run.scaler, rng_states=rng_states)
    bar.end_epoch(epoch, f"train {train_losses.get('total', math.nan):.4f}  valid {val_loss:.4f}  "
                         f"{fmt_metrics(val_metrics, SHOWN[run.bundle.task])}" + ("  *best*" if kept else ""))
    return row


def save_model(path: Path, *, model: Any, config: Any, bundle: DatasetBundle, settings: TrainSettings, norm: Any,
               info: dict[str, Any], metrics: dict[str, Any]) -> None:
    save_checkpoint(Checkpoint(
        model_name=settings.model_name, model_config=config.to_dict(), label_spec=bundle.label_spec,
        feature_spec=bundle.feature_spec, normalization=norm, state_dict=model.state_dict(), metrics=metrics,
        training=info,
    ), path)


def finish(best_path: Path, *, model: Any, bundle: DatasetBundle, settings: TrainSettings, device: Any,
           amp_dtype: Any) -> dict[str, Any] | None:
    """Temperature calibration on the valid split (asked for), then the test split's metrics,
    both added to model.ckpt; returns the test metrics (None without a test split)."""
    testing = settings.evaluate_test and "test" in bundle.splits and len(bundle.splits["test"]) > 0
    if not (testing or settings.calibrate):
        return None
    best = load_checkpoint(best_path)  # only read back when something is added to it
    model.load_state_dict(best.state_dict)
    if settings.calibrate:  # on the valid split, before the test metrics (their ECE uses it)
        best = fit_calibration(best, bundle, split="valid", device=str(device), batch_size=settings.batch_size,
                               num_workers=settings.num_workers, model=model)
        best.training = {**best.training, "calibrate": True}
    test_metrics = None
    if testing:
        test_split = prepare_split(bundle, "test", best.normalization, settings)
        res = run_model(model, test_split, task=bundle.task, dims=dims_of(bundle), batch_size=settings.batch_size,
                        device=device, amp_dtype=amp_dtype, num_workers=settings.num_workers)
        test_metrics = json_safe({**compute_metrics(calibrated_prediction(res, best), res.truth, bundle.label_spec),
                                  "loss": res.losses.get("task")})
        best.metrics = {**best.metrics, "test": test_metrics}
    save_checkpoint(best, best_path)
    return test_metrics


def training_info(settings: TrainSettings, bundle: DatasetBundle, *, dataset_hash: str | None, device: Any,
                  amp_dtype: Any, processes: Processes) -> dict[str, Any]:
    """The checkpoint's `training` record: how the model was trained, on what."""
    return {
        "seed": int(settings.seed),
        "epochs": int(settings.epochs),
        "lr": float(settings.lr),
        "batch_size": int(settings.batch_size),
        "preset": settings.preset,
        "protocol": settings.protocol,
        "protocol_description": settings.describe(),
        "patience": settings.patience,
        "clip_grad": float(settings.clip_grad),
        "weight_decay": float(settings.weight_decay),
        "optimizer": "Adam",
        "scheduler": scheduler_name(settings),
        "early_stopping": "validation task loss" if settings.patience else "none (fixed epochs)",
        "selection": "lowest validation task loss" if settings.selection == "best" else "last epoch",
        "dataset": {
            "path": str(bundle.source.get("path")),
            "sha256": dataset_hash,
            "format": bundle.source.get("format"),
            "splits": {k: len(v) for k, v in bundle.splits.items()},
        },
        "modalities": list(settings.modalities),
        "normalize": bool(settings.normalize),
        "augment": settings.augment,
        "modality_dropout": {
            "p": float(settings.modality_dropout),
            "mode": "a uniformly random non-empty proper subset of the sample's present modalities",
        },
        "presence_rule": DEFAULT_RULE.to_dict(),
        "bucket_batches": bool(settings.bucket_batches),
        "calibrate": bool(settings.calibrate),
        "device": str(device),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "package_version": __version__,
        "processes": {"world_size": processes.world_size, "backend": processes.backend,
                      "batch_size": "per process"},
    }


def train(
    *,
    model_name: str,
    dataset: str | os.PathLike | DatasetBundle,
    out_dir: str | os.PathLike,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    device: str = "auto",
    patience: int | None = None,
    resume: bool = True,
    progress: bool = True,
    clip_grad: float | None = None,
    weight_decay: float = 0.0,
    amp: str = "auto",
    normalize: bool | None = None,
    modalities: Seq[str] | None = None,
    num_workers: int = 0,
    evaluate_test: bool = True,
    deterministic: bool = True,
    augment_crop: float = 0.0,
    augment_noise: float = 0.0,
    modality_dropout: float = 0.0,
    column_dropout: float = 0.0,
    column_groups: Seq[str] = (),
    bucket_batches: bool = False,
    calibrate: bool = False,
    selection: str | None = None,
    scheduler: str | None = None,
) -> TrainResult:
    """Train `model_name` on `dataset` (a path: the format is detected, or a DatasetBundle); see
    TrainSettings for what each argument means. None = the protocol's value: without a preset
    (or for a model without a paper protocol) the recipe's (patience 10, clip_grad 0.8,
    normalize, ReduceLROnPlateau, selection "best"); with an MFSA preset the paper's section 4.2
    (fixed epochs, no clipping, no schedule, raw features, selection "last"). `scheduler`:
    "plateau" or "none". epochs / batch_size / lr: None = the preset's or the model's default,
    after `overrides` (model config fields; epochs, batch_size, lr among them reach the settings).
    """
    settings = TrainSettings.resolve(
        model_name=model_name, preset=preset, overrides=overrides, epochs=epochs, batch_size=batch_size, lr=lr,
        seed=int(seed), device=device, patience=patience, resume=resume, progress=progress, clip_grad=clip_grad,
        weight_decay=float(weight_decay), amp=amp, normalize=normalize,
        modalities=tuple(modalities) if modalities else None, num_workers=num_workers, evaluate_test=evaluate_test,
        deterministic=deterministic, augment_crop=float(augment_crop), augment_noise=float(augment_noise),
        modality_dropout=float(modality_dropout), column_dropout=float(column_dropout),
        column_groups=tuple(column_groups), bucket_batches=bool(bucket_batches), calibrate=calibrate, selection=selection,
        scheduler=scheduler,
    )
    return fit(settings, dataset=dataset, out_dir=out_dir)
