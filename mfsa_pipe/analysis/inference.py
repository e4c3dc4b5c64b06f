"""Run a trained checkpoint on raw feature sequences (what `analyze` does per utterance).

Each sample is {"text": (T, D_text), "audio": (T, D_audio), "vision": (T, D_vision)} float
arrays as the extractors produce them (T = 0, or a missing key, for an absent modality), and
optionally "speech": the audio rows' speech flags (presence.py). They are normalised with the
checkpoint's training statistics, exactly as in training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence as Seq

import numpy as np

from mfsa_pipe.analysis.report import HeadPrediction, Prediction
from mfsa_pipe.checkpoint import Checkpoint, load_checkpoint
from mfsa_pipe.datasets.base import MODALITIES, PreparedSplit, Sample, clean, collate
from mfsa_pipe.devices import resolve_device
from mfsa_pipe.presence import words_alone


# A batch holds at most this many (samples x its longest sample's rows ^ 2): attention maps grow
# with the square of the rows, and 16 utterances of 30 s (450 face rows) took 1.9 GB at once.
ROWS_BUDGET = 16 * 160 ** 2


def _rows(sample: Sample) -> int:
    return max(int(sample.features(m).shape[0]) for m in MODALITIES)


def length_batches(rows: Seq[int], *, batch_size: int, rows_budget: int) -> list[list[int]]:
    """Indices of the samples in batches: by rows, shortest first (less padding), each batch at
    most `batch_size` samples and, beyond its first sample, at most `rows_budget` in (samples x
    the longest one's rows ^ 2)."""
    batches: list[list[int]] = []
    for i in sorted(range(len(rows)), key=lambda k: (rows[k], k)):
        longest = max(rows[i], 1)  # sorted: the newcomer is the longest
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * longest ** 2 <= rows_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@dataclass
class UtterancePrediction:
    """What `Predictor.predict` returns per sample. prediction: the report's `Prediction` (by the
    checkpoint's task: regression, the score clipped to the label range; classification, the most
    probable class and the probabilities; multilabel, label = the most probable label and
    probabilities = p(present); multihead, per head label/probabilities (+ score = p(positive) -
    p(negative) in [-1, 1] for a head with both classes, e.g. sentiment) with the first head's
    label and probabilities at the top, the emotion of the default model). absent: {modality:
    reason} for the modalities the model was fed without (presence.py); lengths: rows per
    modality used; modality_weights: MFSA's psi per modality (weighted attention layer; 0 for an
    absent modality), None when the model exposes none."""

    prediction: Prediction
    absent: dict[str, str]
    lengths: dict[str, int]
    modality_weights: dict[str, float] | None = None
    raw_score: float | None = None  # regression: the output before clipping
    labels: list[str] | None = None  # multilabel: the labels with p >= 0.5


class Predictor:
    """`Predictor(checkpoint, device="auto").predict(samples) -> list[UtterancePrediction]`.

    Classification probabilities use the checkpoint's calibration temperature (if fitted; where it
    has one for utterances with words alone and one for the others, the utterance's).
    """

    def __init__(self, checkpoint: str | os.PathLike | Checkpoint, *, device: str = "auto") -> None:
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        self.device = resolve_device(device)
        self.model = self.checkpoint.build_model(device=self.device)
        self.label_spec = self.checkpoint.label_spec
        self.dims = {m: int(self.checkpoint.feature_spec[m]["dim"]) for m in MODALITIES}
        # modality selection and normalisation exactly as evaluation applies them
        self._prepared = PreparedSplit([], norm=self.checkpoint.normalization, modalities=self.checkpoint.modalities,
                                       feature_spec=self.checkpoint.feature_spec)

    @property
    def feature_spec(self) -> dict[str, Any]:
        return self.checkpoint.feature_spec

    def _prepare(self, index: int, sample: dict[str, Any]) -> Sample:
        feats = {}
        for m in MODALITIES:
            x = sample.get(m)
            x = np.zeros((0, self.dims[m]), np.float32) if x is None else np.asarray(x, dtype=np.float32)
            if x.ndim != 2 or x.shape[1] != self.dims[m]:
                raise ValueError(
                    f"sample {index}: {m} must be (T, {self.dims[m]}) as the checkpoint's feature spec says, got shape {x.shape}"
                )
            feats[m] = clean(x)
        # collate needs a label of the task's type; predict() never passes it to the model
        task = self.label_spec.task
        label: Any = 0.0 if task == "regression" else 0 if task == "classification" else np.zeros(
            len(self.label_spec.labels or self.label_spec.heads), np.int64)
        meta = {"speech": sample["speech"]} if sample.get("speech") is not None else {}
        return self._prepared.prepare(Sample(id=str(index), label=label, meta=meta, **feats))

    def predict(self, samples: Seq[dict[str, Any]], *, batch_size: int = 16,
                rows_budget: int = ROWS_BUDGET) -> list[UtterancePrediction]:
        """One UtterancePrediction per sample, in the samples' order. They run shortest first, at
        most `batch_size` at a time and fewer where they are long (`length_batches`)."""
        import torch

        prepared = [self._prepare(i, s) for i, s in enumerate(samples)]
        task = self.label_spec.task
        results: list[UtterancePrediction | None] = [None] * len(prepared)
        with torch.no_grad():
            for chunk in length_batches([_rows(s) for s in prepared], batch_size=batch_size, rows_budget=rows_budget):
                batch = collate([prepared[i] for i in chunk], task=task, dims=self.dims).to(self.device)
                out = self.model(**batch.inputs(), **batch.masks())
                pred = out.prediction.float().cpu()
                psi = out.extras.get("psi")
                psi = psi.float().cpu().numpy() if isinstance(psi, torch.Tensor) else None
                for j, i in enumerate(chunk):
                    s = prepared[i]
                    present = [s.features(m).shape[0] > 0 for m in MODALITIES]
                    r = self._decode(pred[j], words_only=bool(words_alone(present)[0]))
                    r.absent = dict(s.meta.get("absent", {}))
                    if psi is not None:
                        # masked modalities already get ~0 from the WAL softmax; say exactly 0
                        r.modality_weights = {m: 0.0 if m in r.absent else float(psi[j, k])
                                              for k, m in enumerate(MODALITIES)}
                    r.lengths = {m: int(s.features(m).shape[0]) for m in MODALITIES}
                    results[i] = r
        return results  # type: ignore[return-value]

    def predict_alone(self, samples: Seq[dict[str, Any]], results: Seq[UtterancePrediction], *,
                      batch_size: int = 16) -> list[dict[str, Prediction] | None]:
        """What the model answers from each modality it used, fed that one alone (the others
        empty, as a silent track or a video without a face would be): which modality carries the
        fused answer `results` (this predictor's predict of the same samples). None for a sample
        that used fewer than two modalities (its prediction is already its one modality's)."""
        jobs = [(i, m) for i, r in enumerate(results) if len(MODALITIES) - len(r.absent) >= 2
                for m in MODALITIES if m not in r.absent]
        feeds = [{m: samples[i].get(m), **({"speech": samples[i].get("speech")} if m == "audio" else {})} for i, m in jobs]
        alone: list[dict[str, Prediction] | None] = [None] * len(results)
        for (i, m), r in zip(jobs, self.predict(feeds, batch_size=batch_size)):
            alone[i] = {**(alone[i] or {}), m: r.prediction}
        return alone

    def _decode(self, pred: Any, *, words_only: bool) -> UtterancePrediction:
        """The prediction of one sample (absent, lengths and weights are filled in by predict);
        `words_only`: it had words and nothing else (the calibration may have a temperature for
        such samples and one for the others)."""
        import torch

        spec = self.label_spec
        if spec.is_regression:
            lo, hi = spec.range
            raw = float(pred)
            return UtterancePrediction(Prediction(score=float(min(max(raw, lo), hi))), {}, {}, raw_score=raw)
        if spec.task == "classification":
            head = self._classes(pred, list(spec.classes), "classification", words_only)
            return UtterancePrediction(Prediction(label=head.label, probabilities=head.probabilities), {}, {})
        if spec.task == "multihead":
            heads = {name: self._classes(pred[cols], list(head.classes), name, words_only)
                     for (name, cols), head in zip(spec.head_slices(), spec.heads)}
            first = heads[spec.head_names[0]]
            return UtterancePrediction(
                Prediction(label=first.label, probabilities=first.probabilities, heads=heads), {}, {})
        probs = torch.softmax(pred, dim=-1)[:, 1].numpy()
        p = {str(n): float(v) for n, v in zip(spec.labels, probs)}
        return UtterancePrediction(Prediction(label=max(p, key=p.get) if p else None, probabilities=p), {}, {},
                                   labels=[n for n, v in p.items() if v >= 0.5])

    def _classes(self, logits: Any, classes: list[str], head: str, words_only: bool) -> HeadPrediction:
        import torch

        probs = torch.softmax(logits.float() / self.checkpoint.temperature(head, words_only=words_only), dim=-1).numpy()
        score = None
        if "positive" in classes and "negative" in classes:
            score = float(probs[classes.index("positive")] - probs[classes.index("negative")])
        return HeadPrediction(label=str(classes[int(np.argmax(probs))]),
                              probabilities={str(c): float(p) for c, p in zip(classes, probs)}, score=score)
