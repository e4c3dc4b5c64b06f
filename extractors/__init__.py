"""Per-modality extractors: decoded media in, `Sequence` out, at native rates. Never imports `models`."""

from extractors.config import AudioConfig, ExtractionConfig, TextConfig, VisionConfig
from extractors.sequence import MODALITIES, Sequence

__all__ = ["AudioConfig", "ExtractionConfig", "MODALITIES", "Sequence", "TextConfig", "VisionConfig"]
