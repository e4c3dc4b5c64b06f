"""Drawing the overlay onto one frame (`Annotator`).

Subtitles of the words being spoken, the current utterance's prediction (class bars or a score
gauge; with a sentiment head also its label, score and a [-1, 1] gauge) with the modality weights
and what each modality says alone (the report's by_modality), the face box, and a timeline strip
of the whole video with a moving playhead (a sentiment band along its bottom when there is a
sentiment head). Without a model it draws the extracted signals instead (facial emotion
estimates, loudness, voicing) under a plain "no model" label.

Speed: everything that does not change per frame (the timeline strip, the per-utterance panels,
the word index) is computed once in `Annotator.__init__` or once per utterance (`PanelLayer`);
per frame there are a few array copies, blends of small regions and a handful of `cv2.putText` calls.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from extractors.sequence import MODALITIES
from mfsa_pipe.analysis.render.overlay import (
    OverlayData,
    class_colour,
    prediction_colour,
    robust_max,
    score_colour,
    sentiment_colour,
    short_answer,
)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE, _BLACK, _YELLOW, _GREEN = (255, 255, 255), (0, 0, 0), (0, 230, 255), (80, 220, 80)



def _nearest(times: np.ndarray, t: float, tolerance: float) -> int | None:
    if times.size == 0:
        return None
    i = int(np.searchsorted(times, t))
    best = min((j for j in (i - 1, i) if 0 <= j < times.size), key=lambda j: abs(times[j] - t))
    return best if abs(times[best] - t) <= tolerance else None


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
        self._loud_max = robust_max(data.loudness)
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
        """Sentiment band: a black rule on top, a grey centre line, per utterance a bar up (score
        above 0) or down from it, as long as the score, in its label's colour (sentiment_colour)."""
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
            band[max(1, top):bottom + 1, x0:x1] = sentiment_colour(sentiment[0])
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
        alone = [(f"{m[0].upper()} {short_answer(each[m])}", prediction_colour(each[m], data)) for m in MODALITIES if m in each]
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
        colour = sentiment_colour(label)
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
