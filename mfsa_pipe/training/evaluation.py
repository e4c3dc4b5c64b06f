"""Score checkpoints on a dataset split; several checkpoints (seeds) give mean +- std per metric
(population std, ddof = 0, as MMSA reports seeds 1111-1115). Multihead checkpoints: each head's
metrics under the head's name. A checkpoint's calibration temperatures are applied to its logits
before probabilities (ECE) are computed. `calibrate` fits those temperatures on a split;
`fit_text_logit_bias` fits MFSA's decision bias for samples with words.

The checkpoint name `default` means the shipped default model (mfsa_pipe/default_model)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence as Seq

import numpy as np

from mfsa_pipe.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from mfsa_pipe.cpu_memory import keep_freed_memory_if_room
from mfsa_pipe.datasets import open_dataset
from mfsa_pipe.datasets.base import MODALITIES, DatasetBundle, DatasetError, LabelSpec, PreparedSplit, Split, make_collate
from mfsa_pipe.default_model import default_checkpoint_path
from mfsa_pipe.devices import resolve_device
from mfsa_pipe.json_values import json_safe
from mfsa_pipe.presence import words_alone
from mfsa_pipe.training.metrics import (
    ECE_BINS,
    TEMPERATURE_BOUNDS,
    compute_metrics,
    expected_calibration_error,
    fit_class_bias,
    fit_temperature,
    nll,
    pop_confusion,
    softmax,
    weighted_f1,
)


def as_bundle(dataset: str | os.PathLike | DatasetBundle) -> DatasetBundle:
    if isinstance(dataset, DatasetBundle):
        return dataset

    return open_dataset(dataset)


def loss_values(output: Any) -> dict[str, float]:
    """A ModelOutput's loss terms by name, then "total" (the weighted loss) when it has one, as
    floats read with one host sync (not one per term)."""
    import torch

    terms = dict(output.losses)
    if output.loss is not None:
        terms["total"] = output.loss
    if not terms:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in terms.values()]).tolist()
    return dict(zip(terms, values))


DEFAULT_NAME = "default"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """`default` -> the shipped default checkpoint (as `analyze` finds it; CheckpointError when
    this installation has none); anything else is a path (write ./default for a file of that name)."""
    if isinstance(path, str) and path == DEFAULT_NAME:
        found = default_checkpoint_path()
        if found is None:
            raise CheckpointError("'default' names the shipped default model, but this installation ships none")
        return found
    return Path(path)


def calibration_heads(label_spec: LabelSpec) -> list[tuple[str, int, int]]:
    """(name, first column, last column + 1) of each softmax head of a classification ("classification")
    or multihead label spec, the names Checkpoint.temperature takes."""
    if label_spec.task == "classification":
        return [("classification", 0, len(label_spec.classes))]
    if label_spec.task == "multihead":
        return [(name, cols.start, cols.stop) for name, cols in label_spec.head_slices()]
    raise ValueError(f"temperature calibration is for classification and multihead checkpoints, not {label_spec.task!r}")


@dataclass
class Predictions:
    ids: list[str]
    prediction: np.ndarray  # the model's task-shaped output (regression scores, logits)
    truth: np.ndarray
    losses: dict[str, float]  # sample-weighted means of the model's loss terms ("task", "total", ...)
    present: np.ndarray | None = None  # (N, 3) bool: which modalities (text, audio, vision) had rows

    @property
    def words_only(self) -> np.ndarray | None:
        """(N,) bool: the samples with words and nothing else (a calibration group)."""
        return None if self.present is None else words_alone(self.present)


def run_model(
    model: Any,
    split: Split,
    *,
    task: str,
    dims: dict[str, int],
    batch_size: int,
    device: Any,
    amp_dtype: Any = None,
    num_workers: int = 0,
) -> Predictions:
    """Forward the whole split (eval mode, no gradients), keeping predictions and loss terms.
    Multihead: labels (B, H) with -1 where a head is unlabelled; the returned "task" loss is the
    exact split-level one (sum over heads of the mean CE over the split's samples labelled for
    that head), not a mean of per-batch values (a batch may hold few labels for a head)."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(
        split, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=make_collate(task, dims)
    )
    model.eval()
    preds, truths, ids, present = [], [], [], []
    sums: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(**batch.inputs(), **batch.masks(), labels=batch.labels)
            b = len(batch.ids)
            for k, v in loss_values(out).items():
                sums[k] = sums.get(k, 0.0) + v * b
            n += b
            preds.append(out.prediction.float().cpu().numpy())
            truths.append(batch.labels.cpu().numpy())
            masks = batch.masks()
            present.append(torch.stack([masks[f"{m}_mask"].any(1) for m in MODALITIES], 1).cpu().numpy())
            ids.extend(batch.ids)
            if device.type == "cpu":  # decides once per process, after a batch has shown the peak
                keep_freed_memory_if_room()
    if not n:
        raise DatasetError("the split is empty")
    result = Predictions(
        ids=ids,
        prediction=np.concatenate(preds),
        truth=np.concatenate(truths),
        losses={k: v / n for k, v in sums.items()},
        present=np.concatenate(present),
    )
    sizes = tuple(getattr(getattr(model, "config", None), "head_sizes", ()) or ())
    if task == "multihead" and sizes:
        result.losses["task"] = multihead_split_loss(result.prediction, result.truth, sizes)
    return result


