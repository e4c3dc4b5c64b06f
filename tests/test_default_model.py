"""The shipped default checkpoint: loads, matches the default extractors, has its card and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

MODEL_DIR = Path(__file__).resolve().parents[1] / "mfsa_pipe" / "default_model"
CKPT = MODEL_DIR / "model.ckpt"
CLASSES = ["neutral", "sad", "happy", "surprise", "fear", "angry"]
DATA = Path(__file__).resolve().parent.parent / "examples" / "media"


@pytest.fixture(scope="module")
def ckpt():
    from mfsa_pipe.checkpoint import load_checkpoint

    assert CKPT.is_file(), "the package must ship mfsa_pipe/default_model/model.ckpt"
    return load_checkpoint(CKPT)


def test_default_checkpoint_matches_the_default_extractors(ckpt):
    from extractors.config import ExtractionConfig
    from extractors.pipeline import feature_spec

    assert ckpt.model_name == "mfsa"
    spec = feature_spec(ExtractionConfig())
    ckpt.check_feature_spec(spec)  # raises SpecMismatchError saying what differs
    assert json.dumps(ckpt.feature_spec, sort_keys=True) == json.dumps(spec, sort_keys=True)
    assert ckpt.label_spec == {"task": "classification", "classes": CLASSES}
    assert CKPT.stat().st_size < 5_000_000
    model = ckpt.build_model()
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_default_checkpoint_is_from_real_data_with_honest_figures(ckpt):
    metrics = json.loads((MODEL_DIR / "metrics.json").read_text())
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert metrics["data"]["clips"] == 192 and len(metrics["data"]["speakers"]) == 8
    assert "Ardy Seto" in card and "MIT" in card and "face-and-voice" in card.lower()
    cv = metrics["cross_validation"]
    assert len(cv["folds"]) == 4
    for fold in cv["folds"]:  # speaker-independent: held-out speakers never trained on
        assert not set(fold["test_speakers"]) & set(fold["train_speakers"])
        assert fold["valid_speaker"] not in fold["test_speakers"] + fold["train_speakers"]
    # the shipped configuration beats the zero-shot face-only baseline on the same held-out speakers
    assert cv["mfsa_nested"]["acc"]["mean"] > cv["fer_zero_shot"]["acc"]["mean"]
    assert np.asarray(cv["mfsa_nested"]["confusion"]).sum() == 192
    assert len(metrics["crema_d"]) == 6
    assert ckpt.training.get("modalities") == metrics["shipped"]["modalities"]


def test_default_checkpoint_predicts_on_a_real_clip(ckpt, tmp_path):
    import torch

    from extractors.pipeline import extract
    from mfsa_pipe.datasets.base import MODALITIES, PreparedSplit, Sample
    from mfsa_pipe.evaluation import run_model

    seqs = extract(DATA / "single_face.mp4", cache_dir=tmp_path).sequences()
    sample = Sample(id="single_face", label=0, **{m: seqs[m].features for m in MODALITIES})
    dims = {m: ckpt.feature_spec[m]["dim"] for m in MODALITIES}
    res = run_model(ckpt.build_model(), PreparedSplit([sample], norm=ckpt.normalization, modalities=ckpt.modalities),
                    task="classification", dims=dims, batch_size=1, device=torch.device("cpu"))
    probs = torch.softmax(torch.from_numpy(res.prediction), -1).numpy()
    assert probs.shape == (1, 6) and np.isfinite(probs).all() and abs(probs.sum() - 1) < 1e-5
