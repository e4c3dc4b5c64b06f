import shutil
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

import extractors.facial
import extractors.text
from extractors.config import AudioConfig, ExtractionConfig
from extractors.errors import MediaError
from extractors.pipeline import Extraction, extract, feature_spec
from extractors.sequence import Sequence
from mfsa_pipe.cli import app

from helpers import MEDIA_DIR as DATA

GRID, JFK, SINGLE = DATA / "grid_id2_vcd_swwp2s.mpg", DATA / "jfk.flac", DATA / "single_face.mp4"


class FakeText:
    """Stands in for the recogniser: two words, the text extractor's meta layout."""

    calls = 0

    def __init__(self, config):
        self.config = config

    def extract(self, audio, *, sample_rate):
        type(self).calls += 1
        assert audio.dtype == np.float32 and sample_rate == 16000
        spec = extractors.text.describe(self.config)
        return Sequence(
            features=np.ones((2, spec["dim"]), np.float32), times=[[0.1, 0.4], [0.5, 0.9]],
            columns=spec["columns"], rate=None, source={k: spec[k] for k in ("id", "version", "config")},
            tokens=["hello", "there"],
            meta={"oov_rate": 0.5, "segments": [{"start": 0.1, "end": 0.9, "text": "hello there"}],
                  "timings": {"load": 0.0, "speech": 0.25, "vectors": 0.01}},
        )


