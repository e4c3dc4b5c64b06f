"""`analyze` end to end on a real bundled clip: without a model, and with a small checkpoint
trained once per session (conftest's `plumbing_checkpoint`) on a synthetic dataset in the project's own format.

The checkpoint is for the plumbing only (random features, random labels, two epochs): the
tests check that its predictions reach the report, the video and the terminal in the right
shape, never what they say.
"""

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

import mfsa_pipe
from extractors.pipeline import Extraction
from mfsa_pipe.analysis.checks import AnalyzeError
from mfsa_pipe.analysis.video import analyze
from mfsa_pipe.cli import app
from mfsa_pipe.analysis.report import validate_report
from mfsa_pipe.checkpoint import load_checkpoint

from helpers import MEDIA_DIR as DATA, PLUMBING_CLASSES

GRID = DATA / "grid_id2_vcd_swwp2s.mpg"  # 3 s speaking face, "set white with p two soon"
CLASSES = PLUMBING_CLASSES  # the conftest's plumbing_checkpoint


@pytest.fixture(scope="session")
def no_model_run(tmp_path_factory):
    # no cache: the report must time every extraction stage, whichever test extracted the clip first
    out = tmp_path_factory.mktemp("analyze-no-model")
    return analyze(GRID, out_dir=out, no_model=True, cache_dir=False), out


@pytest.fixture(scope="session")
def model_run(tmp_path_factory, cache_dir, plumbing_checkpoint):
    out = tmp_path_factory.mktemp("analyze-model")
    return analyze(GRID, checkpoint=plumbing_checkpoint, out_dir=out, cache_dir=cache_dir), out


def _read(out: Path) -> dict:
    data = json.loads((out / "report.json").read_text())
    validate_report(data)  # the shipped schema, on a real output
    return data


