"""last.ckpt: the training state after the last finished epoch (weights, optimizer, scheduler,
GradScaler, RNG states, normalisation, and the selection / early-stopping counters of
`TrainState`), with the resume key of the run that wrote it. Rerunning the same command continues
from it; a run with other settings is refused."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mfsa_pipe.atomic import atomic_path
from mfsa_pipe.checkpoint import save_torch
from mfsa_pipe.datasets.base import NormStats
from mfsa_pipe.training.settings import TRAINING_KEYS, TrainingError

STATE_FORMAT = "mfsa-pipe-train-state"


@dataclass
class TrainState:
    """Where a run stands after `epoch` finished epochs."""

    norm: NormStats
    epoch: int = 0
    best_value: float = math.inf  # the lowest validation task loss so far
    best_epoch: int = 0  # the kept epoch (model.ckpt)
    bad_epochs: int = 0  # epochs since the validation task loss last went down
    stopped_early: bool = False
    best_valid: dict[str, Any] = field(default_factory=dict)  # the kept epoch's validation metrics

    def save(self, path: Path, *, resume_key: dict[str, Any], model: Any, optimizer: Any, scheduler: Any,
             scaler: Any, rng_states: list[dict[str, Any]] | None = None) -> None:
        """`rng_states`: every process's RNG states (rank order); default: this process's."""
        import torch

        rng_states = rng_states or [rng_state()]
        payload = {
            "format": STATE_FORMAT,
            "version": 1,
            "epoch": self.epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": rng_states[0],
            "best_value": float(self.best_value),
            "best_epoch": int(self.best_epoch),
            "bad_epochs": int(self.bad_epochs),
            "stopped_early": bool(self.stopped_early),
            "best_valid": json.dumps(self.best_valid),
            "settings": json.dumps(resume_key),
            "norm_mean": {m: torch.from_numpy(np.asarray(v, np.float32)) for m, v in self.norm.mean.items()},
            "norm_std": {m: torch.from_numpy(np.asarray(v, np.float32)) for m, v in self.norm.std.items()},
        }
        if len(rng_states) > 1:
            payload["rng_ranks"] = rng_states
        with atomic_path(path) as tmp:
            save_torch(payload, tmp)

    @classmethod
    def load(cls, path: Path, *, resume_key: dict[str, Any], cfg_cls: Any) -> tuple["TrainState", dict[str, Any]]:
        """(state, the payload for `restore`); TrainingError when the file is not a state or
        belongs to a run with other settings."""
        import torch

        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable state means start over
            raise TrainingError(f"{path} is unreadable ({type(exc).__name__}); delete it or pass resume=False") from None
        if payload.get("format") != STATE_FORMAT:
            raise TrainingError(f"{path} is not an mfsa-pipe training state; delete it or use another --out")
        old = upgrade_resume_key(json.loads(payload["settings"]), resume_key, cfg_cls)
        if old != resume_key:
            diffs = sorted(k for k in set(old) | set(resume_key)
                           if json.dumps(old.get(k), sort_keys=True) != json.dumps(resume_key.get(k), sort_keys=True))
            raise TrainingError(
                f"{path.parent} holds an interrupted run with other settings ({', '.join(diffs)} differ); "
                "use another --out directory, or --no-resume to start over"
            )
        state = cls(
            norm=NormStats(mean={m: v.numpy() for m, v in payload["norm_mean"].items()},
                           std={m: v.numpy() for m, v in payload["norm_std"].items()}),
            epoch=int(payload["epoch"]),
            best_value=float(payload["best_value"]),
            best_epoch=int(payload["best_epoch"]),
            bad_epochs=int(payload["bad_epochs"]),
            stopped_early=bool(payload["stopped_early"]),
            best_valid=json.loads(payload["best_valid"]),
        )
        return state, payload

    @staticmethod
    def restore(payload: dict[str, Any], *, model: Any, optimizer: Any, scheduler: Any, scaler: Any,
                rank: int = 0) -> None:
        """Put the saved weights, optimizer, scheduler, scaler and (process `rank`'s) RNG states back."""
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(payload["scheduler"])
        if scaler.is_enabled() and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        set_rng_state(payload.get("rng_ranks", [payload["rng"]])[rank])


def upgrade_resume_key(old: dict[str, Any], now: dict[str, Any], cfg_cls: Any) -> dict[str, Any]:
    """A resume key saved by an older version, in today's form: batch_size and lr were model
    config fields; the scheduler and selection were always the recipe's; a model-config field
    added since, and left at its default (which keeps the old behaviour), does not differ."""
    old = json.loads(json.dumps(old))
    saved = old.get("model_config")
    if isinstance(saved, dict):
        for key in TRAINING_KEYS:
            value = saved.pop(key, None)
            if value is not None and key != "epochs":
                old.setdefault(key, value)
    old.setdefault("scheduler", "plateau")
    old.setdefault("selection", "best")
    old.setdefault("world_size", 1)
    current = now.get("model_config")
    if isinstance(saved, dict) and isinstance(current, dict) and dataclasses.is_dataclass(cfg_cls):
        defaults = {f.name: f.default for f in dataclasses.fields(cfg_cls) if f.default is not dataclasses.MISSING}
        for key, value in current.items():
            if key not in saved and key in defaults and json.dumps(value) == json.dumps(defaults[key]):
                saved[key] = json.loads(json.dumps(value))
    return old


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
