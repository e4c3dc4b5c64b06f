"""The annotated video and the timeline plot.

The video keeps the original frames (display orientation, resolution, frame rate) and audio and
draws on top: subtitles of the words being spoken, the current utterance's prediction (class
bars or a score gauge; with a sentiment head also its label, score and a [-1, 1] gauge) with the
modality weights and what each modality says alone (the report's by_modality), the face box, and a timeline strip of the whole video with a moving playhead
(a sentiment band along its bottom when there is a sentiment head). Without a model it draws the extracted signals instead
(facial emotion estimates, loudness, voicing) under a plain "no model" label.

Speed: everything that does not change per frame (the timeline strip, the per-utterance
panels, the word index) is computed once in `Annotator.__init__`; per frame there are a few
array copies, blends of small regions and a handful of `cv2.putText` calls; OpenCV converts
between yuv420p and BGR (half swscale's CPU). The encoder dominates: libx264 `superfast` (a preview video: ~35% less encoder CPU than `veryfast` for
about twice the bytes at the same CRF). Frames stream from decoder to encoder, so memory does
not grow with the video's length.
"""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence as Seq

import cv2
import numpy as np

from extractors.acoustic import LOUDNESS_COLUMN, VOICING_COLUMN
from extractors.sequence import MODALITIES
from mfsa_pipe.analysis.report import Prediction
from mfsa_pipe.atomic import atomic_path
from mfsa_pipe.datasets.base import LabelSpec