def _video_props(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        return {"size": (v.codec_context.width, v.codec_context.height), "rate": float(v.average_rate), "frames": frames,
                "audio": [a.codec_context.name for a in c.streams.audio]}


@pytest.mark.integration
def test_no_model_report_holds_the_signals_and_says_no_prediction(no_model_run):
    report, out = no_model_run
    data = _read(out)
    assert data["model"] is None and data["provenance"]["checkpoint"] is None and data["overall"] is None
    assert "no fused prediction" in data["notice"].lower() and "mfsa-pipe train" in data["notice"]
    inp = data["input"]
    assert inp["sha256"] == hashlib.sha256(GRID.read_bytes()).hexdigest()
    assert (inp["width"], inp["height"], inp["fps"]) == (360, 288, 25.0) and inp["duration_s"] == pytest.approx(3.0, abs=0.1)
    assert inp["has_audio"] and inp["has_video"]
    s = data["summary"]
    assert s["text"]["words"] >= 4 and 0 <= s["text"]["oov_rate"] <= 1 and 0.3 < s["text"]["speech_coverage"] < 1
    assert s["vision"]["face_coverage"] > 0.9 and s["vision"]["rate_hz"] == 15.0 and s["audio"]["rate_hz"] == 12.5
    assert [u["source"] for u in data["utterances"]] == ["speech"]
    utt = data["utterances"][0]
    assert "white" in utt["text"].lower() and 0 <= utt["start"] < utt["end"] <= inp["duration_s"]
    assert utt["prediction"] is None and utt["modality_weights"] is None
    assert _modalities(utt) == {m: (None, None) for m in ("text", "audio", "vision")}  # all present, no model
    assert utt["rows"]["text"] >= 4 and utt["rows"]["audio"] > 10 and utt["rows"]["vision"] > 10
    assert sum(utt["signals"]["emotions"].values()) == pytest.approx(1.0, abs=0.02)
    assert utt["signals"]["face_coverage"] > 0.9 and utt["signals"]["loudness"] is not None
    assert {"decode", "speech", "vectors", "acoustic", "facial", "model", "render", "timeline", "total"} <= set(data["timings_s"])
    prov = data["provenance"]["extractors"]
    assert prov["audio"]["dim"] == 74 and prov["vision"]["dim"] == 35 and prov["text"]["rate"] is None
    assert report.to_dict()["utterances"] == data["utterances"]


@pytest.mark.integration
def test_no_model_outputs_are_complete(no_model_run, tmp_path):
    _, out = no_model_run
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.json", "grid_id2_vcd_swwp2s.annotated.mp4", "timeline.png", "features.npz"])
    features = Extraction.load(out / "features.npz")
    assert features.media.sha256 == _read(out)["input"]["sha256"] and features.vision.dim == 35
    src, dst = _video_props(GRID), _video_props(out / "grid_id2_vcd_swwp2s.annotated.mp4")
    assert dst["size"] == src["size"] and dst["rate"] == src["rate"] and dst["audio"] == ["aac"]
    assert abs(dst["frames"] - src["frames"]) <= 1
    # frame 40 (1.6 s, mid-sentence): the strip is drawn, the face box is there, the face is not covered
    with av.open(str(GRID)) as c:
        orig = [f.to_ndarray(format="bgr24") for _, f in zip(range(41), c.decode(video=0))][-1]
    with av.open(str(out / "grid_id2_vcd_swwp2s.annotated.mp4")) as c:
        drawn = [f.to_ndarray(format="bgr24") for _, f in zip(range(41), c.decode(video=0))][-1]
    h = orig.shape[0]
    strip = np.abs(drawn[int(h * 0.93):].astype(int) - orig[int(h * 0.93):].astype(int)).mean()
    face = np.abs(drawn[130:200, 150:210].astype(int) - orig[130:200, 150:210].astype(int)).mean()
    assert strip > 20 and face < 8
    features_box = features.vision.meta["boxes"][24]  # 1.6 s at 15 Hz
    x0, y0, x1, y1 = (int(v) for v in features_box)
    edge = drawn[y0 - 1:y0 + 2, x0 + 5:x1 - 5].astype(int)
    assert ((edge[..., 1] > 150) & (edge[..., 2] < 150)).mean() > 0.5  # green box edge


@pytest.mark.integration
def test_model_report_has_predictions_and_modality_weights(model_run, plumbing_checkpoint):
    report, out = model_run
    data = _read(out)
    assert data["notice"] is None
    assert data["model"]["name"] == "mfsa" and data["model"]["task"] == "classification"
    assert data["model"]["label_spec"]["classes"] == CLASSES and data["model"]["has_modality_weights"]
    assert data["model"]["device"].startswith("cuda") or data["model"]["device"] == "cpu"
    ckpt = data["provenance"]["checkpoint"]
    assert ckpt["sha256"] == hashlib.sha256(plumbing_checkpoint.read_bytes()).hexdigest()
    assert "synthetic_plumbing_only" in json.dumps(ckpt["trained_on"]) and "valid" in ckpt["metrics"]
    assert ckpt["model_config"] and ckpt["model_config"] == json.loads(json.dumps(load_checkpoint(ckpt["path"]).model_config))
    for utt in data["utterances"]:
        probs = utt["prediction"]["probabilities"]
        assert list(probs) == CLASSES and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert utt["prediction"]["label"] == max(probs, key=probs.get)
        assert sum(utt["modality_weights"].values()) == pytest.approx(1.0, abs=1e-4)
    assert data["overall"]["label"] in CLASSES and data["overall"]["heads"] is None
    assert report.prediction_main == data["overall"]["label"]
    assert all(_modalities(u) == {m: (True, None) for m in ("text", "audio", "vision")} for u in data["utterances"])
    assert data["run"]["no_model"] is False and data["timings_s"]["model"] > 0


@pytest.fixture(scope="session")
def grid_variants(tmp_path_factory) -> dict[str, Path]:
    """The GRID clip with its audio track silenced (volume 0), and without its video stream."""
    import subprocess

    import imageio_ffmpeg

    ffmpeg, root = imageio_ffmpeg.get_ffmpeg_exe(), tmp_path_factory.mktemp("grid-variants")
    variants = {"silent": (root / "grid_silent.mpg", ["-af", "volume=0", "-c:v", "copy"]),
                "no_video": (root / "grid_no_video.m4a", ["-vn", "-c:a", "aac"])}
    for path, args in variants.values():
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(GRID), *args, str(path)], check=True, timeout=120)
    return {name: path for name, (path, _) in variants.items()}


