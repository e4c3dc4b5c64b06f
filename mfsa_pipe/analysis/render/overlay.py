"""What the annotated video and the timeline plot show (`OverlayData`, built from an extraction and
its report by `overlay_data`), and the colours both draw it in: a class keeps its colour everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence as Seq

import numpy as np

from extractors.acoustic import LOUDNESS_COLUMN, VOICING_COLUMN
from mfsa_pipe.analysis.report import Prediction
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


def class_colour(name: str, index: int) -> tuple[int, int, int]:
    return _EMOTION_BGR.get(name.lower().removeprefix("emo_"), _CYCLE_BGR[index % len(_CYCLE_BGR)])


def prediction_colour(pred: Prediction, data: "OverlayData") -> tuple[int, int, int]:
    """A prediction's colour: its class's (as in the bars), else its score's on the label range."""
    if pred.label is None and pred.score is not None:
        return score_colour(float(pred.score), *data.score_range)
    classes = data.classes
    return class_colour(str(pred.label), classes.index(pred.label) if pred.label in classes else 0)


def short_answer(pred: Prediction, *, with_p: bool = False) -> str:
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


SENTIMENT_COLOURS = {"positive": (60, 200, 60), "negative": (60, 60, 220)}  # BGR; any other label: grey


def sentiment_colour(label: str) -> tuple[int, int, int]:
    """The colour of a sentiment answer: its label's (green positive, red negative, grey neutral),
    so that a bar drawn for "neutral -0.35" is not the colour of "negative"; the bar's length
    shows the score."""
    return SENTIMENT_COLOURS.get(label, (150, 150, 150))


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


def robust_max(values: np.ndarray | None) -> float:
    if values is None or values.size == 0:
        return 1.0
    finite = values[np.isfinite(values)]
    top = float(np.percentile(finite, 99)) if finite.size else 0.0
    return top if top > 1e-9 else 1.0
