"""Which model `analyze` uses (the given checkpoint, the shipped default, or none, and why), the
extraction config that goes with it, and what the report says of it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extractors.config import ExtractionConfig
from extractors.hashing import file_sha256
from extractors.sequence import MODALITIES
from mfsa_pipe.analysis.checks import AnalyzeError
from mfsa_pipe.analysis.report import NO_MODEL_NOTICE, CheckpointInfo
from mfsa_pipe.checkpoint import load_checkpoint
from mfsa_pipe.checkpoint_header import read_checkpoint_header
from mfsa_pipe.default_model import default_checkpoint_path


@dataclass
class ResolvedModel:
    """The checkpoint to use (None: no model) and why, for the report and the terminal. With
    `header_only`, until the model is loaded: the CheckpointHeader of a checked file."""

    checkpoint: Any | None
    path: Path | None
    reason: str  # "given", "default", "no-model", "no-default"


def resolve_model(checkpoint: str | os.PathLike | Any | None, *, no_model: bool,
                  header_only: bool = False) -> ResolvedModel:
    """Load the given checkpoint, else the shipped default, else none (stated in the report).
    header_only: read and check only its fields (no torch; see checkpoint_header), where it can."""
    if no_model:
        return ResolvedModel(None, None, "no-model")
    read = _read_header_or_load if header_only else load_checkpoint
    if checkpoint is None:
        default = default_checkpoint_path()
        if default is None:
            return ResolvedModel(None, None, "no-default")
        return ResolvedModel(read(default), default, "default")
    if hasattr(checkpoint, "feature_spec") and hasattr(checkpoint, "label_spec"):  # already loaded
        return ResolvedModel(checkpoint, Path(checkpoint.path) if getattr(checkpoint, "path", None) else None, "given")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise AnalyzeError(f"{path}: no such checkpoint file" + ("" if not path.is_dir() else " (it is a folder)"))
    return ResolvedModel(read(path), path.resolve(), "given")


def _read_header_or_load(path: Path) -> Any:
    """The checkpoint's CheckpointHeader, or the loaded Checkpoint of a file only torch reads."""
    return read_checkpoint_header(path) or load_checkpoint(path)


def setup_model(
    checkpoint: str | os.PathLike | Any | None, *, no_model: bool, config: Any | None, header_only: bool = False
) -> tuple[ResolvedModel, Any]:
    """The model (or none) and the extraction config to use with it. A checkpoint trained on
    other features is refused here, before any expensive extraction (it would produce nonsense)."""
    from extractors.pipeline import feature_spec  # lazy: the pipeline loads PyAV (FFmpeg)

    model = resolve_model(checkpoint, no_model=no_model, header_only=header_only)
    config = config_for(model.checkpoint, config)
    if model.checkpoint is not None:
        model.checkpoint.check_feature_spec(feature_spec(config), context=f"checkpoint {model.path or ''}".strip())
    return model, config


def config_for(checkpoint: Any | None, config: Any | None) -> Any:
    """The extraction config: the caller's, else the one the checkpoint was trained with (so its
    features match by construction), else the defaults."""
    if config is not None:
        return config
    if checkpoint is not None:
        try:
            sections = {m: dict(checkpoint.feature_spec[m].get("config") or {}) for m in MODALITIES}
            if sections["text"]:  # text features 1.0 had no marks and no `punctuation` option
                sections["text"].setdefault("punctuation", "")
            return ExtractionConfig.from_dict(sections)
        except (KeyError, TypeError, ValueError):
            pass  # an older/foreign config: the spec check below says what differs
    return ExtractionConfig()


def model_notice(model: ResolvedModel) -> str | None:
    if model.checkpoint is not None:
        return None
    if model.reason == "no-default":
        return "No model checkpoint was given and this installation ships no default model. " + NO_MODEL_NOTICE
    return NO_MODEL_NOTICE


def checkpoint_info(model: ResolvedModel) -> CheckpointInfo:
    ckpt = model.checkpoint
    path = model.path or (Path(ckpt.path) if getattr(ckpt, "path", None) else None)
    training = dict(getattr(ckpt, "training", {}) or {})
    return CheckpointInfo(
        path=str(path) if path else "",
        sha256=file_sha256(path) if path and path.is_file() else "0" * 64,
        model_name=ckpt.model_name,
        label_spec=ckpt.label_spec.to_dict(),
        trained_on=training or None,
        metrics=dict(getattr(ckpt, "metrics", {}) or {}) or None,
        model_config=dict(getattr(ckpt, "model_config", {}) or {}) or None,
        calibration=dict(getattr(ckpt, "calibration", {}) or {}) or None,
    )
