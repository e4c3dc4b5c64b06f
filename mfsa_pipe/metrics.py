"""Benchmark metrics, computed as MulT (Tsai et al. 2019) and MMSA compute them.

Regression (sentiment in [-3, 3]), over all samples unless said otherwise:
- mae, corr (Pearson; NaN when either side is constant);
- acc7: round(clip(x, -3, 3)) equal for prediction and truth, numpy's round (half to even);
- acc5: the same after clipping to [-2, 2];
- acc2, f1: on samples whose truth != 0, (x > 0) compared; f1 is the weighted F1 ("non-zero");
- acc2_has0, f1_has0: on all samples, (x >= 0) compared (MMSA's "has-zero" variant).
Multilabel (IEMOCAP): per label binary accuracy and weighted F1 of argmax over the two logits,
plus their means. Classification: accuracy, macro F1, weighted F1, confusion matrix.
Accuracies and F1 are fractions in [0, 1] (tables show them as percentages).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

def _f1_weighted(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    if truth.size == 0:
        return math.nan
    return float(f1_score(truth, pred, average="weighted", zero_division=0))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def regression_metrics(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    pred = np.asarray(prediction, np.float64).reshape(-1)
    true = np.asarray(truth, np.float64).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {true.shape[0]} truths")
    out = {
        "mae": float(np.mean(np.abs(pred - true))) if pred.size else math.nan,
        "corr": pearson(pred, true),
        "acc7": float(np.mean(np.round(np.clip(pred, -3, 3)) == np.round(np.clip(true, -3, 3)))) if pred.size else math.nan,
        "acc5": float(np.mean(np.round(np.clip(pred, -2, 2)) == np.round(np.clip(true, -2, 2)))) if pred.size else math.nan,
    }
    nz = true != 0
    bin_true, bin_pred = true[nz] > 0, pred[nz] > 0
    out["acc2"] = float(np.mean(bin_true == bin_pred)) if nz.any() else math.nan
    out["f1"] = _f1_weighted(bin_true, bin_pred)
    out["acc2_has0"] = float(np.mean((true >= 0) == (pred >= 0))) if pred.size else math.nan
    out["f1_has0"] = _f1_weighted(true >= 0, pred >= 0)
    return out


def multilabel_metrics(logits: np.ndarray, truth: np.ndarray, labels: list[str]) -> dict[str, float]:
    """logits/probabilities (N, K, 2); truth (N, K) in {0, 1}."""
    logits = np.asarray(logits)
    truth = np.asarray(truth).astype(np.int64)
    pred = np.argmax(logits, axis=-1)
    out: dict[str, float] = {}
    for i, name in enumerate(labels):
        out[f"{name}_acc"] = float(np.mean(pred[:, i] == truth[:, i])) if len(truth) else math.nan
        out[f"{name}_f1"] = _f1_weighted(truth[:, i], pred[:, i])
    out["mean_acc"] = float(np.mean([out[f"{n}_acc"] for n in labels]))
    out["mean_f1"] = float(np.mean([out[f"{n}_f1"] for n in labels]))
    return out


def classification_metrics(logits: np.ndarray, truth: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """logits/probabilities (N, C) or predicted indices (N,); truth (N,) class indices."""
    from sklearn.metrics import confusion_matrix, f1_score

    arr = np.asarray(logits)
    pred = np.argmax(arr, axis=-1) if arr.ndim == 2 else arr.astype(np.int64)
    truth = np.asarray(truth).astype(np.int64).reshape(-1)
    ids = list(range(len(classes)))
    return {
        "acc": float(np.mean(pred == truth)) if truth.size else math.nan,
        "macro_f1": float(f1_score(truth, pred, labels=ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(truth, pred, labels=ids, average="weighted", zero_division=0)),
        "confusion": confusion_matrix(truth, pred, labels=ids).tolist(),  # rows: truth, columns: prediction
    }


def compute_metrics(prediction: np.ndarray, truth: np.ndarray, label_spec: dict[str, Any]) -> dict[str, Any]:
    """prediction in the model's task shape (ModelOutput.prediction as numpy)."""
    task = label_spec["task"]
    if task == "regression":
        return regression_metrics(prediction, truth)
    if task == "classification":
        return classification_metrics(prediction, truth, label_spec["classes"])
    if task == "multilabel":
        return multilabel_metrics(prediction, truth, label_spec["labels"])
    raise ValueError(f"unknown task {task!r}")


def headline(task: str, labels: list[str] | None = None) -> list[str]:
    """The metrics a table shows, in the papers' order."""
    if task == "regression":
        return ["acc7", "acc5", "acc2", "f1", "acc2_has0", "f1_has0", "mae", "corr"]
    if task == "classification":
        return ["acc", "macro_f1", "weighted_f1"]
    names = labels or []
    return [k for n in names for k in (f"{n}_acc", f"{n}_f1")] + ["mean_acc", "mean_f1"]


def is_percent(name: str) -> bool:
    return name.startswith("acc") or name.endswith("_acc") or "f1" in name


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
