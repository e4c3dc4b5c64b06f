"""MELD as published -> the default model's evaluation: `labels-from-meld`, then `build-dataset
--checkpoint default`, then `evaluate default` (the benchmark's path: MELD's test split is judged
this way; here on a few rows written like MELD's CSVs, mis-encoded punctuation included)."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from mfsa_pipe.cli import app
from mfsa_pipe.datasets.label_adapters import AdapterError, meld_labels

MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
                "Episode", "StartTime", "EndTime"]
ROWS = [("Oh my God, he\u2019s lost it.", "sadness", "negative"), ("What?", "surprise", "negative"),
        ("I\x92m so happy for you!", "joy", "positive"), ("Get out\x85 now!", "anger", "negative"),
        ("Okay.", "neutral", "neutral"), ("Ew\u2014gross.", "disgust", "negative")]


def write_meld(path, rows=ROWS):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(MELD_COLUMNS)
        for i, (text, emotion, sentiment) in enumerate(rows):
            w.writerow([i + 1, text, "Ross", emotion, sentiment, i // 2, i % 2, 1, 1, "00:00:01,000", "00:00:02,000"])
    return path


def test_meld_rows_take_the_default_models_names(tmp_path):
    result = meld_labels(write_meld(tmp_path / "test_sent_emo.csv"), split="test")
    assert [r["emotion"] for r in result.rows] == ["sad", "surprise", "happy", "angry", "neutral", "disgust"]
    assert result.rows[2] == {"id": "meld-test-1-0", "text": "I\x92m so happy for you!", "emotion": "happy",
                              "sentiment": "positive", "split": "test", "speaker": "meld"}
    assert meld_labels(tmp_path / "test_sent_emo.csv", split="dev").rows[0]["split"] == "valid"
    with pytest.raises(AdapterError, match="split must be train, valid or test"):
        meld_labels(tmp_path / "test_sent_emo.csv", split="holdout")
    (tmp_path / "other.csv").write_text("Utterance,Emotion\nhi,joy\n")
    with pytest.raises(AdapterError, match="Sentiment"):
        meld_labels(tmp_path / "other.csv")
    (tmp_path / "cp1252.csv").write_bytes(",".join(MELD_COLUMNS[:7]).encode() + b"\n1,I\x92m,R,joy,positive,0,0\n")
    assert meld_labels(tmp_path / "cp1252.csv").rows[0]["text"] == "I\u2019m"  # a Windows copy: read as cp1252
    from mfsa_pipe.datasets.label_adapters import _read_csv

    (tmp_path / "bad.csv").write_bytes(b"a,b\n\x81\xff,1\n")
    with pytest.raises(AdapterError, match="is not UTF-8 text"):
        _read_csv(tmp_path / "bad.csv")


def test_labels_build_and_evaluate_the_default_model_as_the_benchmark_does(tmp_path):
    runner = CliRunner()
    meld = write_meld(tmp_path / "test_sent_emo.csv")
    res = runner.invoke(app, ["labels-from-meld", str(meld), "--out", str(tmp_path / "meld.csv")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["build-dataset", str(tmp_path / "meld.csv"), "--out", str(tmp_path / "meld.h5"),
                              "--checkpoint", "default", "--no-cache"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "default", "--dataset", str(tmp_path / "meld.h5"), "--split", "test", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["samples"] == 6 and set(out["metrics"]) >= {"emotion", "sentiment"}
    assert out["metrics"]["emotion"]["weighted_f1"]["values"][0] >= 0


def test_build_dataset_checkpoint_excludes_its_own_class_and_config_options(tmp_path):
    meld = write_meld(tmp_path / "test_sent_emo.csv")
    runner = CliRunner()
    runner.invoke(app, ["labels-from-meld", str(meld), "--out", str(tmp_path / "meld.csv")])
    res = runner.invoke(app, ["build-dataset", str(tmp_path / "meld.csv"), "--out", str(tmp_path / "x.h5"),
                              "--checkpoint", "default", "--emotion-classes", "neutral,happy"])
    assert res.exit_code == 2 and "leave out --config" in res.output and not (tmp_path / "x.h5").exists()
    res = runner.invoke(app, ["build-dataset", str(tmp_path / "meld.csv"), "--out", str(tmp_path / "x.h5"),
                              "--checkpoint", str(tmp_path / "missing.ckpt")])
    assert res.exit_code == 2 and "--checkpoint" in res.output and not (tmp_path / "x.h5").exists()
