"""Ensembles of trained checkpoints (models/ensemble.py, mfsa_pipe/training/ensembling.py): the
ensemble's probabilities are the mean of its members' (each with its own normalisation), it
saves, loads, evaluates and calibrates like any checkpoint, and it is never trained."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mfsa_pipe.analysis.inference import Predictor
from mfsa_pipe.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from mfsa_pipe.datasets.base import NormStats
from mfsa_pipe.training import TrainingError, train
from mfsa_pipe.training.ensembling import ensemble_checkpoints
from mfsa_pipe.training.evaluation import calibrate, evaluate
from mfsa_pipe.training.synthetic import write_synthetic
from models.registry import build_model, config_from_dict

DIMS = {"text": 6, "audio": 4, "vision": 5}
SPEC = {m: {"dim": d, "columns": [f"{m}{i}" for i in range(d)]} for m, d in DIMS.items()}
MULTIHEAD = {"task": "multihead", "heads": [{"name": "emotion", "classes": ["a", "b", "c"]},
                                            {"name": "sentiment", "classes": ["negative", "neutral", "positive"]}]}


def _member(seed: int, *, norm: NormStats, label_spec=MULTIHEAD, task="multihead", **extra) -> Checkpoint:
    torch.manual_seed(seed)
    fields = {"dims": list(DIMS.values()), "task": task, "d": 8, "d_h": 8, "num_heads": 2, "psa_layers": 1,
              "hca_layers": 1, "fusion_heads": 2, "fusion_ffn": 8, "wal_hidden": 4,
              **({"head_sizes": [3, 3]} if task == "multihead" else {}), **extra}
    config = config_from_dict("mfsa", fields)
    model = build_model("mfsa", config)
    return Checkpoint(model_name="mfsa", model_config=config.to_dict(), label_spec=label_spec, feature_spec=SPEC,
                      normalization=norm, state_dict=model.state_dict(), calibration={"temperature": {"emotion": 3.0}})


def _norm(shift: float, scale: float) -> NormStats:
    rng = np.random.default_rng(int(shift * 10))
    return NormStats(mean={m: (shift + rng.normal(size=d)).astype(np.float32) for m, d in DIMS.items()},
                     std={m: (scale * (1 + rng.random(d))).astype(np.float32) for m, d in DIMS.items()})


def _feeds(n: int = 5) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"text": rng.normal(size=(3 + i, DIMS["text"])).astype(np.float32) * 2,
             "audio": rng.normal(size=(7 + i, DIMS["audio"])).astype(np.float32) * 3 + 1,
             "vision": rng.normal(size=(4, DIMS["vision"])).astype(np.float32) if i % 2 else
             np.zeros((0, DIMS["vision"]), np.float32)} for i in range(n)]


def _probs(predictor: Predictor, feeds: list[dict]) -> np.ndarray:
    return np.array([[v for head in p.prediction.heads.values() for v in head.probabilities.values()]
                     for p in predictor.predict(feeds)])


def test_ensemble_gives_the_mean_of_its_members_probabilities_each_with_its_own_normalisation(tmp_path):
    members = [_member(0, norm=_norm(0.0, 1.0), pooled_logits=True), _member(1, norm=_norm(2.0, 3.0), pooled_logits=True)]
    uncalibrated = [Predictor(dataclasses.replace(c, calibration={}), device="cpu") for c in members]
    feeds = _feeds()
    expected = (_probs(uncalibrated[0], feeds) + _probs(uncalibrated[1], feeds)) / 2
    assert not np.allclose(_probs(uncalibrated[0], feeds), _probs(uncalibrated[1], feeds), atol=1e-3)

    path = save_checkpoint(ensemble_checkpoints(members), tmp_path / "ensemble.ckpt")
    ensemble = load_checkpoint(path)
    assert ensemble.model_name == "ensemble" and ensemble.model_config["members"] == 2
    assert ensemble.calibration == {}  # members' temperatures are not carried over: calibrate the whole
    predictor = Predictor(ensemble, device="cpu")
    np.testing.assert_allclose(_probs(predictor, feeds), expected, atol=1e-5)
    from mfsa_pipe.checkpoint_header import read_checkpoint_header

    assert read_checkpoint_header(path).model_name == "ensemble"  # analyze's torch-free first look takes it
    weights = predictor.predict(feeds[:1])[0].modality_weights  # MFSA's modality weights, averaged
    assert weights["vision"] == 0.0 and weights["text"] + weights["audio"] == pytest.approx(1.0, abs=1e-5)


def test_ensemble_refuses_members_that_do_not_fit_together():
    a = _member(0, norm=_norm(0.0, 1.0))
    with pytest.raises(CheckpointError, match="at least 2"):
        ensemble_checkpoints([a])
    with pytest.raises(CheckpointError, match="share one model config; it differs from the first member's in d$"):
        ensemble_checkpoints([a, _member(1, norm=_norm(0.0, 1.0), d=16)])
    other_labels = {"task": "multihead", "heads": [{"name": "emotion", "classes": ["a", "b", "x"]},
                                                   MULTIHEAD["heads"][1]]}
    with pytest.raises(Exception, match="label"):
        ensemble_checkpoints([a, _member(1, norm=_norm(0.0, 1.0), label_spec=other_labels)])


def test_members_keep_their_own_text_logit_bias_fitted_after_training(tmp_path):
    """The recipe fits each run's decision bias for words after training: members may differ in it
    (and only in such fields), and each member applies its own inside the ensemble."""
    bias = lambda v: [v, 0.0, -v, 0.0, 0.0, 0.0]  # noqa: E731
    members = [_member(0, norm=_norm(0.0, 1.0), text_logit_bias=bias(0.5)),
               _member(1, norm=_norm(2.0, 3.0), text_logit_bias=bias(-1.0))]
    uncalibrated = [Predictor(dataclasses.replace(c, calibration={}), device="cpu") for c in members]
    feeds = _feeds()
    expected = (_probs(uncalibrated[0], feeds) + _probs(uncalibrated[1], feeds)) / 2
    ensemble = load_checkpoint(save_checkpoint(ensemble_checkpoints(members), tmp_path / "e.ckpt"))
    assert [o["text_logit_bias"] for o in ensemble.model_config["member_overrides"]] == [bias(0.5), bias(-1.0)]
    np.testing.assert_allclose(_probs(Predictor(ensemble, device="cpu"), feeds), expected, atol=1e-5)
    # the same bias everywhere: nothing to override (older ensembles' configs unchanged)
    same = ensemble_checkpoints([members[0], dataclasses.replace(members[1], model_config=members[0].model_config)])
    assert same.model_config["member_overrides"] == []
    config = dict(ensemble.model_config)
    with pytest.raises(ValueError, match="only the fields fitted after training \\(text_logit_bias for mfsa\\), not d"):
        config_from_dict("ensemble", {**config, "member_overrides": [{"d": 16}, {}]})
    with pytest.raises(ValueError, match="one dict per member \\(2\\)"):
        config_from_dict("ensemble", {**config, "member_overrides": [{}]})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    data = write_synthetic(root / "syn.pkl", seed=0, task="classification", n_train=48, n_valid=24, n_test=24,
                           text_len=6, audio_len=10, vision_len=10, text_dim=8)
    kw = dict(model_name="mfsa", dataset=data, epochs=1, batch_size=16, device="cpu", progress=False,
              overrides={"d": 8, "d_h": 8, "num_heads": 2, "fusion_ffn": 8, "wal_hidden": 4})
    runs = [train(out_dir=root / f"seed{s}", seed=s, **kw) for s in (0, 1)]
    return data, [load_checkpoint(r.checkpoint) for r in runs]


def test_ensemble_evaluates_and_calibrates_like_a_checkpoint(trained, tmp_path):
    data, members = trained
    ensemble = calibrate(ensemble_checkpoints(members), data, "valid", device="cpu")
    assert ensemble.calibration["temperature"]["classification"] > 0
    path = save_checkpoint(ensemble, tmp_path / "e.ckpt")
    result = evaluate([path, members[0].path, members[1].path], dataset=data, split="test", device="cpu")
    acc = result["metrics"]["acc"]["values"]
    assert len(acc) == 3 and all(0.0 <= a <= 1.0 for a in acc)
    assert np.isfinite(result["per_checkpoint"][0]["loss"])  # the mixture's NLL


def test_an_ensemble_is_not_trained(trained, tmp_path):
    data, _ = trained
    with pytest.raises(TrainingError, match="not trained as a whole"):
        train(model_name="ensemble", dataset=data, out_dir=tmp_path / "x", epochs=1, device="cpu", progress=False)


def test_ensemble_command_writes_a_calibrated_checkpoint_and_refuses_one_member(trained, tmp_path):
    from typer.testing import CliRunner

    from mfsa_pipe.cli import app

    data, members = trained
    out = tmp_path / "e.ckpt"
    res = CliRunner().invoke(app, ["ensemble", members[0].path, members[1].path, "--out", str(out),
                                   "--calibrate", str(data), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert f"ensemble of 2 checkpoints -> {out}, calibrated on" in " ".join(res.output.split())
    saved = load_checkpoint(out)
    assert saved.model_name == "ensemble" and "classification" in saved.calibration["temperature"]
    res = CliRunner().invoke(app, ["ensemble", members[0].path, "--out", str(tmp_path / "one.ckpt")])
    assert res.exit_code == 2 and "at least 2" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "one.ckpt").exists()
