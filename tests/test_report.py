"""Report dataclasses, schema validation, segmentation and prediction conversion (no media)."""

import json
from dataclasses import asdict

import numpy as np
import pytest

from extractors.sequence import Sequence
from mfsa_pipe.datasets.base import LabelSpec
from mfsa_pipe.analysis.summaries import overall_prediction
from mfsa_pipe.analysis.video import run_key
from mfsa_pipe.analysis.report import (
    NO_MODEL_NOTICE,
    CheckpointInfo,
    SCHEMA_VERSION,
    InputInfo,
    HeadPrediction,
    ModalitySummary,
    ModalityUse,
    Prediction,
    Provenance,
    Report,
    ReportValidationError,
    UtteranceReport,
    UtteranceSignals,
    load_schema,
    read_report,
    validate_report,
)
from mfsa_pipe.segmentation import (
    Utterance,
    make_utterances,
    row_utterance_index,
    speech_coverage,
    speech_utterances,
    utterance_samples,
    window_utterances,
)

SRC = {"id": "fake", "version": "0", "config": {}}


def _seq(times, dim=2, tokens=None):
    times = np.asarray(times, float).reshape(-1, 2)
    feats = np.arange(len(times) * dim, dtype=np.float32).reshape(len(times), dim)
    return Sequence(features=feats, times=times, columns=[f"c{i}" for i in range(dim)], rate=None, source=SRC, tokens=tokens)


def _report(**changes):
    spec = {"id": "x", "version": "1", "config": {}, "dim": 2, "rate": 15.0}
    base = dict(
        input=InputInfo(path="/v.mp4", name="v.mp4", sha256="a" * 64, size_bytes=10, duration_s=4.0,
                        has_video=True, has_audio=True, width=640, height=360, fps=30.0),
        provenance=Provenance(extraction_config={}, extractors={"text": {**spec, "rate": None}, "audio": spec, "vision": spec}),
        model=None,
        notice=NO_MODEL_NOTICE,
        summary={
            "text": ModalitySummary(frames=3, rate_hz=None, words=3, oov_rate=0.0, speech_coverage=0.5),
            "audio": ModalitySummary(frames=50, rate_hz=12.5, voiced_share=0.4),
            "vision": ModalitySummary(frames=60, rate_hz=15.0, face_coverage=float("nan")),
        },
        utterances=[UtteranceReport(
            index=0, start=0.5, end=2.5, text="hello there", source="speech", rows={"text": 2, "audio": 25, "vision": 30},
            prediction=None, modality_weights=None,
            signals=UtteranceSignals(face_coverage=1.0, emotions={"happy": 0.7, "sad": 0.3}, loudness=0.4, voicing=0.8),
        )],
        overall=None,
        timings_s={"total": 1.0},
        outputs={"report": "report.json", "annotated_video": None, "timeline": "timeline.png", "features": "features.npz"},
        run={"no_model": True, "render_video": False, "device": "cpu", "key": "k"},
        created="2024-01-01T00:00:00+00:00",
    )
    base.update(changes)
    return Report(**base)


def test_speech_utterances_are_sorted_clipped_and_drop_empty_segments():
    segs = [{"start": 2.0, "end": 3.5, "text": " b "}, {"start": 0.1, "end": 1.0, "text": "a"},
            {"start": 1.5, "end": 1.5, "text": "zero"}, {"start": 3.6, "end": 9.0, "text": "c"}]
    utts = speech_utterances(segs, duration_s=4.0)
    assert [(u.start, u.end, u.text) for u in utts] == [(0.1, 1.0, "a"), (2.0, 3.5, "b"), (3.6, 4.0, "c")]
    assert [u.index for u in utts] == [0, 1, 2]


def test_windows_tile_the_duration_when_there_is_no_speech():
    utts = make_utterances(segments=[], duration_s=12.0, window_s=5.0)
    assert [(u.start, u.end) for u in utts] == [(0.0, 5.0), (5.0, 12.0)]  # the 2 s tail joins the last window
    assert all(u.source == "window" and u.text == "" for u in utts)
    assert [(u.start, u.end) for u in window_utterances(duration_s=2.4)] == [(0.0, 2.4)]
    assert window_utterances(duration_s=0.0) == []


def test_rows_go_to_the_utterance_holding_their_midpoint():
    utts = [Utterance(0, 0.0, 1.0, "a", "speech"), Utterance(1, 2.0, 3.0, "b", "speech")]
    times = [[0.0, 0.2], [0.9, 1.2], [1.4, 1.6], [2.5, 2.6], [2.95, 3.1], [5.0, 5.1]]
    # midpoints 0.1, 1.05 (just past the end: nearest within 0.25 s), 1.5 (gap), 2.55, 3.025 (edge), 5.05 (none)
    assert row_utterance_index(np.array(times), utts).tolist() == [0, 0, -1, 1, 1, -1]


