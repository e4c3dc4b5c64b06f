"""Model checkpoints: one file (`model.ckpt`) that `torch.load(path, weights_only=True)` can read.

Contents (only tensors and plain containers; configs and specs as JSON strings):
  format "mfsa-pipe-checkpoint", format_version, package_version, model_name, model_config,
  label_spec, feature_spec, metrics (validation, and test once known), training (seed, epochs,
  lr, batch size, dataset path + sha256, modalities, ...), normalization {modality: {mean, std}}
  (float32 tensors over the real training rows), state_dict, and (optional) calibration:
  {"temperature": {head: T}} fitted on validation data; logits are divided by T before softmax
  ("classification" for a single-head checkpoint). Older checkpoints without it read as {}.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mfsa_pipe.atomic import atomic_path
from mfsa_pipe.datasets.base import MODALITIES, NormStats

FORMAT = "mfsa-pipe-checkpoint"
FORMAT_VERSION = 1
SPEC_FIELDS = ("dim", "id", "version", "rate", "columns", "config")


class CheckpointError(ValueError):
    """The file is missing, corrupt, or not an mfsa-pipe checkpoint."""


class SpecMismatchError(ValueError):
    """The data's features are not those the checkpoint was trained on. `differences`:
    (modality, field, expected, found) tuples."""

    def __init__(self, differences: list[tuple[str, str, Any, Any]], *, context: str = "") -> None:
        self.differences = differences
        lines = [f"  {m}.{f}: checkpoint expects {_short(e)}, found {_short(x)}" for m, f, e, x in differences]
        head = "the features do not match what the checkpoint was trained on"
        super().__init__((f"{context}: " if context else "") + head + ":\n" + "\n".join(lines))


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _columns_diff(expected: list, found: list) -> tuple[Any, Any]:
    """Show only where two column lists differ (they are up to ~300 names long)."""
    if len(expected) != len(found):
        return f"{len(expected)} columns", f"{len(found)} columns"
    idx = [i for i, (a, b) in enumerate(zip(expected, found)) if a != b]
    return ({i: expected[i] for i in idx[:5]}, {i: found[i] for i in idx[:5]})


def spec_differences(expected: dict[str, Any], found: dict[str, Any]) -> list[tuple[str, str, Any, Any]]:
    diffs: list[tuple[str, str, Any, Any]] = []
    for m in MODALITIES:
        e, x = expected.get(m), found.get(m)
        if e is None or x is None:
            if e != x:
                diffs.append((m, "modality", "present" if e else "absent", "present" if x else "absent"))
            continue
        for key in SPEC_FIELDS:
            a, b = e.get(key), x.get(key)
            if key == "rate" and a is not None and b is not None:
                if not math.isclose(float(a), float(b), rel_tol=1e-6):
                    diffs.append((m, key, a, b))
                continue
            if key == "columns" and isinstance(a, list) and isinstance(b, list):
                if a != b:
                    diffs.append((m, key, *_columns_diff(a, b)))
                continue
            if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
                diffs.append((m, key, a, b))
    return diffs


@dataclass
class Checkpoint:
    model_name: str
    model_config: dict[str, Any]
    label_spec: dict[str, Any]
    feature_spec: dict[str, Any]
    normalization: NormStats
    state_dict: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    package_version: str = ""
    format_version: int = FORMAT_VERSION
    path: str | None = None

    def temperature(self, head: str) -> float:
        """The calibration temperature of `head` (1.0 when none was fitted)."""
        return float((self.calibration.get("temperature") or {}).get(head, 1.0))

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities the model was trained with (the others are fed empty at inference too)."""
        return tuple(self.training.get("modalities") or MODALITIES)

    def build_model(self, *, device: Any = "cpu"):
        """The model in eval mode with the checkpoint's weights."""
        from models.registry import build_model, config_from_dict

        config = config_from_dict(self.model_name, dict(self.model_config))
        model = build_model(self.model_name, config)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()

    def check_feature_spec(self, spec: dict[str, Any], *, context: str = "") -> None:
        diffs = spec_differences(self.feature_spec, spec)
        if diffs:
            raise SpecMismatchError(diffs, context=context)

    def check_label_spec(self, spec: dict[str, Any], *, context: str = "") -> None:
        if json.dumps(self.label_spec, sort_keys=True) != json.dumps(spec, sort_keys=True):
            e, f = self.label_spec, spec
            if e.get("task") == f.get("task") == "regression":
                return  # the range only clips predictions; any regression data can be scored
            raise SpecMismatchError([("labels", "label_spec", e, f)], context=context)

    def to_payload(self) -> dict[str, Any]:
        import torch

        from mfsa_pipe import __version__
        from mfsa_pipe.metrics import json_safe

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": self.package_version or __version__,
            "model_name": self.model_name,
            "model_config": json.dumps(self.model_config, sort_keys=True),
            "label_spec": json.dumps(self.label_spec, sort_keys=True),
            "feature_spec": json.dumps(self.feature_spec, sort_keys=True),
            "metrics": json.dumps(json_safe(self.metrics), sort_keys=True),
            "training": json.dumps(json_safe(self.training), sort_keys=True),
            "calibration": json.dumps(json_safe(self.calibration), sort_keys=True),
            "normalization": {
                m: {
                    "mean": torch.from_numpy(np.asarray(self.normalization.mean[m], np.float32)),
                    "std": torch.from_numpy(np.asarray(self.normalization.std[m], np.float32)),
                }
                for m in self.normalization.mean
            },
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
        }


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a truncated model.ckpt."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint.to_payload(), tmp)
    return path


def _loads(payload: dict, key: str, path: Path) -> Any:
    try:
        return json.loads(payload[key])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: checkpoint field {key!r} is missing or not JSON ({exc})") from None


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> Checkpoint:
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable mfsa-pipe checkpoint (corrupt, truncated, or holding more than "
            f"tensors and plain data): {first}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not an mfsa-pipe checkpoint (expected format {FORMAT!r}, found {found!r})")
    version = int(payload.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version} is newer than this mfsa-pipe reads ({FORMAT_VERSION})")
    norm = payload.get("normalization", {})
    stats = NormStats(
        mean={m: v["mean"].cpu().numpy().astype(np.float32) for m, v in norm.items()},
        std={m: v["std"].cpu().numpy().astype(np.float32) for m, v in norm.items()},
    )
    return Checkpoint(
        model_name=str(payload["model_name"]),
        model_config=_loads(payload, "model_config", path),
        label_spec=_loads(payload, "label_spec", path),
        feature_spec=_loads(payload, "feature_spec", path),
        normalization=stats,
        state_dict=payload["state_dict"],
        metrics=_loads(payload, "metrics", path),
        training=_loads(payload, "training", path),
        calibration=_loads(payload, "calibration", path) if "calibration" in payload else {},
        package_version=str(payload.get("package_version", "")),
        format_version=version,
        path=str(path),
    )
