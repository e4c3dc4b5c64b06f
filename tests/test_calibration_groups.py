"""Temperatures per group: sentences (words and nothing else) and every other sample
(evaluation.calibrate_predictions, Checkpoint.temperature(words_only=...), evaluation.calibrated_logits,
the Predictor). Sentences and clips are not equally sure of themselves: the default model's one
temperature left MELD's sentences under-confident (ECE 16.8 %) because the clips in the same
validation split were over-confident."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mfsa_pipe.analysis.inference import Predictor
from mfsa_pipe.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mfsa_pipe.datasets.base import LabelSpec, PreparedSplit
from mfsa_pipe.training import train
from mfsa_pipe.training.evaluation import (MIN_GROUP_SAMPLES, calibrate, calibrate_predictions, calibrated_logits,
                                           evaluate, run_model)
from mfsa_pipe.training.metrics import expected_calibration_error, fit_temperature, softmax
from test_multihead import HEADS, TINY_MFSA, make_bundle

SPEC = LabelSpec.of({"task": "multihead", "heads": HEADS})


def _sure_and_unsure(n: int = 400, seed: int = 0):
    """Logits of two groups: the first (words alone) too unsure of itself, the second too sure."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, (n, 2))
    logits = rng.normal(size=(n, 6))
    for h in range(2):
        logits[np.arange(n), 3 * h + truth[:, h]] += 2.0
    words = np.arange(n) < n // 2
    logits[words] *= 0.4
    logits[~words] *= 3.0
    return logits, truth, words


def test_each_group_gets_its_own_temperature_and_the_report_says_so():
    logits, truth, words = _sure_and_unsure()
    fields, report = calibrate_predictions(logits, truth, SPEC, words)
    overall, groups = fields["temperature"], fields["temperature_by_group"]
    for head in ("emotion", "sentiment"):
        assert groups["words_only"][head] < 1.0 < groups["other"][head]
        assert groups["words_only"][head] < overall[head] < groups["other"][head]
        assert groups["words_only"][head] == pytest.approx(fit_temperature(logits[words, :3] if head == "emotion"
                                                                     else logits[words, 3:], truth[words, 0 if head == "emotion" else 1]))
        r = report[head]
        assert r["words_only"]["samples"] == 200 and r["other"]["samples"] == 200
        one_t = expected_calibration_error(softmax(logits[:, :3] if head == "emotion" else logits[:, 3:], overall[head]),
                                           truth[:, 0 if head == "emotion" else 1])
        assert r["ece_after"] < one_t  # the head's figure is that of the temperatures it is given
    # without groups (no groups given, or one group only): one temperature per head, as before
    plain, _ = calibrate_predictions(logits, truth, SPEC)
    assert plain == {"temperature": overall}
    assert "temperature_by_group" not in calibrate_predictions(logits, truth, SPEC, np.ones(len(words), bool))[0]


