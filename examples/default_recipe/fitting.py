"""Training: one run of the recipe (`fit_member`), the ensemble of ENSEMBLE["members"] runs
(`fit`), and what is set after training (the words' decision bias, the single-modality views,
temperatures)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from default_recipe.mix import training_sets
from default_recipe.settings import (ALONE_VIEWS, EMOTION_SENTIMENT, EMOTIONS, ENSEMBLE, MIX, MODEL, SENTIMENTS,
                                     TEXT_BIAS, TRAINING)


@dataclass
class Fitted:
    """An ensemble checkpoint (calibrated) and what its members' runs said."""

    checkpoint: Path
    best_epoch: list[int]
    epochs_run: list[int]
    members: list[tuple[int, Path]]  # (seed, checkpoint) of each run; one run: itself


def fit(data: dict, out: Path, *, train_spk, valid_spk, seed: int, quick: bool) -> Fitted:
    """ENSEMBLE["members"] runs of the recipe (seeds seed, seed + 1, ...: each also draws its own text
    subset and pairs) in out/seed{j}, averaged as one ensemble checkpoint (models/ensemble.py) whose
    temperatures are fitted on the first member's validation split: out/model.ckpt."""
    from mfsa_pipe.checkpoint import load_checkpoint, save_checkpoint
    from mfsa_pipe.training.ensembling import ensemble_checkpoints
    from mfsa_pipe.training.evaluation import calibrate

    runs = [fit_member(data, out / f"seed{j}", train_spk=train_spk, valid_spk=valid_spk, seed=seed + j, quick=quick)
            for j in range(ENSEMBLE["members"])]
    members = [(seed + j, Path(r.checkpoint)) for j, r in enumerate(runs)]
    if len(runs) == 1:  # one run: its own calibrated checkpoint
        return Fitted(checkpoint=Path(runs[0].checkpoint), best_epoch=[runs[0].best_epoch],
                      epochs_run=[runs[0].epochs_run], members=members)
    ensemble = ensemble_checkpoints([load_checkpoint(r.checkpoint) for r in runs])
    _, valid = training_sets(data, train_spk=train_spk, valid_spk=valid_spk, seed=seed, quick=quick)
    ensemble = calibrate(ensemble, as_bundle(data, {"valid": valid}), "valid", device="cpu")
    ensemble = replace(ensemble, training={**ensemble.training, "recipe": {
        "training": TRAINING, "mix": MIX, "ensemble": ENSEMBLE, "text_bias": TEXT_BIAS, "alone_views": ALONE_VIEWS,
        "seed": seed}})
    path = save_checkpoint(ensemble, out / "model.ckpt")
    return Fitted(checkpoint=path, best_epoch=[r.best_epoch for r in runs], epochs_run=[r.epochs_run for r in runs],
                  members=members)


def as_bundle(data: dict, splits: dict):
    from mfsa_pipe.datasets.base import DatasetBundle

    return DatasetBundle(splits=splits, feature_spec=data["feature_spec"], label_spec=data["label_spec"],
                         source={"format": "composed", "path": str(data["text_path"])})


def fit_member(data: dict, out: Path, *, train_spk, valid_spk, seed: int, quick: bool):
    """One MFSA training run (temperature calibration on the valid split)."""
    from mfsa_pipe.training import train

    tr, va = training_sets(data, train_spk=train_spk, valid_spk=valid_spk, seed=seed, quick=quick)
    t = TRAINING
    run = train(model_name="mfsa", dataset=as_bundle(data, {"train": tr, "valid": va}), out_dir=out,
                 overrides=model_overrides(data["feature_spec"]), epochs=2 if quick else t["max_epochs"], batch_size=t["batch_size"], lr=t["lr"],
                 seed=seed, device="cpu", patience=t["patience"], progress=False, weight_decay=t["weight_decay"],
                 modality_dropout=t["modality_dropout"], column_dropout=t["column_dropout"],
                 column_groups=t["column_groups"], bucket_batches=t["bucket_batches"], calibrate=True,
                 selection=t["selection"], evaluate_test=False)
    return after_training(data, run, valid=va, seed=seed, quick=quick)


def after_training(data: dict, run, *, valid: list, seed: int, quick: bool):
    """The run's checkpoint, saved in place, with TEXT_BIAS's decision bias for samples with words
    (fitted on a seeded subset of MELD train's sentences), ALONE_VIEWS's weight, and its
    temperatures refitted on `valid`."""
    from mfsa_pipe.checkpoint import load_checkpoint, save_checkpoint
    from mfsa_pipe.training.evaluation import calibrate, fit_text_logit_bias

    if not TEXT_BIAS["scale"] and not any(ALONE_VIEWS["weight"]):
        return run
    ckpt = load_checkpoint(run.checkpoint)
    if TEXT_BIAS["scale"]:
        meld = [s for s in data["text"]["train"] if s.id.startswith("meld-")]
        pick = np.random.default_rng(seed).choice(len(meld), min(len(meld), 300 if quick else TEXT_BIAS["sentences"]),
                                                  replace=False)
        ckpt = fit_text_logit_bias(ckpt, as_bundle(data, {"bias": [meld[i] for i in sorted(pick)]}), "bias",
                                   heads=TEXT_BIAS["heads"], scale=TEXT_BIAS["scale"], device="cpu")
    if any(ALONE_VIEWS["weight"]):  # the bias is fitted on sentences alone, which no view changes
        ckpt = replace(ckpt, model_config={**ckpt.model_config, "alone_views_weight": ALONE_VIEWS["weight"]})
    save_checkpoint(calibrate(ckpt, as_bundle(data, {"valid": valid}), "valid", device="cpu"), run.checkpoint)
    return run


def model_overrides(feature_spec: dict) -> dict:
    """MODEL, with the face prior's columns looked up by name in the vision features: the facial
    extractor's expression probabilities (emo_<emotion>) for each emotion, and for each sentiment
    those of the emotions that imply it (EMOTION_SENTIMENT; surprise none); its face flag."""
    if not np.any(MODEL.get("face_prior_weight", 0)):
        return dict(MODEL)
    columns = list(feature_spec["vision"]["columns"])
    column = {e: columns.index(f"emo_{e}") for e in EMOTIONS if f"emo_{e}" in columns}
    groups = [[column[e]] if e in column else [] for e in EMOTIONS]
    groups += [sorted(column[e] for e, s in EMOTION_SENTIMENT.items() if s == sentiment and e in column)
               for sentiment in SENTIMENTS]
    return {**MODEL, "face_prior_columns": groups, "face_prior_presence": columns.index("face_present")}