class FakeFacial:
    """Stands in for the face model: consumes the real frames, one row each, a box on every row."""

    calls = 0

    def __init__(self, config):
        self.config = config

    def extract(self, frames, *, duration_s, frame_size):
        type(self).calls += 1
        spec = extractors.facial.describe(self.config)
        times = [t for t, frame in frames]
        assert all(t < duration_s for t in times) and len(frame_size) == 2
        n = len(times)
        boxes = np.full((n, 4), np.nan)
        boxes[: n // 2] = [1, 2, 30, 40]
        return Sequence(
            features=np.zeros((n, spec["dim"]), np.float32), times=np.c_[times, np.add(times, 1 / 15)],
            columns=spec["columns"], rate=15.0, source={k: spec[k] for k in ("id", "version", "config")},
            meta={"boxes": boxes, "face_coverage": 0.5, "faces_per_frame": np.ones(n, np.int16)},
        )


@pytest.fixture
def fakes(monkeypatch):
    FakeText.calls = FakeFacial.calls = 0
    monkeypatch.setattr(extractors.text, "TextExtractor", FakeText)
    monkeypatch.setattr(extractors.facial, "FacialExtractor", FakeFacial)
    return FakeText, FakeFacial


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MFSA_PIPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def mute_video(path: Path, seconds: float = 2.0) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * (i % 10), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def test_feature_spec_without_running():
    spec = feature_spec(ExtractionConfig())
    assert set(spec) == {"text", "audio", "vision"}
    assert spec["audio"]["dim"] == 74 and spec["audio"]["rate"] == 12.5
    assert spec["vision"]["dim"] == 35 and spec["vision"]["rate"] == 15.0
    assert spec["text"]["rate"] is None and spec["text"]["dim"] == len(spec["text"]["columns"])


@pytest.mark.integration
def test_extract_with_fakes(fakes):
    result = extract(GRID, cache_dir=False)
    assert result.media.duration_s == pytest.approx(2.98) and not result.cached
    assert result.text.tokens == ["hello", "there"]
    assert abs(result.audio.length - 2.98 * 12.5) <= 1 and abs(result.vision.length - 2.98 * 15) <= 1
    assert result.segments == [{"start": 0.1, "end": 0.9, "text": "hello there"}]
    assert result.feature_spec() == feature_spec(ExtractionConfig())
    assert set(result.timings) >= {"probe", "decode", "speech", "vectors", "acoustic", "facial", "total"}
    assert result.timings["speech"] == 0.25 and result.timings["vectors"] == 0.01
    # the facial stage runs beside decode -> speech -> acoustic, so stages overlap: each measured one fits in
    # the total (the fake recogniser reports 0.25 s of speech without taking it, so speech is not summed)
    assert result.timings["total"] >= result.timings["acoustic"]
    assert result.timings["total"] >= result.timings["facial"]


@pytest.mark.integration
def test_second_extract_reads_the_cache(fakes, private_cache, tmp_path):
    stages = []
    first = extract(SINGLE, progress=stages.append)
    assert stages == ["probe", "cache", "decode", "speech", "acoustic", "facial", "done"]
    assert len(list(private_cache.rglob("*.npz"))) == 1
    copy = shutil.copy(SINGLE, tmp_path / "another name.mp4")  # same content, another name
    second = extract(copy)
    assert (FakeText.calls, FakeFacial.calls) == (1, 1)
    assert second.cached and second.media.path == str(copy) and "cache_read" in second.timings
    for name, seq in first.sequences().items():
        np.testing.assert_array_equal(seq.features, second.sequences()[name].features)
        np.testing.assert_array_equal(seq.times, second.sequences()[name].times)
    # another configuration is another entry
    extract(SINGLE, config=ExtractionConfig(audio=AudioConfig(rate=25.0)))
    assert (FakeText.calls, FakeFacial.calls) == (2, 2)
    assert len(list(private_cache.rglob("*.npz"))) == 2


@pytest.mark.integration
def test_cache_directory_argument_and_off_switch(fakes, private_cache, tmp_path):
    extract(SINGLE, cache_dir=False)
    extract(SINGLE, cache_dir=False)
    assert FakeText.calls == 2 and not private_cache.exists()
    extract(SINGLE, cache_dir=tmp_path / "mine")
    assert extract(SINGLE, cache_dir=tmp_path / "mine").cached and FakeText.calls == 3
    # a damaged cache entry is recomputed, not an error
    entry = next((tmp_path / "mine").rglob("*.npz"))
    entry.write_bytes(b"garbage")
    assert not extract(SINGLE, cache_dir=tmp_path / "mine").cached


@pytest.mark.integration
def test_save_load_round_trip_without_pickle(fakes, tmp_path):
    result = extract(GRID, cache_dir=False)
    path = result.save(tmp_path / "out" / "grid.npz")
    assert [p.name for p in path.parent.iterdir()] == ["grid.npz"]  # no temporary left behind
    with zipfile.ZipFile(path) as z:
        assert all(name.endswith(".npy") for name in z.namelist())
    np.load(path, allow_pickle=False)["header"]  # plain arrays only
    back = Extraction.load(path)
    assert back.media == result.media and back.config == result.config and back.segments == result.segments
    assert back.timings == result.timings and back.feature_spec() == result.feature_spec()
    for name, seq in result.sequences().items():
        other = back.sequences()[name]
        np.testing.assert_array_equal(seq.features, other.features)
        np.testing.assert_array_equal(seq.times, other.times)
        assert (seq.columns, seq.rate, seq.tokens, seq.source) == (other.columns, other.rate, other.tokens, other.source)
    np.testing.assert_array_equal(back.vision.meta["boxes"], result.vision.meta["boxes"])  # NaN rows included
    assert back.vision.meta["faces_per_frame"].dtype == np.int16
    assert back.text.meta["oov_rate"] == 0.5
    with pytest.raises(ValueError, match="not an mfsa-pipe extraction"):
        np.savez(tmp_path / "other.npz", x=np.zeros(2))
        Extraction.load(tmp_path / "other.npz")


@pytest.mark.integration
def test_audio_only_file_gives_empty_vision_with_reason(fakes):
    result = extract(JFK, cache_dir=False)
    assert result.vision.length == 0 and result.vision.dim == 35
    assert result.vision.meta["empty_reason"] == "the file has no video stream"
    assert result.audio.length == 138 and FakeFacial.calls == 0


@pytest.mark.integration
def test_video_without_audio_gives_empty_text_and_audio(fakes, tmp_path):
    result = extract(mute_video(tmp_path / "mute.mp4"), cache_dir=False)
    for seq in (result.text, result.audio):
        assert seq.length == 0 and seq.meta["empty_reason"] == "the file has no audio stream"
    assert result.text.tokens == [] and result.segments == []
    assert result.vision.length == 30 and FakeText.calls == 0


def test_bad_input_is_a_media_error(fakes, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        extract(tmp_path / "empty.mp4")
    assert FakeText.calls == 0


@pytest.mark.integration
def test_real_extractors_on_the_grid_clip(tmp_path):
    # the colleagues' real text and facial extractors with the acoustic one, end to end
    result = extract(GRID, cache_dir=False)
    words = [w.lower().strip(".,") for w in result.text.tokens]
    assert {"set", "white", "with", "soon"} <= set(words)
    assert abs(result.audio.length - 2.98 * 12.5) <= 1 and abs(result.vision.length - 2.98 * 15) <= 1
    assert result.vision.meta["face_coverage"] > 0.9
    assert result.segments and result.segments[0]["start"] < 0.6
    back = Extraction.load(result.save(tmp_path / "grid.npz"))
    assert back.text.tokens == result.text.tokens


@pytest.mark.integration
def test_cli_extract(fakes, tmp_path, private_cache):
    runner = CliRunner()
    out = tmp_path / "features.npz"
    res = runner.invoke(app, ["extract", str(GRID), "--out", str(out)])
    assert res.exit_code == 0, res.output
    for fact in ("2.98 s", "2 words", "OOV rate 50.0%", "38 frames", "45 frames", "face coverage 50%", "speech"):
        assert fact in res.stdout, fact
    assert Extraction.load(out).text.tokens == ["hello", "there"]
    res = runner.invoke(app, ["extract", str(GRID), "--out", str(out)])
    assert res.exit_code == 0 and "cache" in res.stdout and FakeText.calls == 1
    res = runner.invoke(app, ["extract", str(GRID), "--out", str(out), "--no-cache"])
    assert res.exit_code == 0 and FakeText.calls == 2
    res = runner.invoke(app, ["extract", str(JFK), "--out", str(out), "--cache-dir", str(tmp_path / "c2")])
    assert res.exit_code == 0 and "no video stream" in res.stdout and any((tmp_path / "c2").rglob("*.npz"))


@pytest.mark.parametrize("content", [b"", b"not a video at all\n" * 10])
def test_cli_bad_input_is_one_line_exit_2(fakes, tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    res = CliRunner().invoke(app, ["extract", str(bad), "--out", str(tmp_path / "x.npz")])
    assert res.exit_code == 2
    assert res.output.startswith("error: ") and res.output.count("\n") == 1 and "Traceback" not in res.output
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.integration
def test_cli_model_problem_is_one_line_exit_1(fakes, monkeypatch, tmp_path):
    def broken(self, audio, *, sample_rate):
        raise extractors.text.SpeechModelError("faster-whisper could not load tiny.en: file missing")

    monkeypatch.setattr(FakeText, "extract", broken)
    res = CliRunner().invoke(app, ["extract", str(GRID), "--out", str(tmp_path / "x.npz"), "--no-cache"])
    assert res.exit_code == 1 and res.output == "error: faster-whisper could not load tiny.en: file missing\n"


def test_prefetched_frames_keep_order_raise_errors_and_stop_with_the_consumer():
    """The facial stage's frames are decoded ahead in a thread: same frames in the same order, a
    decoder's error reaches the consumer, and a consumer that stops early ends the decoder."""
    import threading

    from extractors.pipeline import _Prefetched

    frames = [(i / 15, np.full((2, 2, 3), i, np.uint8)) for i in range(50)]
    assert [t for t, _ in _Prefetched(iter(frames), depth=2)] == [t for t, _ in frames]

    def broken():
        yield frames[0]
        raise MediaError("clip.mp4: looks truncated")

    with pytest.raises(MediaError, match="truncated"):
        list(_Prefetched(broken()))

    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield (i, None)
                i += 1
        finally:
            closed.set()  # the decoder's container is closed

    consumer = iter(_Prefetched(endless(), depth=2))
    assert [next(consumer)[0] for _ in range(3)] == [0, 1, 2]
    consumer.close()
    assert closed.wait(2.0)
    assert not [t for t in threading.enumerate() if t.name == "mfsa-frames"]
    iter(_Prefetched(endless()))  # asked for no frame (the face model failed to load): no decoder started
    assert not [t for t in threading.enumerate() if t.name == "mfsa-frames"]


def test_cli_extract_refuses_an_unknown_lexicon(tmp_path):
    res = CliRunner().invoke(app, ["extract", str(GRID), "--out", str(tmp_path / "x.npz"), "--lexicon", "afinn"])
    assert res.exit_code == 2 and "invalid option: lexicon must be '' (none) or one of vader" in res.output
    assert not (tmp_path / "x.npz").exists()
