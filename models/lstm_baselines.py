"""LSTM baselines for unaligned sequences, behind the zoo's interface.

EF-LSTM (early fusion): early fusion needs one time axis, and unaligned modalities have none.
Each modality is projected to d per row, then its real rows are resampled by linear
interpolation onto `resample_length` evenly spaced points spanning the whole sequence (a sample
with no real row gives zeros); the three resampled sequences are concatenated along features
and read by one LSTM whose final hidden state feeds the head. With `ctc=true` (the variant the
MFSA paper compares with): audio and vision are aligned to the text positions by CTC modules
(models/ctc.py) trained jointly (loss "ctc", weight `ctc_weight`), each position's three projected
rows are concatenated, and the LSTM reads the sample's text positions.

LF-LSTM (late fusion): one LSTM per modality over its real rows (packed), the three final
hidden states concatenated, then an MLP head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.base import ModelConfig, ModelOutput, check_positive, check_probability, shape_prediction, compute_task_loss
from models.ctc import WordAligner, check_ctc_fields, group_mean
from models.layers import ensure_nonempty, run_lstm


def resample(x: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, D) with prefix mask -> (B, length, D): each sample's real rows linearly
    interpolated onto `length` points from its first to its last real row; zeros if none."""
    b, _, dim = x.shape
    n = mask.sum(1)
    last = (n - 1).clamp(min=0)
    # positions in float32 whatever the input dtype: fractional indices need the precision
    pos = torch.linspace(0.0, 1.0, length, device=x.device, dtype=torch.float32) * last[:, None].float()
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, last[:, None])
    frac = (pos - lo.float()).to(x.dtype).unsqueeze(-1)

    def rows(index):
        return x.gather(1, index.unsqueeze(-1).expand(b, length, dim))

    out = rows(lo) * (1 - frac) + rows(hi) * frac
    return out * (n > 0)[:, None, None].to(x.dtype)


@dataclass
class EFLSTMConfig(ModelConfig):
    d: int = 32  # per-modality projection
    hidden: int = 64
    num_layers: int = 1
    resample_length: int = 50  # without CTC
    dropout: float = 0.1
    ctc: bool = False  # align audio and vision to the text positions with CTC (models/ctc.py)
    ctc_positions: int = 50  # text positions the CTC modules can emit (the reference's text length)
    ctc_weight: float = 1.0  # the reference adds the CTC losses to the task loss unweighted

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "d", "hidden", "num_layers", "resample_length")
        check_probability("dropout", self.dropout)
        check_ctc_fields(self)


class EFLSTM(nn.Module):
    def __init__(self, config: EFLSTMConfig):
        super().__init__()
        self.config = cfg = config
        self.proj = nn.ModuleList(nn.Linear(dim, cfg.d) for dim in cfg.dims)
        self.aligner = WordAligner(cfg.dims, ctc=True, positions=cfg.ctc_positions) if cfg.ctc else None
        self.lstm = nn.LSTM(3 * cfg.d, cfg.hidden, num_layers=cfg.num_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                                  nn.Linear(cfg.hidden, cfg.output_size))

    def forward(self, text, audio, vision, *, text_mask, audio_mask, vision_mask, labels=None) -> ModelOutput:
        cfg = self.config
        pairs = [ensure_nonempty(x, m) for x, m in ((text, text_mask), (audio, audio_mask), (vision, vision_mask))]
        ctc_loss = None
        if self.aligner is None:
            fused = torch.cat([resample(proj(x), m, cfg.resample_length) for (x, m), proj in zip(pairs, self.proj)], -1)
            hidden = self.lstm(fused)[1][0][-1]
        else:
            hidden, ctc_loss = self._aligned_hidden(pairs)
        prediction = shape_prediction(self.head(hidden), cfg.task, cfg.num_labels)
        losses, loss = {}, None
        if labels is not None:
            loss = losses["task"] = compute_task_loss(prediction, labels, cfg)
            if ctc_loss is not None:
                losses["ctc"] = ctc_loss
                loss = loss + cfg.ctc_weight * ctc_loss
        return ModelOutput(prediction=prediction, loss=loss, losses=losses, extras={"h": hidden})

    def _aligned_hidden(self, pairs):
        """CTC-aligned audio and vision beside each word, one LSTM over the text positions."""
        (text, text_mask), nonverbal = pairs[0], pairs[1:]
        groups, ctc_loss = self.aligner(text_mask, nonverbal)
        rows = [text] + [group_mean(g, gm)[0] for g, gm in groups]
        fused = torch.cat([proj(x) for x, proj in zip(rows, self.proj)], -1)
        hidden = run_lstm(self.lstm, fused, text_mask)[1][:, -1]
        return hidden, ctc_loss


@dataclass
class LFLSTMConfig(ModelConfig):
    hidden: int = 64
    num_layers: int = 1
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "hidden", "num_layers")
        check_probability("dropout", self.dropout)


class LFLSTM(nn.Module):
    def __init__(self, config: LFLSTMConfig):
        super().__init__()
        self.config = cfg = config
        self.lstms = nn.ModuleList(
            nn.LSTM(dim, cfg.hidden, num_layers=cfg.num_layers, batch_first=True,
                    dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
            for dim in cfg.dims)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(3 * cfg.hidden, cfg.hidden), nn.ReLU(),
                                  nn.Linear(cfg.hidden, cfg.output_size))

    def forward(self, text, audio, vision, *, text_mask, audio_mask, vision_mask, labels=None) -> ModelOutput:
        cfg = self.config
        pairs = [ensure_nonempty(x, m) for x, m in ((text, text_mask), (audio, audio_mask), (vision, vision_mask))]
        hidden = torch.cat([run_lstm(lstm, x, m)[1].flatten(1) for (x, m), lstm in zip(pairs, self.lstms)], -1)
        prediction = shape_prediction(self.head(hidden), cfg.task, cfg.num_labels)
        losses, loss = {}, None
        if labels is not None:
            loss = losses["task"] = compute_task_loss(prediction, labels, cfg)
        return ModelOutput(prediction=prediction, loss=loss, losses=losses, extras={"h": hidden})


__all__ = ["EFLSTM", "EFLSTMConfig", "LFLSTM", "LFLSTMConfig", "resample"]