def test_a_group_too_small_takes_the_overall_temperature():
    logits, truth, words = _sure_and_unsure()
    few = words.copy()
    few[: 200 - (MIN_GROUP_SAMPLES - 1)] = False  # MIN_GROUP_SAMPLES - 1 sentences
    fields, _ = calibrate_predictions(logits, truth, SPEC, few)
    assert fields["temperature_by_group"]["words_only"] == fields["temperature"]
    assert fields["temperature_by_group"]["other"] != fields["temperature"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    bundle = make_bundle()
    run = train(model_name="mfsa", dataset=bundle, out_dir=tmp_path_factory.mktemp("run"), overrides=TINY_MFSA,
                epochs=2, batch_size=8, seed=0, progress=False)
    return bundle, load_checkpoint(run.checkpoint)


GROUPS = {"temperature": {"emotion": 1.0, "sentiment": 1.0},
          "temperature_by_group": {"words_only": {"emotion": 2.0, "sentiment": 3.0}, "other": {"emotion": 0.5}}}


def test_the_checkpoint_the_predictor_and_evaluate_apply_each_samples_temperature(trained, tmp_path):
    bundle, ckpt = trained
    grouped = replace(ckpt, calibration=GROUPS)
    assert grouped.temperature("emotion") == 1.0 and grouped.temperature("emotion", words_only=True) == 2.0
    assert grouped.temperature("sentiment", words_only=False) == 1.0  # a head a group lacks: the overall one
    path = save_checkpoint(grouped, tmp_path / "grouped.ckpt")
    assert load_checkpoint(path).temperature("sentiment", words_only=True) == 3.0
    # run_model says which modalities each sample had; the Predictor divides each by its group's temperature
    split = bundle.split("test")
    samples = [split[i] for i in range(len(split))]
    prepared = PreparedSplit(samples, norm=ckpt.normalization, feature_spec=ckpt.feature_spec)
    res = run_model(ckpt.build_model(), prepared, task="multihead", dims=dict(text=3, audio=2, vision=4), batch_size=8,
                    device=__import__("torch").device("cpu"))
    assert res.present.tolist() == [[s.features(m).shape[0] > 0 for m in ("text", "audio", "vision")] for s in samples]
    first = next(i for i, s in enumerate(samples) if s.text.shape[0] > 0)
    samples[first].audio, samples[first].vision = samples[first].audio[:0], samples[first].vision[:0]  # a sentence alone
    res = run_model(ckpt.build_model(), prepared, task="multihead", dims=dict(text=3, audio=2, vision=4), batch_size=8,
                    device=__import__("torch").device("cpu"))
    assert res.words_only.tolist() == [i == first for i in range(len(samples))]
    feeds = [{m: s.features(m) for m in ("text", "audio", "vision")} for s in samples]
    preds = Predictor(path, device="cpu").predict(feeds)
    expected = calibrated_logits(res.prediction, grouped, res.words_only)
    others = np.arange(len(samples)) != first
    assert np.allclose(expected[first, :3], res.prediction[first, :3] / 2.0)
    assert np.allclose(expected[first, 3:], res.prediction[first, 3:] / 3.0)
    assert np.allclose(expected[others, :3], res.prediction[others, :3] / 0.5)
    assert np.allclose(expected[others, 3:], res.prediction[others, 3:] / 1.0)
    for i, pred in enumerate(preds):
        for head, cols in (("emotion", slice(0, 3)), ("sentiment", slice(3, 6))):
            got = [pred.prediction.heads[head].probabilities[c] for c in ("neutral", "happy", "sad")] if head == "emotion" \
                else [pred.prediction.heads[head].probabilities[c] for c in ("negative", "neutral", "positive")]
            assert np.allclose(got, softmax(expected[i:i + 1, cols])[0], atol=1e-5)
    # evaluate's ECE is that of the per-sample temperatures
    edited = replace(bundle, splits={**bundle.splits, "test": samples})
    ece = evaluate([str(path)], dataset=edited, split="test", device="cpu")["per_checkpoint"][0]["emotion"]["ece"]
    known = res.truth[:, 0] >= 0
    assert ece == pytest.approx(expected_calibration_error(softmax(expected[known, :3]), res.truth[known, 0]))


def test_calibrate_stores_the_groups_and_bad_group_temperatures_are_refused(trained, tmp_path):
    bundle, ckpt = trained
    split = bundle.split("train")
    samples = [split[i] for i in range(len(split))]
    for s in samples[3:40]:  # 37 sentences alone, 11 others
        s.audio, s.vision = s.audio[:0], s.vision[:0]
    alone = replace(bundle, splits={**bundle.splits, "train": samples})
    cal = calibrate(ckpt, alone, "train", device="cpu")
    groups = cal.calibration["temperature_by_group"]
    assert set(groups) == {"words_only", "other"} and groups["other"] == cal.calibration["temperature"]  # too few
    assert groups["words_only"]["emotion"] != cal.calibration["temperature"]["emotion"]
    assert "per group" in cal.calibration["method"] and "words_only" in cal.metrics["calibration"]["emotion"]
    assert "temperature_by_group" not in calibrate(ckpt, alone, "train", device="cpu", by_group=False).calibration
    assert "temperature_by_group" not in calibrate(ckpt, bundle, "train", device="cpu").calibration  # no sentence alone
    bad = replace(ckpt, calibration={"temperature": {"emotion": 1.0}, "temperature_by_group": {"words_only": {"emotion": -1}}})
    path = save_checkpoint(bad, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="temperatures must be positive numbers per head"):
        load_checkpoint(path)


def test_a_groups_temperatures_fitted_elsewhere_are_kept_and_reported_on_the_split():
    logits, truth, words = _sure_and_unsure()
    given = {"other": {"emotion": 1.7, "sentiment": 0.9}}
    fields, report = calibrate_predictions(logits, truth, SPEC, words, fixed=given)
    fitted, _ = calibrate_predictions(logits, truth, SPEC, words)
    assert fields["temperature_by_group"]["other"] == given["other"]
    assert fields["temperature_by_group"]["words_only"] == fitted["temperature_by_group"]["words_only"]  # still fitted here
    other = ~words
    assert report["emotion"]["other"]["temperature"] == 1.7 and report["emotion"]["other"]["samples"] == other.sum()
    assert report["emotion"]["other"]["ece_after"] == pytest.approx(
        expected_calibration_error(softmax(logits[other, :3], 1.7), truth[other, 0]))
    # a split with no clip still gets the given group (reported as having no samples of it)
    only, rep = calibrate_predictions(logits[words], truth[words], SPEC, words[words], fixed=given)
    assert only["temperature_by_group"]["other"] == given["other"] and rep["sentiment"]["other"]["samples"] == 0
    with pytest.raises(ValueError, match="fixed temperatures need words_alone"):
        calibrate_predictions(logits, truth, SPEC, fixed=given)
    with pytest.raises(ValueError, match="groups among"):
        calibrate_predictions(logits, truth, SPEC, words, fixed={"clips": given["other"]})


def test_calibrate_takes_group_temperatures_and_records_their_source(trained, tmp_path):
    bundle, ckpt = trained
    given = {"other": {"emotion": 1.5, "sentiment": 2.5}}
    cal = calibrate(ckpt, bundle, "train", device="cpu", group_temperatures=given, group_source="cross-validation")
    assert cal.calibration["temperature_by_group"]["other"] == given["other"]
    assert cal.calibration["group_source"] == {"other": "cross-validation"}
    assert cal.temperature("sentiment", words_only=False) == 2.5
    assert load_checkpoint(save_checkpoint(cal, tmp_path / "given.ckpt")).temperature("emotion", words_only=False) == 1.5
    for bad in ({"other": {"emotion": 1.5}}, {"other": {"emotion": 1.5, "sentiment": 0.0}}, {"clips": given["other"]}):
        with pytest.raises(ValueError, match="group_temperatures"):
            calibrate(ckpt, bundle, "train", device="cpu", group_temperatures=bad)
    with pytest.raises(ValueError, match="need by_group"):
        calibrate(ckpt, bundle, "train", device="cpu", group_temperatures=given, by_group=False)


def test_calibrate_command_writes_a_calibrated_checkpoint(trained, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import mfsa_pipe.training.evaluation
    from mfsa_pipe.cli import app

    bundle, ckpt = trained
    source = save_checkpoint(ckpt, tmp_path / "plain.ckpt")
    monkeypatch.setattr(mfsa_pipe.training.evaluation, "open_dataset", lambda path: bundle)
    out = tmp_path / "cal.ckpt"
    res = CliRunner().invoke(app, ["calibrate", str(source), "--dataset", "memory.h5", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    written = load_checkpoint(out)
    expected = calibrate(ckpt, bundle, "valid", device="cpu")
    assert written.calibration["temperature"] == pytest.approx(expected.calibration["temperature"])
    assert f"emotion: T {expected.calibration['temperature']['emotion']:.3f}" in said and "ECE" in said
    bad = CliRunner().invoke(app, ["calibrate", str(source), "--dataset", "memory.h5", "--split", "nope",
                                   "--out", str(tmp_path / "bad.ckpt"), "--device", "cpu"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output and not (tmp_path / "bad.ckpt").exists()
