"""The speech detector's flags on the acoustic rows, and the presence rule that leaves out a voiced
soundtrack that is not speech (face_noface.mov's, read before as a confident emotion)."""

import numpy as np
import pytest

from extractors.acoustic import ACOUSTIC_COLUMNS, VOICING_COLUMN, AcousticExtractor
from extractors.media import load_audio
from extractors.pipeline import feature_spec
from extractors.speech_activity import rows_in_speech, speech_intervals
from mfsa_pipe.analysis.video import analyze
from mfsa_pipe.presence import absent_modalities

from helpers import MEDIA_DIR as DATA

SR = 16000


@pytest.fixture(scope="module")
def soundtracks():
    return {name: load_audio(DATA / name, sample_rate=SR) for name in ("jfk.flac", "face_noface.mov")}


def test_speech_is_found_in_speech_and_not_in_the_animation_soundtrack(soundtracks):
    jfk = speech_intervals(soundtracks["jfk.flac"], sample_rate=SR)
    assert jfk.shape[1] == 2 and np.all(np.diff(jfk, axis=1) > 0)
    assert (jfk[:, 1] - jfk[:, 0]).sum() > 9.0  # of 11 s of speech
    assert speech_intervals(soundtracks["face_noface.mov"], sample_rate=SR).shape == (0, 2)


def test_other_sample_rates_give_the_same_speech(soundtracks):
    audio = soundtracks["jfk.flac"]
    at_8k = speech_intervals(audio[::2], sample_rate=8000)
    at_16k = speech_intervals(audio, sample_rate=SR)
    assert abs((at_8k[:, 1] - at_8k[:, 0]).sum() - (at_16k[:, 1] - at_16k[:, 0]).sum()) < 0.5


def test_long_audio_is_searched_in_blocks_with_the_answer_of_one_pass(soundtracks):
    """Blocks keep a long video's memory flat (one pass over an hour added ~700 MB); jfk.flac with
    3 s blocks stands in for an hour with 120 s ones: the same speech, a span across a block's
    edge one interval. (On 33 min of Javanese clips with pauses, 120 s blocks: 237 intervals as in
    one pass, 99.6 % of the 80 ms rows flagged alike; one pass against itself after 7 s of leading
    silence: 99.0 %.)"""
    audio = np.concatenate([soundtracks["jfk.flac"], soundtracks["face_noface.mov"], soundtracks["jfk.flac"]])
    one = speech_intervals(audio, sample_rate=SR, block_s=1e9)
    blocks = speech_intervals(audio, sample_rate=SR, block_s=3.0)
    assert np.all(blocks[1:, 0] > blocks[:-1, 1])  # sorted, none touching: cut spans were joined
    t = np.arange(0, audio.size / SR - 0.08, 0.08)
    times = np.stack([t, t + 0.08], axis=1)
    assert np.mean(rows_in_speech(times, one) == rows_in_speech(times, blocks)) > 0.95
    soundtrack = (t > 11.0 + 0.5) & (t < 11.0 + 6.0)  # face_noface.mov's music between the two speeches
    assert not rows_in_speech(times, blocks)[soundtrack].any()
    short = speech_intervals(soundtracks["jfk.flac"], sample_rate=SR)  # shorter than a block: one pass
    assert np.array_equal(short, speech_intervals(soundtracks["jfk.flac"], sample_rate=SR, block_s=1e9))


def test_rows_in_speech_by_their_midpoints():
    times = np.array([[0.0, 0.08], [0.08, 0.16], [0.16, 0.24], [0.24, 0.32], [0.32, 0.40]])
    # midpoints 0.04, 0.12, 0.20, 0.28, 0.36
    assert rows_in_speech(times, np.array([[0.1, 0.21], [0.35, 1.0]])).tolist() == [0, 1, 1, 0, 1]
    assert rows_in_speech(times, np.zeros((0, 2))).tolist() == [0] * 5
    assert rows_in_speech(np.zeros((0, 2)), np.array([[0.0, 1.0]])).shape == (0,)


def test_acoustic_rows_carry_the_flags_and_the_rule_drops_a_voiced_soundtrack(soundtracks):
    spec = feature_spec()
    voicing = ACOUSTIC_COLUMNS.index(VOICING_COLUMN)
    speech = AcousticExtractor().extract(soundtracks["jfk.flac"], sample_rate=SR)
    music = AcousticExtractor().extract(soundtracks["face_noface.mov"], sample_rate=SR)
    for seq in (speech, music):
        assert seq.meta["speech"].shape == (seq.length,)
    assert speech.meta["speech"].mean() > 0.8 and music.meta["speech"].sum() == 0
    # voicing alone cannot tell: the soundtrack is voiced on most rows
    assert (music.features[:, voicing] >= 0.5).mean() > 0.5
    assert absent_modalities({"audio": music.features}, spec) == {"text": "no words", "vision": "no face"}
    assert absent_modalities({"audio": music.features}, spec, speech=music.meta["speech"])["audio"] == "no voice"
    assert "audio" not in absent_modalities({"audio": speech.features}, spec, speech=speech.meta["speech"])
    with pytest.raises(ValueError, match="same rows"):
        absent_modalities({"audio": speech.features}, spec, speech=speech.meta["speech"][:-1])


def test_analyze_leaves_out_a_soundtrack_without_speech(tmp_path, cache_dir):
    report = analyze(DATA / "face_noface.mov", out_dir=tmp_path, no_model=True, render_video=False,
                     cache_dir=cache_dir)
    # the face for ~2.4 s over a silent track, then an animation with a voiced soundtrack and no face
    face, soundtrack = report.utterances
    assert face.modalities["audio"].reason == "silent" and face.modalities["vision"].reason is None
    assert soundtrack.modalities["audio"].reason == "no voice" and soundtrack.signals.voicing > 0.5


def test_a_cache_entry_from_before_the_detector_gets_the_flags(tmp_path):
    from extractors.cache import cache_key, cache_path, hashed_config
    from extractors.config import ExtractionConfig
    from extractors.media import probe
    from extractors.pipeline import Extraction, extract

    clip = DATA / "face_noface.mov"
    fresh = extract(clip, cache_dir=tmp_path, modalities="audio")
    assert not fresh.cached and fresh.audio.meta["speech"].sum() == 0
    key = cache_key(sha256=probe(clip).sha256, config=hashed_config(ExtractionConfig()), spec=feature_spec(),
                    modalities=("audio",))
    entry = cache_path(tmp_path, key)
    old = Extraction.load(entry)
    del old.audio.meta["speech"]  # as an entry written before the speech detector
    old.save(entry)
    hit = extract(clip, cache_dir=tmp_path, modalities="audio")
    assert hit.cached and np.array_equal(hit.audio.meta["speech"], fresh.audio.meta["speech"])
    assert np.array_equal(hit.audio.features, fresh.audio.features)
    assert "speech" in Extraction.load(entry).audio.meta  # written back: decoded once


def test_the_model_is_not_fed_the_soundtrack(plumbing_checkpoint, tmp_path, cache_dir):
    report = analyze(DATA / "face_noface.mov", checkpoint=plumbing_checkpoint, out_dir=tmp_path, render_video=False,
                     cache_dir=cache_dir)
    face, soundtrack = report.utterances
    assert face.prediction is not None and face.modalities["vision"].used
    # nothing left to read: no words, no speech, no face; the model is not asked
    assert {m: u.reason for m, u in soundtrack.modalities.items()} == {"text": "no words", "audio": "no voice",
                                                                        "vision": "no face"}
    assert soundtrack.prediction is None and soundtrack.modality_weights is None
