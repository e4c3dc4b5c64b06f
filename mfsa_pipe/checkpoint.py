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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from extractors.errors import UserError
from mfsa_pipe.atomic import atomic_path
from mfsa_pipe.datasets.base import MODALITIES, DatasetError, LabelSpec, NormStats
from mfsa_pipe.json_values import json_safe
from mfsa_pipe.version import __version__

FORMAT = "mfsa-pipe-checkpoint"
FORMAT_VERSION = 1
SPEC_FIELDS = ("dim", "id", "version", "rate", "columns", "config")


class CheckpointError(UserError, ValueError):
    """The file is missing, corrupt, or not an mfsa-pipe checkpoint."""


class SpecMismatchError(UserError, ValueError):
    """The data's features are not those the checkpoint was trained on. `differences`:
    (modality, field, expected, found) tuples."""

    def __init__(self, differences: list[tuple[str, str, Any, Any]], *, context: str = "") -> None:
        self.differences = differences
        lines = [f"  {m}.{f}: checkpoint expects {_json_preview(e)}, found {_json_preview(x)}" for m, f, e, x in differences]
        head = "the features do not match what the checkpoint was trained on"
        super().__init__((f"{context}: " if context else "") + head + ":\n" + "\n".join(lines))


def _json_preview(value: Any, limit: int = 160) -> str:
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


def check_feature_spec(expected: dict[str, Any], found: dict[str, Any], *, context: str = "") -> None:
    """SpecMismatchError listing what differs between a checkpoint's feature spec and `found`."""
    diffs = spec_differences(expected, found)
    if diffs:
        raise SpecMismatchError(diffs, context=context)


@dataclass
class Checkpoint:
    model_name: str
    model_config: dict[str, Any]
    label_spec: LabelSpec  # its stored dict form is read as one
    feature_spec: dict[str, Any]
    normalization: NormStats
    state_dict: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    package_version: str = ""
    format_version: int = FORMAT_VERSION
    path: str | None = None

    def __post_init__(self) -> None:
        self.label_spec = LabelSpec.of(self.label_spec)

    def temperature(self, head: str, *, words_only: bool | None = None) -> float:
        """The calibration temperature of `head` (1.0 when none was fitted); `words_only`: of a
        sample with words and nothing else (True) or of another (False), where the checkpoint has
        temperatures per group (evaluation.calibrate_predictions)."""
        overall = float((self.calibration.get("temperature") or {}).get(head, 1.0))
        if words_only is None:
            return overall
        group = (self.calibration.get("temperature_by_group") or {}).get("words_only" if words_only else "other") or {}
        return float(group.get(head, overall))

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities the model was trained with (the others are fed empty at inference too)."""
        return tuple(self.training.get("modalities") or MODALITIES)

    def build_model(self, *, device: Any = "cpu"):
        """The model in eval mode with the checkpoint's weights."""
        from models.registry import build_model, config_from_dict  # lazy: torch

        config = config_from_dict(self.model_name, dict(self.model_config))
        model = build_model(self.model_name, config)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:  # missing, unexpected or mis-shaped weights: torch lists them all
            detail = " ".join(str(exc).split())
            raise CheckpointError(
                f"{self.path or 'checkpoint'}: its weights do not fit the {self.model_name} model its config "
                f"describes ({detail[:300]}{'...' if len(detail) > 300 else ''})"
            ) from None
        return model.to(device).eval()

    def check_feature_spec(self, spec: dict[str, Any], *, context: str = "") -> None:
        check_feature_spec(self.feature_spec, spec, context=context)

    def check_label_spec(self, spec: LabelSpec | dict[str, Any], *, context: str = "") -> None:
        spec = LabelSpec.of(spec)
        if self.label_spec != spec:
            if self.label_spec.is_regression and spec.is_regression:
                return  # the range only clips predictions; any regression data can be scored
            raise SpecMismatchError([("labels", "label_spec", self.label_spec.to_dict(), spec.to_dict())], context=context)

    def to_payload(self) -> dict[str, Any]:
        import torch

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": self.package_version or __version__,
            "model_name": self.model_name,
            "model_config": json.dumps(self.model_config, sort_keys=True),
            "label_spec": json.dumps(self.label_spec.to_dict(), sort_keys=True),
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
    """Write atomically (temp file + rename): a crash never leaves a truncated model.ckpt. The
    same checkpoint always gives the same bytes (`save_torch`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_torch(checkpoint.to_payload(), tmp)
    return path


def save_torch(payload: Any, path: Path) -> None:
    """torch.save through a file handle: given a path, torch names the archive's records after the
    file (here a random temporary name), so two saves of the same payload differed in bytes."""
    import torch

    with open(path, "wb") as fh:
        torch.save(payload, fh)


def _loads(payload: dict, key: str, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(payload[key])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: checkpoint field {key!r} is missing or not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: checkpoint field {key!r} holds a JSON {type(value).__name__}, not an object")
    return value


def _label_spec(payload: dict, path: Path) -> LabelSpec:
    stored = _loads(payload, "label_spec", path)
    try:
        return LabelSpec.from_dict(stored)
    except (DatasetError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: checkpoint field 'label_spec' is not usable: {exc}") from None


# a torch file is a zip archive, or (before torch 1.6) a pickle stream: protocol 2+ starts with 0x80
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
UNREADABLE = "not a readable mfsa-pipe checkpoint (corrupt, truncated, or holding more than tensors and plain data)"


def check_file(path: Path) -> bytes:
    """The file's first 4 bytes, after refusing a missing path, a folder, an unreadable file and
    one that torch cannot have written (CheckpointError)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not head.startswith(_TORCH_MAGIC):
        raise CheckpointError(
            f"{path}: not a readable mfsa-pipe checkpoint (not a torch file at all; {size} bytes); "
            "give a model.ckpt written by `mfsa-pipe train`"
        )
    return head


