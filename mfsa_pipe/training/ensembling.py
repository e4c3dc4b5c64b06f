"""Several trained checkpoints of one model as one ensemble checkpoint (models/ensemble.py).

The members must read the same features, give the same labels and share one model config, but
for the fields fitted after training (MFSA's text_logit_bias: each member keeps its own); each
keeps its own input normalisation (folded into the ensemble's per-member scale and shift). The
result is not calibrated: fit its temperatures with `evaluation.calibrate` on a validation split.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from extractors.sequence import MODALITIES
from mfsa_pipe.checkpoint import Checkpoint, CheckpointError
from mfsa_pipe.version import __version__


def ensemble_checkpoints(members: Sequence[Checkpoint]) -> Checkpoint:
    """One checkpoint whose model averages the members' probabilities (uncalibrated)."""
    import torch  # lazy: keeps the training package's import light

    from models.registry import build_model

    _check_compatible(members)
    first = members[0]
    config = {**first.model_config}
    ensemble_config = {key: config[key] for key in ("dims", "task", "num_classes", "num_labels", "head_sizes")
                       if key in config}
    overrides = tuple(_fitted_fields(c) for c in members)
    ensemble_config.update(member=first.model_name, member_config=config, members=len(members),
                           member_overrides=overrides if any(o != overrides[0] for o in overrides) else ())
    model = build_model("ensemble", ensemble_config)
    state = model.state_dict()
    for i, member in enumerate(members):
        for key, value in member.state_dict.items():
            state[f"members.{i}.{key}"] = value
        for m in MODALITIES:  # member i's own normalisation of inputs normalised with the first's
            scale = first.normalization.std[m] / member.normalization.std[m]
            shift = (first.normalization.mean[m] - member.normalization.mean[m]) / member.normalization.std[m]
            state[f"scale_{i}_{m}"] = torch.as_tensor(np.asarray(scale, np.float32))
            state[f"shift_{i}_{m}"] = torch.as_tensor(np.asarray(shift, np.float32))
    model.load_state_dict(state)
    return Checkpoint(
        model_name="ensemble", model_config=model.config.to_dict(), label_spec=first.label_spec,
        feature_spec=first.feature_spec, normalization=first.normalization,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        metrics={"members": [_member_summary(c) for c in members]},
        training={"modalities": list(first.modalities), "ensemble_of": [c.training for c in members]},
        package_version=__version__,
    )


def _member_summary(checkpoint: Checkpoint) -> dict[str, Any]:
    return {"path": checkpoint.path, "seed": checkpoint.training.get("seed"),
            "calibration": checkpoint.calibration.get("temperature")}


def _fitted_fields(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint's values of its model's fields fitted after training."""
    from models.registry import member_config_class

    fitted = member_config_class(checkpoint.model_name).FITTED_AFTER_TRAINING
    return {k: v for k, v in checkpoint.model_config.items() if k in fitted}


def _recipe_config(checkpoint: Checkpoint) -> dict[str, Any]:
    """The model config without the fields fitted after training."""
    fitted = _fitted_fields(checkpoint)
    return {k: v for k, v in checkpoint.model_config.items() if k not in fitted}


def _check_compatible(members: Sequence[Checkpoint]) -> None:
    if len(members) < 2:
        raise CheckpointError(f"an ensemble needs at least 2 checkpoints, got {len(members)}")
    first = members[0]
    for c in members[1:]:
        name = c.path or "a member"
        if c.model_name != first.model_name:
            raise CheckpointError(f"{name}: an ensemble's members must be one model "
                                  f"({c.model_name} vs {first.model_name})")
        mine, theirs = _recipe_config(c), _recipe_config(first)
        if mine != theirs:
            differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise CheckpointError(f"{name}: an ensemble's members must share one model config; "
                                  f"it differs from the first member's in {', '.join(differ)}")
        if c.model_name == "ensemble":
            raise CheckpointError(f"{name}: an ensemble's members cannot be ensembles")
        c.check_feature_spec(first.feature_spec, context=f"{name} vs {first.path or 'the first member'}")
        c.check_label_spec(first.label_spec, context=f"{name} vs {first.path or 'the first member'}")
        if tuple(c.modalities) != tuple(first.modalities):
            raise CheckpointError(f"{name}: trained on {c.modalities}, the first member on {first.modalities}")