def multihead_split_loss(prediction: np.ndarray, truth: np.ndarray, sizes: Seq[int]) -> float:
    """Sum over heads of the mean CE over the samples labelled for that head (-1 = no label),
    models.base.multihead_loss over a whole split."""
    truth = np.asarray(truth).astype(np.int64).reshape(len(prediction), len(sizes))
    total, start = 0.0, 0
    for h, size in enumerate(sizes):
        known = truth[:, h] >= 0
        if known.any():
            total += nll(prediction[known, start : start + size], truth[known, h])
        start += size
    return float(total)


def _aggregate(per: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{metric: {"mean", "std", "values"}} over checkpoints; nested dicts (multihead heads) are
    aggregated the same way under their key."""
    out: dict[str, dict[str, Any]] = {}
    for key in per[0]:
        values = [p.get(key) for p in per]
        if all(isinstance(v, dict) for v in values):
            out[key] = _aggregate(values)
            continue
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        arr = np.asarray(values, dtype=np.float64)
        out[key] = {"mean": float(np.mean(arr)), "std": float(np.std(arr)), "values": arr.tolist()}
    return out


def evaluate(
    checkpoints: Seq[str | os.PathLike],
    *,
    dataset: str | os.PathLike | DatasetBundle,
    split: str = "test",
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Metrics of each checkpoint on `split`, and their mean/std. The feature and label specs of
    every checkpoint are checked against the dataset first (SpecMismatchError says what differs).
    `default` in `checkpoints` is the shipped default model.

    Result: {"dataset", "format", "split", "samples", "task", "label_spec", "checkpoints" (resolved
    paths), "metrics": {metric: {"mean", "std", "values"}}, "per_checkpoint": [metrics],
    "confusion": {"classes", "matrix" (summed over checkpoints), "rows": "truth"}}. Multihead:
    "metrics" holds {head: {metric: {"mean", "std", "values"}}} per head plus the flat means
    (mean_acc, mean_macro_f1, mean_weighted_f1, mean_ece) and "loss"; "confusion" is {head: {...}}."""
    if not checkpoints:
        raise ValueError("give at least one checkpoint")
    dev = resolve_device(device)  # the cheap checks first: device, then every checkpoint, then the data
    paths = [resolve_checkpoint(p) for p in checkpoints]
    loaded = [load_checkpoint(p) for p in paths]
    bundle = as_bundle(dataset)
    data = bundle.split(split)
    for ckpt in loaded:  # check everything before spending time on any model
        ckpt.check_feature_spec(bundle.feature_spec, context=f"{ckpt.path} vs {bundle.source.get('path')}")
        ckpt.check_label_spec(bundle.label_spec, context=f"{ckpt.path} vs {bundle.source.get('path')}")
    dims = dict(zip(MODALITIES, bundle.dims))
    per: list[dict[str, Any]] = []
    confusion: dict[str, np.ndarray] = {}
    for ckpt in loaded:
        model = ckpt.build_model(device=dev)
        prepared = PreparedSplit(data, norm=ckpt.normalization, modalities=ckpt.modalities,
                                 feature_spec=ckpt.feature_spec)
        bs = batch_size or int(ckpt.training.get("batch_size") or 32)
        res = run_model(model, prepared, task=bundle.task, dims=dims, batch_size=bs, device=dev, num_workers=num_workers)
        metrics = compute_metrics(calibrated_prediction(res, ckpt), res.truth, ckpt.label_spec)
        metrics["loss"] = res.losses.get("task", float("nan"))
        for head, cm in pop_confusion(metrics).items():
            confusion[head] = np.asarray(cm) + confusion.get(head, 0)
        per.append(metrics)
    result: dict[str, Any] = {
        "dataset": str(bundle.source.get("path")),
        "format": bundle.source.get("format"),
        "split": split,
        "samples": len(data),
        "task": bundle.task,
        "label_spec": bundle.label_spec.to_dict(),
        "checkpoints": [str(p) for p in paths],
        "metrics": _aggregate(per),
        "per_checkpoint": per,
    }
    if "" in confusion:
        result["confusion"] = {"classes": list(bundle.label_spec.classes), "matrix": confusion[""].tolist(), "rows": "truth"}
    elif confusion:
        result["confusion"] = {
            h.name: {"classes": list(h.classes), "matrix": confusion[h.name].tolist(), "rows": "truth"}
            for h in bundle.label_spec.heads if h.name in confusion
        }
    return result


# ----------------------------------------------------------------------------------- calibration


# the calibration groups: sentences (words and nothing else) and every other sample. Sentences and
# clips are not equally sure of themselves; a group with fewer labels of a head than
# MIN_GROUP_SAMPLES takes the head's overall temperature
CALIBRATION_GROUPS = ("words_only", "other")
MIN_GROUP_SAMPLES = 30


def _temperature_report(logits: np.ndarray, labels: np.ndarray, t: float) -> dict[str, Any]:
    if not labels.size:  # a group the split lacks (its temperature came from elsewhere)
        return {"temperature": t, "samples": 0, **dict.fromkeys(("nll_before", "nll_after", "ece_before", "ece_after"), math.nan)}
    return {"temperature": t, "samples": int(labels.size), "nll_before": nll(logits, labels), "nll_after": nll(logits, labels, t),
            "ece_before": expected_calibration_error(softmax(logits), labels),
            "ece_after": expected_calibration_error(softmax(logits, t), labels)}


def calibrate_predictions(prediction: np.ndarray, truth: np.ndarray, label_spec: LabelSpec,
                          words_alone: np.ndarray | None = None,
                          fixed: dict[str, dict[str, float]] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit temperatures per head on (prediction, truth) as run_model returns them: one over all
    labelled samples, and, given `words_alone` (N,) with both groups present, one for the samples
    with words and nothing else and one for the others (a group with under MIN_GROUP_SAMPLES labels
    takes the overall one). Returns ({"temperature": {head: T}[, "temperature_by_group":
    {"words_only": {head: T}, "other": {head: T}}]}, {head: {"temperature", "samples", "nll_before",
    "nll_after", "ece_before", "ece_after"[, "words_only": {...}, "other": {...}]}}); a head's
    ece_after and nll_after are those of the temperatures it is given. `fixed` {group: {head: T}}:
    temperatures fitted elsewhere (calibrate's group_temperatures), given to that group instead of
    fitting them here, and reported on this split. ("classification" is the head of a single-head
    checkpoint.)"""
    pred = np.asarray(prediction, np.float64)
    truth = np.asarray(truth).astype(np.int64)
    heads = calibration_heads(label_spec)
    truth = truth.reshape(len(pred), len(heads))
    fixed = fixed or {}
    if set(fixed) - set(CALIBRATION_GROUPS) or (fixed and words_alone is None):
        raise ValueError(f"fixed temperatures need words_alone and groups among {CALIBRATION_GROUPS}, got {sorted(fixed)}")
    grouped = words_alone is not None and (0 < int(np.sum(words_alone)) < len(pred) or bool(fixed))
    fields: dict[str, Any] = {"temperature": {}}
    if grouped:
        fields["temperature_by_group"] = {g: {} for g in CALIBRATION_GROUPS}
    report: dict[str, Any] = {}
    for h, (name, a, b) in enumerate(heads):
        known = truth[:, h] >= 0
        logits, labels = pred[known, a:b], truth[known, h]
        t = fit_temperature(logits, labels)
        fields["temperature"][name] = t
        report[name] = _temperature_report(logits, labels, t)
        if not grouped:
            continue
        per_sample = np.full(len(labels), t)
        alone = np.asarray(words_alone, bool)[known]
        for group, member in zip(CALIBRATION_GROUPS, (alone, ~alone)):
            if group in fixed:
                g_t = float(fixed[group][name])
            else:
                g_t = fit_temperature(logits[member], labels[member]) if member.sum() >= MIN_GROUP_SAMPLES else t
            fields["temperature_by_group"][group][name] = g_t
            per_sample[member] = g_t
            report[name][group] = _temperature_report(logits[member], labels[member], g_t)
        report[name]["nll_after"] = nll(logits / per_sample[:, None], labels) if labels.size else math.nan
        report[name]["ece_after"] = expected_calibration_error(softmax(logits / per_sample[:, None]), labels)
    return fields, report


def calibrated_prediction(res: Predictions, checkpoint: Any) -> np.ndarray:
    """run_model's prediction with the checkpoint's temperatures applied (classification and
    multihead; each sample's group's where it has temperatures per group); the others as they are."""
    if checkpoint.label_spec.task not in ("classification", "multihead"):
        return res.prediction
    return calibrated_logits(res.prediction, checkpoint, res.words_only)


def calibrated_logits(prediction: np.ndarray, checkpoint: Any, words_alone: np.ndarray | None = None) -> np.ndarray:
    """The classification or multihead logits (N, C) divided, per head and sample, by the
    checkpoint's temperature for that sample (Checkpoint.temperature; by its calibration group when
    the checkpoint has temperatures per group and `words_alone` is given): softmax of the result is
    the calibrated probabilities, and the argmax is unchanged."""
    out = np.array(prediction, np.float64, copy=True)
    for name, a, b in calibration_heads(checkpoint.label_spec):
        if words_alone is None:
            out[:, a:b] /= checkpoint.temperature(name)
            continue
        alone = np.asarray(words_alone, bool)
        out[alone, a:b] /= checkpoint.temperature(name, words_only=True)
        out[~alone, a:b] /= checkpoint.temperature(name, words_only=False)
    return out


def run_on_split(ckpt: Any, dataset: str | os.PathLike | DatasetBundle, split: str, *, device: str,
                 batch_size: int | None, num_workers: int = 0, model: Any = None) -> Predictions:
    """The checkpoint's model (or `model`, already built) over `split` of `dataset`, after checking
    that the data's features and labels are the checkpoint's."""
    bundle = as_bundle(dataset)
    context = f"{ckpt.path or 'checkpoint'} vs {bundle.source.get('path')}"
    ckpt.check_feature_spec(bundle.feature_spec, context=context)
    ckpt.check_label_spec(bundle.label_spec, context=context)
    dev = resolve_device(device)
    net = model if model is not None else ckpt.build_model(device=dev)
    prepared = PreparedSplit(bundle.split(split), norm=ckpt.normalization, modalities=ckpt.modalities,
                             feature_spec=ckpt.feature_spec)
    return run_model(net, prepared, task=bundle.task, dims=dict(zip(MODALITIES, bundle.dims)),
                     batch_size=batch_size or int(ckpt.training.get("batch_size") or 32), device=dev,
                     num_workers=num_workers)


def calibrate(
    checkpoint: "str | os.PathLike | Any",
    dataset: str | os.PathLike | DatasetBundle,
    split: str = "valid",
    *,
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int = 0,
    model: Any = None,
    by_group: bool = True,
    group_temperatures: dict[str, dict[str, float]] | None = None,
    group_source: str | None = None,
) -> Any:
    """Temperature scaling: fit one temperature per head (or "classification") on `split` of
    `dataset` (with `by_group`, where the split has sentences alone and other samples, also one per
    group: calibrate_predictions) and return a copy of the checkpoint with `calibration` =
    {"temperature": {head: T}[, "temperature_by_group": {...}], "split": split, "method": ...} and
    metrics["calibration"] = {"split", head: {"temperature",
    "samples", "nll_before", "nll_after", "ece_before", "ece_after"}} (before = T 1). The
    checkpoint is not saved (save_checkpoint does that). `checkpoint`: a Checkpoint, a path or
    `default`; `model`: the checkpoint's model already built (skips rebuilding it).
    `group_temperatures` {group: {head: T}}: a group's temperatures fitted elsewhere (for example on
    held-out speakers pooled over cross-validation folds, where the split holds one), used as they
    are and reported on `split`; `group_source` says where they come from (calibration["group_source"])."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(resolve_checkpoint(checkpoint))
    calibration_heads(ckpt.label_spec)  # refuses regression / multilabel before any work
    res = run_on_split(ckpt, dataset, split, device=device, batch_size=batch_size, num_workers=num_workers,
                       model=model)
    if group_temperatures and not by_group:
        raise ValueError("group_temperatures need by_group")
    _check_group_temperatures(group_temperatures or {}, ckpt.label_spec)
    fields, report = calibrate_predictions(res.prediction, res.truth, ckpt.label_spec,
                                           res.words_only if by_group else None, fixed=group_temperatures)
    lo, hi = TEMPERATURE_BOUNDS
    calibration = {
        **fields,
        "split": split,
        "method": f"temperature scaling: NLL minimised over log T, T in [{lo}, {hi}]"
                  + ("; also per group: words alone, the other samples" if "temperature_by_group" in fields else ""),
    }
    if group_temperatures:
        calibration["group_source"] = {g: group_source or "given" for g in group_temperatures}
    metrics = {**ckpt.metrics, "calibration": json_safe({"split": split, "samples": len(res.ids),
                                                          "ece_bins": ECE_BINS, **report})}
    return replace(ckpt, calibration=calibration, metrics=metrics)


def _check_group_temperatures(given: dict[str, dict[str, float]], label_spec: LabelSpec) -> None:
    heads = {name for name, _, _ in calibration_heads(label_spec)}
    lo, hi = TEMPERATURE_BOUNDS
    for group, temps in given.items():
        if group not in CALIBRATION_GROUPS or set(temps) != heads or not all(lo <= float(t) <= hi for t in temps.values()):
            raise ValueError(f"group_temperatures: group {group!r} must be one of {CALIBRATION_GROUPS} with a "
                             f"temperature in [{lo}, {hi}] for each head {sorted(heads)}, got {temps!r}")


# ------------------------------------------------------------------------------ decision bias


def fit_text_logit_bias(
    checkpoint: "str | os.PathLike | Any",
    dataset: str | os.PathLike | DatasetBundle,
    split: str = "train",
    *,
    heads: Seq[str],
    scale: float = 1.0,
    device: str = "auto",
    batch_size: int | None = None,
) -> Any:
    """Fit the decision bias a model adds to the logits of samples with words (MFSA's
    text_logit_bias) on the samples of `split` that have words: per head in `heads`, the
    metrics.fit_class_bias that maximises weighted F1, times `scale` (< 1 shrinks it towards no
    bias); the other heads get none. Returns a copy of the checkpoint whose model config holds the
    bias and whose metrics["text_logit_bias"] says how it was fitted (weighted F1 on those samples
    before and after). Refit temperatures afterwards (`calibrate`): they should see the bias."""
    from models.registry import config_from_dict

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(resolve_checkpoint(checkpoint))
    spec = calibration_heads(ckpt.label_spec)
    unknown = sorted(set(heads) - {name for name, _, _ in spec})
    if not heads or unknown:
        raise ValueError(f"heads must name some of {[n for n, _, _ in spec]}, got {list(heads)!r}")
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale must be > 0, got {scale!r}")
    unbiased = {**ckpt.model_config, "text_logit_bias": ()}
    if not hasattr(config_from_dict(ckpt.model_name, dict(unbiased)), "text_logit_bias"):
        raise ValueError(f"the {ckpt.model_name} model has no text_logit_bias (MFSA has)")
    res = run_on_split(replace(ckpt, model_config=unbiased), dataset, split, device=device, batch_size=batch_size)
    with_words = res.present[:, 0]  # after the presence rule, as the model saw them
    if not with_words.any():
        raise DatasetError(f"split {split!r} has no sample with words to fit text_logit_bias on")
    logits = np.asarray(res.prediction, np.float64)[with_words]
    truth = np.asarray(res.truth).astype(np.int64).reshape(len(res.ids), -1)[with_words]
    bias = np.zeros(logits.shape[1])
    report: dict[str, Any] = {}
    for h, (name, a, b) in enumerate(spec):
        if name not in heads:
            continue
        known = truth[:, h] >= 0
        head_logits, labels = logits[known, a:b], truth[known, h]
        bias[a:b] = scale * fit_class_bias(head_logits, labels)
        report[name] = {"bias": (bias[a:b].round(4) + 0.0).tolist(), "samples": int(known.sum()),
                        "weighted_f1_before": weighted_f1(labels, head_logits.argmax(1)),
                        "weighted_f1_after": weighted_f1(labels, (head_logits + bias[a:b]).argmax(1))}
    fitted = {"split": split, "samples": int(with_words.sum()), "scale": float(scale),
              "method": "per-class bias maximising weighted F1 (coordinate ascent), times scale", **report}
    return replace(ckpt, model_config={**ckpt.model_config, "text_logit_bias": (bias.round(4) + 0.0).tolist()},
                   metrics={**ckpt.metrics, "text_logit_bias": json_safe(fitted)})