def _read_payload(path: Path, map_location: Any) -> Any:
    """torch.load with weights_only=True: plain data and tensors only, no code run."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # the weights-only unpickler raises many types on foreign or damaged bytes
        raise CheckpointError(f"{path}: {UNREADABLE}: {_load_failure(exc)}") from None


def refused_global(name: str) -> str:
    """What is said of a pickled Python object (module.name) that a checkpoint must not hold."""
    return f"it holds a Python object ({name}); refused, as loading it could run code"


def _load_failure(exc: Exception) -> str:
    """What torch.load found, without its advice to retry with weights_only=False (which would
    run whatever code the file holds)."""
    text = str(exc)
    found = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", text, re.IGNORECASE)  # torch words it two ways
    if found:
        return refused_global(found.group(1))
    if "weights_only" in text or "Weights only" in text:
        return "it holds objects other than tensors and plain data; refused, as loading them could run code"
    return exception_line(exc)


def exception_line(exc: Exception) -> str:
    """The exception's type and the first line of its message."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _format_version(payload: dict, path: Path) -> int:
    version = payload.get("format_version", 0)  # files from before the field: 0
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(f"{path}: checkpoint field 'format_version' is {version!r}, not a version number")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version} is newer than this mfsa-pipe reads ({FORMAT_VERSION})")
    return version


def _normalization(payload: dict, path: Path, is_tensor: Callable[[Any], bool]) -> dict[str, dict[str, Any]]:
    norm = payload.get("normalization", {})
    bad = f"{path}: checkpoint field 'normalization' must map modalities to {{'mean': tensor, 'std': tensor}}"
    if not isinstance(norm, dict):
        raise CheckpointError(f"{bad}, found a {type(norm).__name__}")
    for m, v in norm.items():
        if m not in MODALITIES:
            raise CheckpointError(f"{bad}; {m!r} is not a modality ({', '.join(MODALITIES)})")
        if not (isinstance(v, dict) and all(is_tensor(v.get(k)) for k in ("mean", "std"))):
            raise CheckpointError(f"{bad}; {m!r} holds {_json_preview(v if not isinstance(v, dict) else sorted(v), 60)}")
        if tuple(v["mean"].shape) != tuple(v["std"].shape) or len(v["mean"].shape) != 1:
            raise CheckpointError(f"{bad}; {m!r} has mean {tuple(v['mean'].shape)} and std {tuple(v['std'].shape)}, not two equal vectors")
    return norm


