"""One epoch of training, one validation pass, and what they run under (seeds, determinism, AMP,
the optimizer and its schedule)."""

from __future__ import annotations

import contextlib
import math
import os
import random
from typing import Any, Callable, Iterator

import numpy as np

from mfsa_pipe.cpu_memory import keep_freed_memory_if_room
from mfsa_pipe.datasets.base import LabelSpec
from mfsa_pipe.training.evaluation import loss_values, run_model
from mfsa_pipe.training.metrics import compute_metrics, pop_confusion
from mfsa_pipe.training.settings import TrainingError, TrainSettings


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def amp_settings(device: Any, amp: str) -> tuple[Any, bool]:
    """(autocast dtype or None, use GradScaler). AMP runs on CUDA only: bf16 where the GPU has it
    (no scaler needed), else fp16 with a GradScaler."""
    import torch

    if amp not in ("auto", "off", "bf16", "fp16"):
        raise TrainingError(f"amp must be auto, off, bf16 or fp16, got {amp!r}")
    if device.type != "cuda" or amp == "off":
        return None, False
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


@contextlib.contextmanager
def determinism(enabled: bool, device: Any) -> Iterator[None]:
    """Deterministic algorithms (warn-only) while the run lasts; torch's flags are put back after."""
    import torch

    prev_det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    prev_cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev_cudnn


def make_optimizer(model: Any, settings: TrainSettings, *, use_scaler: bool) -> tuple[Any, Any, Any]:
    """(Adam, its ReduceLROnPlateau or None, GradScaler)."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = None
    if settings.scheduler == "plateau":
        patience = max(1, (settings.patience or 10) // 3)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=patience)
    return optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=use_scaler)


def scheduler_name(settings: TrainSettings) -> str:
    return "ReduceLROnPlateau(factor=0.5, patience=max(1, patience // 3))" if settings.scheduler == "plateau" else "none"


def train_one_epoch(
    model: Any, loader: Any, *, optimizer: Any, scaler: Any, device: Any, amp_dtype: Any, clip_grad: float,
    on_batch: Callable[[float], None] = lambda loss: None, agree: Callable[[bool], bool] = lambda ok: ok,
) -> tuple[dict[str, float], int, int]:
    """(sample-weighted mean of each loss term, samples trained on, batches skipped). A batch
    with a non-finite loss is skipped (one bad batch must not poison the weights); `agree` makes
    that decision the same on every process of a distributed run."""
    import torch

    model.train()
    sums: dict[str, float] = {}
    seen, skipped = 0, 0
    for batch in loader:
        batch = batch.to(device)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            output = model(**batch.inputs(), **batch.masks(), labels=batch.labels)
        loss = output.loss
        optimizer.zero_grad(set_to_none=True)
        if not agree(bool(torch.isfinite(loss))):
            skipped += 1
            on_batch(math.nan)
            continue
        scaler.scale(loss).backward()
        if clip_grad > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cpu":  # large maps stay mapped when there is room (decided once)
            keep_freed_memory_if_room()
        b = len(batch.ids)
        seen += b
        values = loss_values(output)  # one host sync for every term
        sums["total"] = sums.get("total", 0.0) + values.pop("total") * b
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * b
        on_batch(sums["total"] / seen)
    return {k: v / seen for k, v in sums.items()} if seen else {}, seen, skipped


def validate(model: Any, split: Any, *, task: str, label_spec: LabelSpec, dims: dict[str, int], batch_size: int,
             device: Any, amp_dtype: Any, num_workers: int, gather: Callable[[Any], Any] = lambda p: p,
             ) -> tuple[float, dict[str, float], dict[str, Any]]:
    """(task loss, every loss term, metrics) of `split` (`gather`: the whole split's predictions
    from each process's share of it)."""
    val = gather(run_model(model, split, task=task, dims=dims, batch_size=batch_size, device=device,
                           amp_dtype=amp_dtype, num_workers=num_workers))
    metrics = compute_metrics(val.prediction, val.truth, label_spec)
    pop_confusion(metrics)
    loss = val.losses.get("task", math.nan)
    metrics["loss"] = loss
    return loss, val.losses, metrics
