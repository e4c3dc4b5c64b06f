"""build-dataset: text-only and audio-only rows, the modalities column, emotion/sentiment heads,
row errors, the presence rule, and the pipeline's `modalities=` with its cache key.

Text-only rows need only the bundled word vectors; media rows use jfk.flac and a silenced copy of
single_face.mp4, with speech recognition never run (it is made to fail where it must not run).
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import extractors.text
from extractors.config import ExtractionConfig, TextConfig
from mfsa_pipe.datasets import build as bd
from mfsa_pipe.datasets import labels_table as lt

from helpers import MEDIA_DIR as DATA, write_csv

JFK, SINGLE = DATA / "jfk.flac", DATA / "single_face.mp4"
EMOTIONS = ["neutral", "happy", "sad", "angry", "fear", "surprise", "disgust"]
SENTIMENTS = ["negative", "neutral", "positive"]




def samples(path) -> dict:
    from mfsa_pipe.datasets import open_dataset

    ds = open_dataset(path)
    return {s.id: s for split in ds.splits.values() for s in (split[i] for i in range(len(split)))}


class NoSpeech:
    """A TextExtractor that fails the test if speech recognition is attempted."""

    def __init__(self, config):
        pass

    def extract(self, audio, *, sample_rate):
        raise AssertionError("speech recognition ran although text was not requested")


# ------------------------------------------------------------------------------ text-only rows


def test_text_rows_use_the_recognised_speech_path(tmp_path, monkeypatch):
    """A text-only row's vectors are what analyze's text extractor gives for the same words."""
    spoken = [(" Hello,", 0.0, 0.4), (" qwzxvyy", 0.5, 0.9), (" don't", 1.0, 1.3), (" -", 1.3, 1.4), (" U.S.", 1.5, 2.0)]

    class FakeRecogniser:
        info = {"backend": "fake"}

        def transcribe(self, audio, *, config):
            words = [{"word": w, "start": s, "end": e, "probability": 0.9} for w, s, e in spoken]
            return {"words": words, "segments": [{"start": 0.0, "end": 2.0, "text": "x"}], "language": "en"}

    monkeypatch.setattr(extractors.text, "load_recogniser", lambda config: FakeRecogniser())
    audio = (0.1 * np.sin(np.arange(32000) / 10.0)).astype(np.float32)
    heard = extractors.text.TextExtractor(TextConfig()).extract(audio, sample_rate=16000)
    # "-" is not a word and not a kept mark; "," ends "Hello" (a row of its own); "U.S." keeps its dot
    assert heard.tokens == ["Hello", ",", "qwzxvyy", "don't", "U.S."]
    assert heard.meta["mark"] == [False, True, False, False, False] and heard.meta["n_words"] == 4

    labels = write_csv(tmp_path / "t.csv", [
        {"id": "a", "text": "Hello, qwzxvyy don't - U.S.", "label": "pos"},
        {"id": "b", "text": "", "label": "neg"},  # line 3: no text, no path
        {"id": "c", "text": "...", "label": "neg"},  # only punctuation
        {"id": "d", "text": "a sad day", "label": "neg"},
    ], ["id", "text", "label"])
    report = bd.build_dataset(labels, media_root=tmp_path, out=tmp_path / "t.h5", cache_dir=False)
    status = {r["id"]: r for r in report.records}
    assert (report.added, report.failed) == (2, 2) and status["a"]["status"] == status["d"]["status"] == "added"
    assert "t.csv line 3" in status["b"]["error"] and "'text'" in status["b"]["error"]
    assert "t.csv line 4" in status["c"]["error"] and "no words" in status["c"]["error"]

    got = samples(tmp_path / "t.h5")
    a = got["a"]
    np.testing.assert_array_equal(a.text, heard.features)  # same words -> same vectors, same OOV zero row
    assert not a.text[2].any() and a.text[0].any() and a.text[1].any() and a.text[3].any()  # OOV, known, mark, composed
    assert a.audio.shape == (0, 74) and a.vision.shape == (0, 35)
    assert a.meta["absent"] == {"audio": "not requested", "vision": "not requested"}
    assert a.meta["text"] == "Hello, qwzxvyy don't - U.S." and a.meta["modalities"] == ["text"]
    import h5py

    with h5py.File(tmp_path / "t.h5") as f:
        g = f["samples"]["a"]
        assert [t.decode() for t in g["text"]["tokens"][()]] == heard.tokens
        np.testing.assert_allclose(g["text"]["times"][()], [[0, .3], [0, .3], [.3, .6], [.6, .9], [.9, 1.2]])
    assert report.absent == {"audio": {"not requested": 2}, "vision": {"not requested": 2}}
    with open(report.report_csv) as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert rows["b"]["line"] == "3" and rows["b"]["status"] == "failed"
    assert rows["a"]["absent"] == "audio=not requested; vision=not requested"


def test_emotion_and_sentiment_heads(tmp_path):
    rows = [
        {"id": "1", "text": "what a lovely day", "emotion": "happy", "sentiment": "positive"},
        {"id": "2", "text": "I lost my keys", "emotion": "sad", "sentiment": ""},
        {"id": "3", "text": "okay then", "emotion": "", "sentiment": "neutral"},
        {"id": "4", "text": "wow", "emotion": "amazed", "sentiment": "positive"},  # line 5: unknown emotion
        {"id": "5", "text": "hmm", "emotion": "", "sentiment": ""},  # line 6: no label at all
    ]
    labels = write_csv(tmp_path / "h.csv", rows, ["id", "text", "emotion", "sentiment"])
    heads = {"emotion": EMOTIONS, "sentiment": SENTIMENTS}
    report = bd.build_dataset(labels, media_root=tmp_path, out=tmp_path / "h.h5", cache_dir=False, heads=heads)
    spec = {"task": "multihead", "heads": [{"name": "emotion", "classes": EMOTIONS},
                                           {"name": "sentiment", "classes": SENTIMENTS}]}
    assert report.label_spec.to_dict() == spec and (report.added, report.failed) == (3, 2)
    err = {r["id"]: r["error"] for r in report.failures}
    assert "h.csv line 5" in err["4"] and "'amazed'" in err["4"] and str(EMOTIONS) in err["4"]
    assert "h.csv line 6" in err["5"] and "blank" in err["5"]

    from mfsa_pipe.datasets import open_dataset

    ds = open_dataset(tmp_path / "h.h5")
    assert ds.label_spec.to_dict() == spec
    got = samples(tmp_path / "h.h5")
    for sid, want in {"1": [1, 2], "2": [2, -1], "3": [-1, 1]}.items():
        assert isinstance(got[sid].label, np.ndarray) and got[sid].label.dtype == np.int64
        np.testing.assert_array_equal(got[sid].label, want)

    # without class lists: sorted names seen; only the columns present become heads
    only = write_csv(tmp_path / "e.csv", rows[:2], ["id", "text", "emotion"])
    inferred = bd.build_dataset(only, media_root=tmp_path, out=tmp_path / "e.h5", cache_dir=False)
    assert inferred.label_spec.to_dict() == {"task": "multihead", "heads": [{"name": "emotion", "classes": ["happy", "sad"]}]}
    with pytest.raises(lt.LabelsError, match="both"):
        lt.read_labels(write_csv(tmp_path / "x.csv", rows[:1], ["text", "label", "emotion"]), media_root=tmp_path)


def test_single_label_rows_keep_working_and_unknown_class_is_a_row_error(tmp_path):
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}, {"text": "meh", "label": "mid"},
            {"text": "fine", "label": ""}]
    labels = write_csv(tmp_path / "s.csv", rows, ["text", "label"])
    report = bd.build_dataset(labels, media_root=tmp_path, out=tmp_path / "s.h5", cache_dir=False,
                              classes=["neg", "pos"])
    assert report.label_spec.to_dict() == {"task": "classification", "classes": ["neg", "pos"]}
    err = {r["line"]: r["error"] for r in report.failures}
    assert set(err) == {4, 5} and "'mid' is not one of ['neg', 'pos']" in err[4] and "empty 'label'" in err[5]
    got = samples(tmp_path / "s.h5")
    assert got["s.csv:2"].label == 1 and got["s.csv:3"].label == 0


def test_cli_head_classes(tmp_path):
    from typer.testing import CliRunner

    from mfsa_pipe.cli import app

    labels = write_csv(tmp_path / "c.csv", [{"text": "so happy", "emotion": "happy", "sentiment": "positive"},
                                            {"text": "so sad", "emotion": "sad", "sentiment": "negative"}],
                       ["text", "emotion", "sentiment"])
    result = CliRunner().invoke(app, ["build-dataset", str(labels), "--media-root", str(tmp_path), "--out",
                                      str(tmp_path / "c.h5"), "--no-cache", "--emotion-classes", ",".join(EMOTIONS),
                                      "--sentiment-classes", ",".join(SENTIMENTS)])
    assert result.exit_code == 0, result.output
    from mfsa_pipe.datasets import open_dataset

    assert [list(h.classes) for h in open_dataset(tmp_path / "c.h5").label_spec.heads] == [EMOTIONS, SENTIMENTS]


# ------------------------------------------------------------------------------ media rows


@pytest.mark.integration
def test_audio_only_rows_run_no_speech_recognition(tmp_path, monkeypatch):
    monkeypatch.setattr(extractors.text, "TextExtractor", NoSpeech)
    rows = [
        {"id": "jfk-audio", "path": JFK.name, "modalities": "audio", "label": "neutral"},
        {"id": "jfk-av", "path": JFK.name, "modalities": "audio+video", "label": "happy"},  # an audio file: no video
        {"id": "gone", "path": "missing.mp4", "modalities": "audio", "label": "happy"},  # line 4
        {"id": "bad-mod", "path": JFK.name, "modalities": "audio+smell", "label": "happy"},  # line 5
    ]
    labels = write_csv(tmp_path / "a.csv", rows, ["id", "path", "modalities", "label"])
    report = bd.build_dataset(labels, media_root=DATA, out=tmp_path / "a.h5", cache_dir=tmp_path / "cache")
    err = {r["id"]: r["error"] for r in report.failures}
    assert report.added == 2 and set(err) == {"gone", "bad-mod"}
    assert "a.csv line 4" in err["gone"] and "not found" in err["gone"]
    assert "a.csv line 5" in err["bad-mod"] and "'smell'" in err["bad-mod"] and "vision" in err["bad-mod"]
    got = samples(tmp_path / "a.h5")
    for sid in ("jfk-audio", "jfk-av"):
        s = got[sid]
        assert s.audio.shape[0] == pytest.approx(11.0 * 12.5, abs=2) and s.text.shape == (0, 50)
        assert s.vision.shape == (0, 35)
        assert s.meta["absent"]["text"] == "not requested"
    assert got["jfk-audio"].meta["absent"] == {"text": "not requested", "vision": "not requested"}
    assert got["jfk-av"].meta["absent"] == {"text": "not requested", "vision": "no face"}
    assert got["jfk-av"].meta["empty_reasons"] == {"vision": "the file has no video stream"}
    assert got["jfk-av"].meta["modalities"] == ["audio", "vision"]


@pytest.mark.integration
def test_silent_track_is_stored_empty_with_its_reason(tmp_path, monkeypatch):
    import imageio_ffmpeg

    monkeypatch.setattr(extractors.text, "TextExtractor", NoSpeech)
    media = tmp_path / "media"
    media.mkdir()
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(SINGLE), "-af", "volume=0",
                    "-c:v", "copy", str(media / "silent.mp4")], check=True)
    labels = write_csv(tmp_path / "v.csv", [{"path": "silent.mp4", "modalities": "audio+vision", "label": "happy"},
                                            {"text": "smiling now", "label": "sad"}], ["path", "text", "modalities", "label"])
    report = bd.build_dataset(labels, media_root=media, out=tmp_path / "v.h5", cache_dir=False)
    assert report.added == 2, report.failures
    s = samples(tmp_path / "v.h5")["silent.mp4"]
    assert s.audio.shape == (0, 74)  # extracted (31 frames), then emptied: the track is silent
    assert s.vision.shape[0] > 20  # a face on every frame: kept
    assert s.meta["absent"] == {"text": "not requested", "audio": "silent"}
    assert report.absent["audio"] == {"silent": 1, "not requested": 1}
    assert json.loads(Path(report.report_json).read_text())["absent"]["audio"]["silent"] == 1


def test_segments_take_rows_through_the_segmentation_module(monkeypatch):
    from extractors.sequence import Sequence
    from mfsa_pipe import segmentation

    calls = []
    real = segmentation.row_utterance_index
    assert bd.row_utterance_index is real  # the one rule, analyze's
    monkeypatch.setattr(bd, "row_utterance_index", lambda t, u: (calls.append(u), real(t, u))[1])
    words = Sequence(features=np.ones((3, 2)), times=[[0.0, 0.9], [0.95, 1.3], [2.0, 2.4]], columns=("a", "b"),
                     rate=None, source={"id": "t", "version": "1"}, tokens=["one", "two", "three"])
    # "two" has its midpoint (1.125) past the end but within 0.25 s: analyze's rule keeps it
    assert bd.slice_sequence(words, 0.0, 1.0).tokens == ["one", "two"]
    assert len(calls) == 1 and [(u.start, u.end) for u in calls[0]] == [(0.0, 1.0)]
    owner = real(words.times, [segmentation.Utterance(0, 0.0, 1.0, "", "speech")])
    np.testing.assert_array_equal(bd.segment_rows(words.times, 0.0, 1.0), owner == 0)


# ------------------------------------------------------------------------------ pipeline + cache


def test_cache_key_of_all_modalities_is_unchanged():
    from extractors.cache import CACHE_FORMAT, cache_key
    from extractors.pipeline import feature_spec

    config, spec = ExtractionConfig().to_dict(), feature_spec(ExtractionConfig())
    extractors_ = {m: [s["id"], s["version"]] for m, s in sorted(spec.items())}
    before = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "media": "ab" * 32, "config": config,
                                        "extractors": extractors_}, sort_keys=True).encode()).hexdigest()
    assert cache_key(sha256="ab" * 32, config=config, spec=spec) == before
    assert cache_key(sha256="ab" * 32, config=config, spec=spec, modalities=("vision", "text", "audio")) == before
    audio = cache_key(sha256="ab" * 32, config=config, spec=spec, modalities=("audio",))
    assert audio != before != cache_key(sha256="ab" * 32, config=config, spec=spec, modalities=("audio", "vision"))


def test_cache_key_of_some_modalities_ignores_the_others_options():
    from extractors.cache import cache_key
    from extractors.pipeline import feature_spec

    def key(config, modalities):
        return cache_key(sha256="ab" * 32, config=config.to_dict(), spec=feature_spec(config), modalities=modalities)

    words_only = ExtractionConfig(text=TextConfig(punctuation=""))
    assert key(ExtractionConfig(), ("audio", "vision")) == key(words_only, ("audio", "vision"))
    assert key(ExtractionConfig(), ("text",)) != key(words_only, ("text",))
    assert key(ExtractionConfig(), None) != key(words_only, None)


@pytest.mark.integration
def test_extract_modalities_and_the_cache(tmp_path, monkeypatch):
    from extractors.cache import cache_key, cache_path
    from extractors.pipeline import Extraction, extract, feature_spec
    from extractors.sequence import Sequence

    class FakeText:
        def __init__(self, config):
            self.config = config

        def extract(self, audio, *, sample_rate):
            spec = extractors.text.describe(self.config)
            return Sequence(features=np.ones((1, spec["dim"])), times=[[0.1, 0.4]], columns=spec["columns"], rate=None,
                            source={k: spec[k] for k in ("id", "version", "config")}, tokens=["hi"],
                            meta={"segments": [{"start": 0.1, "end": 0.4, "text": "hi"}]})

    cache = tmp_path / "cache"
    monkeypatch.setattr(extractors.text, "TextExtractor", FakeText)
    full = extract(JFK, cache_dir=cache)
    assert full.modalities == ("text", "audio", "vision") and full.text.length == 1
    monkeypatch.setattr(extractors.text, "TextExtractor", NoSpeech)
    # a subset is served by the cached full extraction of the same file
    part = extract(JFK, cache_dir=cache, modalities="audio")
    assert part.cached and part.modalities == ("audio",) and part.segments == []
    assert part.text.length == 0 and part.text.meta["empty_reason"] == "not requested"
    np.testing.assert_array_equal(part.audio.features, full.audio.features)
    # computed afresh: no recogniser, cached under the subset's own key, and saved with what was asked
    fresh = extract(JFK, cache_dir=tmp_path / "other", modalities=["audio"])
    assert not fresh.cached and fresh.text.meta["empty_reason"] == "not requested"
    key = cache_key(sha256=fresh.media.sha256, config=ExtractionConfig().to_dict(), spec=feature_spec(),
                    modalities=("audio",))
    stored = Extraction.load(cache_path(tmp_path / "other", key))
    assert stored.modalities == ("audio",) and stored.audio.length == fresh.audio.length
    # the same subset under another text config hits that cache, its empty text as the new config says
    vader = ExtractionConfig(text=TextConfig(lexicon="vader"))
    again = extract(JFK, cache_dir=tmp_path / "other", modalities=["audio"], config=vader)
    assert again.cached and again.text.features.shape == (0, 51) and again.config == vader
    assert again.feature_spec()["text"] == feature_spec(vader)["text"]
    with pytest.raises(ValueError, match="unknown modality 'smell'"):
        extract(JFK, cache_dir=False, modalities="audio+smell")
