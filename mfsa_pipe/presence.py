"""One rule for "this modality carries nothing" in an utterance or training sample.

A modality is treated as absent (emptied, so every model sees it fully masked) when:
- text: there is no word;
- audio: the track is silent (the loudest frame's `loudness` is below `min_loudness`) or
  carries no voice (fewer than `min_voiced_share` of its frames have `voicing_prob` >= 0.5, or,
  where the speech detector ran (`speech`: the rows' flags, extractors/speech_activity.py), fewer
  than `min_speech_share` of them are speech: music and other sounds are voiced too);
- vision: no row, or fewer than `min_face_share` of the rows have a face (`face_present`).

The same `absent_modalities` runs in `build-dataset` (recorded per sample), in training and
evaluation (`PreparedSplit`) and in `analyze` (`Predictor`), so training and use agree. The
speech flags reach it from `analyze` only (datasets do not store them; the clips the default
model learned from are speech: see speech_activity.py for how much of them the detector finds).
Thresholds were set from measured clips (docs/presence.md): a silent track has loudness
~0.001, a near-silent room ~0.1, quiet speech (CREMA-D's whispered sad clip) 0.59 at its peak.
Features whose columns are not named (benchmark pickles) are only checked for being empty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from extractors.acoustic import LOUDNESS_COLUMN, VOICING_COLUMN
from extractors.sequence import MODALITIES

REASONS = ("no words", "silent", "no voice", "no face", "not used by the model", "empty")


@dataclass(frozen=True)
class PresenceRule:
    min_loudness: float = 0.2  # openSMILE loudness (sone-like), max over the utterance's frames
    voiced_prob: float = 0.5  # a frame is voiced when voicing_prob >= this
    min_voiced_share: float = 0.05
    min_speech_share: float = 0.05  # of the rows, inside speech the detector found
    min_face_share: float = 0.1

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_RULE = PresenceRule()


def _column(spec: Mapping[str, Any] | None, modality: str, name: str) -> int | None:
    columns = ((spec or {}).get(modality) or {}).get("columns") or []
    return list(columns).index(name) if name in columns else None


def absent_modalities(
    features: Mapping[str, np.ndarray],
    feature_spec: Mapping[str, Any] | None,
    *,
    rule: PresenceRule = DEFAULT_RULE,
    speech: np.ndarray | None = None,
) -> dict[str, str]:
    """{modality: reason} for each modality of `features` ((T, D) raw, unnormalised arrays)
    that carries nothing; present modalities are not listed. `speech`: (T_audio,) flags of the
    audio rows inside detected speech, or None where the detector did not run."""
    absent: dict[str, str] = {}
    for m in MODALITIES:
        x = features.get(m)
        if x is None or np.asarray(x).shape[0] == 0:
            absent[m] = "no words" if m == "text" else "no face" if m == "vision" else "empty"
    audio = features.get("audio")
    if "audio" not in absent and audio is not None:
        loud = _column(feature_spec, "audio", LOUDNESS_COLUMN)
        voicing = _column(feature_spec, "audio", VOICING_COLUMN)
        if loud is not None and float(np.max(audio[:, loud])) < rule.min_loudness:
            absent["audio"] = "silent"
        elif voicing is not None and float(np.mean(audio[:, voicing] >= rule.voiced_prob)) < rule.min_voiced_share:
            absent["audio"] = "no voice"
        elif speech is not None and _speech_share(speech, len(audio)) < rule.min_speech_share:
            absent["audio"] = "no voice"
    vision = features.get("vision")
    if "vision" not in absent and vision is not None:
        face = _column(feature_spec, "vision", "face_present")
        if face is not None and float(np.mean(vision[:, face] > 0.5)) < rule.min_face_share:
            absent["vision"] = "no face"
    return absent


def _speech_share(speech: np.ndarray, rows: int) -> float:
    speech = np.asarray(speech).reshape(-1)
    if speech.size != rows:
        raise ValueError(f"speech flags: {speech.size} for {rows} audio rows (they must be the same rows)")
    return float(np.mean(speech > 0))


def words_alone(present: np.ndarray) -> np.ndarray:
    """(N,) bool from the (N, 3) presence of text, audio, vision after the rule: words and nothing
    else (a sentence; calibration fits such samples their own temperature)."""
    present = np.asarray(present, bool).reshape(-1, len(MODALITIES))
    return present[:, 0] & ~present[:, 1:].any(1)
