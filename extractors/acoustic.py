"""Acoustic features: a 74-column "COVAREP-like" set from openSMILE low-level descriptors, 12.5 Hz.

openSMILE's eGeMAPSv02 and ComParE_2016 low-level descriptors (10 ms hop) are pooled into
80 ms windows: means (voice-quality and formant values over voiced frames only, as they are
undefined elsewhere), a few maxima and window-to-window deltas. These approximate the COVAREP
columns of CMU-MOSI/MOSEI; they are not COVAREP. docs/acoustic_features.md lists every column
with its source and the COVAREP feature it stands in for.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict
from functools import lru_cache
from importlib.metadata import version as _package_version
from typing import Any

import numpy as np

from extractors.config import AudioConfig
from extractors.sequence import Sequence
from extractors.speech_activity import speech_flags

EXTRACTOR_ID = "opensmile-covarep-like"
EXTRACTOR_VERSION = "1.0"

_E, _C = "egemaps", "compare"  # eGeMAPSv02 / ComParE_2016 low-level descriptors
_F0 = {_E: "F0semitoneFrom27.5Hz_sma3nz", _C: "F0final_sma"}  # each set's pitch: > 0 where voiced
# (column, set, descriptor, pooling): "mean" over all frames, "voiced" mean over voiced frames
# (0 when the window has none), "max"; derived columns are computed after pooling.
_POOLED: list[tuple[str, str, str, str]] = [
    # pitch and voicing
    ("f0_hz", _C, "F0final_sma", "voiced"),
    ("f0_semitone", _E, "F0semitoneFrom27.5Hz_sma3nz", "voiced"),
    ("voicing_prob", _C, "voicingFinalUnclipped_sma", "mean"),
    # voice quality
    ("jitter_local", _C, "jitterLocal_sma", "voiced"),
    ("jitter_ddp", _C, "jitterDDP_sma", "voiced"),
    ("shimmer_local", _C, "shimmerLocal_sma", "voiced"),
    ("shimmer_local_db", _E, "shimmerLocaldB_sma3nz", "voiced"),
    ("hnr_acf_db", _E, "HNRdBACF_sma3nz", "voiced"),
    ("log_hnr", _C, "logHNR_sma", "voiced"),
    ("h1_h2_db", _E, "logRelF0-H1-H2_sma3nz", "voiced"),
    ("h1_a3_db", _E, "logRelF0-H1-A3_sma3nz", "voiced"),
    # spectral tilt
    ("alpha_ratio", _E, "alphaRatio_sma3", "mean"),
    ("hammarberg_index", _E, "hammarbergIndex_sma3", "mean"),
    ("slope_0_500", _E, "slope0-500_sma3", "mean"),
    ("slope_500_1500", _E, "slope500-1500_sma3", "mean"),
    ("spectral_slope", _C, "pcm_fftMag_spectralSlope_sma", "mean"),
    ("spectral_harmonicity", _C, "pcm_fftMag_spectralHarmonicity_sma", "mean"),
    # formants
    *[
        (f"f{i}_{name}", _E, f"F{i}{descriptor}_sma3nz", "voiced")
        for i in (1, 2, 3)
        for name, descriptor in (("hz", "frequency"), ("bandwidth_hz", "bandwidth"), ("amplitude_db", "amplitudeLogRelF0"))
    ],
    # energy
    ("loudness", _E, "Loudness_sma3", "mean"),
    ("loudness_max", _E, "Loudness_sma3", "max"),
    ("rms_energy", _C, "pcm_RMSenergy_sma", "rms"),
    ("zcr", _C, "pcm_zcr_sma", "mean"),
    # spectral shape
    ("spectral_flux", _C, "pcm_fftMag_spectralFlux_sma", "mean"),
    ("spectral_centroid", _C, "pcm_fftMag_spectralCentroid_sma", "mean"),
    ("spectral_entropy", _C, "pcm_fftMag_spectralEntropy_sma", "mean"),
    ("spectral_skewness", _C, "pcm_fftMag_spectralSkewness_sma", "mean"),
    ("spectral_kurtosis", _C, "pcm_fftMag_spectralKurtosis_sma", "mean"),
    ("psy_sharpness", _C, "pcm_fftMag_psySharpness_sma", "mean"),
    *[(f"rolloff_{p}", _C, f"pcm_fftMag_spectralRollOff{p}.0_sma", "mean") for p in (25, 50, 75, 90)],
    ("band_energy_250_650", _C, "pcm_fftMag_fband250-650_sma", "mean"),
    ("band_energy_1000_4000", _C, "pcm_fftMag_fband1000-4000_sma", "mean"),
    # cepstrum
    *[(f"mfcc_{i}", _C, f"mfcc_sma[{i}]", "mean") for i in range(1, 15)],
]
_DERIVED = (
    "voiced_fraction",  # share of 10 ms frames with a pitch (COVAREP's VUV, soft)
    "voice_activity",  # 1 where the window holds voiced speech: the report's speaking flag
    "f0_semitone_delta",
    "loudness_delta",
    "energy_db",
    *[f"mfcc_{i}_delta" for i in range(1, 15)],
)
_ORDER = (
    "f0_hz", "f0_semitone", "f0_semitone_delta", "voicing_prob", "voiced_fraction", "voice_activity",
    "jitter_local", "jitter_ddp", "shimmer_local", "shimmer_local_db", "hnr_acf_db", "log_hnr",
    "h1_h2_db", "h1_a3_db",
    "alpha_ratio", "hammarberg_index", "slope_0_500", "slope_500_1500", "spectral_slope",
    "spectral_harmonicity",
    *[f"f{i}_{n}" for i in (1, 2, 3) for n in ("hz", "bandwidth_hz", "amplitude_db")],
    "loudness", "loudness_max", "loudness_delta", "energy_db", "zcr",
    "spectral_flux", "spectral_centroid", "spectral_entropy", "spectral_skewness", "spectral_kurtosis",
    "psy_sharpness", "rolloff_25", "rolloff_50", "rolloff_75", "rolloff_90",
    "band_energy_250_650", "band_energy_1000_4000",
    *[f"mfcc_{i}" for i in range(1, 15)],
    *[f"mfcc_{i}_delta" for i in range(1, 15)],
)
ACOUSTIC_COLUMNS: tuple[str, ...] = _ORDER
assert len(ACOUSTIC_COLUMNS) == 74 and len(set(ACOUSTIC_COLUMNS)) == 74
assert set(ACOUSTIC_COLUMNS) == ({c for c, *_ in _POOLED} - {"rms_energy"}) | set(_DERIVED)

# the columns reports, overlays and the presence rule read by name
VOICE_ACTIVITY_COLUMN = "voice_activity"
LOUDNESS_COLUMN = "loudness"
VOICING_COLUMN = "voicing_prob"

_VOICED_SHARE = 0.25  # >= 2 of the 8 pitch frames in a window
_ENERGY_FLOOR_DB = -100.0  # digital silence
_ACTIVITY_MIN_DB = -50.0  # a pitch track in quieter audio is hum, not speech
BLOCK_S = 120.0  # longer audio goes through openSMILE in blocks of this many seconds: flat memory
CONTEXT_S = 2.0  # audio either side of a block, so frames at its edges see what they would in one pass


def describe(config: AudioConfig = AudioConfig()) -> dict[str, Any]:
    """The spec of the sequence `AcousticExtractor(config)` produces, without running it."""
    return {
        "id": EXTRACTOR_ID,
        "version": EXTRACTOR_VERSION,
        "config": asdict(config),
        "dim": len(ACOUSTIC_COLUMNS),
        "rate": config.rate,
        "columns": list(ACOUSTIC_COLUMNS),
    }


@lru_cache(maxsize=None)
def _smile(feature_set: str):
    # built once per process: a batch reuses the same openSMILE instances
    import opensmile

    sets = {_E: opensmile.FeatureSet.eGeMAPSv02, _C: opensmile.FeatureSet.ComParE_2016}
    return opensmile.Smile(feature_set=sets[feature_set], feature_level=opensmile.FeatureLevel.LowLevelDescriptors)


def _delta(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Centred window-to-window difference; 0 where a neighbour is not valid (e.g. unvoiced)."""
    if len(x) < 2:
        return np.zeros_like(x)
    d = np.gradient(x, axis=0)
    if valid is not None:
        ok = valid & np.r_[valid[1:], valid[-1]] & np.r_[valid[0], valid[:-1]]
        d = np.where(ok.reshape(-1, *([1] * (d.ndim - 1))), d, 0.0)
    return d


