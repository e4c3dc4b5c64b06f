"""Each modality alone: MFSAConfig.alone_views_weight (evaluation adds the single-modality views'
logits to the fused ones) and Predictor.predict_alone (the report's utterances[].by_modality)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import batch, run, tiny
from mfsa_pipe.analysis.inference import Predictor
from mfsa_pipe.checkpoint import Checkpoint
from mfsa_pipe.datasets.base import NormStats
from models.mfsa import MFSA, MFSAConfig
from models.registry import build_model, config_from_dict

MODALITIES = ("text", "audio", "vision")


def alone(inputs: dict, keep: str) -> dict:
    """`inputs` with every modality but `keep` emptied (zero rows, all-False mask)."""
    out = dict(inputs)
    for m in MODALITIES:
        if m != keep:
            out[m], out[f"{m}_mask"] = torch.zeros_like(inputs[m]), torch.zeros_like(inputs[f"{m}_mask"])
    return out


@pytest.mark.parametrize("task,heads", [("classification", dict(num_classes=3)), ("multihead", dict(head_sizes=(3, 2)))])
def test_evaluation_adds_the_weighted_logits_of_each_present_modality_alone(task, heads):
    torch.manual_seed(0)
    model = MFSA(tiny("mfsa", task=task, **heads, alone_views_weight=0.5)).eval()
    plain = MFSA(tiny("mfsa", task=task, **heads)).eval()
    plain.load_state_dict(model.state_dict())  # no weight of its own
    # words + voice + face, voice + face, words alone, nothing
    inputs = batch(((4, 3, 2), (0, 3, 2), (2, 0, 0), (0, 0, 0)))
    with torch.no_grad():
        got = run(model, inputs)
        joint = run(plain, inputs)
        views = {m: run(plain, alone(inputs, m)).prediction for m in MODALITIES}
    expected = joint.prediction.clone()
    expected[0] += 0.5 * (views["text"][0] + views["audio"][0] + views["vision"][0])
    expected[1] += 0.5 * (views["audio"][1] + views["vision"][1])
    assert torch.allclose(got.prediction, expected, atol=1e-5)
    # one modality or none: as without views; the extras are the whole samples'
    assert torch.allclose(got.prediction[2:], joint.prediction[2:], atol=1e-6)
    assert torch.allclose(got.extras["psi"], joint.extras["psi"], atol=1e-6)
    assert got.extras["h_s"].shape[0] == 4


def test_each_head_takes_its_own_weight():
    torch.manual_seed(0)
    model = MFSA(tiny("mfsa", task="multihead", head_sizes=(3, 2), alone_views_weight=(0.5, 0.0))).eval()
    plain = MFSA(tiny("mfsa", task="multihead", head_sizes=(3, 2))).eval()
    plain.load_state_dict(model.state_dict())
    inputs = batch(((4, 3, 2),))
    with torch.no_grad():
        got, joint = run(model, inputs).prediction, run(plain, inputs).prediction
        views = sum(run(plain, alone(inputs, m)).prediction for m in MODALITIES)
    assert torch.allclose(got[:, :3], joint[:, :3] + 0.5 * views[:, :3], atol=1e-5)  # emotion
    assert torch.allclose(got[:, 3:], joint[:, 3:], atol=1e-6)  # sentiment: weight 0
    assert MFSA(tiny("mfsa", task="multihead", head_sizes=(3, 2), alone_views_weight=(0.0, 0.0))).alone_views_scale is None


def test_training_and_the_loss_ignore_the_views_until_evaluation():
    torch.manual_seed(0)
    model = MFSA(tiny("mfsa", task="classification", num_classes=3, alone_views_weight=1.0))
    plain = MFSA(tiny("mfsa", task="classification", num_classes=3))
    plain.load_state_dict(model.state_dict())
    inputs = batch(((4, 3, 2), (2, 3, 2)))
    labels = torch.tensor([0, 1])
    torch.manual_seed(1)
    trained = run(model, inputs, labels)
    torch.manual_seed(1)
    reference = run(plain, inputs, labels)
    assert torch.allclose(trained.prediction, reference.prediction) and torch.allclose(trained.loss, reference.loss)
    model.eval()
    with torch.no_grad():  # in evaluation the task loss is the one of the prediction it returns
        out = run(model, inputs, labels)
    assert torch.allclose(out.losses["task"], torch.nn.functional.cross_entropy(out.prediction, labels), atol=1e-5)


def test_alone_views_weight_is_validated_and_old_configs_read_without_it():
    for bad in (-0.5, float("nan"), True, "0.5", (), (0.5, -1.0)):
        with pytest.raises(ValueError, match="alone_views_weight must be a number >= 0 or one per head"):
            MFSAConfig(task="multihead", head_sizes=(3, 2), alone_views_weight=bad)
    with pytest.raises(ValueError, match="alone_views_weight gives 2 weights for 1 head"):
        MFSAConfig(task="classification", num_classes=2, alone_views_weight=(0.5, 0.0))
    per_head = MFSAConfig(task="multihead", head_sizes=(3, 2), alone_views_weight=[0.5, 0.0])  # JSON's list
    assert per_head.alone_views_weight == (0.5, 0.0) and per_head.alone_views_weights == (0.5, 0.0)
    saved = json.loads(json.dumps(MFSAConfig(task="classification", num_classes=2, alone_views_weight=0.5).to_dict()))
    assert MFSAConfig.from_dict(saved).alone_views_weight == 0.5
    assert MFSAConfig.from_dict({k: v for k, v in saved.items() if k != "alone_views_weight"}).alone_views_weight == 0


def _checkpoint(weight: float = 0.0) -> Checkpoint:
    dims = {"text": 6, "audio": 5, "vision": 4}
    torch.manual_seed(0)
    config = config_from_dict("mfsa", {"dims": [6, 5, 4], "task": "multihead", "head_sizes": [3, 3], "d": 8,
                                       "d_h": 16, "num_heads": 2, "psa_layers": 1, "hca_layers": 1, "fusion_heads": 2,
                                       "fusion_ffn": 16, "wal_hidden": 8, "alone_views_weight": weight})
    spec = {m: {"dim": d} for m, d in dims.items()}
    label_spec = {"task": "multihead", "heads": [{"name": "emotion", "classes": ["neutral", "happy", "sad"]},
                                                 {"name": "sentiment", "classes": ["negative", "neutral", "positive"]}]}
    return Checkpoint(model_name="mfsa", model_config=config.to_dict(), label_spec=label_spec, feature_spec=spec,
                      normalization=NormStats.identity(dims), state_dict=build_model("mfsa", config).state_dict(),
                      training={}, calibration={"temperature": {"emotion": 1.5, "sentiment": 0.8}})


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_predict_alone_is_the_prediction_of_each_used_modality_fed_by_itself(weight):
    rng = np.random.default_rng(0)
    x = {m: rng.normal(size=(n, d)).astype(np.float32) for m, n, d in (("text", 3, 6), ("audio", 7, 5), ("vision", 9, 4))}
    samples = [x, {"audio": x["audio"], "vision": x["vision"]}, {"text": x["text"]}, {}]
    predictor = Predictor(_checkpoint(weight), device="cpu")
    results = predictor.predict(samples)
    each = predictor.predict_alone(samples, results)
    assert each[2] is None and each[3] is None  # one modality (its prediction is that one's), none
    assert list(each[0]) == ["text", "audio", "vision"] and list(each[1]) == ["audio", "vision"]
    for i in (0, 1):
        for m, pred in each[i].items():
            (by_itself,) = predictor.predict([{m: samples[i][m]}])
            assert pred.heads["emotion"].probabilities == pytest.approx(by_itself.prediction.heads["emotion"].probabilities)
            assert pred.heads["sentiment"].score == pytest.approx(by_itself.prediction.heads["sentiment"].score)
    # the words alone are decoded as words alone (their own temperature group), not as the fused sample
    assert each[0]["text"].heads["emotion"].probabilities == pytest.approx(
        predictor.predict([{"text": x["text"]}])[0].prediction.heads["emotion"].probabilities)


def test_report_schema_takes_by_modality_since_1_3():
    from mfsa_pipe.analysis.report import ReportValidationError, validate_report
    from test_report import _report

    data = _report().to_dict()
    utt = data["utterances"][0]
    assert utt["by_modality"] is None  # no model, or one modality used
    validate_report(data)
    pred = {"label": "a", "score": None, "probabilities": {"a": 0.7, "b": 0.3}, "heads": None}
    utt["by_modality"] = {"audio": pred, "vision": {**pred, "label": "b", "probabilities": {"a": 0.2, "b": 0.8}}}
    validate_report(data)
    for bad in ({"audio": pred}, {"audio": pred, "face": pred}):  # one view is the prediction itself; names
        utt["by_modality"] = bad
        with pytest.raises(ReportValidationError, match="by_modality"):
            validate_report(data)
    del utt["by_modality"]  # a 1.2 report has none
    data["schema_version"] = "1.2.0"
    validate_report(data)