def test_utterance_samples_slice_each_modality_at_its_own_rate():
    utts = [Utterance(0, 0.0, 1.0, "a", "speech"), Utterance(1, 1.0, 2.0, "b", "speech")]
    seqs = {
        "text": _seq([[0.1, 0.4], [1.2, 1.5]], dim=3, tokens=["a", "b"]),
        "audio": _seq([[i * 0.08, (i + 1) * 0.08] for i in range(25)], dim=4),
        "vision": Sequence.empty(columns=["f"], rate=15.0, source=SRC, reason="no face"),
    }
    samples = utterance_samples(seqs, utts)
    assert [s["text"].shape for s in samples] == [(1, 3), (1, 3)]
    assert samples[0]["audio"].shape[0] + samples[1]["audio"].shape[0] == 25
    assert samples[0]["audio"].shape[0] == 12  # midpoints 0.04 .. 0.92
    assert samples[1]["vision"].shape == (0, 1)  # an empty modality stays a (0, D) array
    np.testing.assert_array_equal(samples[1]["text"], seqs["text"].features[1:2])


def test_speech_coverage_counts_overlaps_once():
    segs = [{"start": 0.0, "end": 2.0}, {"start": 1.0, "end": 3.0}, {"start": 8.0, "end": 12.0}]
    assert speech_coverage(segs, duration_s=10.0) == pytest.approx(0.5)
    assert speech_coverage([], duration_s=10.0) == 0.0


