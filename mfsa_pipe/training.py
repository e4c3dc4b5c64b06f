"""Train a model of the zoo on a dataset: Adam, gradient clipping, ReduceLROnPlateau, early
stopping on the validation task loss (L1 = MAE for regression, cross-entropy for
classification/multilabel, as MulT selects its best epoch), atomic best checkpoint, one JSON line
per epoch, resumable, AMP on CUDA, deterministic per seed.

Files in `out_dir`:
  model.ckpt   the best epoch so far (see checkpoint.py); test metrics added when training ends
  last.ckpt    training state after the last finished epoch (weights, optimizer, scheduler,
               GradScaler, RNG states, early-stopping counters): rerunning the same command
               continues from it; more --epochs extend a run that stopped at its epoch limit
  log.jsonl    one JSON object per epoch
  result.json  the summary once training has ended

Multihead datasets (label -1 = no label for a head): selection on the validation task loss (the
sum over heads of each head's mean CE over its labelled samples); validation and test metrics
per head (metrics.multihead_metrics). `calibrate=True` fits temperatures on the valid split
after training (evaluation.calibrate) before model.ckpt gets its test metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence as Seq

import numpy as np

from mfsa_pipe.atomic import atomic_path, write_json
from mfsa_pipe.cpu_memory import keep_freed_memory_if_room
from mfsa_pipe.datasets.base import MODALITIES, DatasetBundle, NormStats, PreparedSplit, Sample, head_sizes, make_collate
from mfsa_pipe.evaluation import as_bundle, loss_values, resolve_device, run_model

STATE_FORMAT = "mfsa-pipe-train-state"
LABEL_FIELDS = ("dims", "task", "num_classes", "num_labels", "head_sizes")


class TrainingError(ValueError):
    """Bad training request (unknown model, conflicting settings, a resume that does not fit)."""


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


# ----------------------------------------------------------------------------------- helpers


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's files (names + contents, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def parse_overrides(items: Seq[str]) -> dict[str, Any]:
    """["d=16", "use_wal=false", "conv_kernels=[1,1,1]", "positional=learned"] -> dict (JSON values,
    bare words as strings)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise TrainingError(f"--set takes key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        low = raw.strip()
        if low in ("true", "false", "True", "False"):
            out[key] = low.lower() == "true"
            continue
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def build_config(
    model_name: str, bundle: DatasetBundle, *, preset: str | None, overrides: dict[str, Any]
) -> Any:
    """preset < user overrides; the data decides dims, task, classes/labels (a conflicting
    override is an error rather than a model that cannot read the data)."""
    from models.registry import MODELS

    if model_name not in MODELS:
        raise TrainingError(f"unknown model {model_name!r}; choose one of {sorted(MODELS)}")
    cfg_cls = MODELS[model_name][0]
    data_fields: dict[str, Any] = {"dims": tuple(bundle.dims), "task": bundle.task}
    if bundle.task == "classification":
        data_fields["num_classes"] = bundle.num_classes
    if bundle.task == "multilabel":
        data_fields["num_labels"] = bundle.num_labels
    if bundle.task == "multihead":
        data_fields["head_sizes"] = head_sizes(bundle.label_spec)
    for key in LABEL_FIELDS:
        if key in overrides and key in data_fields:
            given = tuple(overrides[key]) if isinstance(overrides[key], list) else overrides[key]
            if given != data_fields[key]:
                raise TrainingError(f"--set {key}={overrides[key]!r} conflicts with the dataset, which has {key}={data_fields[key]!r}")
    try:
        if preset:
            if not cfg_cls.PRESETS:
                raise TrainingError(f"model {model_name!r} has no presets; use --set / --epochs / --lr / --batch-size")
            config = cfg_cls.preset(preset, **{**overrides, **data_fields})
        else:
            config = cfg_cls(**{**overrides, **data_fields})
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"bad model setting for {model_name!r}: {exc}") from None
    return config


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    import torch

    np_state = np.random.get_state()
    py_state = random.getstate()[1]
    state = {
        "python": list(py_state),
        "python_pos": int(py_state[-1]),
        "numpy_key": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate((3, tuple(int(v) for v in state["python"]), None))
    np.random.set_state(
        ("MT19937", state["numpy_key"].numpy().astype(np.uint32), state["numpy_pos"], *state["numpy_gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def amp_settings(device: Any, amp: str) -> tuple[Any, bool]:
    """(autocast dtype or None, use GradScaler). AMP runs on CUDA only: bf16 where the GPU has it
    (no scaler needed), else fp16 with a GradScaler."""
    import torch

    if amp not in ("auto", "off", "bf16", "fp16"):
        raise TrainingError(f"amp must be auto, off, bf16 or fp16, got {amp!r}")
    if device.type != "cuda" or amp == "off":
        return None, False
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def _read_log(path: Path, upto: int) -> list[dict[str, Any]]:
    """Log lines of epochs <= upto (later lines belong to an epoch the interrupted run never
    checkpointed: it is redone)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the interrupt
        if isinstance(row, dict) and int(row.get("epoch", 0)) <= upto:
            rows.append(row)
    return rows


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in rows), encoding="utf-8")


def _append_log(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _fmt(metrics: dict[str, Any], keys: Seq[str]) -> str:
    parts = []
    for k in keys:
        v = metrics.get(k)
        if isinstance(v, (int, float)) and math.isfinite(v):
            parts.append(f"{k} {v:.3f}")
    return "  ".join(parts)


# ----------------------------------------------------------------------------------- augmentation


class AugmentedSplit:
    """Training-time augmentation over a PreparedSplit (features already normalised). Each sample
    draws its own random numbers from (seed, epoch, index), so an epoch is the same on resume and
    with DataLoader workers. Off unless one of the settings is non-zero:
      crop             up to this fraction of the clip's duration is cut away: a random window of
                       relative length U(1 - crop, 1), at a random place, the same relative window
                       for every modality (they stay roughly in step); at least one row is kept
      noise            standard deviation of Gaussian noise added to the real rows (in units of
                       the normalised features, i.e. training-set standard deviations)
      modality_dropout probability that a sample is fed only a subset of its non-empty
                       modalities (uniform over the non-empty proper subsets: with three, any
                       one or any two), so the model learns to decide from whatever analyze finds
    """

    def __init__(self, split: PreparedSplit, *, seed: int, crop: float = 0.0, noise: float = 0.0,
                 modality_dropout: float = 0.0) -> None:
        self.split = split
        self.seed = int(seed)
        self.crop, self.noise, self.modality_dropout = float(crop), float(noise), float(modality_dropout)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> Sample:
        s = self.split[index]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        feats = {m: s.features(m) for m in MODALITIES}
        if self.crop > 0:
            frac = rng.uniform(1.0 - self.crop, 1.0)
            start = rng.uniform(0.0, 1.0 - frac)
            for m, x in feats.items():
                t = x.shape[0]
                if t > 1:
                    a = min(int(math.floor(start * t)), t - 1)
                    b = max(a + 1, min(t, int(math.ceil((start + frac) * t))))
                    feats[m] = x[a:b]
        if self.noise > 0:
            feats = {m: (x + rng.normal(0.0, self.noise, x.shape)).astype(np.float32) if x.shape[0] else x
                     for m, x in feats.items()}
        if self.modality_dropout > 0:
            present = [m for m in MODALITIES if feats[m].shape[0] > 0]
            drop = rng.random() < self.modality_dropout
            subsets = [k for k in range(1, 2 ** len(present) - 1)]  # bit masks of proper subsets
            keep = subsets[int(rng.integers(len(subsets)))] if subsets else 0
            if drop and len(present) > 1:
                for bit, m in enumerate(present):
                    if not keep >> bit & 1:
                        feats[m] = feats[m][:0]
        return Sample(id=s.id, label=s.label, group=s.group, meta=s.meta, **feats)


def _check_augment(crop: float, noise: float, modality_dropout: float) -> dict[str, float]:
    if not 0.0 <= crop < 1.0:
        raise TrainingError(f"augment_crop must be in [0, 1), got {crop}")
    if noise < 0:
        raise TrainingError(f"augment_noise must be >= 0, got {noise}")
    if not 0.0 <= modality_dropout <= 1.0:
        raise TrainingError(f"modality_dropout must be in [0, 1], got {modality_dropout}")
    return {"crop": float(crop), "noise": float(noise), "modality_dropout": float(modality_dropout)}


def _fill_new_config_fields(old: dict[str, Any], settings: dict[str, Any], cfg_cls: Any) -> None:
    """A model-config field added to the code after a run was saved, and left at its default
    (which keeps the old behaviour), does not make the run's settings differ."""
    import dataclasses

    saved, now = old.get("model_config"), settings.get("model_config")
    if not isinstance(saved, dict) or not isinstance(now, dict) or not dataclasses.is_dataclass(cfg_cls):
        return
    defaults = {f.name: f.default for f in dataclasses.fields(cfg_cls) if f.default is not dataclasses.MISSING}
    for key, value in now.items():
        if key not in saved and key in defaults and json.dumps(value) == json.dumps(defaults[key]):
            saved[key] = json.loads(json.dumps(value))


# ----------------------------------------------------------------------------------- train


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
    patience: int = 10,
    resume: bool = True,
    progress: bool = True,
    clip_grad: float = 0.8,
    weight_decay: float = 0.0,
    amp: str = "auto",
    normalize: bool = True,
    modalities: Seq[str] | None = None,
    num_workers: int = 0,
    evaluate_test: bool = True,
    deterministic: bool = True,
    augment_crop: float = 0.0,
    augment_noise: float = 0.0,
    modality_dropout: float = 0.0,
    calibrate: bool = False,
) -> TrainResult:
    """Train `model_name` on `dataset` (a path: the format is detected, or a DatasetBundle).

    Settings come from the model config (its preset, e.g. the paper's section 4.2 values for
    MFSA, or its defaults), then `overrides` (config fields), then `epochs` / `batch_size` / `lr`.
    `modalities`: train on a subset (the others are fed empty, i.e. fully masked; recorded in the
    checkpoint so that evaluation and inference do the same). Early stopping: `patience` epochs
    without a lower validation task loss. `clip_grad`: max gradient norm (0.8 as in MulT).
    Training-time augmentation, all off by default (see `AugmentedSplit`; validation and test
    data are never augmented): `augment_crop` (random temporal crop, up to this fraction of the
    clip cut away), `augment_noise` (std of Gaussian noise on the normalised features),
    `modality_dropout` (probability that a training sample is fed a random non-empty proper
    subset of its present modalities). `calibrate`: after training, fit temperature scaling on
    the valid split (classification and multihead; see evaluation.calibrate) and store it in
    model.ckpt before the test metrics are computed (they then use it for their ECE).
    """
    import torch
    from torch.utils.data import DataLoader

    from mfsa_pipe import __version__
    from mfsa_pipe.checkpoint import Checkpoint, save_checkpoint
    from mfsa_pipe.metrics import compute_metrics, json_safe, pop_confusion
    from mfsa_pipe.presence import DEFAULT_RULE
    from models.registry import build_model

    out = Path(out_dir)
    mods = tuple(modalities) if modalities else MODALITIES
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not mods:
        raise TrainingError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(mods)}")
    if patience < 1:
        raise TrainingError(f"patience must be >= 1, got {patience}")
    augment = _check_augment(augment_crop, augment_noise, modality_dropout)
    augmenting = any(v > 0 for v in augment.values())
    bundle = as_bundle(dataset)
    if calibrate and bundle.task not in ("classification", "multihead"):
        raise TrainingError(f"calibrate: temperature scaling is for classification and multihead data, not {bundle.task!r}")
    for name in ("train", "valid"):
        if name not in bundle.splits or len(bundle.splits[name]) == 0:
            raise TrainingError(
                f"{bundle.source.get('path')}: training needs non-empty train and valid splits; found {bundle.describe()['splits']}"
            )
    user = dict(overrides or {})
    if epochs is not None:
        user["epochs"] = int(epochs)
    if batch_size is not None:
        user["batch_size"] = int(batch_size)
    if lr is not None:
        user["lr"] = float(lr)
    config = build_config(model_name, bundle, preset=preset, overrides=user)
    dev = resolve_device(device)
    amp_dtype, use_scaler = amp_settings(dev, amp)
    dataset_path = bundle.source.get("path")
    dataset_hash = file_sha256(dataset_path) if dataset_path and Path(dataset_path).exists() else None
    dims = dict(zip(MODALITIES, bundle.dims))

    # what must not change between an interrupted run and its continuation (epochs may grow)
    cfg_dict = config.to_dict()
    settings = {
        "model_name": model_name,
        "model_config": {k: v for k, v in cfg_dict.items() if k != "epochs"},
        "seed": int(seed),
        "dataset_sha256": dataset_hash,
        "modalities": list(mods),
        "normalize": bool(normalize),
        "clip_grad": float(clip_grad),
        "weight_decay": float(weight_decay),
        "patience": int(patience),
    }
    if augmenting:  # only when used, so that runs from before these options still resume
        settings["augment"] = augment
    training_info = {
        "seed": int(seed),
        "epochs": int(config.epochs),
        "lr": float(config.lr),
        "batch_size": int(config.batch_size),
        "preset": preset,
        "patience": int(patience),
        "clip_grad": float(clip_grad),
        "weight_decay": float(weight_decay),
        "optimizer": "Adam",
        "scheduler": "ReduceLROnPlateau(factor=0.5, patience=max(1, patience // 3))",
        "early_stopping": "validation task loss",
        "dataset": {
            "path": str(dataset_path),
            "sha256": dataset_hash,
            "format": bundle.source.get("format"),
            "splits": {k: len(v) for k, v in bundle.splits.items()},
        },
        "modalities": list(mods),
        "normalize": bool(normalize),
        "augment": augment,
        "modality_dropout": {
            "p": float(modality_dropout),
            "mode": "a uniformly random non-empty proper subset of the sample's present modalities",
        },
        "presence_rule": DEFAULT_RULE.to_dict(),
        "calibrate": bool(calibrate),
        "device": str(dev),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "package_version": __version__,
    }

    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path, log_path = out / "last.ckpt", out / "model.ckpt", out / "log.jsonl"
    prev_det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    prev_cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if deterministic:
        if dev.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        state = None
        if resume and last_path.exists():
            try:
                state = torch.load(last_path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unreadable state means start over
                raise TrainingError(f"{last_path} is unreadable ({type(exc).__name__}); delete it or pass resume=False") from None
            if state.get("format") != STATE_FORMAT:
                raise TrainingError(f"{last_path} is not an mfsa-pipe training state; delete it or use another --out")
            old = json.loads(state["settings"])
            _fill_new_config_fields(old, settings, type(config))
            now = json.loads(json.dumps(settings))  # as the state file holds it (tuples -> lists)
            if old != now:
                diffs = sorted(k for k in set(old) | set(now)
                               if json.dumps(old.get(k), sort_keys=True) != json.dumps(now.get(k), sort_keys=True))
                raise TrainingError(
                    f"{out} holds an interrupted run with other settings ({', '.join(diffs)} differ); "
                    "use another --out directory, or --no-resume to start over"
                )

        seed_everything(seed)
        model = build_model(model_name, config).to(dev)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=max(1, patience // 3))
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

        if state is not None:
            norm = NormStats(
                mean={m: v.numpy() for m, v in state["norm_mean"].items()},
                std={m: v.numpy() for m, v in state["norm_std"].items()},
            )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if use_scaler and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            start_epoch = int(state["epoch"])
            best_value, best_epoch = float(state["best_value"]), int(state["best_epoch"])
            bad_epochs, stopped_early = int(state["bad_epochs"]), bool(state["stopped_early"])
            best_valid = json.loads(state["best_valid"])
            history = _read_log(log_path, start_epoch)
            _write_log(log_path, history)
        else:
            norm = NormStats.compute(bundle.splits["train"], dims=dims) if normalize else NormStats.identity(dims)
            start_epoch, best_value, best_epoch, bad_epochs, stopped_early = 0, math.inf, 0, 0, False
            best_valid: dict[str, Any] = {}
            history = []
            _write_log(log_path, [])
            for stale in (best_path, last_path, out / "result.json"):
                if stale.exists():
                    stale.unlink()  # a previous run's outputs must not pass for this one's

        train_split: Any = PreparedSplit(bundle.splits["train"], norm=norm, modalities=mods, feature_spec=bundle.feature_spec)
        if augmenting:
            train_split = AugmentedSplit(train_split, seed=seed, **augment)
        valid_split = PreparedSplit(bundle.splits["valid"], norm=norm, modalities=mods, feature_spec=bundle.feature_spec)
        collate_fn = make_collate(bundle.task, dims)
        total_epochs = int(config.epochs)
        keys = {"regression": ["mae", "corr", "acc2", "acc7"], "classification": ["acc", "macro_f1", "weighted_f1"],
                "multilabel": ["mean_acc", "mean_f1"], "multihead": ["mean_acc", "mean_weighted_f1"]}[bundle.task]

        def make_checkpoint(metrics: dict[str, Any]) -> Checkpoint:
            return Checkpoint(
                model_name=model_name,
                model_config=cfg_dict,
                label_spec=bundle.label_spec,
                feature_spec=bundle.feature_spec,
                normalization=norm,
                state_dict=model.state_dict(),
                metrics=metrics,
                training=training_info,
            )

        times: list[float] = []
        bar = _Progress(enabled=progress, total_epochs=total_epochs, start=start_epoch)
        with bar:
            epoch = start_epoch
            while epoch < total_epochs and not stopped_early:
                epoch += 1
                t0 = time.perf_counter()
                gen = torch.Generator().manual_seed(int(seed) * 100_003 + epoch)  # same order on resume
                if augmenting:
                    train_split.epoch = epoch  # set before the loader pickles it for workers
                loader = DataLoader(
                    train_split, batch_size=config.batch_size, shuffle=True, generator=gen,
                    num_workers=num_workers, collate_fn=collate_fn, pin_memory=dev.type == "cuda",
                )
                model.train()
                sums: dict[str, float] = {}
                seen, skipped = 0, 0
                bar.start_epoch(epoch, len(loader))
                for batch in loader:
                    batch = batch.to(dev)
                    with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        output = model(**batch.inputs(), **batch.masks(), labels=batch.labels)
                    loss = output.loss
                    optimizer.zero_grad(set_to_none=True)
                    if not torch.isfinite(loss):
                        skipped += 1  # one bad batch must not poison the weights
                        bar.advance(math.nan)
                        continue
                    scaler.scale(loss).backward()
                    if clip_grad > 0:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    if dev.type == "cpu":  # large maps stay mapped when there is room (decided once)
                        keep_freed_memory_if_room()
                    b = len(batch.ids)
                    seen += b
                    values = loss_values(output)  # one host sync for every term
                    sums["total"] = sums.get("total", 0.0) + values.pop("total") * b
                    for k, v in values.items():
                        sums[k] = sums.get(k, 0.0) + v * b
                    bar.advance(sums["total"] / seen)
                if seen == 0:
                    raise TrainingError(f"epoch {epoch}: every batch gave a non-finite loss; lower the learning rate")
                train_losses = {k: v / seen for k, v in sums.items()}
                val = run_model(model, valid_split, task=bundle.task, dims=dims, batch_size=config.batch_size,
                                device=dev, amp_dtype=amp_dtype, num_workers=num_workers)
                val_metrics = compute_metrics(val.prediction, val.truth, bundle.label_spec)
                pop_confusion(val_metrics)
                val_loss = val.losses.get("task", math.nan)
                val_metrics["loss"] = val_loss
                scheduler.step(val_loss if math.isfinite(val_loss) else math.inf)
                improved = math.isfinite(val_loss) and val_loss < best_value - 1e-6
                if improved:
                    best_value, best_epoch, bad_epochs = val_loss, epoch, 0
                    best_valid = json_safe(val_metrics)
                    save_checkpoint(make_checkpoint({"valid": best_valid, "epoch": epoch}), best_path)
                else:
                    bad_epochs += 1
                    stopped_early = bad_epochs >= patience
                elapsed = time.perf_counter() - t0
                times.append(elapsed)
                row = json_safe({
                    "epoch": epoch,
                    "train_loss": train_losses.get("total"),
                    "train_losses": train_losses,
                    "valid_loss": val_loss,
                    "valid_losses": val.losses,
                    "valid": val_metrics,
                    "lr": optimizer.param_groups[0]["lr"],
                    "best": improved,
                    "best_epoch": best_epoch,
                    "skipped_batches": skipped,
                    "seconds": round(elapsed, 3),
                })
                _append_log(log_path, row)
                history.append(row)
                bar.end_epoch(epoch, f"train {train_losses.get('total', math.nan):.4f}  valid {val_loss:.4f}  "
                              f"{_fmt(val_metrics, keys)}" + ("  *best*" if improved else ""))
                # state last: an interrupt before this line redoes the epoch (deterministically)
                _save_state(last_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                            epoch=epoch, best_value=best_value, best_epoch=best_epoch, bad_epochs=bad_epochs,
                            stopped_early=stopped_early, best_valid=best_valid, settings=settings, norm=norm,
                            use_scaler=use_scaler)

        if not best_path.exists():
            raise TrainingError("no epoch gave a finite validation loss; no checkpoint was written")
        test_metrics = None
        testing = evaluate_test and "test" in bundle.splits and len(bundle.splits["test"]) > 0
        if testing or calibrate:
            from mfsa_pipe.checkpoint import load_checkpoint
            from mfsa_pipe.evaluation import calibrate as fit_calibration

            best = load_checkpoint(best_path)  # only read back when something is added to it
            model.load_state_dict(best.state_dict)
            if calibrate:  # on the valid split, before the test metrics (their ECE uses it)
                best = fit_calibration(best, bundle, split="valid", device=str(dev), batch_size=config.batch_size,
                                       num_workers=num_workers, model=model)
                best.training = {**best.training, "calibrate": True}
            if testing:
                test_split = PreparedSplit(bundle.splits["test"], norm=norm, modalities=mods, feature_spec=bundle.feature_spec)
                res = run_model(model, test_split, task=bundle.task, dims=dims, batch_size=config.batch_size,
                                device=dev, amp_dtype=amp_dtype, num_workers=num_workers)
                test_metrics = json_safe({**compute_metrics(res.prediction, res.truth, bundle.label_spec,
                                                            temperatures=best.calibration.get("temperature")),
                                          "loss": res.losses.get("task")})
                best.metrics = {**best.metrics, "test": test_metrics}
            save_checkpoint(best, best_path)
        result = TrainResult(
            out_dir=str(out),
            checkpoint=str(best_path),
            best_epoch=best_epoch,
            epochs_run=len(history),
            stopped_early=stopped_early,
            valid_metrics=best_valid,
            test_metrics=test_metrics,
            history=history,
            resumed_from=start_epoch,
            seconds_per_epoch=float(np.mean(times)) if times else 0.0,
        )
        write_json(out / "result.json", json_safe({k: v for k, v in result.to_dict().items() if k != "history"}))
        if progress:
            bar.summary(result, keys)
        return result
    finally:
        torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev_cudnn


def _save_state(path: Path, *, model, optimizer, scheduler, scaler, epoch, best_value, best_epoch, bad_epochs,
                stopped_early, best_valid, settings, norm, use_scaler) -> None:
    import torch

    payload = {
        "format": STATE_FORMAT,
        "version": 1,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if use_scaler else {},
        "rng": rng_state(),
        "best_value": float(best_value),
        "best_epoch": int(best_epoch),
        "bad_epochs": int(bad_epochs),
        "stopped_early": bool(stopped_early),
        "best_valid": json.dumps(best_valid),
        "settings": json.dumps(settings),
        "norm_mean": {m: torch.from_numpy(np.asarray(v, np.float32)) for m, v in norm.mean.items()},
        "norm_std": {m: torch.from_numpy(np.asarray(v, np.float32)) for m, v in norm.std.items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


class _Progress:
    """A rich progress bar: overall epochs, and the current epoch's batches with the live loss."""

    def __init__(self, *, enabled: bool, total_epochs: int, start: int) -> None:
        self.enabled = enabled
        self.total_epochs = total_epochs
        self.start = start
        self.progress: Any = None

    def __enter__(self) -> "_Progress":
        if not self.enabled:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        )
        self.progress.__enter__()
        self.overall = self.progress.add_task("epochs", total=self.total_epochs, completed=self.start, info="")
        self.batch_task = None
        if self.start:
            self.progress.console.print(f"resuming after epoch {self.start}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, batches: int) -> None:
        if self.progress is None:
            return
        if self.batch_task is not None:
            self.progress.remove_task(self.batch_task)
        self.batch_task = self.progress.add_task(f"epoch {epoch}", total=batches, info="")

    def advance(self, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.batch_task, advance=1, info=f"loss {loss:.4f}")

    def end_epoch(self, epoch: int, line: str) -> None:
        if self.progress is None:
            return
        self.progress.update(self.overall, completed=epoch, info="  ".join(line.split("  ")[:2]))
        self.progress.console.print(f"epoch {epoch:3d}  {line}")

    def summary(self, result: TrainResult, keys: Seq[str]) -> None:
        from rich.console import Console

        console = Console(stderr=False)
        console.print(f"best epoch {result.best_epoch}: valid {_fmt(result.valid_metrics, keys)}")
        if result.test_metrics:
            console.print(f"test: {_fmt(result.test_metrics, keys)}")
        console.print(f"checkpoint: {result.checkpoint}")
