"""An asynchronous-fusion task in MulT's pickle format: the label needs all three modalities,
each contributing an event at its own, unrelated time.

Per sample (true lengths drawn uniformly in [min_frac * T, T] per modality, zero padding after;
every event spans `event_frac` (default 0.25) of the modality's true length):
- text (T=50, D=300): one row per "word", drawn from a vocabulary of neutral word vectors.
  A key phrase at a random position carries the positive or the negative sentiment direction
  (sign s_t = +1 / -1); a distractor phrase (another direction, random sign) sits elsewhere.
- audio (T=375, D=5): Gaussian background. The key event is a bump (Hann window) on channel 0
  with amplitude A ~ U[0.3, 3] at a random time; a distractor bump of random amplitude on
  channel 1 at another random time.
- vision (T=500, D=20): Gaussian background. The key event adds s_v * u (a fixed direction) over
  a window at a random time (sign s_v = +1 / -1); a distractor adds +-w (another direction)
  over another window.
label = clip(s_t * s_v * A + noise * N(0, 1), -3, 3).

Signs and amplitude are independent, so each modality alone (and audio with either other one)
carries no information about the label's sign, and text+vision know the sign but not the
magnitude: a model must find the event in every modality and combine them multiplicatively
(an XOR of the two signs, scaled by the audio amplitude). Reference points on the test split:
predicting 0 gives MAE = E|y| ~ 1.65 and Acc2 ~ 50%, the best any single modality can do;
knowing the sign (text+vision) but not A gives MAE ~ 0.68.

Classification variant (`task="classification"`): 3 classes from the same score, "negative"
(y < -1), "neutral" (|y| <= 1), "positive" (y > 1), written as (N, 3) one-hot labels with the
class names under the top-level "meta" key (MulT's loader ignores extra keys).
Each split also holds "factors" (N, 3) = [s_t, s_v, A] for analysis (readers ignore it).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfsa_pipe.atomic import atomic_path

CLASSES = ["negative", "neutral", "positive"]


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    n_train: int = 2000
    n_valid: int = 400
    n_test: int = 600
    text_len: int = 50
    audio_len: int = 375
    vision_len: int = 500
    text_dim: int = 300
    audio_dim: int = 5
    vision_dim: int = 20
    min_frac: float = 0.5  # true length in [min_frac * T, T]
    noise: float = 0.1  # label noise (std)
    background: float = 0.5  # std of the audio/vision background
    event_frac: float = 0.25  # share of a sequence's true length covered by each event (key and distractor)
    task: str = "regression"  # or "classification"

    def __post_init__(self) -> None:
        if self.task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {self.task!r}")
        if min(self.n_train, self.n_valid, self.n_test) < 1:
            raise ValueError("every split needs at least one sample")
        if min(self.text_len, self.audio_len, self.vision_len) < 4:
            raise ValueError("sequence lengths must be >= 4 (an event plus a distractor)")
        if self.audio_dim < 2 or self.text_dim < 4 or self.vision_dim < 2:
            raise ValueError("dims must be at least text 4, audio 2, vision 2")
        if not 0 < self.event_frac <= 0.5:
            raise ValueError(f"event_frac must be in (0, 0.5], got {self.event_frac}")
        if not 0 < self.min_frac <= 1:
            raise ValueError(f"min_frac must be in (0, 1], got {self.min_frac}")


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim)
    return v / np.linalg.norm(v)


def _two_positions(rng: np.random.Generator, length: int, width: int) -> tuple[int, int]:
    """Start positions of the event and the distractor windows, not overlapping when possible."""
    hi = max(1, length - width + 1)
    a = int(rng.integers(0, hi))
    for _ in range(20):
        b = int(rng.integers(0, hi))
        if abs(a - b) >= width or hi <= width:
            return a, b
    return a, b


class _Generator:
    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        # the task's fixed "world" (vocabulary, event directions) depends on the seed only
        world = np.random.default_rng([cfg.seed, 0])
        d = cfg.text_dim
        self.vocab = world.standard_normal((100, d)) / np.sqrt(d)
        self.sent_word = _unit(world, d) * 2.0
        self.distract_word = _unit(world, d) * 2.0
        self.u = _unit(world, cfg.vision_dim) * 1.5
        self.w = _unit(world, cfg.vision_dim) * 1.5

    def split(self, n: int, rng: np.random.Generator) -> dict[str, Any]:
        c = self.cfg
        text = np.zeros((n, c.text_len, c.text_dim), np.float32)
        audio = np.zeros((n, c.audio_len, c.audio_dim), np.float32)
        vision = np.zeros((n, c.vision_len, c.vision_dim), np.float32)
        s_t = rng.choice([-1.0, 1.0], n)
        s_v = rng.choice([-1.0, 1.0], n)
        amp = rng.uniform(0.3, 3.0, n)
        score = np.clip(s_t * s_v * amp + c.noise * rng.standard_normal(n), -3, 3)

        def length(t: int) -> int:
            return int(rng.integers(max(2, int(np.ceil(c.min_frac * t))), t + 1))

        for i in range(n):
            lt, la, lv = length(c.text_len), length(c.audio_len), length(c.vision_len)
            # text: neutral words + the key word + a distractor word
            rows = self.vocab[rng.integers(0, len(self.vocab), lt)] + 0.05 * rng.standard_normal((lt, c.text_dim))
            width = max(1, round(c.event_frac * lt))
            p, q = _two_positions(rng, lt, width)
            rows[p : p + width] += s_t[i] * self.sent_word
            rows[q : q + width] += rng.choice([-1.0, 1.0]) * self.distract_word
            text[i, :lt] = rows
            # audio: background + key bump (channel 0) + distractor bump (channel 1)
            width = max(3, round(c.event_frac * la))
            rows = c.background * rng.standard_normal((la, c.audio_dim))
            p, q = _two_positions(rng, la, width)
            bump = np.hanning(width + 2)[1:-1]
            rows[p : p + width, 0] += amp[i] * bump[: len(rows[p : p + width])]
            rows[q : q + width, 1] += rng.uniform(0.3, 3.0) * bump[: len(rows[q : q + width])]
            audio[i, :la] = rows
            # vision: background + signed key pattern + signed distractor pattern
            width = max(3, round(c.event_frac * lv))
            rows = c.background * rng.standard_normal((lv, c.vision_dim))
            p, q = _two_positions(rng, lv, width)
            rows[p : p + width] += s_v[i] * self.u
            rows[q : q + width] += rng.choice([-1.0, 1.0]) * self.w
            vision[i, :lv] = rows
        if c.task == "regression":
            labels = score.astype(np.float32).reshape(n, 1, 1)
        else:
            cls = np.where(score < -1, 0, np.where(score > 1, 2, 1))
            labels = np.eye(3, dtype=np.float32)[cls]
        factors = np.stack([s_t, s_v, amp], axis=1).astype(np.float32)
        return {"text": text, "audio": audio, "vision": vision, "labels": labels, "factors": factors}


def generate_synthetic(config: SyntheticConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """The dataset as the dict a MulT pickle holds (plus a "meta" entry)."""
    cfg = SyntheticConfig(**{**(asdict(config) if config is not None else {}), **overrides})
    gen = _Generator(cfg)
    data: dict[str, Any] = {}
    for k, (name, n) in enumerate((("train", cfg.n_train), ("valid", cfg.n_valid), ("test", cfg.n_test))):
        split = gen.split(n, np.random.default_rng([cfg.seed, k + 1]))
        split["id"] = np.array([f"syn_{name}_{i:05d}" for i in range(n)])
        data[name] = split
    meta: dict[str, Any] = {"name": "synthetic-async", "generator": asdict(cfg)}
    if cfg.task == "classification":
        meta["classes"] = CLASSES
    else:
        meta["range"] = [-3.0, 3.0]
    data["meta"] = meta
    return data


def write_synthetic(path: str | os.PathLike, config: SyntheticConfig | None = None, **overrides: Any) -> Path:
    data = generate_synthetic(config, **overrides)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(data, f, protocol=4)
    return path