def _norm_stats(norm: dict[str, dict[str, Any]]) -> NormStats:
    return NormStats(
        mean={m: v["mean"].cpu().numpy().astype(np.float32) for m, v in norm.items()},
        std={m: v["std"].cpu().numpy().astype(np.float32) for m, v in norm.items()},
    )


def _state_dict(payload: dict, path: Path, is_tensor: Callable[[Any], bool]) -> dict[str, Any]:
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: checkpoint field 'state_dict' is missing or empty (the model's weights)")
    if not all(isinstance(k, str) and is_tensor(v) for k, v in state.items()):
        raise CheckpointError(f"{path}: checkpoint field 'state_dict' must map parameter names to tensors")
    return state


def _check_fields(fields: dict[str, Any], path: Path) -> None:
    """What later code relies on (torch not needed): per-modality feature specs, usable
    calibration, known modalities (the label spec is checked as it is read)."""
    if not all(isinstance(fields["feature_spec"].get(m), (dict, type(None))) for m in MODALITIES):
        raise CheckpointError(f"{path}: checkpoint field 'feature_spec' must hold one object per modality ({', '.join(MODALITIES)})")
    by_group = fields["calibration"].get("temperature_by_group", {})
    groups = [fields["calibration"].get("temperature", {})] + (list(by_group.values()) if isinstance(by_group, dict) else [None])
    if not all(isinstance(g, dict) and all(isinstance(t, (int, float)) and t > 0 for t in g.values()) for g in groups):
        raise CheckpointError(f"{path}: checkpoint calibration temperatures must be positive numbers per head")
    modalities = fields["training"].get("modalities")
    if modalities is not None and not (isinstance(modalities, list) and modalities and set(modalities) <= set(MODALITIES)):
        raise CheckpointError(f"{path}: checkpoint training modalities {_json_preview(modalities, 60)} are not a subset of {', '.join(MODALITIES)}")


def _check_model_config(ckpt: "Checkpoint", path: Path) -> None:
    """A known model with a valid config."""
    from models.registry import config_from_dict  # lazy: torch

    try:
        config_from_dict(ckpt.model_name, dict(ckpt.model_config))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: model {ckpt.model_name!r} with this config cannot be built: {exc}") from None


def payload_fields(payload: Any, path: Path, *, is_tensor: Callable[[Any], bool]) -> dict[str, Any]:
    """A read payload's checked fields, as Checkpoint's keyword arguments (normalization still as
    stored: {modality: {"mean": tensor, "std": tensor}}). `is_tensor` says what stands for a
    tensor: torch's own, or what a reader that leaves the data unread puts in their place.
    Raises CheckpointError for anything foreign or malformed, except the model's config (which
    needs the model classes: `_check_model_config`)."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not an mfsa-pipe checkpoint (expected format {FORMAT!r}, found {found!r})")
    version = _format_version(payload, path)
    name = payload.get("model_name")
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{path}: checkpoint field 'model_name' is missing or not a name (found {name!r})")
    fields = dict(
        model_name=name,
        model_config=_loads(payload, "model_config", path),
        label_spec=_label_spec(payload, path),
        feature_spec=_loads(payload, "feature_spec", path),
        normalization=_normalization(payload, path, is_tensor),
        state_dict=_state_dict(payload, path, is_tensor),
        metrics=_loads(payload, "metrics", path),
        training=_loads(payload, "training", path),
        calibration=_loads(payload, "calibration", path) if "calibration" in payload else {},
        package_version=str(payload.get("package_version", "")),
        format_version=version,
        path=str(path),
    )
    _check_fields(fields, path)
    return fields


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> Checkpoint:
    """Read and check a checkpoint; raises CheckpointError (one line naming the file and what is
    wrong) for anything unreadable, foreign or malformed."""
    path = Path(path)
    check_file(path)
    import torch  # after the cheap refusals

    fields = payload_fields(_read_payload(path, map_location), path, is_tensor=torch.is_tensor)
    ckpt = Checkpoint(**{**fields, "normalization": _norm_stats(fields["normalization"])})
    _check_model_config(ckpt, path)
    return ckpt
