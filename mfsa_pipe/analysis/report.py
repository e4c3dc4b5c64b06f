"""The analysis report: dataclasses, JSON writing (atomic) and validation against the shipped schema.

`report.json` is the contract with whoever reads the tool's output, so it is versioned
(`schema_version`, semver: a new optional field bumps the minor, a renamed or removed field the
major) and every file written is validated in the tests against `schemas/report.schema.json`.
Times are seconds from the start of the media; probabilities are in [0, 1]; regression scores in
the checkpoint's label range (sentiment: [-3, 3]); a sentiment head's score is p(positive) -
p(negative) in [-1, 1]. docs/report.md documents each field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from mfsa_pipe.atomic import write_json
from mfsa_pipe.json_values import json_safe
from mfsa_pipe.version import __version__

SCHEMA_VERSION = "1.3.0"  # 1.1: prediction.heads, utterance modalities, task "multihead"; 1.2: checkpoint
# model_config, calibration; 1.3: utterances[].by_modality
REPORT_NAME = "report.json"

NO_MODEL_NOTICE = (
    "No fused prediction was made: no model checkpoint was used, so this report holds only the "
    "extracted signals (transcript, facial emotion and action-unit estimates, loudness, voicing). "
    "To get predictions, train a checkpoint on features from this tool's extractors with "
    "`mfsa-pipe train` and pass it with `--checkpoint`, or install a release that ships the "
    "default model (mfsa_pipe/default_model/model.ckpt)."
)


@dataclass
class InputInfo:
    path: str
    name: str
    sha256: str
    size_bytes: int
    duration_s: float
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    rotation_deg: int = 0


@dataclass
class CheckpointInfo:
    path: str
    sha256: str
    model_name: str
    label_spec: dict[str, Any]  # the checkpoint's LabelSpec.to_dict(), as report.json holds it
    trained_on: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    model_config: dict[str, Any] | None = None  # 1.2: the model's configuration as the checkpoint holds it
    calibration: dict[str, Any] | None = None  # 1.2: the temperatures the probabilities were computed with


@dataclass
class Provenance:
    extraction_config: dict[str, Any]
    extractors: dict[str, dict[str, Any]]  # modality -> {id, version, config, dim, rate}
    checkpoint: CheckpointInfo | None = None


@dataclass
class ModelInfo:
    name: str
    task: str
    label_spec: dict[str, Any]  # LabelSpec.to_dict()
    device: str
    has_modality_weights: bool


@dataclass
class ModalitySummary:
    frames: int  # rows of the modality's Sequence (words for text)
    rate_hz: float | None  # native rate; None for word-rate text
    empty_reason: str | None = None
    words: int | None = None  # text only
    oov_rate: float | None = None  # text only: share of words without a vector, [0, 1]
    speech_coverage: float | None = None  # text only: share of the duration inside speech segments
    face_coverage: float | None = None  # vision only: share of sampled frames with a face
    voiced_share: float | None = None  # audio only: share of frames judged voiced


@dataclass
class HeadPrediction:
    """One classification head of a multihead model. score: p(positive) - p(negative) in
    [-1, 1] for a head with both classes (sentiment), else None."""

    label: str
    probabilities: dict[str, float]
    score: float | None = None


@dataclass
class Prediction:
    """One fused prediction. label: the main class (classification / multilabel; multihead: the
    first head's, the emotion of the default model) or None; score: the regression output (None
    for classifiers); probabilities: class -> p (multilabel: label -> p(present); multihead: the
    first head's) or None for regression; heads: multihead only, head name -> HeadPrediction."""

    label: str | None = None
    score: float | None = None
    probabilities: dict[str, float] | None = None
    heads: dict[str, HeadPrediction] | None = None

    def main(self) -> str | float | None:
        """What one column of a summary table shows: the label, else the score."""
        return self.label if self.label is not None else self.score

    def sentiment(self) -> tuple[str, float] | None:
        """(label, score in [-1, 1]) of the sentiment head, i.e. the first head with a score (one
        with `negative` and `positive` classes), or None (no such head)."""
        for head in (self.heads or {}).values():
            if head.score is not None:
                return head.label, float(head.score)
        return None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Prediction":
        """A prediction as report.json holds it (e.g. a finished report that batch skips)."""
        heads = {name: HeadPrediction(**h) for name, h in data["heads"].items()} if data.get("heads") else None
        return cls(label=data.get("label"), score=data.get("score"), probabilities=data.get("probabilities"),
                   heads=heads)


@dataclass
class ModalityUse:
    """Whether the model was fed a modality in an utterance. used: None without a model; reason:
    why it was not (or, without a model, why it carries nothing): one of presence.REASONS
    ("no words", "silent", "no voice", "no face", "not used by the model", "empty"); else None."""

    used: bool | None
    reason: str | None = None


@dataclass
class UtteranceSignals:
    face_coverage: float | None  # share of the utterance's visual rows with a face; None: no rows
    emotions: dict[str, float] | None  # mean facial emotion estimate over rows with a face
    loudness: float | None  # mean of the acoustic loudness column (openSMILE loudness, sone-like units)
    voicing: float | None  # mean voicing probability, [0, 1]


@dataclass
class UtteranceReport:
    index: int
    start: float  # seconds
    end: float  # seconds
    text: str
    source: str  # "speech" | "window"
    rows: dict[str, int]  # modality -> rows fed to the model
    prediction: Prediction | None
    modality_weights: dict[str, float] | None  # psi of the last weighted attention layer (0 for unused)
    signals: UtteranceSignals
    modalities: dict[str, ModalityUse] | None = None  # text/audio/vision: used by the model, or why not
    # the model's answer from each modality it used, fed alone; None with fewer than two used
    by_modality: dict[str, Prediction] | None = None


@dataclass
class Report:
    input: InputInfo
    provenance: Provenance
    model: ModelInfo | None
    notice: str | None
    summary: dict[str, ModalitySummary]
    utterances: list[UtteranceReport]
    overall: Prediction | None
    timings_s: dict[str, float]
    outputs: dict[str, str | None]
    run: dict[str, Any]
    tool: dict[str, str] = field(default_factory=lambda: {"name": "mfsa-pipe", "version": __version__})
    created: str = ""
    schema_version: str = SCHEMA_VERSION
    out_dir: Path | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("out_dir")
        # Put the version first: readers check it before anything else.
        ordered = {"schema_version": data.pop("schema_version"), "tool": data.pop("tool"), "created": data.pop("created")}
        ordered.update(data)
        return json_safe(ordered, digits=6)  # NaN -> null (the schema allows it); 1 us / 1e-6 is plenty

    def write(self, path: str | Path) -> Path:
        """Validate, then write atomically: a reader never sees a half-written report."""
        data = self.to_dict()
        validate_report(data)
        write_json(path, data)
        return Path(path)

    @property
    def prediction_main(self) -> str | float | None:
        return self.overall.main() if self.overall else None


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    text = resources.files("mfsa_pipe").joinpath("schemas/report.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


class ReportValidationError(ValueError):
    """A report that does not match the schema: a bug in the writer, never the user's fault."""


def validate_report(data: dict[str, Any]) -> None:
    """Raise ReportValidationError listing every place where `data` breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:10]]
        raise ReportValidationError("report does not match its schema:\n" + "\n".join(lines))


def read_report(path: str | Path) -> dict[str, Any] | None:
    """A finished report as a dict, or None when it is missing or unreadable (e.g. cut off)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
