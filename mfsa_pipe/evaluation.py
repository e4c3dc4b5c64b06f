"""Score checkpoints on a dataset split; several checkpoints (seeds) give mean +- std per metric
(population std, ddof = 0, as MMSA reports seeds 1111-1115)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence as Seq

import numpy as np

from mfsa_pipe.cpu_memory import keep_freed_memory_if_room
from mfsa_pipe.datasets.base import MODALITIES, DatasetBundle, PreparedSplit, Split, make_collate


def resolve_device(device: str = "auto") -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def as_bundle(dataset: str | os.PathLike | DatasetBundle) -> DatasetBundle:
    if isinstance(dataset, DatasetBundle):
        return dataset
    from mfsa_pipe.datasets import open_dataset

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


@dataclass
class Predictions:
    ids: list[str]
    prediction: np.ndarray  # the model's task-shaped output (regression scores, logits)
    truth: np.ndarray
    losses: dict[str, float]  # sample-weighted means of the model's loss terms ("task", "total", ...)


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
    """Forward the whole split (eval mode, no gradients), keeping predictions and loss terms."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(
        split, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=make_collate(task, dims)
    )
    model.eval()
    preds, truths, ids = [], [], []
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
            ids.extend(batch.ids)
            if device.type == "cpu":  # decides once per process, after a batch has shown the peak
                keep_freed_memory_if_room()
    if not n:
        raise ValueError("the split is empty")
    return Predictions(
        ids=ids,
        prediction=np.concatenate(preds),
        truth=np.concatenate(truths),
        losses={k: v / n for k, v in sums.items()},
    )


def _aggregate(per: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key in per[0]:
        values = [p.get(key) for p in per]
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
    every checkpoint are checked against the dataset first (SpecMismatchError says what differs)."""
    from mfsa_pipe.checkpoint import load_checkpoint
    from mfsa_pipe.metrics import compute_metrics

    if not checkpoints:
        raise ValueError("give at least one checkpoint")
    bundle = as_bundle(dataset)
    data = bundle.split(split)
    dev = resolve_device(device)
    loaded = [load_checkpoint(p) for p in checkpoints]
    for ckpt in loaded:  # check everything before spending time on any model
        ckpt.check_feature_spec(bundle.feature_spec, context=f"{ckpt.path} vs {bundle.source.get('path')}")
        ckpt.check_label_spec(bundle.label_spec, context=f"{ckpt.path} vs {bundle.source.get('path')}")
    dims = dict(zip(MODALITIES, bundle.dims))
    per: list[dict[str, Any]] = []
    confusion = None
    for ckpt in loaded:
        model = ckpt.build_model(device=dev)
        prepared = PreparedSplit(data, norm=ckpt.normalization, modalities=ckpt.modalities,
                                 feature_spec=ckpt.feature_spec)
        bs = batch_size or int(ckpt.training.get("batch_size") or 32)
        res = run_model(model, prepared, task=bundle.task, dims=dims, batch_size=bs, device=dev, num_workers=num_workers)
        metrics = compute_metrics(res.prediction, res.truth, ckpt.label_spec)
        metrics["loss"] = res.losses.get("task", float("nan"))
        if "confusion" in metrics:
            cm = np.asarray(metrics.pop("confusion"))
            confusion = cm if confusion is None else confusion + cm
        per.append(metrics)
    result: dict[str, Any] = {
        "dataset": str(bundle.source.get("path")),
        "format": bundle.source.get("format"),
        "split": split,
        "samples": len(data),
        "task": bundle.task,
        "label_spec": bundle.label_spec,
        "checkpoints": [str(Path(p)) for p in checkpoints],
        "metrics": _aggregate(per),
        "per_checkpoint": per,
    }
    if confusion is not None:
        result["confusion"] = {"classes": bundle.label_spec["classes"], "matrix": confusion.tolist(), "rows": "truth"}
    return result
