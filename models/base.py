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
- "multihead": independent classification heads of `head_sizes` classes (e.g. emotion 7,
  sentiment 3); labels (B, H) long, -1 where a sample has no label for a head; prediction the
  heads' logits side by side (B, sum(head_sizes)); task loss the sum over heads of each head's
  mean CE over the samples labelled for it (a head with no labelled sample adds nothing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from extractors.sequence import MODALITIES  # noqa: F401 -- the one definition; models take nothing else from extractors

TASKS = ("regression", "classification", "multilabel", "multihead")
# training settings that configs carried before the trainer's settings owned them; a saved config
# (an older checkpoint) may still hold them, and from_dict drops them (no model ever read them)
FORMER_TRAINING_FIELDS = ("batch_size", "epochs", "lr")


@runtime_checkable
class UsesInputNormalization(Protocol):
    """A model that reads some raw feature values (MFSA's face prior reads probabilities): the trainer
    hands it the per-modality mean and std its inputs are z-normalised with, before training; the
    model keeps what it needs in its state dict, so a checkpoint restores it."""

    def use_input_normalization(self, mean: dict[str, Any], std: dict[str, Any]) -> None: ...


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
    extras: dict[str, Any] = field(default_factory=dict)  # tensors, or dicts of tensors by name


def check(condition: bool, message: str) -> None:
    """Config validation: a ValueError that says what is wrong."""
    if not condition:
        raise ValueError(message)


def check_probability(name: str, value: float) -> None:
    check(isinstance(value, (int, float)) and 0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value!r}")


def check_positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
              f"{name} must be a positive int, got {value!r}")


def check_kernels(config: Any) -> None:
    """`config.conv_kernels`: one odd positive Conv1d kernel size per modality."""
    kernels = config.conv_kernels
    check(isinstance(kernels, tuple) and len(kernels) == 3
          and all(isinstance(k, int) and k > 0 and k % 2 == 1 for k in kernels),
          f"conv_kernels must be three odd positive ints, got {kernels!r}")


@dataclass
class ModelConfig:
    """Fields every model config has. Subclasses add theirs (all with defaults) and call
    `super().__post_init__()`. JSON-safe: `to_dict()` gives lists for tuples, `from_dict()`
    takes them back and rejects unknown keys (but FORMER_TRAINING_FIELDS, which it drops)."""

    dims: tuple[int, int, int] = (300, 74, 35)  # text, audio, vision input feature sizes
    task: str = "regression"
    num_classes: int = 2  # classification only
    num_labels: int = 4  # multilabel only (IEMOCAP: 4 emotions, each a 2-way head)
    head_sizes: tuple[int, ...] = ()  # multihead only: classes per head, in the label spec's order

    def __post_init__(self) -> None:
        for f in fields(self):  # JSON turns tuples into lists; take them back
            if isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))
        check(isinstance(self.dims, tuple) and len(self.dims) == 3
              and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in self.dims),
              f"dims must be three positive ints (text, audio, vision), got {self.dims!r}")
        check(self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}")
        check_positive(self, "num_labels")
        check(isinstance(self.num_classes, int) and self.num_classes >= 2,
              f"num_classes must be an int >= 2, got {self.num_classes!r}")

    # published settings by name (e.g. MFSA's section 4.2 per dataset); empty: the model has none
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # fields set by a fit after training (MFSA's text_logit_bias), not by the recipe: the members of
    # one ensemble may differ in them (models/ensemble.py, member_overrides)
    FITTED_AFTER_TRAINING: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def preset(cls, name: str, **overrides):
        """The published model settings `name` (a key of PRESETS), then `overrides`; the preset's
        batch size, epochs and lr are training settings (mfsa_pipe/training/settings.py)."""
        if name not in cls.PRESETS:
            model = cls.__name__.removesuffix("Config")
            raise ValueError(f"unknown {model} preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    @property
    def output_size(self) -> int:
        return task_output_size(self.task, self.num_classes, self.num_labels, self.head_sizes)

    @property
    def output_groups(self) -> tuple[int, ...]:
        """The output logits per head: `head_sizes` for multihead, else one group of all of them."""
        return tuple(self.head_sizes) if self.task == "multihead" else (self.output_size,)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        data = {k: v for k, v in data.items() if k not in FORMER_TRAINING_FIELDS}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        check(not unknown, f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        return cls(**data)


def task_output_size(task: str, num_classes: int, num_labels: int, head_sizes: tuple[int, ...] = ()) -> int:
    if task == "multihead":
        return int(sum(head_sizes))
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


def per_sample_task_loss(prediction: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """(B,) each sample's task loss: regression the L1 error (mean over its outputs), classification
    the CE, multilabel the mean CE over its labels. Their mean is task_loss."""
    b = prediction.shape[0]
    if task == "regression":
        return (prediction - labels.to(prediction.dtype).view_as(prediction)).abs().reshape(b, -1).mean(1)
    if task == "classification":
        return F.cross_entropy(prediction, labels.long().view(-1), reduction="none")
    if task == "multilabel":
        return F.cross_entropy(prediction.reshape(-1, 2), labels.long().reshape(-1), reduction="none").view(b, -1).mean(1)
    if task == "multihead":
        raise ValueError("multihead loss needs the head sizes: call multihead_loss")
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def task_loss(prediction: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    return per_sample_task_loss(prediction, labels, task).mean()


def split_heads(prediction: torch.Tensor, head_sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """The (B, sum(head_sizes)) multihead logits as one (B, C_h) tensor per head."""
    return list(torch.split(prediction, list(head_sizes), dim=-1))


def multihead_loss(prediction: torch.Tensor, labels: torch.Tensor, head_sizes: tuple[int, ...]) -> torch.Tensor:
    """Sum over heads of the mean CE over the samples labelled for that head (label -1 = none)."""
    labels = labels.long().view(prediction.shape[0], len(head_sizes))
    total = prediction.new_zeros(())
    for h, logits in enumerate(split_heads(prediction, head_sizes)):
        target = labels[:, h]
        known = (target >= 0).to(logits.dtype)
        # a masked mean, not logits[known]: no host sync on an accelerator; with no known label it
        # is 0 and keeps the graph connected (DDP/AMP expect every output used)
        ce = F.cross_entropy(logits, target.clamp(min=0), reduction="none")
        total = total + (ce * known).sum() / known.sum().clamp(min=1)
    return total


def compute_task_loss(prediction: torch.Tensor, labels: torch.Tensor, config: "ModelConfig") -> torch.Tensor:
    """The task loss of `config.task` (every model calls this one)."""
    if config.task == "multihead":
        return multihead_loss(prediction, labels, config.head_sizes)
    return task_loss(prediction, labels, config.task)


def masked_task_loss(prediction: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor,
                     config: "ModelConfig") -> torch.Tensor:
    """compute_task_loss over the samples where `keep` (B,) is true, as a masked mean (the same value
    as indexing them out, without the host sync that indexing costs on an accelerator); 0, with the
    graph connected, when none is kept."""
    if config.task == "multihead":  # the others as unlabelled
        return multihead_loss(prediction, torch.where(keep[:, None], labels.long().view(keep.shape[0], -1), -1),
                              config.head_sizes)
    per_sample = per_sample_task_loss(prediction, labels, config.task)
    weight = keep.to(per_sample.dtype)
    return (per_sample * weight).sum() / weight.sum().clamp(min=1)
