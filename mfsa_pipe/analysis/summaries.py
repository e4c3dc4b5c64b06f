"""What the report sums up: the video's overall prediction (duration-weighted over its
utterances), each modality's summary, and the signals of one utterance (facial emotion
estimates, face coverage, loudness, voicing)."""

from __future__ import annotations

from typing import Any

import numpy as np

from extractors.acoustic import LOUDNESS_COLUMN, VOICING_COLUMN
from mfsa_pipe.analysis.report import HeadPrediction, ModalitySummary, Prediction, UtteranceSignals
from mfsa_pipe.datasets.base import LabelSpec
from mfsa_pipe.segmentation import Utterance, speech_coverage


def _mean_probabilities(w: np.ndarray, probs: list[dict[str, float]]) -> dict[str, float]:
    return {n: float(sum(wi * p[n] for wi, p in zip(w, probs))) for n in probs[0]}


def overall_prediction(utterances: list[Utterance], predictions: list[Prediction | None], label_spec: LabelSpec | None) -> Prediction | None:
    """Duration-weighted mean over the utterances with a prediction: of the score (regression),
    of the probabilities with their argmax as label (classification, multilabel), and for a
    multihead model of each head's probabilities (label: argmax) and score (sentiment)."""
    pairs = [(max(u.duration, 1e-3), p) for u, p in zip(utterances, predictions) if p is not None]
    if not pairs or label_spec is None:
        return None
    w = np.array([d for d, _ in pairs])
    w = w / w.sum()
    preds = [p for _, p in pairs]
    if label_spec.is_regression:
        return Prediction(score=float(sum(wi * p.score for wi, p in zip(w, preds))))
    mean = _mean_probabilities(w, [p.probabilities for p in preds])
    heads = None
    if label_spec.task == "multihead":
        heads = {}
        for name in preds[0].heads:
            hp = [p.heads[name] for p in preds]
            hm = _mean_probabilities(w, [h.probabilities for h in hp])
            score = float(sum(wi * h.score for wi, h in zip(w, hp))) if hp[0].score is not None else None
            heads[name] = HeadPrediction(label=max(hm, key=hm.get), probabilities=hm, score=score)
    return Prediction(label=max(mean, key=mean.get), probabilities=mean, heads=heads)


def _column(seq: Any, name: str) -> np.ndarray | None:
    return seq.features[:, seq.columns.index(name)] if name in seq.columns else None


def modality_summaries(extraction: Any) -> dict[str, ModalitySummary]:
    text, audio, vision = extraction.text, extraction.audio, extraction.vision
    duration = float(extraction.media.duration_s)
    oov = text.meta.get("oov_rate")
    face = _column(vision, "face_present")
    voiced = audio.meta.get("voice_activity_fraction")
    if voiced is None and _column(audio, "voice_activity") is not None and audio.length:
        voiced = float(np.mean(_column(audio, "voice_activity") > 0.5))
    return {
        "text": ModalitySummary(
            frames=text.length, rate_hz=None, empty_reason=text.meta.get("empty_reason"),
            words=int(text.meta.get("n_words", text.length)),
            oov_rate=float(oov) if oov is not None and text.length else None,
            speech_coverage=speech_coverage(extraction.segments, duration_s=duration),
        ),
        "audio": ModalitySummary(
            frames=audio.length, rate_hz=audio.rate, empty_reason=audio.meta.get("empty_reason"),
            voiced_share=float(voiced) if voiced is not None and audio.length else None,
        ),
        "vision": ModalitySummary(
            frames=vision.length, rate_hz=vision.rate, empty_reason=vision.meta.get("empty_reason"),
            face_coverage=float(np.mean(face >= 0.5)) if face is not None and vision.length else (0.0 if extraction.media.has_video else None),
        ),
    }


def utterance_signals(extraction: Any, rows: dict[str, np.ndarray]) -> UtteranceSignals:
    """Mean facial emotion estimates (over rows with a face), face coverage, loudness, voicing."""
    vision, audio = extraction.vision, extraction.audio
    vr, ar = rows["vision"], rows["audio"]
    face_cov = emotions = loud = voicing = None
    if vr.size:
        present = _column(vision, "face_present")
        mask = present[vr] >= 0.5 if present is not None else np.ones(vr.size, bool)
        face_cov = float(mask.mean())
        emo = [i for i, c in enumerate(vision.columns) if c.startswith("emo_")]
        if emo and mask.any():
            mean = vision.features[vr[mask]][:, emo].mean(axis=0)
            emotions = {vision.columns[i].removeprefix("emo_"): float(np.clip(v, 0, 1)) for i, v in zip(emo, mean)}
    if ar.size:
        lcol = _column(audio, LOUDNESS_COLUMN)
        vcol = _column(audio, VOICING_COLUMN)
        loud = float(np.nanmean(lcol[ar])) if lcol is not None else None
        voicing = float(np.clip(np.nanmean(vcol[ar]), 0, 1)) if vcol is not None else None
    return UtteranceSignals(face_coverage=face_cov, emotions=emotions, loudness=loud, voicing=voicing)