def test_report_validates_and_nan_becomes_null(tmp_path):
    report = _report()
    path = report.write(tmp_path / "report.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and list(data)[0] == "schema_version"
    assert data["summary"]["vision"]["face_coverage"] is None
    assert data["model"] is None and "mfsa-pipe train" in data["notice"]
    assert read_report(path) == data
    validate_report(data)
    assert not list(tmp_path.glob(".*partial*"))  # temp file renamed away


def test_schema_rejects_malformed_reports():
    data = _report().to_dict()
    bad = json.loads(json.dumps(data))
    bad["utterances"][0]["signals"]["voicing"] = 1.5
    with pytest.raises(ReportValidationError, match="voicing"):
        validate_report(bad)
    bad = json.loads(json.dumps(data))
    del bad["input"]["sha256"]
    with pytest.raises(ReportValidationError, match="sha256"):
        validate_report(bad)
    bad = json.loads(json.dumps(data))
    bad["utterances"][0]["prediction"] = {"label": "happy", "score": None, "probabilities": {"happy": 2.0}}
    with pytest.raises(ReportValidationError):
        validate_report(bad)
    assert "seconds" in load_schema()["properties"]["utterances"]["items"]["properties"]["start"]["description"].lower()


def test_invalid_report_is_never_written(tmp_path):
    report = _report(run={"no_model": True})  # misses required keys
    with pytest.raises(ReportValidationError):
        report.write(tmp_path / "report.json")
    assert not (tmp_path / "report.json").exists()


def test_prediction_reads_back_from_the_report_and_finds_its_sentiment_head():
    """A report's prediction as JSON turns back into the same Prediction (batch reads finished
    reports so); the sentiment is the first head with a score."""
    cls = Prediction(label="neg", probabilities={"neg": 0.7, "neu": 0.2, "pos": 0.1})
    assert cls.main() == "neg" and cls.sentiment() is None
    assert Prediction.from_dict(json.loads(json.dumps(asdict(cls)))) == cls
    reg = Prediction(score=-1.5)
    assert reg.main() == -1.5 and Prediction.from_dict(asdict(reg)) == reg
    heads = {"emotion": HeadPrediction(label="sad", probabilities={"happy": 0.4, "sad": 0.6}),
             "sentiment": HeadPrediction(label="negative", probabilities={"negative": 0.7, "neutral": 0.2, "positive": 0.1},
                                         score=-0.6)}
    mh = Prediction(label="sad", probabilities={"happy": 0.4, "sad": 0.6}, heads=heads)
    back = Prediction.from_dict(json.loads(json.dumps(asdict(mh))))
    assert back == mh and isinstance(back.heads["sentiment"], HeadPrediction)
    assert back.sentiment() == ("negative", -0.6)


def test_report_with_two_heads_and_modality_use_validates():
    heads = {"emotion": HeadPrediction(label="happy", probabilities={"happy": 0.8, "sad": 0.2}),
             "sentiment": HeadPrediction(label="positive", probabilities={"negative": 0.1, "neutral": 0.2, "positive": 0.7},
                                         score=0.6)}
    pred = Prediction(label="happy", probabilities={"happy": 0.8, "sad": 0.2}, heads=heads)
    base = _report()
    utt = base.utterances[0]
    utt.prediction = pred
    utt.modality_weights = {"text": 0.4, "audio": 0.0, "vision": 0.6}
    utt.modalities = {"text": ModalityUse(True), "audio": ModalityUse(False, "silent"), "vision": ModalityUse(True)}
    data = _report(utterances=[utt], overall=pred).to_dict()
    validate_report(data)
    u = data["utterances"][0]
    assert u["modalities"]["audio"] == {"used": False, "reason": "silent"} and u["modalities"]["text"]["reason"] is None
    assert data["overall"]["heads"]["sentiment"]["score"] == 0.6 and Prediction.from_dict(data["overall"]) == pred
    assert pred.sentiment() == ("positive", 0.6)
    bad = json.loads(json.dumps(data))
    bad["utterances"][0]["prediction"]["heads"]["sentiment"]["score"] = 1.5  # outside [-1, 1]
    with pytest.raises(ReportValidationError, match="score"):
        validate_report(bad)
    bad = json.loads(json.dumps(data))
    bad["utterances"][0]["modalities"]["audio"] = {"used": "no"}
    with pytest.raises(ReportValidationError, match="modalities"):
        validate_report(bad)
    # a 1.0 report (no heads, no modalities) still validates: the new fields are optional
    old = json.loads(json.dumps(data))
    old["schema_version"] = "1.0.0"
    for p in (old["overall"], old["utterances"][0]["prediction"]):
        del p["heads"]
    del old["utterances"][0]["modalities"]
    validate_report(old)


def test_overall_prediction_is_duration_weighted():
    utts = [Utterance(0, 0.0, 3.0, "", "speech"), Utterance(1, 3.0, 4.0, "", "speech")]
    reg = overall_prediction(utts, [Prediction(score=1.0), Prediction(score=-3.0)], LabelSpec(task="regression"))
    assert reg.score == pytest.approx(0.0)
    cls = overall_prediction(
        utts, [Prediction(label="a", probabilities={"a": 0.6, "b": 0.4}), Prediction(label="b", probabilities={"a": 0.0, "b": 1.0})],
        LabelSpec(task="classification", classes=("a", "b")),
    )
    assert cls.label == "b" and cls.probabilities["a"] == pytest.approx(0.45)  # 0.75*0.6 vs 0.75*0.4 + 0.25
    assert cls.heads is None
    assert overall_prediction(utts, [None, None], None) is None

    def two(emotion, sentiment_probs):
        neg, neu, pos = sentiment_probs
        heads = {"emotion": HeadPrediction(label=max(emotion, key=emotion.get), probabilities=emotion),
                 "sentiment": HeadPrediction(label="x", probabilities={"negative": neg, "neutral": neu, "positive": pos},
                                             score=pos - neg)}
        return Prediction(label=heads["emotion"].label, probabilities=emotion, heads=heads)

    mh = overall_prediction(utts, [two({"a": 0.6, "b": 0.4}, (0.0, 0.2, 0.8)), two({"a": 0.0, "b": 1.0}, (1.0, 0.0, 0.0))],
                            LabelSpec.from_dict({"task": "multihead", "heads": [{"name": "emotion", "classes": ["a", "b"]}, {
                                "name": "sentiment", "classes": ["negative", "neutral", "positive"]}]}))
    assert mh.label == "b" and mh.heads["emotion"].probabilities["a"] == pytest.approx(0.45)
    sent = mh.heads["sentiment"]
    assert sent.probabilities["positive"] == pytest.approx(0.6) and sent.probabilities["negative"] == pytest.approx(0.25)
    assert sent.label == "positive" and sent.score == pytest.approx(0.75 * 0.8 - 0.25 * 1.0)
    assert mh.sentiment() == ("positive", pytest.approx(0.35))


def test_run_key_changes_with_what_changes_the_output():
    base = dict(sha256="a" * 64, config={"x": 1}, checkpoint_sha256=None, render_video=True)
    assert run_key(**base) == run_key(**base)
    for change in ({"sha256": "b" * 64}, {"config": {"x": 2}}, {"checkpoint_sha256": "c" * 64}, {"render_video": False}):
        assert run_key(**{**base, **change}) != run_key(**base)


def test_checkpoint_provenance_carries_model_config_and_calibration_since_1_2():
    spec = {"task": "classification", "classes": ["a", "b"]}
    info = CheckpointInfo(path="/m.ckpt", sha256="b" * 64, model_name="mfsa", label_spec=spec, trained_on=None,
                          metrics=None, model_config={"d": 16, "text_logit_bias": [0.1, -0.1]},
                          calibration={"temperature": {"classification": 1.5},
                                       "temperature_by_group": {"words_only": {"classification": 0.9},
                                                                "other": {"classification": 2.7}}})
    base = _report()
    data = _report(provenance=Provenance(extraction_config={}, extractors=base.provenance.extractors,
                                         checkpoint=info)).to_dict()
    validate_report(data)
    assert tuple(map(int, SCHEMA_VERSION.split("."))) >= (1, 2, 0)
    got = data["provenance"]["checkpoint"]
    assert got["model_config"]["text_logit_bias"] == [0.1, -0.1]
    assert got["calibration"]["temperature_by_group"]["other"] == {"classification": 2.7}
    # a 1.1 report (no model_config, no calibration) still validates
    old = json.loads(json.dumps(data))
    old["schema_version"] = "1.1.0"
    del old["provenance"]["checkpoint"]["model_config"], old["provenance"]["checkpoint"]["calibration"]
    validate_report(old)
