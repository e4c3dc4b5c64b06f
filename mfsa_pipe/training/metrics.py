"""Benchmark metrics, computed as MMSA computes them (the MulT reference, Tsai et al. 2019, uses the
same definitions except one: see f1 below).

Regression (sentiment in [-3, 3]), over all samples unless said otherwise:
- mae, corr (Pearson; NaN when either side is constant);
- acc7: round(clip(x, -3, 3)) equal for prediction and truth, numpy's round (half to even);
- acc5: the same after clipping to [-2, 2];
- acc2, f1: on samples whose truth != 0, (x > 0) compared; f1 is the weighted F1 ("non-zero"),
  f1_score(truth, prediction) as MMSA calls it (MulT's eval_metrics.py passes the two swapped,
  f1_score(preds, truths), which weights the classes by the predictions' counts instead);
- acc2_has0, f1_has0: on all samples, (x >= 0) compared (MMSA's "has-zero" variant).
Multilabel (IEMOCAP): per label binary accuracy and weighted F1 of argmax over the two logits,
plus their means. Classification: accuracy, macro F1, weighted F1, confusion matrix, and the
expected calibration error `ece` of softmax(logits / T) (T = the checkpoint's calibration
temperature, 1 when none was fitted).
Multihead: the classification metrics of each head, over the samples labelled for that head
only (label -1 = no label), nested under the head's name ({"emotion": {...}, "sentiment": {...}}),
with `n` (labelled samples); plus flat means over the heads that have labelled samples:
`mean_acc`, `mean_macro_f1`, `mean_weighted_f1` (the headline), `mean_ece`.
ECE: 15 equal-width bins of the confidence (the top class's probability), bin b = (b/15, (b+1)/15];
ECE = sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)| (Guo et al. 2017).
Accuracies and F1 are fractions in [0, 1] (tables show them as percentages).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mfsa_pipe.datasets.base import LabelSpec


def weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
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
    out["f1"] = weighted_f1(bin_true, bin_pred)
    out["acc2_has0"] = float(np.mean((true >= 0) == (pred >= 0))) if pred.size else math.nan
    out["f1_has0"] = weighted_f1(true >= 0, pred >= 0)
    return out


def multilabel_metrics(logits: np.ndarray, truth: np.ndarray, labels: list[str]) -> dict[str, float]:
    """logits/probabilities (N, K, 2); truth (N, K) in {0, 1}."""
    logits = np.asarray(logits)
    truth = np.asarray(truth).astype(np.int64)
    pred = np.argmax(logits, axis=-1)
    out: dict[str, float] = {}
    for i, name in enumerate(labels):
        out[f"{name}_acc"] = float(np.mean(pred[:, i] == truth[:, i])) if len(truth) else math.nan
        out[f"{name}_f1"] = weighted_f1(truth[:, i], pred[:, i])
    out["mean_acc"] = float(np.mean([out[f"{n}_acc"] for n in labels]))
    out["mean_f1"] = float(np.mean([out[f"{n}_f1"] for n in labels]))
    return out


ECE_BINS = 15
TEMPERATURE_BOUNDS = (0.05, 20.0)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax(logits / temperature) in float64 (numerically stable)."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of class probabilities (N, C) against truth (N,): `bins` equal-width confidence bins
    (b/bins, (b+1)/bins], weighted by their share of the samples. NaN for no sample."""
    probs = np.asarray(probs, np.float64)
    truth = np.asarray(truth).astype(np.int64).reshape(-1)
    if truth.size == 0:
        return math.nan
    conf = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == truth).astype(np.float64)
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def nll(logits: np.ndarray, truth: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of truth (N,) under softmax(logits (N, C) / temperature)."""
    z = np.asarray(logits, np.float64) / float(temperature)
    truth = np.asarray(truth).astype(np.int64).reshape(-1)
    if truth.size == 0:
        return math.nan
    m = z.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(len(truth)), truth]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """Temperature scaling (Guo et al. 2017): the T in `bounds` that minimises the NLL of labels
    (N,) under softmax(logits (N, C) / T), by a bounded 1-D search over log T (the NLL is convex
    in 1/T, so unimodal in log T). 1.0 when there is no labelled sample."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"fit_temperature needs logits (N, C) and labels (N,), got {logits.shape} and {labels.shape}")
    if labels.size == 0:
        return 1.0
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(lambda log_t: nll(logits, labels, math.exp(log_t)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-5})
    best = float(math.exp(res.x))
    # the bounded search never evaluates the end points exactly; keep T = 1 unless it is better
    return best if nll(logits, labels, best) <= nll(logits, labels, 1.0) else 1.0


def fit_class_bias(logits: np.ndarray, labels: np.ndarray, *, limit: float = 2.0, step: float = 0.1,
                   rounds: int = 3) -> np.ndarray:
    """The per-class bias b (C,) in [-limit, limit] (a grid of `step`) under which argmax(logits + b)
    has the highest weighted F1 on labels (N,): coordinate ascent, one class at a time, `rounds`
    passes, a change kept only when it gains. Centred (softmax ignores a common shift); zeros when
    there is no labelled sample. Weighted F1 rewards a decision rule whose class frequencies follow
    the data's; a model trained on a mix of sources decides with the mix's prior."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"fit_class_bias needs logits (N, C) and labels (N,), got {logits.shape} and {labels.shape}")
    bias = np.zeros(logits.shape[1])
    if labels.size == 0:
        return bias
    grid = np.round(np.arange(-limit, limit + step / 2, step), 10)
    score = lambda b: weighted_f1(labels, (logits + b).argmax(1))  # noqa: E731
    best = score(bias)
    for _ in range(rounds):
        for k in range(len(bias)):
            for value in grid:
                trial = bias.copy()
                trial[k] = value
                if (s := score(trial)) > best + 1e-12:
                    best, bias = s, trial
    return bias - bias.mean()


def classification_metrics(logits: np.ndarray, truth: np.ndarray, classes: list[str], *,
                           temperature: float = 1.0) -> dict[str, Any]:
    """logits (N, C) or predicted indices (N,); truth (N,) class indices. `ece` is computed on
    softmax(logits / temperature) (NaN for indices)."""
    from sklearn.metrics import confusion_matrix, f1_score

    arr = np.asarray(logits)
    pred = np.argmax(arr, axis=-1) if arr.ndim == 2 else arr.astype(np.int64)
    truth = np.asarray(truth).astype(np.int64).reshape(-1)
    ids = list(range(len(classes)))
    if truth.size == 0:
        return {"acc": math.nan, "macro_f1": math.nan, "weighted_f1": math.nan, "ece": math.nan,
                "confusion": np.zeros((len(ids), len(ids)), np.int64).tolist()}
    return {
        "acc": float(np.mean(pred == truth)),
        "macro_f1": float(f1_score(truth, pred, labels=ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(truth, pred, labels=ids, average="weighted", zero_division=0)),
        "ece": expected_calibration_error(softmax(arr, temperature), truth) if arr.ndim == 2 else math.nan,
        "confusion": confusion_matrix(truth, pred, labels=ids).tolist(),  # rows: truth, columns: prediction
    }


HEAD_MEANS = {"mean_acc": "acc", "mean_macro_f1": "macro_f1", "mean_weighted_f1": "weighted_f1", "mean_ece": "ece"}


def head_logits(prediction: np.ndarray, label_spec: LabelSpec) -> list[np.ndarray]:
    """The (N, sum of classes) multihead logits as one (N, C_h) array per head, in order."""
    pred = np.asarray(prediction)
    slices = label_spec.head_slices()
    width = slices[-1][1].stop if slices else 0
    if pred.ndim != 2 or pred.shape[1] != width:
        raise ValueError(f"multihead prediction must be (N, {width}), got {pred.shape}")
    return [pred[:, cols] for _, cols in slices]


def multihead_metrics(prediction: np.ndarray, truth: np.ndarray, label_spec: LabelSpec, *,
                      temperatures: dict[str, float] | None = None) -> dict[str, Any]:
    """prediction (N, sum of classes): the heads' logits side by side; truth (N, H), -1 = no label
    for that head. Per head (over its labelled samples): classification_metrics + `n`; then the
    means over the heads with labelled samples (HEAD_MEANS)."""
    heads = label_spec.heads
    truth = np.asarray(truth).astype(np.int64).reshape(len(prediction), len(heads))
    temps = temperatures or {}
    out: dict[str, Any] = {}
    for h, (head, logits) in enumerate(zip(heads, head_logits(prediction, label_spec))):
        known = truth[:, h] >= 0
        m = classification_metrics(logits[known], truth[known, h], list(head.classes),
                                   temperature=float(temps.get(head.name, 1.0)))
        m["n"] = int(known.sum())
        out[head.name] = m
    for key, name in HEAD_MEANS.items():
        values = [out[h][name] for h in label_spec.head_names if out[h]["n"] > 0]
        out[key] = float(np.mean(values)) if values else math.nan
    return out


def compute_metrics(prediction: np.ndarray, truth: np.ndarray, label_spec: LabelSpec, *,
                    temperatures: dict[str, float] | None = None) -> dict[str, Any]:
    """prediction in the model's task shape (ModelOutput.prediction as numpy). `temperatures`:
    a checkpoint's calibration ({head: T}; "classification" for a single-head checkpoint), used
    for the probabilities behind `ece` (argmax metrics do not change with T)."""
    task = label_spec.task
    temps = temperatures or {}
    if task == "regression":
        return regression_metrics(prediction, truth)
    if task == "classification":
        return classification_metrics(prediction, truth, list(label_spec.classes),
                                      temperature=float(temps.get("classification", 1.0)))
    if task == "multilabel":
        return multilabel_metrics(prediction, truth, list(label_spec.labels))
    if task == "multihead":
        return multihead_metrics(prediction, truth, label_spec, temperatures=temps)
    raise ValueError(f"unknown task {task!r}")


def pop_confusion(metrics: dict[str, Any]) -> dict[str, Any]:
    """Remove the confusion matrices from compute_metrics' output (in place): {"": matrix} for a
    single head, {head: matrix} for multihead. Returns what was removed."""
    removed: dict[str, Any] = {}
    if "confusion" in metrics:
        removed[""] = metrics.pop("confusion")
    for key, value in metrics.items():
        if isinstance(value, dict) and "confusion" in value:
            removed[key] = value.pop("confusion")
    return removed


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"emotion": {"acc": x}} -> {"emotion.acc": x} (one level per dict)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not ({"mean", "std"} <= set(value)):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def headline(task: str, labels: list[str] | None = None, heads: list[str] | None = None) -> list[str]:
    """The metrics a table shows, in the papers' order (multihead: dotted per-head names, as
    `flatten` writes them, then the means; `mean_weighted_f1` is its headline figure)."""
    if task == "regression":
        return ["acc7", "acc5", "acc2", "f1", "acc2_has0", "f1_has0", "mae", "corr"]
    if task == "classification":
        return ["acc", "macro_f1", "weighted_f1"]
    if task == "multihead":
        per = [f"{h}.{k}" for h in heads or [] for k in ("acc", "macro_f1", "weighted_f1", "ece")]
        return per + ["mean_acc", "mean_macro_f1", "mean_weighted_f1"]
    names = labels or []
    return [k for n in names for k in (f"{n}_acc", f"{n}_f1")] + ["mean_acc", "mean_f1"]


def is_percent(name: str) -> bool:
    name = name.rsplit(".", 1)[-1]
    return name.startswith("acc") or name.endswith("_acc") or "f1" in name
