"""What every model in the zoo shares: the task heads' conventions and the output type.

Inputs (all models): `text` (B, T_l, d_l), `audio` (B, T_a, d_a), `vision` (B, T_v, d_v) float
tensors, and boolean key-padding masks `text_mask`, `audio_mask`, `vision_mask` (B, T), True
where a row is real. A sample may have no real row in a modality (T_m = 0 or an all-False
mask row): outputs stay finite.

Tasks (`task` in every model config):
- "regression": one score per sample; labels (B,) float; task loss L1; prediction (B,).
- "classification": `num_classes` classes; labels (B,) long; task loss CE; prediction logits (B, C).
- "multilabel": `num_labels` binary heads of 2 logits each (IEMOCAP: 4 emotions x 2);
  labels (B, num_labels) long in {0, 1}; task loss mean CE over heads; prediction (B, num_labels, 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

TASKS = ("regression", "classification", "multilabel")


@dataclass
class ModelOutput:
    """prediction: see the task conventions above. losses: named terms (always "task" when
    labels were given, plus model-specific ones such as MFSA's "sep", "agn", "spe");
    loss: the weighted total that training minimises (None without labels).
    extras: tensors for analysis (MFSA: "h_s", "h_a" (B, 3, d_h), "psi" (B, 3) modality
    weights of the last weighted attention layer, "psa_attention", "mru_attention")."""

    prediction: torch.Tensor
    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def task_output_size(task: str, num_classes: int, num_labels: int) -> int:
    if task == "regression":
        return 1
    if task == "classification":
        return num_classes
    if task == "multilabel":
        return num_labels * 2
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def shape_prediction(raw: torch.Tensor, task: str, num_labels: int) -> torch.Tensor:
    """Turn the head's flat output (B, k) into the task's prediction shape."""
    if task == "regression":
        return raw.squeeze(-1)
    if task == "multilabel":
        return raw.view(raw.shape[0], num_labels, 2)
    return raw


def task_loss(prediction: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    if task == "regression":
        return F.l1_loss(prediction, labels.to(prediction.dtype).view_as(prediction))
    if task == "classification":
        return F.cross_entropy(prediction, labels.long().view(-1))
    if task == "multilabel":
        return F.cross_entropy(prediction.reshape(-1, 2), labels.long().reshape(-1))
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
