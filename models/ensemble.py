"""An ensemble of trained models of one kind, served as one model.

Members are trained separately (e.g. the same recipe with different seeds) and combined after
training (`mfsa_pipe.training.ensembling.ensemble_checkpoints`); an ensemble is never trained
as a whole. Class outputs are averaged as probabilities: the ensemble's prediction is the log of
the members' mean softmax (per head for multihead, per label for multilabel), so that softmax,
cross-entropy and temperature scaling downstream see the mixture. Regression scores are averaged.

Members share one config but for the fields fitted after training (`FITTED_AFTER_TRAINING`, e.g.
MFSA's text_logit_bias): member i's own values of those are `member_overrides[i]`.

Each member keeps its own input normalisation: the ensemble is fed inputs normalised with the
first member's statistics and hands member i `x * scale_i + shift_i` on the real rows (exactly
its own normalisation), so members trained on different subsets need no common statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from extractors.sequence import MODALITIES
from models.base import ModelConfig, ModelOutput, check, compute_task_loss, split_heads


@dataclass
class EnsembleConfig(ModelConfig):
    member: str = "mfsa"  # the members' model name (models/registry.py)
    member_config: dict[str, Any] = field(default_factory=dict)  # the members' config, to_dict() form
    members: int = 2
    # per member, its values of the member model's FITTED_AFTER_TRAINING fields (() = all as member_config)
    member_overrides: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check(isinstance(self.members, int) and not isinstance(self.members, bool) and self.members >= 2,
              f"members must be an int >= 2, got {self.members!r}")
        check(self.member != "ensemble", "an ensemble's members cannot be ensembles")
        self._check_member_overrides()
        for key in ("dims", "task", "num_classes", "num_labels", "head_sizes"):
            if key in self.member_config:
                value = self.member_config[key]
                value = tuple(value) if isinstance(value, list) else value
                check(value == getattr(self, key),
                      f"member_config {key} {value!r} differs from the ensemble's {getattr(self, key)!r}")

    def _check_member_overrides(self) -> None:
        """Their shape; which fields they may set is the member's config class's to say (the registry
        checks it: models/registry.py, check_member_overrides)."""
        check(not self.member_overrides or (len(self.member_overrides) == self.members
                                            and all(isinstance(o, dict) for o in self.member_overrides)),
              f"member_overrides must give one dict per member ({self.members}), got {self.member_overrides!r}")

    def member_configs(self) -> list[dict[str, Any]]:
        """Each member's config (to_dict form): member_config with its overrides."""
        overrides = self.member_overrides or ({},) * self.members
        return [{**self.member_config, **o} for o in overrides]


class Ensemble(nn.Module):
    """`Ensemble(config, members)`: `members` are built by the registry from `config.member`."""

    def __init__(self, config: EnsembleConfig, members: list[nn.Module]) -> None:
        super().__init__()
        check(len(members) == config.members, f"expected {config.members} members, got {len(members)}")
        self.config = config
        self.members = nn.ModuleList(members)
        for i in range(config.members):
            for m, d in zip(MODALITIES, config.dims):
                self.register_buffer(f"scale_{i}_{m}", torch.ones(d))
                self.register_buffer(f"shift_{i}_{m}", torch.zeros(d))

    def _member_inputs(self, i: int, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]):
        out = {}
        for m in MODALITIES:
            x, real = inputs[m], masks[f"{m}_mask"].unsqueeze(-1).to(inputs[m].dtype)
            out[m] = (x * getattr(self, f"scale_{i}_{m}") + getattr(self, f"shift_{i}_{m}")) * real  # padding stays 0
        return out

    def _combine(self, predictions: list[torch.Tensor]) -> torch.Tensor:
        cfg = self.config
        stacked = torch.stack(predictions)  # (members, B, ...)
        if cfg.task == "regression":
            return stacked.mean(0)
        if cfg.task == "multihead":
            per_member = [split_heads(p, cfg.head_sizes) for p in predictions]
            heads = [torch.stack([heads[h] for heads in per_member]) for h in range(len(cfg.head_sizes))]
            return torch.cat([_log_mean_softmax(h) for h in heads], dim=-1)
        return _log_mean_softmax(stacked)  # classification (B, C), multilabel (B, L, 2)

    def forward(self, text, audio, vision, *, text_mask, audio_mask, vision_mask, labels=None) -> ModelOutput:
        inputs = {"text": text, "audio": audio, "vision": vision}
        masks = {"text_mask": text_mask, "audio_mask": audio_mask, "vision_mask": vision_mask}
        outs = [member(**self._member_inputs(i, inputs, masks), **masks) for i, member in enumerate(self.members)]
        prediction = self._combine([o.prediction for o in outs])
        extras = {}
        if all(isinstance(o.extras.get("psi"), torch.Tensor) for o in outs):  # MFSA's modality weights
            extras["psi"] = torch.stack([o.extras["psi"] for o in outs]).mean(0)
        if labels is None:
            return ModelOutput(prediction=prediction, extras=extras)
        loss = compute_task_loss(prediction, labels, self.config)
        return ModelOutput(prediction=prediction, loss=loss, losses={"task": loss}, extras=extras)


def _log_mean_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log(mean over dim 0 of softmax(logits, -1)), computed stably."""
    n = logits.shape[0]
    return torch.logsumexp(torch.log_softmax(logits.float(), dim=-1), dim=0) - torch.log(
        torch.tensor(float(n), device=logits.device))
