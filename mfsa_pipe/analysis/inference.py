"""Run a trained checkpoint on raw feature sequences (what `analyze` does per utterance).

Each sample is {"text": (T, D_text), "audio": (T, D_audio), "vision": (T, D_vision)} float
arrays as the extractors produce them (T = 0, or a missing key, for an absent modality). They are
normalised with the checkpoint's training statistics, exactly as in training.
"""

from __future__ import annotations

import os
from typing import Any, Sequence as Seq

import numpy as np

from mfsa_pipe.checkpoint import Checkpoint, load_checkpoint
from mfsa_pipe.datasets.base import MODALITIES, PreparedSplit, Sample, clean, collate, head_slices
from mfsa_pipe.devices import resolve_device


class Predictor:
    """`Predictor(checkpoint, device="auto").predict(samples) -> list[dict]`.

    Per sample, by the checkpoint's task:
    - regression: {"score": clipped to the label range, "raw_score"}
    - classification: {"label": the most probable class, "probabilities": {class: p}}
    - multilabel: {"probabilities": {label: p(positive)}, "labels": [labels with p >= 0.5]}
    - multihead: {"heads": {head: {"label", "probabilities"} (+ "score" = p(positive) -
      p(negative) in [-1, 1] for a head with both classes, e.g. sentiment)}, and the first head's
      "label" and "probabilities" at the top level (the emotion of the default model)
    Classification probabilities use the checkpoint's calibration temperature (if fitted).
    Always: "absent" {modality: reason} for the modalities the model was fed without
    (presence.py), "modality_weights" {"text", "audio", "vision"} when the model exposes psi
    (MFSA's weighted attention layer; absent modalities get 0), "lengths": rows per modality used.
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
        task = self.label_spec["task"]
        label: Any = 0.0 if task == "regression" else 0 if task == "classification" else np.zeros(
            len(self.label_spec.get("labels") or self.label_spec.get("heads")), np.int64)
        return self._prepared.prepare(Sample(id=str(index), label=label, **feats))

    def predict(self, samples: Seq[dict[str, Any]], *, batch_size: int = 16) -> list[dict[str, Any]]:
        import torch

        prepared = [self._prepare(i, s) for i, s in enumerate(samples)]
        task = self.label_spec["task"]
        results: list[dict[str, Any]] = []
        with torch.no_grad():
            for start in range(0, len(prepared), batch_size):
                chunk = prepared[start : start + batch_size]
                batch = collate(chunk, task=task, dims=self.dims).to(self.device)
                out = self.model(**batch.inputs(), **batch.masks())
                pred = out.prediction.float().cpu()
                psi = out.extras.get("psi")
                psi = psi.float().cpu().numpy() if isinstance(psi, torch.Tensor) else None
                for i, s in enumerate(chunk):
                    r = self._decode(pred[i])
                    r["absent"] = dict(s.meta.get("absent", {}))
                    if psi is not None:
                        # masked modalities already get ~0 from the WAL softmax; say exactly 0
                        r["modality_weights"] = {m: 0.0 if m in r["absent"] else float(psi[i, k])
                                                 for k, m in enumerate(MODALITIES)}
                    r["lengths"] = {m: int(s.features(m).shape[0]) for m in MODALITIES}
                    results.append(r)
        return results

    def _decode(self, pred: Any) -> dict[str, Any]:
        import torch

        spec = self.label_spec
        if spec["task"] == "regression":
            lo, hi = spec.get("range", [-3.0, 3.0])
            raw = float(pred)
            return {"score": float(min(max(raw, lo), hi)), "raw_score": raw}
        if spec["task"] == "classification":
            return self._classes(pred, spec["classes"], "classification")
        if spec["task"] == "multihead":
            heads = {name: self._classes(pred[cols], head["classes"], name)
                     for (name, cols), head in zip(head_slices(spec), spec["heads"])}
            first = heads[spec["heads"][0]["name"]]
            return {"label": first["label"], "probabilities": first["probabilities"], "heads": heads}
        probs = torch.softmax(pred, dim=-1)[:, 1].numpy()
        names = spec["labels"]
        return {
            "probabilities": {n: float(p) for n, p in zip(names, probs)},
            "labels": [n for n, p in zip(names, probs) if p >= 0.5],
        }

    def _classes(self, logits: Any, classes: list[str], head: str) -> dict[str, Any]:
        import torch

        probs = torch.softmax(logits.float() / self.checkpoint.temperature(head), dim=-1).numpy()
        out: dict[str, Any] = {
            "label": classes[int(np.argmax(probs))],
            "probabilities": {c: float(p) for c, p in zip(classes, probs)},
        }
        if "positive" in classes and "negative" in classes:
            out["score"] = float(probs[classes.index("positive")] - probs[classes.index("negative")])
        return out