def _frames(name: str, audio: np.ndarray, sample_rate: int, offset: int) -> tuple[np.ndarray, dict[str, int], np.ndarray]:
    """openSMILE's low-level descriptors of `audio` (which starts `offset` samples into the file):
    values (NaN/inf as 0), column index, frame start times in seconds on the file's timeline."""
    import pandas as pd

    with warnings.catch_warnings():  # audio shorter than one analysis window gives NaN rows
        warnings.simplefilter("ignore", UserWarning)
        frame = _smile(name).process_signal(audio, sample_rate)
    # whole nanoseconds, so a block's times equal those of one pass over the file
    start = frame.index.get_level_values("start") + pd.Timedelta(offset * 10**9 // sample_rate, unit="ns")
    values = np.nan_to_num(frame.to_numpy(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return values, {c: i for i, c in enumerate(frame.columns)}, start.total_seconds().to_numpy()


def _pooled(audio: np.ndarray, sample_rate: int, rate: float, w0: int, w1: int, *, whole: bool):
    """Pooled columns, frames and voiced frames per window for windows [w0, w1); `whole`: one
    pass over all the audio (short audio), else the block's audio with CONTEXT_S either side."""
    hop = sample_rate // 100  # openSMILE's 10 ms frame step: blocks start on its grid
    a = 0 if whole else max(0, (int(w0 / rate * sample_rate) - int(CONTEXT_S * sample_rate)) // hop * hop)
    b = len(audio) if whole else min(len(audio), int(w1 / rate * sample_rate) + int(CONTEXT_S * sample_rate))
    n = w1 - w0
    lld: dict[str, tuple[np.ndarray, dict[str, int], np.ndarray]] = {}
    counts, voiced_mask, voiced_counts = {}, {}, {}  # per set: frames, voiced frames per window
    for name in (_E, _C):
        values, index, start = _frames(name, audio[a:b], sample_rate, a) if b > a else (np.zeros((0, 0)), {}, np.zeros(0))
        window = np.floor((start + 0.005) * rate).astype(np.int64) - w0  # a 10 ms hop's midpoint
        keep = (window >= 0) & (window < n)
        values, window = values[keep], window[keep]
        lld[name] = (values, index, window)
        voiced_mask[name] = values[:, index[_F0[name]]] > 0 if index else np.zeros(0, bool)
        counts[name] = np.bincount(window, minlength=n).astype(np.float64)
        voiced_counts[name] = np.bincount(window, weights=voiced_mask[name].astype(np.float64), minlength=n)
    cols: dict[str, np.ndarray] = {}
    for column, name, descriptor, pool in _POOLED:
        values, index, window = lld[name]
        x = values[:, index[descriptor]] if index else np.zeros(0)
        if pool == "max":
            out = np.full(n, -np.inf)
            np.maximum.at(out, window, x)
            out[~np.isfinite(out)] = 0.0
        elif pool == "rms":  # energy of the window, not the mean of frame RMS values
            out = np.sqrt(np.bincount(window, weights=x * x, minlength=n) / np.maximum(counts[name], 1))
        elif pool == "voiced":
            m = voiced_mask[name]
            out = np.bincount(window[m], weights=x[m], minlength=n) / np.maximum(voiced_counts[name], 1)
        else:
            out = np.bincount(window, weights=x, minlength=n) / np.maximum(counts[name], 1)
        cols[column] = out
    return cols, counts, voiced_counts


class AcousticExtractor:
    def __init__(self, config: AudioConfig = AudioConfig()) -> None:
        self.config = config

    @property
    def source(self) -> dict[str, Any]:
        return {
            "id": EXTRACTOR_ID,
            "version": EXTRACTOR_VERSION,
            "config": asdict(self.config),
            "backend": f"opensmile {_package_version('opensmile')}",
        }

    def extract(self, audio: np.ndarray, *, sample_rate: int, duration_s: float | None = None,
                block_s: float = BLOCK_S) -> Sequence:
        """74 columns per 80 ms window (config.rate) over [0, duration_s) of mono `audio`.

        Windows past the end of the audio are silent rows. No samples gives T = 0. Audio longer
        than `block_s` is analysed in blocks (whole windows, CONTEXT_S of audio either side) and
        pooled per block, so memory does not grow with duration.
        """
        audio = np.asarray(audio, np.float32).reshape(-1)
        rate = float(self.config.rate)
        if duration_s is None:
            duration_s = len(audio) / sample_rate
        if audio.size == 0 or duration_s <= 0:
            return Sequence.empty(
                columns=ACOUSTIC_COLUMNS, rate=rate, source=self.source,
                reason="no audio: the file has no audio stream" if audio.size == 0 else "zero duration",
            )
        count = max(1, math.ceil(duration_s * rate - 1e-9))
        audio_end = len(audio) / sample_rate
        per_block = max(1, int(round(block_s * rate)))  # windows per block
        parts = [_pooled(audio, sample_rate, rate, w0, min(w0 + per_block, count), whole=per_block >= count)
                 for w0 in range(0, count, per_block)]
        cols = {c: np.concatenate([p[0][c] for p in parts]) for c in parts[0][0]}
        counts, voiced_counts = ({n: np.concatenate([p[k][n] for p in parts]) for n in (_E, _C)} for k in (1, 2))
        filled = (counts[_E] > 0) | (counts[_C] > 0)  # windows holding at least one frame
        voiced_fraction = voiced_counts[_E] / np.maximum(counts[_E], 1)
        energy_db = 20 * np.log10(np.maximum(cols.pop("rms_energy"), 10 ** (_ENERGY_FLOOR_DB / 20)))
        voiced = voiced_fraction >= _VOICED_SHARE
        cols["voiced_fraction"] = voiced_fraction
        cols["energy_db"] = energy_db
        cols["voice_activity"] = (voiced & (energy_db > _ACTIVITY_MIN_DB)).astype(np.float64)
        names = [c for c in ACOUSTIC_COLUMNS if c in cols]
        features = np.stack([cols[c] for c in names], axis=1)
        features = self._fill_gaps(features, filled, count, audio_end, rate, names)
        table = dict(zip(names, features.T))
        table["f0_semitone_delta"] = _delta(table["f0_semitone"], table["voiced_fraction"] > 0)
        table["loudness_delta"] = _delta(table["loudness"])
        for i in range(1, 15):
            table[f"mfcc_{i}_delta"] = _delta(table[f"mfcc_{i}"])
        features = np.nan_to_num(np.stack([table[c] for c in ACOUSTIC_COLUMNS], axis=1), nan=0.0, posinf=0.0, neginf=0.0)
        starts = np.arange(count) / rate
        times = np.stack([starts, np.minimum(starts + 1 / rate, duration_s)], axis=1)
        activity = float(table["voice_activity"].mean())
        meta: dict[str, Any] = {"voice_activity_fraction": activity, "audio_s": audio_end}
        speech = speech_flags(audio, sample_rate=sample_rate, times=times)
        if speech is not None:  # per row: inside detected speech (music is voiced, not speech)
            meta["speech"] = speech
        if activity == 0:
            meta["note"] = "no voiced speech found (silence, noise or music)"
        return Sequence(features=features, times=times, columns=ACOUSTIC_COLUMNS, rate=rate, source=self.source, meta=meta)

    @staticmethod
    def _fill_gaps(features, filled, count, audio_end, rate, names) -> np.ndarray:
        """Windows openSMILE left without a frame: the audio's last few ms repeat the window before;
        windows past the end of the audio are silence."""
        starts = np.arange(count) / rate
        silent = starts >= audio_end
        for t in np.flatnonzero(~filled & ~silent):
            if t > 0:
                features[t] = features[t - 1]
        if silent.any():
            features[silent] = 0.0
            features[silent, names.index("energy_db")] = _ENERGY_FLOOR_DB
        return features
