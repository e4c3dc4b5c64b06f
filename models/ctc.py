"""Audio and vision brought onto the text's time axis, for the baselines that need word-aligned
input (EF-LSTM with `ctc=true`, RAVEN, MCTN).

Two ways, chosen by the model config's `ctc` field:
- `ctc=true`: the CTC alignment module of the MulT reference code (yaohungt/Multimodal-Transformer,
  `CTCModule`), one per nonverbal modality. A 2-layer LSTM over the modality's frames outputs
  `ctc_positions + 1` units per frame, read as logits over {blank, text position 1..P}; the
  aligned row of text position j is sum_t p(j | frame t) x_t (not renormalised, as in the
  reference), and the logits are trained with the CTC loss whose target is the position
  sequence 1..L (each frame either emits a position, in order, or blank). Added here: padded
  frames are packed out, and a sample's classes stop at its own text length, so the alignment
  of a sample does not depend on the batch. Words after the P-th get no aligned row (zeros).
- `ctc=false` (the input is taken as word-aligned): a sample's real frames are cut into as many
  equal contiguous spans as it has words; word j gets frames [floor(j n / L), floor((j+1) n / L))
  (at least one frame when n < L). With n == L that is the identity: truly word-aligned input
  passes unchanged, and unaligned input is resampled to the text length instead of refused.

Either way a model receives per text position a group of frames (B, T_l, F, D) with its mask
(B, T_l, F): RAVEN runs its nonverbal LSTMs over each group, the others take the group mean
(`group_mean`). With CTC every group is the one aligned row (F = 1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.base import check
from models.layers import run_lstm


def check_ctc_fields(config: Any) -> None:
    """Validate the `ctc`, `ctc_positions`, `ctc_weight` fields every aligned-input config has."""
    check(isinstance(config.ctc, bool), f"ctc must be a bool, got {config.ctc!r}")
    positions = config.ctc_positions
    check(isinstance(positions, int) and not isinstance(positions, bool) and positions > 0,
          f"ctc_positions must be a positive int, got {positions!r}")
    weight = config.ctc_weight
    check(isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight >= 0,
          f"ctc_weight must be >= 0, got {weight!r}")


def span_groups(x: torch.Tensor, mask: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) frames with prefix mask, (B, T_l) text mask -> each word's equal span of the
    sample's real frames, (B, T_l, F, D) and its mask (B, T_l, F); F = the longest span."""
    b, t, dim = x.shape
    t_l = text_mask.shape[1]
    n = mask.sum(1)[:, None]
    words = text_mask.sum(1)[:, None].clamp(min=1)
    j = torch.arange(t_l, device=x.device)[None, :]
    start = j * n // words
    end = torch.minimum(torch.maximum((j + 1) * n // words, start + 1), n)
    count = (end - start) * (text_mask & (n > 0))
    frames = max(int(count.max()), 1) if count.numel() else 1
    offset = torch.arange(frames, device=x.device)
    group_mask = offset[None, None, :] < count[..., None]
    index = (start[..., None] + offset).clamp(max=max(t - 1, 0)).view(b, t_l * frames)
    if t == 0:
        return x.new_zeros(b, t_l, frames, dim), group_mask
    groups = x.gather(1, index.unsqueeze(-1).expand(b, t_l * frames, dim)).view(b, t_l, frames, dim)
    return groups * group_mask.unsqueeze(-1).to(x.dtype), group_mask


def group_mean(groups: torch.Tensor, group_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T_l, F, D), (B, T_l, F) -> one row per word (mean of its frames; zeros if none), row mask."""
    weights = group_mask.unsqueeze(-1).to(groups.dtype)
    rows = (groups * weights).sum(2) / weights.sum(2).clamp(min=1.0)
    return rows, group_mask.any(-1)


class CTCAligner(nn.Module):
    """One modality's CTC alignment module (see the module docstring)."""

    def __init__(self, in_dim: int, positions: int):
        super().__init__()
        self.positions = positions
        self.lstm = nn.LSTM(in_dim, positions + 1, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> aligned rows (B, T_l, D) (zero on text padding and after position P), CTC loss."""
        logits, _ = run_lstm(self.lstm, x, mask)
        words = text_mask.sum(1).clamp(max=self.positions)
        classes = torch.arange(self.positions + 1, device=x.device)
        allowed = classes[None, :] <= words[:, None]  # blank (0) and the sample's own positions
        logits = logits.float().masked_fill(~allowed[:, None, :], torch.finfo(torch.float32).min)
        log_probs = torch.log_softmax(logits, dim=-1)
        probs = log_probs.exp() * mask.unsqueeze(-1).to(log_probs.dtype)
        # (B, P, D), in the input's dtype whatever autocast does to the product (CPU LSTMs downstream)
        aligned = (probs[:, :, 1:].transpose(1, 2).to(x.dtype) @ x).to(x.dtype)
        t_l = text_mask.shape[1]
        if t_l > self.positions:
            aligned = F.pad(aligned, (0, 0, 0, t_l - self.positions))
        aligned = aligned[:, :t_l] * text_mask.unsqueeze(-1).to(x.dtype)
        return aligned, self._loss(log_probs, mask.sum(1), words)

    def _loss(self, log_probs: torch.Tensor, frames: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """Mean over the samples with frames and words of CTC(positions 1..L) / L (the reference's
        'mean' reduction); a sample whose frames are fewer than its words cannot emit them all and
        counts zero (zero_infinity)."""
        b = log_probs.shape[0]
        positions = torch.arange(1, self.positions + 1, device=log_probs.device)
        targets = positions.expand(b, self.positions).contiguous()
        per_sample = F.ctc_loss(log_probs.transpose(0, 1), targets, frames.clamp(min=1), words, blank=0,
                                reduction="none", zero_infinity=True)
        usable = (frames > 0) & (words > 0)
        per_sample = torch.where(usable, per_sample / words.clamp(min=1), torch.zeros_like(per_sample))
        return per_sample.sum() / usable.sum().clamp(min=1)


class WordAligner(nn.Module):
    """Audio and vision as frame groups per text position: CTC modules when `ctc`, equal spans otherwise."""

    def __init__(self, dims: tuple[int, int, int], *, ctc: bool, positions: int):
        super().__init__()
        self.ctc = nn.ModuleList(CTCAligner(dim, positions) for dim in dims[1:]) if ctc else None

    def forward(self, text_mask, nonverbal):
        """nonverbal: [(audio, audio_mask), (vision, vision_mask)] -> [(groups, group_mask)] per
        modality, and the summed CTC loss (None without CTC)."""
        if self.ctc is None:
            return [span_groups(x, m, text_mask) for x, m in nonverbal], None
        out, loss = [], None
        for (x, m), aligner in zip(nonverbal, self.ctc):
            aligned, term = aligner(x, m, text_mask)
            present = text_mask & m.any(1, keepdim=True)
            out.append((aligned.unsqueeze(2), present.unsqueeze(2)))
            loss = term if loss is None else loss + term
        return out, loss


__all__ = ["CTCAligner", "WordAligner", "check_ctc_fields", "group_mean", "span_groups"]
