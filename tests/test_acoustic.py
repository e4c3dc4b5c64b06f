import warnings

import numpy as np
import pytest

from extractors.acoustic import ACOUSTIC_COLUMNS, LOUDNESS_COLUMN, VOICE_ACTIVITY_COLUMN, AcousticExtractor, describe
from extractors.config import AudioConfig
from extractors.media import load_audio, probe

from helpers import MEDIA_DIR as DATA

GRID, JFK, SINGLE = DATA / "grid_id2_vcd_swwp2s.mpg", DATA / "jfk.flac", DATA / "single_face.mp4"


def run(path, config=AudioConfig()):
    return AcousticExtractor(config).extract(load_audio(path), sample_rate=16000, duration_s=probe(path).duration_s)


def col(seq, name):
    return seq.features[:, seq.columns.index(name)]


def test_describe_names_74_columns():
    spec = describe(AudioConfig())
    assert set(spec) == {"id", "version", "config", "dim", "rate", "columns"}
    assert spec["dim"] == 74 == len(set(spec["columns"])) and spec["rate"] == 12.5
    assert spec["columns"] == list(ACOUSTIC_COLUMNS)
    assert {VOICE_ACTIVITY_COLUMN, LOUDNESS_COLUMN, "f0_hz", "mfcc_1", "f3_bandwidth_hz", "hnr_acf_db"} <= set(ACOUSTIC_COLUMNS)


@pytest.mark.integration
@pytest.mark.parametrize("path", [GRID, JFK, SINGLE], ids=lambda p: p.name)
def test_rows_at_12_5_hz_named_and_finite(path):
    seq = run(path)
    duration = probe(path).duration_s
    assert abs(seq.length - duration * 12.5) <= 1
    assert seq.features.dtype == np.float32 and seq.dim == 74 and seq.columns == ACOUSTIC_COLUMNS
    assert np.isfinite(seq.features).all()
    np.testing.assert_allclose(seq.times[:, 0], np.arange(seq.length) * 0.08)
    assert seq.times[-1, 1] == pytest.approx(duration)
    assert seq.spec() == describe(AudioConfig())
    assert seq.source["backend"].startswith("opensmile")
    assert seq.features.std(axis=0).max() > 0


@pytest.mark.integration
def test_voice_activity_follows_the_words():
    # GRID: words from 0.49 s to 2.21 s (grid_swwp2s.align), silence around them
    seq = run(GRID)
    mid = seq.times.mean(axis=1)
    speaking = (mid > 0.49) & (mid < 2.21)
    activity = col(seq, VOICE_ACTIVITY_COLUMN)
    assert set(np.unique(activity)) <= {0.0, 1.0}
    assert activity[speaking].mean() > 0.6 and activity[~speaking].mean() < 0.1
    assert col(seq, LOUDNESS_COLUMN)[speaking].mean() > 3 * col(seq, LOUDNESS_COLUMN)[~speaking].mean()
    assert 80 < np.median(col(seq, "f0_hz")[activity == 1]) < 300  # a speaking voice's pitch


@pytest.mark.integration
def test_speech_differs_from_silence():
    speech = run(JFK)
    silence = AcousticExtractor().extract(np.zeros(3 * 16000, np.float32), sample_rate=16000, duration_s=3.0)
    assert silence.length == 38 and np.isfinite(silence.features).all()
    assert col(silence, VOICE_ACTIVITY_COLUMN).max() == 0 and col(silence, "f0_hz").max() == 0
    assert col(silence, "voicing_prob").max() == 0 and col(silence, "energy_db").max() == -100
    assert col(speech, VOICE_ACTIVITY_COLUMN).mean() > 0.3 and col(speech, "voicing_prob").mean() > 0.3
    assert col(speech, LOUDNESS_COLUMN).mean() > 0.5 > col(silence, LOUDNESS_COLUMN).max()
    assert silence.meta["voice_activity_fraction"] == 0 and "no voiced speech" in silence.meta["note"]
    assert "note" not in speech.meta


def test_no_audio_gives_an_empty_sequence_with_reason():
    seq = AcousticExtractor().extract(np.zeros(0, np.float32), sample_rate=16000, duration_s=4.0)
    assert seq.length == 0 and seq.dim == 74 and "no audio" in seq.meta["empty_reason"]


@pytest.mark.integration
def test_audio_shorter_than_the_media_and_tiny_audio():
    audio = load_audio(JFK)[: 16000]  # 1 s of speech in a 3 s file: the rest is silent rows
    seq = AcousticExtractor().extract(audio, sample_rate=16000, duration_s=3.0)
    assert seq.length == 38 and np.isfinite(seq.features).all()
    assert not seq.features[13:, seq.columns.index("mfcc_1")].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # openSMILE's "segment too short" must not leak
        tiny = AcousticExtractor().extract(audio[:400], sample_rate=16000, duration_s=0.025)
    assert tiny.length == 1 and np.isfinite(tiny.features).all()


@pytest.mark.integration
def test_rate_option_and_other_sample_rates():
    audio = load_audio(JFK, sample_rate=8000)
    seq = AcousticExtractor(AudioConfig(rate=25.0)).extract(audio, sample_rate=8000, duration_s=11.0)
    assert seq.length == 275 and seq.rate == 25.0
    assert col(seq, VOICE_ACTIVITY_COLUMN).mean() > 0.3
