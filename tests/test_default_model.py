"""The shipped default checkpoint: loads, matches the default extractors, has two calibrated heads,
its card and figures, and predicts on a real clip with the silent track left out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import MEDIA_DIR as DATA

MODEL_DIR = Path(__file__).resolve().parents[1] / "mfsa_pipe" / "default_model"
CKPT = MODEL_DIR / "model.ckpt"
EMOTIONS = ["neutral", "happy", "sad", "angry", "fear", "surprise", "disgust"]
SENTIMENTS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def ckpt():
    from mfsa_pipe.checkpoint import load_checkpoint

    assert CKPT.is_file(), "the package must ship mfsa_pipe/default_model/model.ckpt"
    return load_checkpoint(CKPT)


@pytest.fixture(scope="module")
def metrics():
    return json.loads((MODEL_DIR / "metrics.json").read_text())


def test_default_checkpoint_matches_the_default_extractors(ckpt):
    from extractors.config import ExtractionConfig
    from extractors.pipeline import feature_spec

    assert ckpt.model_name == "ensemble" and ckpt.model_config["member"] == "mfsa"  # the recipe's ENSEMBLE
    spec = feature_spec(ExtractionConfig())
    ckpt.check_feature_spec(spec)  # raises SpecMismatchError saying what differs
    assert ckpt.label_spec.to_dict() == {"task": "multihead", "heads": [{"name": "emotion", "classes": EMOTIONS},
                                                              {"name": "sentiment", "classes": SENTIMENTS}]}
    assert set(ckpt.modalities) == {"text", "audio", "vision"}
    assert CKPT.stat().st_size < 20_000_000
    temps = ckpt.calibration["temperature"]
    assert set(temps) == {"emotion", "sentiment"} and all(0.05 <= t <= 20 for t in temps.values())


def test_default_checkpoint_is_from_real_data_with_honest_figures(ckpt, metrics):
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    for licence in ("GPL-3.0", "CC BY 4.0", "Apache-2.0", "MIT", "Ardy Seto", "ODbL"):
        assert licence in card
    assert metrics["data"]["voice"]["rows"] == 1344 and metrics["data"]["av"]["rows"] == 192
    cv = metrics["cross_validation"]
    assert len(cv) == 4
    for fold in cv:  # speaker-independent: held-out speakers never trained on
        assert not set(fold["test_speakers"]) & set(fold["train_speakers"])
        assert fold["valid_speaker"] not in fold["test_speakers"] + fold["train_speakers"]
        face_voice = fold["subsets"]["face + voice (AV clips)"]
        assert face_voice["n"] == 48 and np.asarray(face_voice["confusion"]).sum() == 48
    for subset in cv[0]["subsets"].values():  # every figure of the card is measured, in range
        assert 0.0 <= subset["acc"] <= 1.0
    meld = metrics["final"]["meld_dev"]
    assert meld["emotion"]["n"] == 1109 and 0.0 < meld["emotion"]["weighted_f1"] < 1.0
    assert len(metrics["final"]["crema_d"]) == 24
    others = metrics["cross_validation_other_seeds"]  # the same folds retrained: the card shows the spread
    assert others and all(len(r["folds"]) == 4 and r["seed"] != metrics["seed"] for r in others)
    assert all(f["seed"] == r["seed"] for r in others for f in r["folds"])
    members = ckpt.model_config["members"]  # each run of the ensemble also measured alone, per fold
    assert all([m["seed"] for m in f["members"]] == [r["seed"] + j for j in range(members)]
               for r in [{"seed": metrics["seed"], "folds": cv}] + others for f in r["folds"])
    assert "## Seeds: the same recipe trained again" in card
    assert ckpt.metrics.get("calibration") == metrics["final"]["calibration"]
    # what the card describes is what the checkpoint does: temperatures per group, the words' bias
    groups = ckpt.calibration["temperature_by_group"]
    assert set(groups) == {"words_only", "other"} and all(set(g) == {"emotion", "sentiment"} for g in groups.values())
    assert ckpt.temperature("emotion", words_only=True) != ckpt.temperature("emotion", words_only=False)
    fits = metrics["final"]["text_logit_bias"]  # each run of the ensemble its own
    assert len(fits) == len(ckpt.model_config["member_overrides"]) == ckpt.model_config["members"]
    for override, fit in zip(ckpt.model_config["member_overrides"], fits):
        bias = override["text_logit_bias"]
        assert bias[:7] == fit["emotion"]["bias"] and bias[7:] == [0.0, 0.0, 0.0]
    # the single-modality views the recipe sets after training, in every run, as the card says
    weight = metrics["alone_views"]["weight"]  # per head: emotion, sentiment
    assert len(weight) == 2 and weight[0] > 0 and ckpt.model_config["member_config"]["alone_views_weight"] == weight
    assert f"`alone_views_weight` (emotion {weight[0]}, sentiment {weight[1]})" in card


@pytest.mark.integration
def test_default_checkpoint_predicts_on_a_real_clip_without_its_silent_track(ckpt, tmp_path):
    from extractors.pipeline import extract
    from mfsa_pipe.analysis.inference import Predictor

    seqs = extract(DATA / "single_face.mp4", cache_dir=tmp_path).sequences()
    [pred] = Predictor(ckpt, device="cpu").predict([{m: s.features for m, s in seqs.items()}])
    emotion, sentiment = pred.prediction.heads["emotion"], pred.prediction.heads["sentiment"]
    assert list(emotion.probabilities) == EMOTIONS and abs(sum(emotion.probabilities.values()) - 1) < 1e-5
    assert list(sentiment.probabilities) == SENTIMENTS and -1.0 <= sentiment.score <= 1.0
    # the clip's room noise is below the presence rule's loudness: the voice is not used
    assert pred.absent["audio"] == "silent" and pred.modality_weights["audio"] == 0.0
    assert "vision" not in pred.absent and pred.modality_weights["vision"] > 0.0