# BGR colours for the usual emotion names (FER order and the default model's classes);
# other class names take colours from a fixed cycle so a class keeps its colour everywhere.
_EMOTION_BGR = {
    "angry": (40, 40, 220), "anger": (40, 40, 220),
    "disgust": (60, 140, 40), "disgusted": (60, 140, 40),
    "fear": (160, 60, 150), "fearful": (160, 60, 150),
    "happy": (40, 200, 240), "happiness": (40, 200, 240), "joy": (40, 200, 240),
    "sad": (200, 120, 40), "sadness": (200, 120, 40),
    "surprise": (0, 140, 255), "surprised": (0, 140, 255),
    "neutral": (170, 170, 170),
}
_CYCLE_BGR = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
              (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LANE_NAMES = {"text": "words", "audio": "voice", "vision": "face"}
_WHITE, _BLACK, _YELLOW, _GREEN = (255, 255, 255), (0, 0, 0), (0, 230, 255), (80, 220, 80)


def class_colour(name: str, index: int) -> tuple[int, int, int]:
    return _EMOTION_BGR.get(name.lower().removeprefix("emo_"), _CYCLE_BGR[index % len(_CYCLE_BGR)])


def prediction_colour(pred: Prediction, data: "OverlayData") -> tuple[int, int, int]:
    """A prediction's colour: its class's (as in the bars), else its score's on the label range."""
    if pred.label is None and pred.score is not None:
        return score_colour(float(pred.score), *data.score_range)
    classes = data.classes
    return class_colour(str(pred.label), classes.index(pred.label) if pred.label in classes else 0)


def _short_answer(pred: Prediction, *, with_p: bool = False) -> str:
    """'fear' ('fear 0.48' with_p), or a regression's '+0.53'."""
    if pred.label is None:
        return f"{float(pred.score):+.2f}" if pred.score is not None else "-"
    p = (pred.probabilities or {}).get(pred.label)
    return f"{pred.label} {p:.2f}" if with_p and p is not None else str(pred.label)


def score_colour(score: float, lo: float = -3.0, hi: float = 3.0) -> tuple[int, int, int]:
    """Red (negative) through grey to green (positive), BGR."""
    x = float(np.clip((score - (lo + hi) / 2) / ((hi - lo) / 2), -1, 1))
    grey = np.array([150, 150, 150], float)
    end = np.array([60, 200, 60], float) if x >= 0 else np.array([60, 60, 220], float)
    return tuple(int(v) for v in grey + abs(x) * (end - grey))


def sentiment_colour(score: float) -> tuple[int, int, int]:
    """A sentiment score in [-1, 1]: green when positive, red when negative (BGR); the bar's
    length, not its shade, shows how strong."""
    return (60, 200, 60) if score >= 0 else (60, 60, 220)


@dataclass
class OverlayData:
    """Everything the overlay shows, independent of how it was computed. Times in seconds.

    utterances: (start, end) per utterance; predictions: per utterance the report's Prediction
    or None (its top-level label/probabilities: multihead, the first head's, i.e. the emotion); sentiments: per
    utterance (label, score in [-1, 1]) of a sentiment head, or None (no such head, or the
    list left empty); unused: per utterance {modality: reason} for the modalities the model was
    not fed (their weights are drawn grey); alone: per utterance the report's `by_modality` (the
    model's answer from each modality it used, fed alone) or None; label_spec None means no model. words: (start, end, word).
    vision_times / audio_times: (T,) row midpoints; boxes (T_v, 4) pixels x0, y0, x1, y1 in the
    displayed frame (NaN without a face); emotions (T_v, E) with emotion_names; face_present (T_v,).
    """

    duration_s: float
    utterances: list[tuple[float, float]] = field(default_factory=list)
    predictions: list[Prediction | None] = field(default_factory=list)
    weights: list[dict[str, float] | None] = field(default_factory=list)
    sentiments: list[tuple[str, float] | None] = field(default_factory=list)
    unused: list[dict[str, str]] = field(default_factory=list)
    alone: list[dict[str, Prediction] | None] = field(default_factory=list)
    label_spec: LabelSpec | None = None
    model_name: str | None = None
    words: list[tuple[float, float, str]] = field(default_factory=list)
    vision_times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    boxes: np.ndarray | None = None
    emotions: np.ndarray | None = None
    emotion_names: list[str] = field(default_factory=list)
    face_present: np.ndarray | None = None
    audio_times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loudness: np.ndarray | None = None
    voicing: np.ndarray | None = None

    @property
    def has_model(self) -> bool:
        return self.label_spec is not None

    @property
    def classes(self) -> list[str]:
        """The classes drawn as bars: classification classes, multilabel labels, or the first
        head's classes of a multihead model (the emotion)."""
        spec = self.label_spec
        if spec is None:
            return []
        if spec.task == "multihead":
            return list(spec.heads[0].classes)
        return list(spec.classes or spec.labels)

    @property
    def has_sentiment(self) -> bool:
        return self.has_model and any(s is not None for s in self.sentiments)

    def sentiment_at(self, u: int | None) -> tuple[str, float] | None:
        return self.sentiments[u] if u is not None and u < len(self.sentiments) else None

    @property
    def has_alone(self) -> bool:
        return self.has_model and any(self.alone)

    def alone_at(self, u: int | None) -> dict[str, Prediction]:
        """{modality: prediction} of the modalities fed alone in utterance u ({} where none)."""
        return (self.alone[u] or {}) if u is not None and u < len(self.alone) else {}

    @property
    def score_range(self) -> tuple[float, float]:
        lo, hi = self.label_spec.range if self.label_spec and self.label_spec.range else (-3.0, 3.0)
        return float(lo), float(hi)


def find_column(columns: Seq[str], name: str) -> int | None:
    """Index of the column called `name` (the extractors' named columns), None when absent."""
    columns = list(columns)
    return columns.index(name) if name in columns else None


def caption_words(text: Any) -> list[tuple[float, float, str]]:
    """(start, end, word) to caption; a mark row (meta["mark"]) is written after its word ("What?")."""
    marks = text.meta.get("mark") or [False] * len(text.tokens or [])
    words: list[tuple[float, float, str]] = []
    for (a, b), token, is_mark in zip(text.times, text.tokens or [], marks):
        if is_mark and words:
            words[-1] = (*words[-1][:2], words[-1][2] + str(token))
        elif not is_mark:
            words.append((float(a), float(b), str(token)))
    return words


def overlay_data(*, extraction: Any, report: Any) -> OverlayData:
    """OverlayData from an Extraction and the Report built on it."""
    text, audio, vision = extraction.text, extraction.audio, extraction.vision
    sentiments = [u.prediction.sentiment() if u.prediction is not None else None for u in report.utterances]
    words = caption_words(text)
    data = OverlayData(
        duration_s=float(report.input.duration_s),
        utterances=[(u.start, u.end) for u in report.utterances],
        predictions=[u.prediction for u in report.utterances],
        weights=[u.modality_weights for u in report.utterances],
        sentiments=sentiments,
        unused=[{m: use.reason for m, use in (u.modalities or {}).items() if use.used is False} for u in report.utterances],
        alone=[u.by_modality for u in report.utterances],
        label_spec=LabelSpec.from_dict(report.model.label_spec) if report.model else None,
        model_name=report.model.name if report.model else None,
        words=words,
    )
    if vision.length:
        data.vision_times = vision.times.mean(axis=1)
        boxes = vision.meta.get("boxes")
        data.boxes = np.asarray(boxes, dtype=np.float64) if boxes is not None else None
        emo = [i for i, c in enumerate(vision.columns) if c.startswith("emo_")]
        if emo:
            data.emotions = vision.features[:, emo]
            data.emotion_names = [vision.columns[i].removeprefix("emo_") for i in emo]
        fp = find_column(vision.columns, "face_present")
        data.face_present = vision.features[:, fp] if fp is not None else None
    if audio.length:
        data.audio_times = audio.times.mean(axis=1)
        li = find_column(audio.columns, LOUDNESS_COLUMN)
        vi = find_column(audio.columns, VOICING_COLUMN)
        data.loudness = audio.features[:, li] if li is not None else None
        data.voicing = audio.features[:, vi] if vi is not None else None
    return data


def _nearest(times: np.ndarray, t: float, tolerance: float) -> int | None:
    if times.size == 0:
        return None
    i = int(np.searchsorted(times, t))
    best = min((j for j in (i - 1, i) if 0 <= j < times.size), key=lambda j: abs(times[j] - t))
    return best if abs(times[best] - t) <= tolerance else None


def _robust_max(values: np.ndarray | None) -> float:
    if values is None or values.size == 0:
        return 1.0
    finite = values[np.isfinite(values)]
    top = float(np.percentile(finite, 99)) if finite.size else 0.0
    return top if top > 1e-9 else 1.0


class Annotator:
    """Draws the overlay onto frames of one video (BGR uint8, display orientation, width x height)."""

    def __init__(self, data: OverlayData, *, width: int, height: int) -> None:
        self.data = data
        self.width, self.height = int(width), int(height)
        # text and panels scale with the picture, with a floor so that small videos stay legible
        self.scale = max(0.6, min(self.width, self.height * 16 / 9) / 640.0 * 0.9)
        # with a sentiment head the strip grows by a band below the class probabilities
        self.band_h = max(10, int(round(self.height * 0.05))) if data.has_sentiment else 0
        self.strip_h = max(18, int(round(self.height * 0.09))) + self.band_h
        self.strip_y = self.height - self.strip_h
        self._word_starts = [w[0] for w in data.words]
        self._utt_starts = [u[0] for u in data.utterances]
        self._vision_tol = 1.5 * _step(data.vision_times)
        self._audio_tol = 1.5 * _step(data.audio_times)
        self._loud_max = _robust_max(data.loudness)
        self.strip = self._build_strip()
        self._panel: tuple[int | None, PanelLayer] | None = None  # the last utterance's panel

    # ---- the static strip -------------------------------------------------------------
    def x_of(self, t: float) -> int:
        d = self.data.duration_s
        return int(round(np.clip(t / d if d > 0 else 0.0, 0.0, 1.0) * (self.width - 1)))

    def _build_strip(self) -> np.ndarray:
        h, w = self.strip_h, self.width
        strip = np.full((h, w, 3), 30, np.uint8)
        data = self.data
        if data.has_model:
            band = self.band_h
            h -= band  # the class probabilities above, the sentiment band below
            if band:
                self._strip_sentiment(strip[h:])
            for (start, end), pred in zip(data.utterances, data.predictions):
                x0, x1 = self.x_of(start), max(self.x_of(end), self.x_of(start) + 1)
                if pred is None:
                    continue
                if pred.probabilities:
                    # stacked class probabilities: the strip reads as a stacked area chart
                    y = h
                    for i, name in enumerate(data.classes):
                        p = float(pred.probabilities.get(name, 0.0))
                        if data.label_spec.task == "multilabel":
                            p /= max(1e-9, sum(pred.probabilities.values()))
                        dy = int(round(p * h))
                        cv2.rectangle(strip, (x0, y - dy), (x1 - 1, y - 1), class_colour(name, i), -1)
                        y -= dy
                elif pred.score is not None:
                    lo, hi = data.score_range
                    mid = h // 2
                    dy = int(round(abs(pred.score - (lo + hi) / 2) / ((hi - lo) / 2) * (h // 2 - 1)))
                    top, bottom = (mid - dy, mid) if pred.score >= (lo + hi) / 2 else (mid, mid + dy)
                    cv2.rectangle(strip, (x0, top), (x1 - 1, bottom), score_colour(pred.score, lo, hi), -1)
            if data.label_spec.is_regression:
                cv2.line(strip, (0, h // 2), (w - 1, h // 2), (90, 90, 90), 1)
            h += band
        else:
            self._strip_signals(strip)
        for start, end in data.utterances:  # utterance boundaries
            for x in (self.x_of(start), self.x_of(end)):
                cv2.line(strip, (x, 0), (x, h - 1), (220, 220, 220), 1)
        return strip

    def _strip_sentiment(self, band: np.ndarray) -> None:
        """Sentiment band: a black rule on top, a grey centre line, per utterance a bar up
        (positive, green) or down (negative, red) from it, as long as the score."""
        h, w = band.shape[:2]
        band[:] = 15
        band[0] = 0
        mid = (h + 1) // 2
        half = max(1, h - 1 - mid)
        for k, (start, end) in enumerate(self.data.utterances):
            sentiment = self.data.sentiment_at(k)
            if sentiment is None:
                continue
            score = float(np.clip(sentiment[1], -1.0, 1.0))
            x0, x1 = self.x_of(start), max(self.x_of(end), self.x_of(start) + 1)
            dy = max(1, int(round(abs(score) * half)))
            top, bottom = (mid - dy, mid) if score >= 0 else (mid, mid + dy)
            band[max(1, top):bottom + 1, x0:x1] = sentiment_colour(score)
        band[mid, :] = (110, 110, 110)

    def _strip_signals(self, strip: np.ndarray) -> None:
        """No model: facial emotion estimates (stacked) in the top half, loudness below."""
        h, w = strip.shape[:2]
        data, half = self.data, strip.shape[0] // 2
        if data.emotions is not None and data.vision_times.size:
            xs = np.array([self.x_of(t) for t in data.vision_times])
            edges = np.append((xs[:-1] + xs[1:]) // 2, w) if xs.size > 1 else np.array([w])
            left = np.concatenate([[0], edges[:-1]])
            for r in range(xs.size):
                if data.face_present is not None and data.face_present[r] < 0.5:
                    continue
                y = half
                for i, name in enumerate(data.emotion_names):
                    dy = int(round(float(data.emotions[r, i]) * half))
                    if dy > 0:
                        strip[y - dy:y, left[r]:max(edges[r], left[r] + 1)] = class_colour(name, i)
                    y -= dy
        if data.loudness is not None and data.audio_times.size:
            xs = np.array([self.x_of(t) for t in data.audio_times], np.int32)
            norm = np.clip(np.nan_to_num(data.loudness) / self._loud_max, 0, 1)
            ys = (h - 1 - norm * (h - half - 2)).astype(np.int32)
            cv2.polylines(strip, [np.stack([xs, ys], 1).reshape(-1, 1, 2)], False, (240, 240, 240), 1, cv2.LINE_AA)

    # ---- per frame ------------------------------------------------------------------------
    def utterance_at(self, t: float) -> int | None:
        i = bisect.bisect_right(self._utt_starts, t) - 1
        if i >= 0 and t <= self.data.utterances[i][1]:
            return i
        return None

    def draw(self, frame: np.ndarray, t: float) -> np.ndarray:
        """Draw the overlay for time t (seconds) onto `frame` (BGR uint8, modified in place)."""
        if frame.shape[0] != self.height or frame.shape[1] != self.width:
            raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, annotator expects {self.width}x{self.height}")
        self._draw_face(frame, t)
        self._draw_strip(frame, t)
        self._draw_subtitles(frame, t)
        if self.data.has_model:
            self._draw_prediction(frame, t)
        else:
            self._draw_signals(frame, t)
        return frame

    def _draw_strip(self, frame: np.ndarray, t: float) -> None:
        roi = frame[self.strip_y:]
        cv2.addWeighted(roi, 0.25, self.strip, 0.75, 0.0, dst=roi)
        x = self.x_of(t)
        cv2.line(frame, (x, self.strip_y - 4), (x, self.height - 1), _WHITE, max(2, int(self.scale * 2)))
        cv2.line(frame, (x, self.strip_y - 4), (x, self.height - 1), _BLACK, 1)

    def _draw_face(self, frame: np.ndarray, t: float) -> None:
        data = self.data
        if data.boxes is None:
            return
        r = _nearest(data.vision_times, t, self._vision_tol)
        if r is None or not np.all(np.isfinite(data.boxes[r])):
            return
        x0, y0, x1, y1 = (int(round(v)) for v in data.boxes[r])
        cv2.rectangle(frame, (x0, y0), (x1, y1), _GREEN, max(2, int(round(self.scale * 2))))

    def _text(self, frame, text, org, *, size=0.5, colour=_WHITE, thick=1) -> None:
        s = size * self.scale
        cv2.putText(frame, text, org, _FONT, s, _BLACK, thick + 2, cv2.LINE_AA)
        cv2.putText(frame, text, org, _FONT, s, colour, thick, cv2.LINE_AA)

    def _shade(self, frame: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(self.width, x1), min(self.height, y1)
        if x1 > x0 and y1 > y0:
            frame[y0:y1, x0:x1] >>= 1  # darken to half: readable text on any background

    def _draw_subtitles(self, frame: np.ndarray, t: float) -> None:
        words = self.data.words
        if not words:
            return
        i = bisect.bisect_right(self._word_starts, t) - 1
        if i < 0 or t > words[i][1] + 1.5:  # nothing said in the last 1.5 s: no subtitle
            return
        u = self.utterance_at(t)
        first = max(0, i - 6)
        if u is not None:  # stay inside the current utterance
            ustart = self.data.utterances[u][0]
            while first < i and words[first][1] < ustart:
                first += 1
        shown = words[first:i + 1]
        size = 0.6
        s = size * self.scale
        pieces = [w[2].strip() for w in shown]
        widths = [cv2.getTextSize(p + " ", _FONT, s, 1)[0][0] for p in pieces]
        total = sum(widths)
        text_h = cv2.getTextSize("Ag", _FONT, s, 1)[0][1]
        x = max(4, (self.width - total) // 2)
        y = self.strip_y - int(10 * self.scale)
        self._shade(frame, x - 6, y - text_h - 8, x + total + 4, y + 8)
        for j, (piece, wd) in enumerate(zip(pieces, widths)):
            current = j == len(pieces) - 1 and t <= shown[-1][1]
            self._text(frame, piece, (x, y), size=size, colour=_YELLOW if current else _WHITE)
            x += wd

    def _bars(self, frame, x, y, items: list[tuple[str, float, tuple[int, int, int]]], *, highlight: int | None) -> int:
        """Labelled horizontal bars (value in [0, 1]); returns the y below the last one."""
        row = int(16 * self.scale)
        label_w = int(62 * self.scale)
        bar_w = int(90 * self.scale)
        for k, (name, value, colour) in enumerate(items):
            y += row
            value = float(np.clip(value if np.isfinite(value) else 0.0, 0.0, 1.0))
            self._text(frame, name[:9], (x, y), size=0.42, colour=_YELLOW if k == highlight else _WHITE)
            bx, by = x + label_w, y - int(10 * self.scale)
            cv2.rectangle(frame, (bx, by), (bx + bar_w, y), (70, 70, 70), 1)
            cv2.rectangle(frame, (bx, by), (bx + int(round(value * bar_w)), y), colour, -1)
            self._text(frame, f"{value:.2f}", (bx + bar_w + 4, y), size=0.38)
        return y

    def _panel_box(self, frame, rows: int, *, width: int = 0) -> tuple[int, int]:
        x, y = int(8 * self.scale), int(8 * self.scale)
        self._shade(frame, x - 4, y - 4, x + max(int(205 * self.scale), width + 4), y + int((16 * rows + 8) * self.scale))
        return x, y

    def _draw_prediction(self, frame: np.ndarray, t: float) -> None:
        """The prediction panel changes with the utterance only: drawn once per utterance as a
        layer, then composited (text drawing was a fifth of the render time)."""
        u = self.utterance_at(t)
        if self._panel is None or self._panel[0] != u:
            self._panel = (u, PanelLayer.capture(lambda f: self._draw_panel(f, u), width=self.width,
                                                 height=self.height))
        self._panel[1].apply(frame)

    def _draw_panel(self, frame: np.ndarray, u: int | None) -> None:
        data = self.data
        pred = data.predictions[u] if u is not None else None
        weights = data.weights[u] if u is not None else None
        classes = data.classes
        sentiment = data.sentiment_at(u)
        each = data.alone_at(u)
        alone = [(f"{m[0].upper()} {_short_answer(each[m])}", prediction_colour(each[m], data)) for m in MODALITIES if m in each]
        rows = (1 + (len(classes) if classes else 2) + (1 if weights else 0) + (2 if data.has_sentiment else 0)
                + (1 if data.has_alone else 0))
        x, y = self._panel_box(frame, rows, width=self._row_width(alone))
        title = f"{data.model_name or 'model'}: utterance {u + 1}" if u is not None else f"{data.model_name or 'model'}: no utterance"
        self._text(frame, title, (x, y + int(12 * self.scale)), size=0.45)
        y += int(14 * self.scale)
        if pred is None:
            return
        if pred.probabilities:
            probs = pred.probabilities
            items = [(c, float(probs.get(c, 0.0)), class_colour(c, i)) for i, c in enumerate(classes)]
            best = classes.index(pred.label) if pred.label in classes else None
            y = self._bars(frame, x, y, items, highlight=best)
        elif pred.score is not None:
            y = self._gauge(frame, x, y, float(pred.score))
        if sentiment is not None:
            y = self._sentiment(frame, x, y, *sentiment)
        if weights:
            # one piece per modality; a modality the model was not fed is grey (its weight is 0)
            unused = data.unused[u] if u is not None and u < len(data.unused) else {}
            y += int(16 * self.scale)
            pieces = [(f"{m[0].upper()} {float(weights[m]):.2f}", (140, 140, 140) if m in unused else _WHITE)
                      for m in MODALITIES]
            self._labelled_row(frame, x, y, "weights", pieces)
        if alone:
            # what each used modality says by itself, in its class colour (the report's by_modality)
            y += int(16 * self.scale)
            self._labelled_row(frame, x, y, "alone", alone)

    def _labelled_row(self, frame, x: int, y: int, label: str, pieces: list[tuple[str, tuple[int, int, int]]]) -> None:
        """'label  piece  piece ...' on one panel row, the pieces after the width of 'weights  '."""
        s = 0.42 * self.scale
        self._text(frame, label, (x, y), size=0.42)
        px = x + cv2.getTextSize("weights  ", _FONT, s, 1)[0][0]
        for piece, colour in pieces:
            self._text(frame, piece, (px, y), size=0.42, colour=colour)
            px += cv2.getTextSize(piece + "  ", _FONT, s, 1)[0][0]

    def _row_width(self, pieces: list[tuple[str, tuple[int, int, int]]]) -> int:
        """Width of a `_labelled_row` with these pieces (0 for none)."""
        if not pieces:
            return 0
        s = 0.42 * self.scale
        return cv2.getTextSize("weights  " + "  ".join(p for p, _ in pieces), _FONT, s, 1)[0][0]

    def _sentiment(self, frame, x, y, label: str, score: float) -> int:
        """'sentiment <label> <score>' and a [-1, 1] gauge under it (centre line at 0)."""
        colour = sentiment_colour(score)
        y += int(18 * self.scale)
        self._text(frame, "sentiment", (x, y), size=0.42)
        gap = cv2.getTextSize("sentiment  ", _FONT, 0.42 * self.scale, 1)[0][0]
        self._text(frame, f"{label} {score:+.2f}", (x + gap, y), size=0.45, colour=_YELLOW)
        w = int(152 * self.scale)
        y += int(12 * self.scale)
        top = y - int(7 * self.scale)
        cv2.rectangle(frame, (x, top), (x + w, y), (70, 70, 70), -1)
        mid = x + w // 2
        px = x + int(round((float(np.clip(score, -1.0, 1.0)) + 1.0) / 2.0 * w))
        cv2.rectangle(frame, (min(mid, px), top), (max(mid, px), y), colour, -1)
        cv2.line(frame, (mid, top - 2), (mid, y + 2), _WHITE, 1)
        return y

    def _gauge(self, frame, x, y, score: float) -> int:
        lo, hi = self.data.score_range
        w = int(180 * self.scale)
        y += int(22 * self.scale)
        cv2.rectangle(frame, (x, y - int(8 * self.scale)), (x + w, y), (70, 70, 70), -1)
        mid = x + w // 2
        px = x + int(round((np.clip(score, lo, hi) - lo) / (hi - lo) * w))
        cv2.rectangle(frame, (min(mid, px), y - int(8 * self.scale)), (max(mid, px), y), score_colour(score, lo, hi), -1)
        cv2.line(frame, (mid, y - int(11 * self.scale)), (mid, y + 2), _WHITE, 1)
        mood = "positive" if score > 0.5 else "negative" if score < -0.5 else "neutral"
        self._text(frame, f"score {score:+.2f} ({mood})", (x, y + int(16 * self.scale)), size=0.45)
        return y + int(16 * self.scale)

    def _draw_signals(self, frame: np.ndarray, t: float) -> None:
        data = self.data
        names = data.emotion_names
        rows = 1 + len(names) + 2
        x, y = self._panel_box(frame, rows)
        self._text(frame, "NO MODEL - signals only", (x, y + int(12 * self.scale)), size=0.45, colour=_YELLOW)
        y += int(14 * self.scale)
        r = _nearest(data.vision_times, t, self._vision_tol)
        face = r is not None and (data.face_present is None or data.face_present[r] >= 0.5)
        if names:
            if face and data.emotions is not None:
                values = data.emotions[r]
                items = [(f"{n}", float(values[i]), class_colour(n, i)) for i, n in enumerate(names)]
                y = self._bars(frame, x, y, items, highlight=int(np.nanargmax(values)) if np.isfinite(values).any() else None)
            else:
                y += int(16 * self.scale)
                self._text(frame, "face: none", (x, y), size=0.42)
        a = _nearest(data.audio_times, t, self._audio_tol)
        items = []
        if data.loudness is not None:
            items.append(("loudness", float(data.loudness[a]) / self._loud_max if a is not None else 0.0, (200, 200, 200)))
        if data.voicing is not None:
            items.append(("voicing", float(data.voicing[a]) if a is not None else 0.0, (200, 160, 90)))
        if items:
            self._bars(frame, x, y, items, highlight=None)


@dataclass(frozen=True)
class PanelLayer:
    """What a drawing does to a region, as out = offset + frame * gain / 255 per pixel and channel.
    Drawing (shading, anti-aliased text, rectangles) is affine in the pixel underneath, so one
    drawing onto black (offset) and one onto white (offset + gain) capture it exactly, to rounding."""

    y0: int
    x0: int
    offset: np.ndarray  # uint8 (h, w, 3)
    gain: np.ndarray  # uint8 (h, w, 3): 255 leaves the frame as it is

    @classmethod
    def capture(cls, draw: Callable[[np.ndarray], None], *, width: int, height: int) -> "PanelLayer":
        black = np.zeros((height, width, 3), np.uint8)
        white = np.full((height, width, 3), 255, np.uint8)
        draw(black)
        draw(white)
        gain = (white.astype(np.int16) - black).clip(0, 255).astype(np.uint8)
        ys, xs = np.nonzero(((black != 0) | (gain != 255)).any(axis=2))
        if ys.size == 0:
            return cls(0, 0, black[:0, :0], gain[:0, :0])
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        return cls(int(y0), int(x0), black[y0:y1, x0:x1].copy(), gain[y0:y1, x0:x1].copy())

    def apply(self, frame: np.ndarray) -> None:
        h, w = self.offset.shape[:2]
        if h == 0 or w == 0:
            return
        roi = frame[self.y0:self.y0 + h, self.x0:self.x0 + w]
        cv2.add(cv2.multiply(roi, self.gain, scale=1.0 / 255.0), self.offset, dst=roi)


def _step(times: np.ndarray) -> float:
    if times.size < 2:
        return 1.0
    return float(np.median(np.diff(times)))


# ---- video ---------------------------------------------------------------------------------

@dataclass
class RenderStats:
    frames: int
    seconds: float
    codec: str
    audio: bool
    audio_copied: bool = False  # AAC input: its packets copied, not re-encoded


def _video_codec() -> tuple[str, dict[str, str]]:
    import av

    for name, options in (("libx264", {"preset": "superfast", "crf": "23"}), ("h264", {}), ("mpeg4", {"qscale": "3"})):
        try:
            av.codec.Codec(name, "w")
            return name, options
        except Exception:  # noqa: BLE001 - a missing encoder raises codec-specific errors
            continue
    raise RuntimeError("no H.264 or MPEG-4 encoder in this PyAV build")


def render_video(
    *, src: str | os.PathLike, dst: str | os.PathLike, annotator: Annotator,
    progress: Callable[[float], None] | None = None,
) -> RenderStats:
    """Decode `src`, draw the overlay on every frame, encode H.264 at the source frame rate with
    the original audio (AAC copied, other codecs re-encoded to AAC), and write `dst` atomically
    (temp name, then rename)."""
    import av

    began = time.perf_counter()
    codec, options = _video_codec()
    with av.open(str(src)) as inp:
        vin = next((s for s in inp.streams.video if not s.disposition & av.stream.Disposition.attached_pic), None)
        if vin is None:
            raise ValueError(f"{src}: has no video stream to annotate")
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vin.thread_type = "AUTO"
        t0 = inp.start_time / av.time_base if inp.start_time is not None else 0.0
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        rate = Fraction(rate).limit_denominator(1001 * 1000)
        width, height = annotator.width, annotator.height
        ew, eh = width - width % 2, height - height % 2  # yuv420p needs even sizes
        duration = annotator.data.duration_s
        with atomic_path(dst) as tmp:
            with av.open(str(tmp), "w", options={"movflags": "+faststart"}) as out:
                vout = out.add_stream(codec, rate=rate)
                vout.width, vout.height, vout.pix_fmt = ew, eh, "yuv420p"
                vout.options = options
                vout.thread_type = "AUTO"
                vout.codec_context.time_base = 1 / rate
                audio = _audio_track(out, ain, t0=t0) if ain is not None else None
                frames, last_pts = 0, -1
                streams = [vin] + ([ain] if audio is not None else [])
                for packet in inp.demux(streams):
                    if packet.stream is vin:
                        for frame in _decode(packet):
                            t = (frame.time - t0) if frame.time is not None else frames / float(rate)
                            img = _to_bgr(frame)
                            turns = (int(round((frame.rotation or 0) / 90.0)) % 4)
                            if turns:
                                img = np.ascontiguousarray(np.rot90(img, k=turns))
                            annotator.draw(img, t)
                            if (ew, eh) != (width, height):
                                img = np.ascontiguousarray(img[:eh, :ew])
                            vf = av.VideoFrame.from_ndarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
                            pts = max(last_pts + 1, int(round(t * rate)))  # strictly increasing
                            vf.pts, vf.time_base, last_pts = pts, 1 / rate, pts
                            out.mux(vout.encode(vf))
                            frames += 1
                            if progress and duration > 0 and frames % 15 == 0:
                                progress(min(1.0, t / duration))
                    elif audio is not None:
                        audio.mux(packet)
                out.mux(vout.encode(None))
                if audio is not None:
                    audio.flush()
    if progress:
        progress(1.0)
    return RenderStats(frames=frames, seconds=time.perf_counter() - began, codec=codec, audio=audio is not None,
                       audio_copied=isinstance(audio, _AudioCopy))


def _to_bgr(frame) -> np.ndarray:
    """A decoded frame as BGR; OpenCV converts the usual yuv420p in half the CPU of swscale."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


def _decode(packet):
    """Decode a packet; a damaged packet near the end is skipped rather than failing the video."""
    import av

    try:
        return packet.decode()
    except av.error.InvalidDataError:
        return []


def _audio_track(out, ain, *, t0: float) -> "_AudioCopy | _AudioEncode":
    """The input's audio in the output: mono or stereo AAC is copied packet by packet (a third of
    the rendering time went to decoding and re-encoding it), anything else is encoded to AAC."""
    if ain.codec_context.name == "aac" and (ain.codec_context.channels or 0) in (1, 2):
        return _AudioCopy(out, ain, t0=t0)
    return _AudioEncode(out, ain, t0=t0)


class _AudioCopy:
    def __init__(self, out, ain, *, t0: float) -> None:
        self.out = out
        self.stream = out.add_stream_from_template(ain)
        self.shift = int(round(t0 / ain.time_base))  # onto the video's timeline, as decoded frames are

    def mux(self, packet) -> None:
        if packet.size == 0 or packet.dts is None:  # the demuxer's end-of-stream packets
            return
        packet.dts -= self.shift
        if packet.pts is not None:
            packet.pts -= self.shift
        packet.stream = self.stream
        self.out.mux(packet)

    def flush(self) -> None:
        pass


class _AudioEncode:
    def __init__(self, out, ain, *, t0: float) -> None:
        rate = ain.codec_context.sample_rate or 44100
        channels = ain.codec_context.channels or 2
        layout = "mono" if channels == 1 else "stereo"  # AAC-LC in mp4: keep it to what every player plays
        self.out, self.t0 = out, t0
        self.stream = out.add_stream("aac", rate=rate, layout=layout)
        self.stream.codec_context.bit_rate = 128_000 if channels > 1 else 96_000

    def mux(self, packet) -> None:
        for frame in _decode(packet):
            if frame.time is not None:
                frame.pts = int(round((frame.time - self.t0) * frame.sample_rate))
                frame.time_base = Fraction(1, frame.sample_rate)
            self.out.mux(self.stream.encode(frame))

    def flush(self) -> None:
        self.out.mux(self.stream.encode(None))


# ---- timeline.png ----------------------------------------------------------------------------

_MAX_TICK_TEXTS = 60  # utterance texts along the timeline's top
_BASE_FONT = "DejaVu Sans"  # matplotlib's own; Latin, Greek, Cyrillic, no CJK


def fallback_fonts(texts: Seq[str]) -> list[str]:
    """Installed font families that draw the characters of `texts` that DejaVu Sans lacks (CJK
    titles and words), best coverage first; empty when it lacks none or no font has them."""
    from matplotlib import font_manager

    fonts = font_manager.fontManager
    missing = frozenset(ch for text in texts for ch in text if ord(ch) > 0x24F) - _charmap(fonts.findfont(_BASE_FONT))
    if not missing:
        return []
    known = {f.fname for f in fonts.ttflist}
    for path in font_manager.findSystemFonts():  # fonts installed after matplotlib's cache was built
        if path not in known and path.lower().endswith((".ttf", ".otf", ".ttc")):
            try:
                fonts.addfont(path)
            except (OSError, RuntimeError, ValueError):  # an unreadable font file: not a candidate
                continue
    cover: dict[str, int] = {}
    for entry in fonts.ttflist:
        # "Last Resort" draws a placeholder box for every character: that is what we avoid
        if entry.name not in cover and entry.name != _BASE_FONT and "last resort" not in entry.name.lower():
            cover[entry.name] = len(missing & _charmap(entry.fname))
    return sorted((n for n, c in cover.items() if c > 0), key=lambda n: -cover[n])[:2]


@lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[str]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(chr(c) for c in FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def render_timeline_png(*, data: OverlayData, path: str | os.PathLike, title: str, texts: list[str] | None = None) -> Path:
    """Prediction per utterance over time (with a sentiment head its score, with by_modality each
    modality's own answer), facial emotion estimates and loudness below; the transcript as tick
    labels. Written atomically. Characters DejaVu Sans lacks (a CJK title or transcript) are drawn
    from an installed font that has them (`fallback_fonts`)."""
    from matplotlib import rc_context

    families = [_BASE_FONT, *fallback_fonts([title, *(texts or []), *(w for _, _, w in data.words)])]
    with rc_context({"font.family": families}):
        return _timeline_png(data=data, path=path, title=title, texts=texts)


def _timeline_png(*, data: OverlayData, path: str | os.PathLike, title: str, texts: list[str] | None) -> Path:
    from matplotlib.figure import Figure

    duration = max(data.duration_s, 1e-3)
    sentiment, alone = data.has_sentiment, data.has_alone
    # rows: the prediction, [the sentiment], [each modality alone], facial emotion, loudness
    ratios = [1.4] + [0.8] * sentiment + [0.7] * alone + [1.2, 0.8]
    fig = Figure(figsize=(12, 7.2 + 1.6 * sentiment + 1.4 * alone), dpi=100)
    axes = fig.subplots(len(ratios), 1, sharex=True, gridspec_kw={"height_ratios": ratios})
    ax_pred, ax_emo, ax_loud = axes[0], axes[-2], axes[-1]
    rgb = lambda bgr: (bgr[2] / 255, bgr[1] / 255, bgr[0] / 255)  # noqa: E731

    if data.has_model:
        task = data.label_spec.task
        if task == "regression":
            lo, hi = data.score_range
            scored = [((s + e) / 2, max(e - s, 1e-3), pred.score) for (s, e), pred in zip(data.utterances, data.predictions)
                      if pred and pred.score is not None]
            if scored:  # one call for all bars: per-bar calls cost ~ms each on hour-long videos
                x, width, score = zip(*scored)
                ax_pred.bar(x, score, width=width, color=[rgb(score_colour(v, lo, hi)) for v in score],
                            edgecolor="black", linewidth=0.5)
            ax_pred.axhline(0, color="grey", linewidth=0.8)
            ax_pred.set_ylim(lo, hi)
            ax_pred.set_ylabel("score")
        else:
            _stacked_bars(ax_pred, data, rgb, multilabel=task == "multilabel")
            ax_pred.set_ylim(0, 1)
            ax_pred.set_ylabel("emotion probability" if sentiment else "probability")
            if data.classes:
                ax_pred.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax_pred.set_title(f"{title}: {data.model_name or 'model'} prediction per utterance", fontsize=10)
        if sentiment:
            _plot_sentiment(axes[1], data, rgb)
        if alone:
            _plot_alone(axes[1 + sentiment], data, rgb)
    else:
        ax_pred.text(0.5, 0.5, "NO MODEL: no fused prediction was made\n(signals only; see report.json 'notice')",
                     ha="center", va="center", transform=ax_pred.transAxes, fontsize=11)
        for s, e in data.utterances:
            ax_pred.axvspan(s, e, color="0.9", ec="0.6")
        ax_pred.set_yticks([])
        ax_pred.set_title(f"{title}: utterances", fontsize=10)

    if data.emotions is not None and data.vision_times.size:
        emo = data.emotions.astype(float).copy()
        if data.face_present is not None:
            emo[data.face_present < 0.5] = np.nan  # no face: a gap, not a zero
        for i, n in enumerate(data.emotion_names):
            ax_emo.plot(data.vision_times, emo[:, i], color=rgb(class_colour(n, i)), label=n, linewidth=1.2)
        ax_emo.set_ylim(0, 1)
        ax_emo.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    else:
        ax_emo.text(0.5, 0.5, "no face", ha="center", va="center", transform=ax_emo.transAxes)
    ax_emo.set_ylabel("facial emotion\n(estimate)")

    if data.loudness is not None and data.audio_times.size:
        ax_loud.plot(data.audio_times, data.loudness, color="0.2", linewidth=1.0, label="loudness")
        ax_loud.set_ylabel("loudness")
        # from 0, and at least up to 0.5 (quiet speech): a silent track reads as a flat line at 0
        ax_loud.set_ylim(0, max(0.5, 1.1 * _robust_max(data.loudness)))
        if data.voicing is not None:
            twin = ax_loud.twinx()
            twin.fill_between(data.audio_times, 0, data.voicing, color="tab:orange", alpha=0.3, step="mid", label="voicing")
            twin.set_ylim(0, 1)
            twin.set_ylabel("voicing", fontsize=8)
    else:
        ax_loud.text(0.5, 0.5, "no audio", ha="center", va="center", transform=ax_loud.transAxes)
    ax_loud.set_xlabel("time (s)")
    ax_loud.set_xlim(0, duration)

    starts = [s for s, _ in data.utterances]
    for ax in axes:  # utterance starts: one line collection per axis, spanning its height
        ax.vlines(starts, 0, 1, transform=ax.get_xaxis_transform(), color="0.75", linewidth=0.6, zorder=0)
    # transcript as tick labels along the top: words when few, else utterance texts
    top = ax_pred.secondary_xaxis("top")
    if data.words and len(data.words) <= 60:
        top.set_xticks([(a + b) / 2 for a, b, _ in data.words], [w for _, _, w in data.words], rotation=60, fontsize=7)
    elif texts:
        # at most _MAX_TICK_TEXTS, evenly spread: hundreds of labels overlap into a smear (and cost seconds)
        shown = np.unique(np.linspace(0, len(texts) - 1, min(len(texts), _MAX_TICK_TEXTS)).round().astype(int))
        top.set_xticks([sum(data.utterances[i]) / 2 for i in shown], [_shorten_label(texts[i]) for i in shown], rotation=30, fontsize=7)
    else:
        top.set_xticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _plot_sentiment(ax: Any, data: OverlayData, rgb: Callable) -> None:
    """Sentiment score per utterance as bars in [-1, 1], each labelled with its class."""
    shown = [(k, s, e, *data.sentiment_at(k)) for k, (s, e) in enumerate(data.utterances) if data.sentiment_at(k) is not None]
    if shown:
        _, starts, ends, _, scores = zip(*shown)
        ax.bar([(s + e) / 2 for s, e in zip(starts, ends)], scores, width=[max(e - s, 1e-3) for s, e in zip(starts, ends)],
               color=[rgb(sentiment_colour(v)) for v in scores], edgecolor="black", linewidth=0.5)
    for _, s, e, label, score in shown:
        # the class name next to the zero line, on the side of the bar (inside it when it is long)
        ax.text((s + e) / 2, 0.06 if score >= 0 else -0.06, f"{label} {score:+.2f}", ha="center",
                va="bottom" if score >= 0 else "top", fontsize=8, clip_on=True)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylim(-1, 1)
    ax.set_ylabel("sentiment\n(positive - negative)")


def _plot_alone(ax: Any, data: OverlayData, rgb: Callable) -> None:
    """Each modality's own answer (the report's by_modality) per utterance: one lane per modality,
    a bar in the top class's colour, more opaque the more probable; labelled when there is room."""
    from matplotlib.collections import PolyCollection

    lanes = {m: len(MODALITIES) - 1 - i for i, m in enumerate(MODALITIES)}  # words on top
    boxes, colours, labels = [], [], []
    for k, (s, e) in enumerate(data.utterances):
        for m, pred in data.alone_at(k).items():
            p = float((pred.probabilities or {}).get(pred.label, 1.0))
            y0, y1 = lanes[m] + 0.1, lanes[m] + 0.9
            boxes.append([(s, y0), (s, y1), (e, y1), (e, y0)])
            colours.append((*rgb(prediction_colour(pred, data)), 0.3 + 0.7 * p))
            labels.append(((s + e) / 2, lanes[m] + 0.5, _short_answer(pred, with_p=True)))
    ax.add_collection(PolyCollection(boxes, facecolors=colours, edgecolors="white", linewidths=0.3))
    if len(data.utterances) <= 40:  # more labels than that overlap into a smear
        for x, y, label in labels:
            ax.text(x, y, label, ha="center", va="center", fontsize=7, clip_on=True)
    ax.set_ylim(0, len(MODALITIES))
    ax.set_yticks([lanes[m] + 0.5 for m in MODALITIES], [_LANE_NAMES.get(m, m) for m in MODALITIES], fontsize=8)
    ax.set_ylabel("each modality\nalone", fontsize=9)


def _stacked_bars(ax: Any, data: OverlayData, rgb: Callable, *, multilabel: bool) -> None:
    """Class probabilities per utterance as stacked bars: one collection of rectangles per class
    (an hour holds hundreds of utterances; a patch each costs milliseconds to draw and bound)."""
    from matplotlib.collections import PolyCollection

    x0 = np.array([s for s, _ in data.utterances], float).reshape(-1)
    x1 = x0 + np.array([max(e - s, 1e-3) for s, e in data.utterances], float).reshape(-1)
    probs = [(pred.probabilities if pred else None) or {} for pred in data.predictions]
    totals = np.array([sum(p.values()) if multilabel and p else 1.0 for p in probs])
    bottom = np.zeros(len(x0))
    for i, c in enumerate(data.classes):
        top = bottom + np.array([float(p.get(c, 0.0)) for p in probs]) / np.maximum(totals, 1e-9)
        boxes = np.stack([np.c_[x0, bottom], np.c_[x0, top], np.c_[x1, top], np.c_[x1, bottom]], axis=1)
        colour = rgb(class_colour(c, i))
        ax.add_collection(PolyCollection(boxes, facecolors=colour, edgecolors="white", linewidths=0.3, label=c))
        bottom = top


def _shorten_label(text: str, n: int = 28) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


__all__ = [
    "Annotator", "OverlayData", "RenderStats", "class_colour", "find_column", "overlay_data",
    "render_timeline_png", "render_video", "score_colour", "sentiment_colour",
]
