"""MCTN: Multimodal Cyclic Translation Network (Pham et al., "Found in Translation: Learning Robust
Joint Representations by Cyclic Translations Between Modalities", AAAI 2019), the hierarchical
three-modality form text -> audio -> vision, after its reference code (hainow/MCTN).

- Level 1: a bidirectional LSTM encoder (directions summed) reads the text, giving the joint
  sequence E1; an attention decoder translates E1 into audio (one row per word). Cyclic loss: the
  same encoder reads the translated audio and the same decoder translates it back to text.
- Level 2: a second bidirectional encoder reads E1, giving E2; a second attention decoder
  translates E2 into vision (no cycle, as in the reference).
- Predictor: an LSTM over E2, attention pooling (tanh score, softmax over words), Linear.
- Loss: task + translation_weight (MSE text->audio + MSE ->vision) + cycle_weight MSE(text back)
  (+ ctc_weight CTC with `ctc=true`). The translation targets are audio and vision on the text's
  time axis (models/ctc.py: CTC-aligned rows, detached so the translation cannot pull the
  alignment towards its own predictions; equal-span means without CTC).
At inference (no labels) only the text is read: the prediction does not depend on audio or vision.

The attention decoder follows the reference's AttentionDecoderCell: at each output step the
score of encoder row t is w [E_t; c_prev] (c_prev the decoder's cell state), the softmax-weighted
encoder rows feed an LSTM cell, and a linear layer reads its hidden state (the reference applies
tanh there; features here are standardised, not bounded). Level-1 encoder and decoder are shared
by the forward and the back translation as the paper writes; since text and audio differ in
size, the encoder has one input Linear per modality and the decoder one output Linear per target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.base import (ModelConfig, ModelOutput, check, check_positive, check_probability, compute_task_loss,
                         shape_prediction)
from models.ctc import WordAligner, check_ctc_fields, group_mean
from models.layers import ensure_nonempty, masked_softmax, run_lstm


@dataclass
class MCTNConfig(ModelConfig):
    hidden: int = 32  # level-1 encoder/decoder (reference translation1.hidden_dim)
    hidden2: int = 32  # level-2 encoder/decoder
    reg_hidden: int = 32  # predictor LSTM
    translation_weight: float = 0.1  # reference loss weights: translations 0.1, cycle 0.1, task 1
    cycle_weight: float = 0.1
    dropout: float = 0.0
    ctc: bool = False  # align audio and vision (the translation targets) to the words with CTC
    ctc_positions: int = 50
    ctc_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "hidden", "hidden2", "reg_hidden")
        for name in ("translation_weight", "cycle_weight"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
                  f"{name} must be >= 0, got {value!r}")
        check_probability("dropout", self.dropout)
        check_ctc_fields(self)


class AttentionDecoder(nn.Module):
    """`steps` output rows from an encoded sequence (see the module docstring); `head` picks the
    output layer (the target modality)."""

    def __init__(self, enc_dim: int, hidden: int, out_dims: tuple[int, ...]):
        super().__init__()
        self.score_encoded = nn.Linear(enc_dim, 1)
        self.score_state = nn.Linear(hidden, 1, bias=False)
        self.cell = nn.LSTMCell(enc_dim, hidden)
        self.outs = nn.ModuleList(nn.Linear(hidden, dim) for dim in out_dims)

    def forward(self, encoded: torch.Tensor, mask: torch.Tensor, steps: int, head: int = 0) -> torch.Tensor:
        b = encoded.shape[0]
        h = c = encoded.new_zeros(b, self.cell.hidden_size)
        base = self.score_encoded(encoded).squeeze(-1)  # (B, T): the part of the score fixed over steps
        rows = []
        for _ in range(steps):
            alpha = masked_softmax(base + self.score_state(c), mask)
            h, c = self.cell((alpha.unsqueeze(-1) * encoded).sum(1), (h, c))
            rows.append(h)
        return self.outs[head](torch.stack(rows, 1))


def bidirectional_sum(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Packed bidirectional LSTM, forward and backward outputs summed (the reference's merge_mode)."""
    out, _ = run_lstm(lstm, x, mask)
    forward, backward = out.chunk(2, dim=-1)
    return forward + backward


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real rows (B, T) only; 0 when there is none."""
    weights = rows.to(prediction.dtype)
    per_row = (prediction - target.to(prediction.dtype)).pow(2).mean(-1)
    return (per_row * weights).sum() / weights.sum().clamp(min=1.0)


class MCTN(nn.Module):
    def __init__(self, config: MCTNConfig):
        super().__init__()
        self.config = cfg = config
        d_l, d_a, d_v = cfg.dims
        self.encoder_in = nn.ModuleList(nn.Linear(dim, cfg.hidden) for dim in (d_l, d_a))  # text, translated audio
        self.encoder = nn.LSTM(cfg.hidden, cfg.hidden, batch_first=True, bidirectional=True)
        self.decoder = AttentionDecoder(cfg.hidden, cfg.hidden, (d_a, d_l))  # to audio; back to text
        self.encoder2 = nn.LSTM(cfg.hidden, cfg.hidden2, batch_first=True, bidirectional=True)
        self.decoder2 = AttentionDecoder(cfg.hidden2, cfg.hidden2, (d_v,))
        self.aligner = WordAligner(cfg.dims, ctc=cfg.ctc, positions=cfg.ctc_positions)
        self.predictor = nn.LSTM(cfg.hidden2, cfg.reg_hidden, batch_first=True)
        self.attention = nn.Linear(cfg.reg_hidden, 1)
        self.out = nn.Linear(cfg.reg_hidden, cfg.output_size)

    def forward(self, text, audio, vision, *, text_mask, audio_mask, vision_mask, labels=None) -> ModelOutput:
        cfg = self.config
        (text, text_mask), *nonverbal = [ensure_nonempty(x, m) for x, m in
                                         ((text, text_mask), (audio, audio_mask), (vision, vision_mask))]
        joint = self._encode(text, text_mask, source=0)
        joint2 = bidirectional_sum(self.encoder2, joint, text_mask)
        pooled = self._pool(joint2, text_mask)
        prediction = shape_prediction(self.out(F.dropout(pooled, cfg.dropout, self.training)), cfg.task,
                                      cfg.num_labels)
        losses, loss = {}, None
        if labels is not None:
            loss = losses["task"] = compute_task_loss(prediction, labels, cfg)
            losses.update(self._translation_losses(text, text_mask, joint, joint2, nonverbal))
            loss = loss + cfg.translation_weight * (losses["translation_audio"] + losses["translation_vision"])
            loss = loss + cfg.cycle_weight * losses["cycle"]
            if "ctc" in losses:
                loss = loss + cfg.ctc_weight * losses["ctc"]
        return ModelOutput(prediction=prediction, loss=loss, losses=losses, extras={"h": pooled})

    def _encode(self, x: torch.Tensor, mask: torch.Tensor, *, source: int) -> torch.Tensor:
        return bidirectional_sum(self.encoder, self.encoder_in[source](x), mask)

    def _pool(self, joint2: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reference's regression network before its output layer: LSTM, then attention pooling."""
        out, _ = run_lstm(self.predictor, joint2, mask)
        weights = masked_softmax(torch.tanh(self.attention(out)).squeeze(-1), mask)
        return (weights.unsqueeze(-1) * out).sum(1)

    def _translation_losses(self, text, text_mask, joint, joint2, nonverbal) -> dict[str, torch.Tensor]:
        groups, ctc_loss = self.aligner(text_mask, nonverbal)
        (audio, audio_rows), (vision, vision_rows) = [group_mean(g, gm) for g, gm in groups]
        if ctc_loss is not None:  # targets only: the alignment learns from its CTC loss
            audio, vision = audio.detach(), vision.detach()
        steps = text_mask.shape[1]
        audio_hat = self.decoder(joint, text_mask, steps, head=0)
        text_back = self.decoder(self._encode(audio_hat, text_mask, source=1), text_mask, steps, head=1)
        vision_hat = self.decoder2(joint2, text_mask, steps)
        losses = {"translation_audio": masked_mse(audio_hat, audio, audio_rows),
                  "translation_vision": masked_mse(vision_hat, vision, vision_rows),
                  "cycle": masked_mse(text_back, text, text_mask)}
        if ctc_loss is not None:
            losses["ctc"] = ctc_loss
        return losses