def _modalities(utt: dict) -> dict:
    return {m: (v["used"], v["reason"]) for m, v in utt["modalities"].items()}


@pytest.mark.integration
def test_a_silent_track_is_reported_unused_with_weight_zero(grid_variants, plumbing_checkpoint, tmp_path, cache_dir):
    analyze(grid_variants["silent"], checkpoint=plumbing_checkpoint, out_dir=tmp_path, render_video=False, cache_dir=cache_dir)
    data = _read(tmp_path)
    assert data["summary"]["text"]["words"] == 0 and data["utterances"]
    for utt in data["utterances"]:
        assert utt["source"] == "window"  # no speech: windows that follow the face
        assert _modalities(utt) == {"text": (False, "no words"), "audio": (False, "silent"), "vision": (True, None)}
        w = utt["modality_weights"]
        assert w["audio"] == 0.0 and w["text"] == 0.0 and w["vision"] == pytest.approx(1.0, abs=1e-4)
        assert utt["prediction"]["label"] in CLASSES


@pytest.mark.integration
def test_no_video_stream_is_reported_unused_with_weight_zero(grid_variants, plumbing_checkpoint, tmp_path, cache_dir):
    report = analyze(grid_variants["no_video"], checkpoint=plumbing_checkpoint, out_dir=tmp_path, cache_dir=cache_dir)
    data = _read(tmp_path)
    assert not data["input"]["has_video"] and data["outputs"]["annotated_video"] is None
    assert data["summary"]["vision"]["frames"] == 0
    assert [u["source"] for u in data["utterances"]] == ["speech"]
    utt = data["utterances"][0]
    assert _modalities(utt) == {"text": (True, None), "audio": (True, None), "vision": (False, "no face")}
    assert utt["modality_weights"]["vision"] == 0.0 and sum(utt["modality_weights"].values()) == pytest.approx(1.0, abs=1e-4)
    assert report.utterances[0].modalities["vision"].reason == "no face"


@pytest.mark.integration
def test_nothing_to_read_gets_no_prediction(plumbing_checkpoint, tmp_path, cache_dir):
    """No words, a silent track and no face: the model is not asked (it would answer from its
    biases); the utterances say why, the overall prediction is null, and the video is still drawn."""
    import subprocess

    import imageio_ffmpeg

    blank = tmp_path / "blank.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=160x120:d=3",
                    "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3", "-shortest", str(blank)],
                   check=True, timeout=120)
    analyze(blank, checkpoint=plumbing_checkpoint, out_dir=tmp_path / "out", cache_dir=cache_dir)
    data = _read(tmp_path / "out")
    assert data["utterances"] and data["overall"] is None
    for utt in data["utterances"]:
        assert utt["prediction"] is None and utt["modality_weights"] is None
        assert _modalities(utt) == {"text": (False, "no words"), "audio": (False, "silent"), "vision": (False, "no face")}
    assert data["outputs"]["annotated_video"]


