"""What a training run is asked to do: `TrainSettings` (frozen, validated), the two protocols it
starts from, and the model config built from a preset, `--set` overrides and the data.

Protocols (the defaults a run starts from; any explicit setting overrides them):
  recipe  ours, the default without a preset: Adam, gradient norm clipped at 0.8 (as MulT),
          ReduceLROnPlateau on the validation loss, early stopping (patience 10), model.ckpt =
          the epoch with the lowest validation task loss, per-feature z-normalisation
  paper   MFSA's section 4.2, the default with `--preset` for MFSA: Adam, a fixed number of
          epochs (100/100/60), no schedule, no clipping, no early stopping, features as the
          dataset gives them, model.ckpt = the weights after the last epoch (the paper selects
          its hyper-parameters, the epoch count among them, on the validation set, not epochs)

Training hyper-parameters (epochs, batch size, lr) are settings, not model config fields: their
defaults come from MODEL_TRAINING (per model) and PRESET_TRAINING (per model preset, beside the
model's own PRESETS), `--set epochs=..` still reaches them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence as Seq

from extractors.errors import UserError
from mfsa_pipe.datasets.base import MODALITIES, DatasetBundle

TRAINING_KEYS = ("epochs", "batch_size", "lr")  # settings of the run; `--set` may still name them

# each model's training defaults where they differ from TrainSettings' (the reference code's)
MODEL_TRAINING: dict[str, dict[str, Any]] = {
    "mfsa": dict(batch_size=64, epochs=100),
    "mult": dict(batch_size=24),  # MulT's main.py: batch 24, 40 epochs, Adam lr 1e-3
    "ef_lstm": dict(batch_size=24), "lf_lstm": dict(batch_size=24), "raven": dict(batch_size=24),
    "pmr": dict(batch_size=24), "mica": dict(batch_size=24),
}
# the training half of each model preset (the model half is the config class's PRESETS)
PRESET_TRAINING: dict[str, dict[str, dict[str, Any]]] = {
    "mfsa": {  # section 4.2
        "mosi": dict(batch_size=64, epochs=100, lr=1e-3),
        "mosei": dict(batch_size=64, epochs=100, lr=3e-3),
        "iemocap": dict(batch_size=32, epochs=60, lr=1e-3),
    },
    "mult": {  # the MulT paper's supplementary Table 5
        "mosi": dict(batch_size=128, epochs=100, lr=1e-3),
        "mosei": dict(batch_size=16, epochs=20, lr=1e-3),
        "iemocap": dict(batch_size=32, epochs=30, lr=2e-3),
    },
}
LABEL_FIELDS = ("dims", "task", "num_classes", "num_labels", "head_sizes")
SCHEDULERS = ("none", "plateau")
SELECTIONS = ("best", "last")

RECIPE = dict(protocol="recipe", clip_grad=0.8, scheduler="plateau", patience=10, selection="best", normalize=True)
PAPER = dict(protocol="paper", clip_grad=0.0, scheduler="none", patience=None, selection="last", normalize=False)
PAPER_MODELS = ("mfsa",)  # models whose --preset brings their paper's protocol; MulT's stay on the recipe


class TrainingError(UserError, ValueError):
    """Bad training request (unknown model, conflicting settings, a resume that does not fit)."""


@dataclass(frozen=True)
class TrainSettings:
    """Everything a run is asked to do, resolved (no None meaning "default" except where said)."""

    model_name: str = "mfsa"
    preset: str | None = None
    model_overrides: Mapping[str, Any] = field(default_factory=dict)  # model config fields (--set)
    protocol: str = "recipe"  # where the defaults below came from: "recipe" or "paper"
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_grad: float = 0.8  # max gradient norm; 0 = no clipping
    scheduler: str = "plateau"  # ReduceLROnPlateau on the validation loss, or "none"
    patience: int | None = 10  # epochs without a lower validation task loss; None = no early stopping
    selection: str = "best"  # model.ckpt: "best" validation task loss, or the "last" epoch
    normalize: bool = True
    modalities: tuple[str, ...] = MODALITIES
    augment_crop: float = 0.0
    augment_noise: float = 0.0
    modality_dropout: float = 0.0
    # column-group dropout: "modality:prefix" groups of columns (e.g. "vision:au"); with
    # probability column_dropout a sample's rows lose one group, drawn uniformly
    column_dropout: float = 0.0
    column_groups: tuple[str, ...] = ()
    bucket_batches: bool = False  # batches of similar length and modality pattern (training/batching.py)
    calibrate: bool = False
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    num_workers: int = 0
    deterministic: bool = True
    evaluate_test: bool = True
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        mods = tuple(self.modalities or ())
        object.__setattr__(self, "modalities", mods)
        if not mods or any(m not in MODALITIES for m in mods):
            raise TrainingError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(mods)}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TrainingError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise TrainingError(f"lr must be > 0, got {self.lr!r}")
        if self.patience is not None and self.patience < 1:
            raise TrainingError(f"patience must be >= 1, got {self.patience}")
        if self.scheduler not in SCHEDULERS or self.selection not in SELECTIONS:
            raise TrainingError(f"scheduler must be one of {SCHEDULERS} and selection one of {SELECTIONS}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise TrainingError(f"amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if not 0.0 <= self.augment_crop < 1.0:
            raise TrainingError(f"augment_crop must be in [0, 1), got {self.augment_crop}")
        if self.augment_noise < 0:
            raise TrainingError(f"augment_noise must be >= 0, got {self.augment_noise}")
        if not 0.0 <= self.modality_dropout <= 1.0:
            raise TrainingError(f"modality_dropout must be in [0, 1], got {self.modality_dropout}")
        object.__setattr__(self, "column_groups", tuple(self.column_groups or ()))
        _check_column_dropout(self.column_dropout, self.column_groups)

    @classmethod
    def resolve(cls, *, model_name: str, preset: str | None = None, overrides: Mapping[str, Any] | None = None,
                **given: Any) -> "TrainSettings":
        """Settings from the protocol (the paper's with a preset of a model in PAPER_MODELS, else
        the recipe), the model's training defaults (its preset or config class), the training
        keys among `overrides`, then `given` (None = not given)."""
        model_fields = {k: v for k, v in (overrides or {}).items() if k not in TRAINING_KEYS}
        training = {k: v for k, v in (overrides or {}).items() if k in TRAINING_KEYS}
        protocol = PAPER if preset and model_name in PAPER_MODELS else RECIPE
        values = {**protocol, **training_defaults(model_name, preset), **training,
                  **{k: v for k, v in given.items() if v is not None}}
        return cls(model_name=model_name, preset=preset, model_overrides=model_fields, **values)

    @property
    def augment(self) -> dict[str, float]:
        out: dict[str, Any] = {"crop": float(self.augment_crop), "noise": float(self.augment_noise),
                               "modality_dropout": float(self.modality_dropout)}
        if self.column_dropout > 0:  # only when on: keys and records made before it existed stay equal
            out["column_dropout"] = {"p": float(self.column_dropout), "groups": list(self.column_groups)}
        return out

    @property
    def augmenting(self) -> bool:
        return any(v > 0 for v in (self.augment_crop, self.augment_noise, self.modality_dropout, self.column_dropout))

    def resume_key(self, *, model_config: dict[str, Any], dataset_sha256: str | None,
                   world_size: int = 1) -> dict[str, Any]:
        """What must not change between an interrupted run and its continuation (epochs may
        grow). A key saved by an older version is brought to this form by state.upgrade_resume_key,
        so that its runs still resume."""
        key: dict[str, Any] = {
            "model_name": self.model_name,
            "model_config": model_config,
            "seed": int(self.seed),
            "dataset_sha256": dataset_sha256,
            "modalities": list(self.modalities),
            "normalize": bool(self.normalize),
            "clip_grad": float(self.clip_grad),
            "weight_decay": float(self.weight_decay),
            "patience": self.patience,
            "batch_size": int(self.batch_size),
            "lr": float(self.lr),
            "scheduler": self.scheduler,
            "selection": self.selection,
            "world_size": int(world_size),  # each process's share of an epoch depends on it
        }
        if self.augmenting:
            key["augment"] = self.augment
        if self.bucket_batches:  # only when on: keys saved before the setting existed stay equal
            key["bucket_batches"] = True
        return json.loads(json.dumps(key))  # as the state file holds it (tuples -> lists)

    def describe(self) -> str:
        """One line saying how this run trains, as the log and the checkpoint record it."""
        name = {"paper": f"the MFSA paper's section 4.2 protocol ({self.preset})", "recipe": "mfsa-pipe's recipe"}
        stop = (f"up to {self.epochs} epochs, early stopping after {self.patience} without a lower validation task loss"
                if self.patience else f"a fixed {self.epochs} epochs")
        pick = "the lowest validation task loss" if self.selection == "best" else "the last epoch"
        parts = [
            f"Adam lr {self.lr:g}" + (f" weight decay {self.weight_decay:g}" if self.weight_decay else ""),
            f"batch {self.batch_size}", stop, f"model.ckpt = {pick}",
            "ReduceLROnPlateau" if self.scheduler == "plateau" else "no LR schedule",
            f"gradient norm clipped at {self.clip_grad:g}" if self.clip_grad > 0 else "no gradient clipping",
            "z-normalised features" if self.normalize else "features as the dataset gives them",
        ] + ["length-bucketed batches"] * bool(self.bucket_batches)
        return f"{name[self.protocol]}: " + ", ".join(parts)


def split_column_group(group: str) -> tuple[str, str]:
    """"vision:au" -> ("vision", "au"): a column group of column_dropout."""
    modality, _, prefix = str(group).partition(":")
    if modality not in MODALITIES or not prefix:
        raise TrainingError(f"column group {group!r} must be 'modality:prefix' with a modality of {MODALITIES}, "
                            "e.g. 'vision:au'")
    return modality, prefix


def _check_column_dropout(p: float, groups: tuple[str, ...]) -> None:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise TrainingError(f"column_dropout must be in [0, 1], got {p!r}")
    for group in groups:
        split_column_group(group)
    if p > 0 and not groups:
        raise TrainingError("column_dropout needs column_groups ('modality:prefix', e.g. 'vision:au')")


def _trainable_config_class(model_name: str) -> Any:
    from models.registry import COMBINED, MODELS  # lazy: torch (settings are read by --help)

    if model_name in COMBINED:
        raise TrainingError(f"{model_name!r} is not trained as a whole: train its members, then combine their "
                            "checkpoints (mfsa_pipe.training.ensembling.ensemble_checkpoints)")
    if model_name not in MODELS:
        raise TrainingError(f"unknown model {model_name!r}; choose one of {sorted(MODELS)}")
    return MODELS[model_name][0]


def training_defaults(model_name: str, preset: str | None) -> dict[str, Any]:
    """epochs / batch_size / lr of the model's preset, else of the model, else TrainSettings'."""
    cfg_cls = _trainable_config_class(model_name)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainSettings) if f.name in TRAINING_KEYS}
    defaults.update(MODEL_TRAINING.get(model_name, {}))
    if preset:
        if not cfg_cls.PRESETS:
            raise TrainingError(f"model {model_name!r} has no presets; use --set / --epochs / --lr / --batch-size")
        if preset not in cfg_cls.PRESETS:
            raise TrainingError(f"unknown {model_name} preset {preset!r}; choose one of {sorted(cfg_cls.PRESETS)}")
        defaults.update(PRESET_TRAINING.get(model_name, {}).get(preset, {}))
    return defaults


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
    cfg_cls = _trainable_config_class(model_name)
    data_fields: dict[str, Any] = {"dims": tuple(bundle.dims), "task": bundle.task}
    if bundle.task == "classification":
        data_fields["num_classes"] = bundle.num_classes
    if bundle.task == "multilabel":
        data_fields["num_labels"] = bundle.num_labels
    if bundle.task == "multihead":
        data_fields["head_sizes"] = bundle.label_spec.head_sizes
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
    check_positional_table(config, bundle)
    return config


def check_positional_table(config: Any, bundle: DatasetBundle) -> None:
    """A learned positional table (`--set positional=learned`) must cover the longest sequence;
    found here rather than as a ValueError from the model's forward in the middle of training."""
    if getattr(config, "positional", None) != "learned":
        return
    longest = max((len(split[i].features(m)) for split in bundle.splits.values() for i in range(len(split))
                   for m in MODALITIES), default=0)
    if longest > config.max_len:
        raise TrainingError(f"the dataset has sequences of {longest} rows, longer than the learned positional table "
                            f"(max_len {config.max_len}); use --set max_len={longest} or positional=sinusoidal")
