"""Which acoustic rows hold speech: Silero VAD, the speech detector whose ONNX model ships inside
faster-whisper's wheel (offline; the speech recogniser runs the same model before decoding).

Voicing alone cannot tell a voice from music: a melody is voiced throughout (openSMILE's
voicing probability >= 0.5 on every row of the bundled `face_noface.mov`'s soundtrack), and the
voice path, trained on speech, read it as a confident emotion. The rows' flags go into the
acoustic sequence's meta["speech"], and `mfsa_pipe.presence` leaves the voice out of an
utterance whose rows are almost never speech (reason "no voice").

Measured on the speech the default model learned from (shared/emo): the share of each clip
inside detected speech is >= 0.67 on every CREMA-D file, >= 0.14 on every Javanese face+voice
clip, and 0 on 3 of the 1,344 Javanese voice clips (shouted); the soundtrack of
`face_noface.mov` has none.
"""

from __future__ import annotations

import numpy as np

VAD_SAMPLE_RATE = 16000  # Silero VAD's rate


def speech_intervals(audio: np.ndarray, *, sample_rate: int) -> np.ndarray | None:
    """(K, 2) start, end seconds of the speech Silero VAD finds in mono `audio` (faster-whisper's
    default options); None when faster-whisper (or its ONNX runtime) is not installed."""
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError:
        return None
    audio = np.asarray(audio, np.float32).reshape(-1)
    if sample_rate != VAD_SAMPLE_RATE and audio.size:
        n = int(round(audio.size * VAD_SAMPLE_RATE / sample_rate))
        audio = np.interp(np.arange(n) * sample_rate / VAD_SAMPLE_RATE, np.arange(audio.size), audio).astype(np.float32)
    if audio.size == 0:
        return np.zeros((0, 2))
    spans = get_speech_timestamps(audio, VadOptions())
    return np.array([[s["start"], s["end"]] for s in spans], float).reshape(-1, 2) / VAD_SAMPLE_RATE


def rows_in_speech(times: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """(T,) uint8: 1 where a row's midpoint (times: (T, 2) start, end seconds) lies inside one of
    the (sorted, disjoint) speech intervals."""
    mid = np.asarray(times, float).reshape(-1, 2).mean(axis=1)
    intervals = np.asarray(intervals, float).reshape(-1, 2)
    k = np.searchsorted(intervals[:, 0], mid, side="right") - 1  # the last interval starting before
    inside = (k >= 0) & (mid < intervals[np.maximum(k, 0), 1]) if intervals.size else np.zeros(mid.shape, bool)
    return inside.astype(np.uint8)


def speech_flags(audio: np.ndarray, *, sample_rate: int, times: np.ndarray) -> np.ndarray | None:
    """(T,) uint8 flags of the rows (times: (T, 2) seconds) inside the speech found in `audio`;
    None where the detector is not installed. What the acoustic extractor stores in meta["speech"]."""
    intervals = speech_intervals(audio, sample_rate=sample_rate)
    return None if intervals is None else rows_in_speech(times, intervals)
