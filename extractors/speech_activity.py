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
VAD_WINDOW = 512  # samples per detector window at that rate
# Longer audio is searched in blocks of BLOCK_S seconds with CONTEXT_S either side: faster-whisper
# copies the whole audio twice and runs the detector on 10,000 windows (320 s) at once, which
# added ~700 MB to an hour of audio (a 60-minute video without a model peaked at 1.69 GB, over its 1.5 GB bound).
BLOCK_S = 120.0
CONTEXT_S = 2.0


def speech_intervals(audio: np.ndarray, *, sample_rate: int, block_s: float = BLOCK_S) -> np.ndarray | None:
    """(K, 2) start, end seconds of the speech Silero VAD finds in mono `audio` (faster-whisper's
    default options); None when faster-whisper (or its ONNX runtime) is not installed. Audio
    longer than `block_s` (+ context) is searched block by block; a speech span across a block's
    edge is one interval (joined), and short audio is searched in one pass."""
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
    detect = lambda part: np.array([[s["start"], s["end"]] for s in get_speech_timestamps(part, VadOptions())],  # noqa: E731
                                   float).reshape(-1, 2)
    # whole 512-sample windows, so that every block's windows are the one pass's windows
    block, context = (int(x * VAD_SAMPLE_RATE) // VAD_WINDOW * VAD_WINDOW for x in (block_s, CONTEXT_S))
    if audio.size <= block + 2 * context:
        return detect(audio) / VAD_SAMPLE_RATE
    spans = []
    for start in range(0, audio.size, block):
        end = min(audio.size, start + block)
        lo = max(0, start - context)
        found = np.clip(detect(audio[lo:min(audio.size, end + context)]) + lo, start, end)  # the block's own part
        spans.append(found[found[:, 1] > found[:, 0]])
    return _joined(np.concatenate(spans)) / VAD_SAMPLE_RATE


def _joined(spans: np.ndarray) -> np.ndarray:
    """Sorted spans with those that touch or overlap (a span cut at a block's edge) made one."""
    out: list[list[float]] = []
    for a, b in spans[np.argsort(spans[:, 0], kind="stable")]:
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return np.array(out, float).reshape(-1, 2)


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
