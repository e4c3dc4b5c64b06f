"""One registry of extractor options and their defaults (every default works offline).

Each modality has a config dataclass; `ExtractionConfig` bundles the three. Configs are
validated on construction, serialise to plain JSON (`to_dict`) and are recorded in every
Sequence, feature file, dataset and checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from extractors.lexicon import LEXICONS

AUDIO_SAMPLE_RATE = 16_000  # Hz: what the speech recogniser and openSMILE receive
ACOUSTIC_RATE = 12.5  # Hz: 80 ms hop, as COVAREP features in CMU-MOSI/MOSEI
VISUAL_RATE = 15.0  # Hz: as Facet features in CMU-MOSI/MOSEI
COMPUTE_TYPES = ("auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "float16", "bfloat16", "float32")


@dataclass(frozen=True)
class TextConfig:
    asr_backend: str = "faster-whisper"  # or "openai-whisper" (extra: whisper)
    asr_model: str = "tiny.en"  # a faster-whisper name or model directory; tiny.en ships offline
    language: str | None = None  # None: the model's own detection (English for *.en)
    vectors: str = "glove-6b-50d"  # a registered name, a GloVe .txt / word2vec / .kv path, or a gensim-data name
    lowercase: bool = True
    # marks ending a word kept as rows of their own ("What?" -> "What", "?"): GloVe has vectors
    # for them, and on MELD dev they carry much of the emotion ("" = words only, features 1.0)
    punctuation: str = "?!.,"
    beam_size: int = 1
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"
    vad_filter: bool = True  # Silero VAD before decoding: skips silence, avoids hallucinated words
    compute_type: str = "auto"  # faster-whisper: "auto" = int8 on CPU, float16 on CUDA
    # Whisper's retries of a window at temperatures 0.2 ... 1.0 when greedy decoding looks like a
    # failure: off, because on long videos the retries (sampled, so not better words) took 4x the
    # speech time; True restores Whisper's own behaviour
    temperature_fallback: bool = False
    # a lexicon column after the vectors ("" = none; "vader": each word's rated valence, negated
    # after "not" and the like: extractors/lexicon.py)
    lexicon: str = ""

    def __post_init__(self) -> None:
        if self.asr_backend not in ("faster-whisper", "openai-whisper"):
            raise ValueError(f"asr_backend must be 'faster-whisper' or 'openai-whisper', got {self.asr_backend!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if not isinstance(self.punctuation, str) or any(ch.isalnum() or ch.isspace() for ch in self.punctuation):
            raise ValueError(f"punctuation must be a string of punctuation marks such as '?!.,', got {self.punctuation!r}")
        if self.lexicon and self.lexicon not in LEXICONS:
            raise ValueError(f"lexicon must be '' (none) or one of {', '.join(LEXICONS)}, got {self.lexicon!r}")
        if not self.asr_model or not self.vectors:
            raise ValueError("asr_model and vectors must be non-empty names or paths")
        if self.language is not None and not (isinstance(self.language, str) and self.language.isalpha()):
            raise ValueError(f"language must be None or a language code such as 'en', got {self.language!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.compute_type not in COMPUTE_TYPES:
            raise ValueError(f"compute_type must be one of {COMPUTE_TYPES}, got {self.compute_type!r}")


@dataclass(frozen=True)
class AudioConfig:
    rate: float = ACOUSTIC_RATE
    sample_rate: int = AUDIO_SAMPLE_RATE

    def __post_init__(self) -> None:
        if not 1.0 <= self.rate <= 100.0:
            raise ValueError(f"acoustic rate must be within [1, 100] Hz, got {self.rate}")


@dataclass(frozen=True)
class VisionConfig:
    backend: str = "mesh"  # "mesh" (offline default) or "py-feat" (downloads its detectors)
    rate: float = VISUAL_RATE
    face: str = "largest"  # which face is followed when there are several: "largest" or "center"
    device: str = "auto"
    max_faces: int = 2  # faces the mesh tracks per frame (candidates for `face`); 1 is fastest
    max_side: int = 640  # frames are downscaled to this longest side before the mesh (speed)

    def __post_init__(self) -> None:
        if self.backend not in ("mesh", "py-feat"):
            raise ValueError(f"vision backend must be 'mesh' or 'py-feat', got {self.backend!r}")
        if not 1.0 <= self.rate <= 60.0:
            raise ValueError(f"visual rate must be within [1, 60] Hz, got {self.rate}")
        if self.face not in ("largest", "center"):
            raise ValueError(f"vision face must be 'largest' or 'center', got {self.face!r}")
        if not 1 <= self.max_faces <= 8:
            raise ValueError(f"vision max_faces must be within [1, 8], got {self.max_faces}")
        if self.max_side < 128:
            raise ValueError(f"vision max_side must be >= 128 pixels, got {self.max_side}")


@dataclass(frozen=True)
class ExtractionConfig:
    text: TextConfig = field(default_factory=TextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExtractionConfig":
        parts = {"text": TextConfig, "audio": AudioConfig, "vision": VisionConfig}
        unknown = set(data) - set(parts)
        if unknown:
            raise ValueError(f"unknown extraction config sections: {sorted(unknown)}")
        kwargs = {}
        for name, klass in parts.items():
            section = dict(data.get(name, {}))
            allowed = {f.name for f in fields(klass)}
            bad = set(section) - allowed
            if bad:
                raise ValueError(f"unknown {name} options {sorted(bad)}; allowed: {sorted(allowed)}")
            kwargs[name] = klass(**section)
        return cls(**kwargs)
