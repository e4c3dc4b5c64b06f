"""Split one analysed video into utterances and cut each modality's rows to them.

Utterances are the transcript's segments (what the speech recogniser calls a segment: usually a
sentence or a clause). Stretches without speech are cut where the face changes, so that a
silent video still gets a timeline that follows the face:

- the whole video when nothing was said;
- with speech, every gap between segments (and before the first / after the last) of at least
  `MIN_GAP_S` (3 s) in which a face is visible (`face_present` in at least
  `presence.DEFAULT_RULE.min_face_share` (10 %) of the gap's sampled frames); shorter gaps and
  gaps without a face stay outside every utterance, as before.

The facial rule (`face_windows`), per stretch: each vision row becomes the 7 FER emotion
probabilities (`emo_*` columns) with one more entry for "no face" (a row without a face is
(0, ..., 0, 1)), so a face appearing or leaving is a change too. At each row boundary t the mean
of that vector over the `min_s` (1.5 s) before t is compared with its mean over the `min_s`
after t (total-variation distance: half the L1 difference, in [0, 1]; the two means smooth
the frame-to-frame noise of the estimates). Boundaries are taken greedily, largest distance
first, where the distance is at least `FACE_CHANGE` (0.3: almost a third of the probability
mass moved) and is the largest within `min_s` either side (not the shoulder of a bigger change),
at least `min_s` from the stretch's ends and from every boundary already taken. A piece longer
than `max_s` (5 s) is then cut into the fewest equal parts no longer than `max_s`.
A stretch shorter than 2 x `min_s` is not cut by the face. A stretch without a visible face
(audio-only files, no face in the picture) gets the fixed windows of `window_utterances`
instead (`max_s` long; a tail shorter than half a window joins the last one).
Everything here is deterministic and numpy-only.

Rows are assigned to utterances by the midpoint of their time span, so every row belongs to at
most one utterance and nothing is resampled: each modality keeps its native rate (unaligned
fusion). Words only go to speech utterances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from extractors.sequence import MODALITIES, Sequence
from mfsa_pipe.presence import DEFAULT_RULE

DEFAULT_WINDOW_S = 5.0  # fixed windows, and the longest window cut by the face
MIN_WINDOW_S = 1.5  # the shortest window cut by the face, and its comparison span
FACE_CHANGE = 0.3  # total-variation distance of the facial means that makes a boundary
MIN_GAP_S = 3.0  # gaps between speech segments at least this long get windows (with a face)
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


def face_vectors(vision: Sequence) -> np.ndarray | None:
    """(T, E + 1) per vision row: the FER emotion probabilities (`emo_*` columns) where a face
    is present, then 1 where there is none (rows without a face are (0, ..., 0, 1)).
    None when the sequence has no `emo_*` columns."""
    emo = [i for i, c in enumerate(vision.columns) if c.startswith("emo_")]
    if not emo:
        return None
    x = np.clip(np.nan_to_num(vision.features[:, emo].astype(np.float64)), 0.0, 1.0)
    if "face_present" in vision.columns:
        present = vision.features[:, vision.columns.index("face_present")] >= 0.5
    else:
        present = np.ones(vision.length, bool)
    return np.concatenate([x * present[:, None], (~present)[:, None].astype(np.float64)], axis=1)


def face_share(vision: Sequence | None, start: float, end: float) -> float:
    """Share of the vision rows with their midpoint in [start, end) that have a face (0 without rows)."""
    if vision is None or vision.length == 0 or "face_present" not in vision.columns:
        return 0.0
    mid = vision.times.mean(axis=1)
    inside = (mid >= start) & (mid < end)
    if not inside.any():
        return 0.0
    return float(np.mean(vision.features[inside, vision.columns.index("face_present")] >= 0.5))


def face_change_points(
    vision: Sequence, start: float, end: float, *,
    min_s: float = MIN_WINDOW_S, threshold: float = FACE_CHANGE,
) -> list[float]:
    """Times in (start, end) where the facial signal changes (the module docstring's rule), sorted."""
    x = face_vectors(vision)
    if x is None or end - start < 2 * min_s:
        return []
    mid = vision.times.mean(axis=1)
    keep = (mid >= start) & (mid < end)
    x, mid, row_start = x[keep], mid[keep], vision.times[keep, 0]
    if mid.size < 2:
        return []
    order = np.argsort(mid, kind="stable")
    x, mid, row_start = x[order], mid[order], row_start[order]
    cum = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    # candidate boundaries: the start of each row after the first, far enough from the ends
    t = np.maximum(row_start[1:], mid[:-1])
    i = np.arange(1, mid.size)
    ok = (t - start >= min_s - 1e-9) & (end - t >= min_s - 1e-9)
    t, i = t[ok], i[ok]
    if t.size == 0:
        return []
    a = np.searchsorted(mid, t - min_s, side="left")
    b = np.searchsorted(mid, t + min_s, side="left")
    n_before, n_after = i - a, b - i
    valid = (n_before > 0) & (n_after > 0)
    t, i, a, b, n_before, n_after = t[valid], i[valid], a[valid], b[valid], n_before[valid], n_after[valid]
    before = (cum[i] - cum[a]) / n_before[:, None]
    after = (cum[b] - cum[i]) / n_after[:, None]
    distance = 0.5 * np.abs(before - after).sum(axis=1)
    chosen: list[float] = []
    for k in np.argsort(-distance, kind="stable"):  # largest first; ties: the earlier time
        if distance[k] < threshold:
            break
        near = np.abs(t - t[k]) < min_s - 1e-9
        if distance[k] < distance[near].max():
            continue  # on the shoulder of a bigger change, not a change of its own
        if all(abs(t[k] - c) >= min_s - 1e-9 for c in chosen):
            chosen.append(float(t[k]))
    return sorted(chosen)


def _equal_parts(start: float, end: float, max_s: float) -> list[float]:
    """Edges cutting [start, end] into the fewest equal parts no longer than max_s."""
    n = max(1, math.ceil((end - start) / max_s - 1e-9))
    return [start + (end - start) * k / n for k in range(n + 1)]


def face_windows(
    vision: Sequence | None, start: float, end: float, *,
    min_s: float = MIN_WINDOW_S, max_s: float = DEFAULT_WINDOW_S, threshold: float = FACE_CHANGE,
) -> list[tuple[float, float]]:
    """[start, end] as (start, end) windows: cut where the face changes when a face is visible
    in it, else fixed `max_s` windows (see the module docstring)."""
    if max_s <= 0 or min_s <= 0:
        raise ValueError(f"window lengths must be > 0, got min {min_s}, max {max_s}")
    if end - start <= 0:
        return []
    if vision is None or face_share(vision, start, end) < DEFAULT_RULE.min_face_share:
        return [(start + u.start, start + u.end) for u in window_utterances(duration_s=end - start, window_s=max_s)]
    cuts = [start, *face_change_points(vision, start, end, min_s=min_s, threshold=threshold), end]
    edges: list[float] = [start]
    for a, b in zip(cuts[:-1], cuts[1:]):
        edges.extend(_equal_parts(a, b, max_s)[1:])
    return list(zip(edges[:-1], edges[1:]))


def make_utterances(
    *, segments: Iterable[Mapping[str, Any]], duration_s: float, window_s: float = DEFAULT_WINDOW_S,
    vision: Sequence | None = None, min_window_s: float = MIN_WINDOW_S, min_gap_s: float = MIN_GAP_S,
) -> list[Utterance]:
    """The transcript's segments, plus windows over the stretches without speech (the module
    docstring says which stretches and how they are cut). Without `vision`: the segments, or
    fixed windows when nothing was said."""
    speech = speech_utterances(segments, duration_s=duration_s)
    if not duration_s or duration_s <= 0:
        return speech
    if not speech:
        spans = [(0.0, float(duration_s))]
    elif vision is None:
        spans = []
    else:
        edges = [0.0] + [x for u in speech for x in (u.start, u.end)] + [float(duration_s)]
        spans = [(a, b) for a, b in zip(edges[0::2], edges[1::2])
                 if b - a >= min_gap_s and face_share(vision, a, b) >= DEFAULT_RULE.min_face_share]
    windows = [w for a, b in spans for w in face_windows(vision, a, b, min_s=min_window_s, max_s=window_s)]
    items = sorted([(u.start, u.end, u.text, u.source) for u in speech] + [(a, b, "", "window") for a, b in windows])
    return [Utterance(index=i, start=float(a), end=float(b), text=t, source=src) for i, (a, b, t, src) in enumerate(items)]


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
    """Row indices of `sequence` for each utterance. Word rows (a sequence with tokens) go to
    speech utterances only: a word just outside its segment never lands in a silent window."""
    targets = list(range(len(utterances)))
    if sequence.tokens is not None:
        targets = [i for i, u in enumerate(utterances) if u.source == "speech"]
    owner = row_utterance_index(sequence.times, [utterances[i] for i in targets])
    out = [np.zeros(0, np.int64) for _ in utterances]
    for k, i in enumerate(targets):
        out[i] = np.flatnonzero(owner == k)
    return out


def utterance_samples(
    sequences: Mapping[str, Sequence],
    utterances: list[Utterance],
    *,
    rows: Mapping[str, list[np.ndarray]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """One {text, audio, vision} sample of float32 (T_m, D_m) arrays per utterance (T_m may be 0),
    with "speech": the audio rows' speech flags where the acoustic extractor detected speech
    (presence.py). `rows`: the modalities' `slice_rows`, when the caller already has them."""
    if rows is None:
        rows = {m: slice_rows(sequences[m], utterances) for m in MODALITIES}
    speech = sequences["audio"].meta.get("speech")
    samples = []
    for i in range(len(utterances)):
        sample = {m: np.ascontiguousarray(sequences[m].features[rows[m][i]], dtype=np.float32) for m in MODALITIES}
        if speech is not None:
            sample["speech"] = np.asarray(speech)[rows["audio"][i]]
        samples.append(sample)
    return samples


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
