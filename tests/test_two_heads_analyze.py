"""A two-head (emotion + sentiment) checkpoint through `analyze`, the CLI summary and `batch`.

The checkpoint is a tiny, randomly initialised MFSA: plumbing only. The tests check that both
heads reach the report (per utterance and overall), the schema, the terminal and the summary
tables in the right shape, never what they say.
"""

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from extractors.pipeline import feature_spec
from mfsa_pipe.analysis.video import analyze
from mfsa_pipe.analysis.batch import run_batch
from mfsa_pipe.checkpoint import Checkpoint, save_checkpoint
from mfsa_pipe.cli import app
from mfsa_pipe.datasets.base import NormStats
from mfsa_pipe.analysis.report import validate_report
from models.registry import build_model, config_from_dict

pytestmark = pytest.mark.integration  # every test analyses the bundled GRID clip

GRID = Path(__file__).resolve().parent.parent / "examples" / "media" / "grid_id2_vcd_swwp2s.mpg"
EMOTIONS = ["neutral", "sad", "happy", "surprise", "fear", "angry", "disgust"]
SENTIMENTS = ["negative", "neutral", "positive"]
LABEL_SPEC = {"task": "multihead", "heads": [{"name": "emotion", "classes": EMOTIONS},
                                              {"name": "sentiment", "classes": SENTIMENTS}]}


@pytest.fixture(scope="session")
def two_head_checkpoint(tmp_path_factory) -> Path:
    """Untrained tiny MFSA with an emotion (7) and a sentiment (3) head, for plumbing only."""
    spec = feature_spec()
    dims = {m: int(spec[m]["dim"]) for m in ("text", "audio", "vision")}
    torch.manual_seed(0)
    config = config_from_dict("mfsa", {
        "dims": [dims["text"], dims["audio"], dims["vision"]], "task": "multihead", "head_sizes": [7, 3],
        "d": 8, "d_h": 16, "num_heads": 2, "psa_layers": 1, "hca_layers": 1, "fusion_heads": 2, "fusion_ffn": 16,
        "wal_hidden": 8,
    })
    model = build_model("mfsa", config)
    ckpt = Checkpoint(
        model_name="mfsa", model_config=config.to_dict(), label_spec=LABEL_SPEC, feature_spec=spec,
        normalization=NormStats.identity(dims), state_dict=model.state_dict(),
        training={"note": "untrained, plumbing tests only"},
        calibration={"temperature": {"emotion": 1.5, "sentiment": 0.8}},
    )
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("two-heads") / "model.ckpt")


@pytest.fixture(scope="session")
def two_head_run(tmp_path_factory, two_head_checkpoint, cache_dir):
    out = tmp_path_factory.mktemp("analyze-two-heads")
    return analyze(GRID, checkpoint=two_head_checkpoint, out_dir=out, cache_dir=cache_dir), out


def _check_heads(pred: dict) -> None:
    emotion, sentiment = pred["heads"]["emotion"], pred["heads"]["sentiment"]
    assert list(emotion["probabilities"]) == EMOTIONS and list(sentiment["probabilities"]) == SENTIMENTS
    for head in (emotion, sentiment):
        assert sum(head["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert head["label"] == max(head["probabilities"], key=head["probabilities"].get)
    p = sentiment["probabilities"]
    assert -1 <= sentiment["score"] <= 1 and sentiment["score"] == pytest.approx(p["positive"] - p["negative"], abs=1e-5)
    assert emotion["score"] is None
    # the top-level fields stay the first head's (the emotion), as 1.0 readers expect
    assert pred["label"] == emotion["label"] and pred["probabilities"] == emotion["probabilities"] and pred["score"] is None


def test_report_has_both_heads_per_utterance_and_overall(two_head_run):
    report, out = two_head_run
    data = json.loads((out / "report.json").read_text())
    validate_report(data)
    major, minor, _ = map(int, data["schema_version"].split("."))
    assert major == 1 and minor >= 1  # heads since 1.1
    assert data["model"]["task"] == "multihead" and data["model"]["label_spec"] == LABEL_SPEC
    assert data["utterances"]
    for utt in data["utterances"]:
        _check_heads(utt["prediction"])
        assert {m: v["used"] for m, v in utt["modalities"].items()} == {"text": True, "audio": True, "vision": True}
        assert sum(utt["modality_weights"].values()) == pytest.approx(1.0, abs=1e-4)
        # each used modality's own answer (since 1.3), with both heads
        assert list(utt["by_modality"]) == ["text", "audio", "vision"]
        for pred in utt["by_modality"].values():
            _check_heads(pred)
    _check_heads(data["overall"])
    # overall: duration-weighted means of each head's probabilities and of the score
    utts = data["utterances"]
    w = np.array([u["end"] - u["start"] for u in utts])
    w = w / w.sum()
    score = float(np.dot(w, [u["prediction"]["heads"]["sentiment"]["score"] for u in utts]))
    assert data["overall"]["heads"]["sentiment"]["score"] == pytest.approx(score, abs=1e-4)
    assert report.overall.sentiment()[0] == data["overall"]["heads"]["sentiment"]["label"]
    assert (out / "timeline.png").is_file() and (out / "grid_id2_vcd_swwp2s.annotated.mp4").is_file()
    # the plot has the sentiment row and the lanes of each modality alone: 8.8 + 1.4 inches at 100 dpi
    assert cv2.imread(str(out / "timeline.png")).shape[0] == 1020


def test_cli_summary_shows_the_sentiment(two_head_checkpoint, tmp_path, cache_dir):
    result = CliRunner().invoke(app, ["analyze", str(GRID), "--out", str(tmp_path / "o"), "--checkpoint",
                                      str(two_head_checkpoint), "--no-video", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "o" / "report.json").read_text())
    label, score = data["overall"]["heads"]["sentiment"]["label"], data["overall"]["heads"]["sentiment"]["score"]
    assert "sentiment" in result.output and f"sentiment {label} ({score:+.2f})" in result.output
    each = data["utterances"][0]["by_modality"]
    assert "each alone" in result.output and each["text"]["label"] in result.output.replace("\n", " ")


def test_batch_summary_has_sentiment_columns(two_head_checkpoint, tmp_path, cache_dir):
    (tmp_path / "in").mkdir()
    shutil.copy(GRID, tmp_path / "in" / "grid.mpg")
    out = tmp_path / "out"
    for status in ("ok", "skipped"):  # a resumed run reads the sentiment back from report.json
        result = run_batch(tmp_path / "in", out_dir=out, checkpoint=two_head_checkpoint, render_video=False, cache_dir=cache_dir)
        assert result.exit_code == 0
        with open(out / "summary.csv", newline="") as f:
            (row,) = list(csv.DictReader(f))
        assert list(row) == ["path", "status", "duration_s", "prediction", "sentiment", "sentiment_score", "error"]
        report = json.loads((out / "grid" / "report.json").read_text())
        sentiment = report["overall"]["heads"]["sentiment"]
        assert row["status"] == status and row["prediction"] == report["overall"]["label"] and row["prediction"] in EMOTIONS
        assert row["sentiment"] == sentiment["label"] in SENTIMENTS
        assert float(row["sentiment_score"]) == pytest.approx(sentiment["score"], abs=1e-4)
        (video,) = json.loads((out / "summary.json").read_text())["videos"]
        assert video["sentiment"] == sentiment["label"] and video["sentiment_score"] == pytest.approx(sentiment["score"], abs=1e-4)
