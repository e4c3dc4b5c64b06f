"""Split one analysed video into utterances and cut each modality's rows to them.

Utterances are the transcript's segments (what the speech recogniser calls a segment: usually a
sentence or a clause). Without speech, fixed windows tile the video so that the face and the
voice still get a prediction over time. Rows are assigned to utterances by the midpoint of
their time span, so every row belongs to at most one utterance and nothing is resampled:
each modality keeps its native rate (unaligned fusion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from extractors.sequence import MODALITIES, Sequence

DEFAULT_WINDOW_S = 5.0
# Whisper can return zero-length or sub-frame segments; shorter ones carry no usable rows.
MIN_UTTERANCE_S = 0.05


@dataclass(frozen=True)
class Utterance:
    """One stretch of the video that gets one prediction. Times in seconds."""

    index: int
    start: float
    end: float
    text: str
    source: str  # "speech" (a transcript segment) or "window" (fixed window, no speech)

    @property
    def duration(self) -> float:
        return self.end - self.start


def speech_utterances(segments: Iterable[Mapping[str, Any]], *, duration_s: float | None = None) -> list[Utterance]:
    """Utterances from transcript segments [{start, end, text}], sorted, clipped to the media."""
    spans = []
    for seg in segments:
        start, end = float(seg["start"]), float(seg["end"])
        if math.isnan(start) or math.isnan(end):
            continue  # checked before clipping: max(0.0, nan) would turn NaN into 0.0
        if duration_s is not None and duration_s > 0:
            start, end = max(0.0, min(start, duration_s)), max(0.0, min(end, duration_s))
        if not (math.isfinite(start) and math.isfinite(end)) or end - start < MIN_UTTERANCE_S:
            continue
        spans.append((start, end, str(seg.get("text", "")).strip()))
    spans.sort()
    return [Utterance(index=i, start=s, end=e, text=t, source="speech") for i, (s, e, t) in enumerate(spans)]


def window_utterances(*, duration_s: float, window_s: float = DEFAULT_WINDOW_S) -> list[Utterance]:
    """Fixed windows over [0, duration_s]; a short tail (< half a window) joins the last window."""
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    if not duration_s or duration_s <= 0:
        return []
    # n <= duration/window + 1/2, so every edge i * window (i < n) lies below duration_s
    n = max(1, round(duration_s / window_s))
    edges = [i * window_s for i in range(n)] + [duration_s]
    return [
        Utterance(index=i, start=float(edges[i]), end=float(edges[i + 1]), text="", source="window")
        for i in range(n)
    ]


def make_utterances(
    *, segments: Iterable[Mapping[str, Any]], duration_s: float, window_s: float = DEFAULT_WINDOW_S
) -> list[Utterance]:
    """The transcript's segments when there was speech, fixed windows otherwise."""
    utterances = speech_utterances(segments, duration_s=duration_s)
    return utterances if utterances else window_utterances(duration_s=duration_s, window_s=window_s)


def row_utterance_index(times: np.ndarray, utterances: list[Utterance]) -> np.ndarray:
    """For each row (times (T, 2)), the index of the utterance holding its midpoint, or -1."""
    times = np.asarray(times, dtype=np.float64).reshape(-1, 2)
    out = np.full(times.shape[0], -1, dtype=np.int64)
    if not utterances or times.shape[0] == 0:
        return out
    mid = times.mean(axis=1)
    starts = np.array([u.start for u in utterances])
    ends = np.array([u.end for u in utterances])
    # Utterances are sorted and do not overlap (Whisper segments never do): one searchsorted.
    pos = np.searchsorted(starts, mid, side="right") - 1
    valid = pos >= 0
    inside = np.zeros_like(valid)
    inside[valid] = mid[valid] <= ends[pos[valid]]
    out[inside] = pos[inside]
    # Words straddling a boundary by rounding may have their midpoint a hair outside: give
    # text-like rows that fall in no utterance to the nearest one within 0.25 s.
    lost = np.flatnonzero(~inside)
    for r in lost:
        gaps = np.maximum(starts - mid[r], 0) + np.maximum(mid[r] - ends, 0)
        j = int(np.argmin(gaps))
        if gaps[j] <= 0.25 and times[r, 1] > starts[j] and times[r, 0] < ends[j]:
            out[r] = j
    return out


def slice_rows(sequence: Sequence, utterances: list[Utterance]) -> list[np.ndarray]:
    """Row indices of `sequence` for each utterance."""
    owner = row_utterance_index(sequence.times, utterances)
    return [np.flatnonzero(owner == i) for i in range(len(utterances))]


def utterance_samples(
    sequences: Mapping[str, Sequence],
    utterances: list[Utterance],
    *,
    rows: Mapping[str, list[np.ndarray]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """One {text, audio, vision} sample of float32 (T_m, D_m) arrays per utterance (T_m may be 0).
    `rows`: the modalities' `slice_rows`, when the caller already has them."""
    if rows is None:
        rows = {m: slice_rows(sequences[m], utterances) for m in MODALITIES}
    return [
        {m: np.ascontiguousarray(sequences[m].features[rows[m][i]], dtype=np.float32) for m in MODALITIES}
        for i in range(len(utterances))
    ]


def speech_coverage(segments: Iterable[Mapping[str, Any]], *, duration_s: float) -> float:
    """Share of the media's duration inside speech segments (overlaps counted once), in [0, 1]."""
    if not duration_s or duration_s <= 0:
        return 0.0
    spans = sorted(
        (max(0.0, float(s["start"])), min(duration_s, float(s["end"])))
        for s in segments
        if float(s["end"]) > float(s["start"])
    )
    total, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += max(0.0, cur_e - cur_s)
    return float(min(1.0, max(0.0, total / duration_s)))