@pytest.mark.integration
def test_checkpoint_with_other_features_is_refused(plumbing_checkpoint, tmp_path, monkeypatch):
    from mfsa_pipe.checkpoint import SpecMismatchError, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(plumbing_checkpoint)
    ckpt.feature_spec["audio"]["rate"] = 25.0  # e.g. trained on another acoustic rate
    ckpt.feature_spec["vision"]["version"] = "0.9"
    bad = save_checkpoint(ckpt, tmp_path / "other.ckpt")

    import extractors.pipeline

    def no_extraction(*args, **kwargs):
        raise AssertionError("the mismatch must be found before extracting")

    monkeypatch.setattr(extractors.pipeline, "extract", no_extraction)
    with pytest.raises(SpecMismatchError) as err:
        analyze(GRID, checkpoint=bad, out_dir=tmp_path / "out")
    assert "audio.rate" in str(err.value) and "vision.version" in str(err.value)
    result = CliRunner().invoke(app, ["analyze", str(GRID), "--checkpoint", str(bad), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "audio.rate" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.integration
def test_default_model_is_used_when_shipped_and_absent_otherwise(plumbing_checkpoint, tmp_path, monkeypatch, cache_dir):
    import mfsa_pipe.analysis.model_choice as model_choice

    monkeypatch.setattr(model_choice, "default_checkpoint_path", lambda: None)
    report = analyze(GRID, out_dir=tmp_path / "none", render_video=False, cache_dir=cache_dir)
    assert report.model is None and "ships no default model" in report.notice
    assert all(u.prediction is None for u in report.utterances)
    assert report.outputs["annotated_video"] is None and not list((tmp_path / "none").glob("*.mp4"))

    monkeypatch.setattr(model_choice, "default_checkpoint_path", lambda: plumbing_checkpoint)
    report = analyze(GRID, out_dir=tmp_path / "default", render_video=False, cache_dir=cache_dir)
    assert report.model is not None and report.provenance.checkpoint.path == str(plumbing_checkpoint.resolve())
    # --no-model wins over the default
    report = analyze(GRID, out_dir=tmp_path / "off", render_video=False, no_model=True, cache_dir=cache_dir)
    assert report.model is None and report.notice


@pytest.mark.integration
def test_cli_analyze_prints_a_summary(plumbing_checkpoint, tmp_path, cache_dir):
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", str(GRID), "--out", str(tmp_path / "a"), "--no-model", "--no-video",
                                 "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    assert "no model" in result.output.lower() and "utterances" in result.output and "white" in result.output.lower()
    result = runner.invoke(app, ["analyze", str(GRID), "--out", str(tmp_path / "b"), "--checkpoint", str(plumbing_checkpoint),
                                 "--no-video", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    assert "overall (mfsa)" in result.output and "report.json" in result.output
    assert _read(tmp_path / "b")["model"]["name"] == "mfsa"


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x01not a video" * 100)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = {
        "missing": ["analyze", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")],
        "directory": ["analyze", str(tmp_path), "--out", str(tmp_path / "o")],
        "not media": ["analyze", str(broken), "--out", str(tmp_path / "o"), "--no-model"],
        "unwritable out": ["analyze", str(GRID), "--out", str(blocker / "sub"), "--no-model"],
        "missing checkpoint": ["analyze", str(GRID), "--out", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "no.ckpt")],
        "checkpoint not a checkpoint": ["analyze", str(GRID), "--out", str(tmp_path / "o"), "--checkpoint", str(broken)],
    }
    for name, args in cases.items():
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (name, result.output)
        assert result.output.startswith("error:") and "Traceback" not in result.output, (name, result.output)
    assert not (tmp_path / "o" / "report.json").exists()


@pytest.mark.integration
def test_a_failure_while_writing_leaves_no_report(tmp_path, cache_dir, monkeypatch):
    import mfsa_pipe.analysis.render as render

    def broken_encoder(**kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(render, "render_video", broken_encoder)
    with pytest.raises(OSError):
        analyze(GRID, out_dir=tmp_path / "o", no_model=True, cache_dir=cache_dir)
    assert not (tmp_path / "o" / "report.json").exists()  # the folder is not presented as complete
    assert not list((tmp_path / "o").glob(".*partial*"))


def test_api_errors_and_export(tmp_path):
    # the package exports the API function itself (its module is mfsa_pipe.analysis.video)
    from mfsa_pipe import analyze as exported

    assert exported is analyze and mfsa_pipe.analyze is analyze
    with pytest.raises(AnalyzeError, match="no such file"):
        mfsa_pipe.analyze(tmp_path / "missing.mp4", out_dir=tmp_path / "o")
    with pytest.raises(AnalyzeError, match="is a directory"):
        analyze(tmp_path, out_dir=tmp_path / "o")


@pytest.mark.integration
def test_batch_with_checkpoint_fills_the_prediction_column(plumbing_checkpoint, tmp_path, cache_dir):
    import csv
    import shutil

    from mfsa_pipe.analysis.batch import run_batch

    (tmp_path / "in").mkdir()
    shutil.copy(GRID, tmp_path / "in" / "grid.mpg")
    result = run_batch(tmp_path / "in", out_dir=tmp_path / "out", checkpoint=plumbing_checkpoint, render_video=False, cache_dir=cache_dir)
    assert result.exit_code == 0 and result.notice is None
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "ok" and row["prediction"] in CLASSES
    assert row["sentiment"] == "" and row["sentiment_score"] == ""  # no sentiment head
