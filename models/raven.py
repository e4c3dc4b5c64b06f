"""RAVEN: Recurrent Attended Variation Embedding Network (Wang et al., "Words Can Shift:
Dynamically Adjusting Word Representations Using Nonverbal Behaviors", AAAI 2019).

Per word i with embedding e_i (the text row):
1. Nonverbal sub-networks: an LSTM over the audio frames of the word gives h_a^i, one over its
   visual frames gives h_v^i (models/ctc.py says which frames belong to a word: CTC-aligned
   rows with `ctc=true`, equal spans of the sample's frames otherwise).
2. Gated modality-mixing (the attention gating): w_v = sigmoid(W_hv [h_v; e] + b_v),
   w_a = sigmoid(W_ha [h_a; e] + b_a) (one scalar gate per word and modality), and the shift
   h_m = w_v (W_v h_v) + w_a (W_a h_a) + b_h.
3. Multimodal shifting: e~ = e + alpha h_m with alpha = min(||e|| / (beta ||h_m||), 1), so the
   shift is at most ||e|| / beta.
4. An LSTM over the shifted words; its last hidden state feeds the predictor (Linear-ReLU-Linear).
A word with no frame of a modality has h = 0 for it; a sample with no words predicts from a zero
state (the model reads nonverbal behaviour only through words).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.base import (ModelConfig, ModelOutput, check, check_positive, check_probability, compute_task_loss,
                         shape_prediction)
from models.ctc import WordAligner, check_ctc_fields
from models.layers import ensure_nonempty, run_lstm, zero_padding


def one_step(lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """The hidden state of a 1-layer LSTM after one step from zero (gate order i, f, g, o): the same
    as running it over a length-1 sequence, without the many tiny sequences (and without oneDNN's
    failure on length-1 sequences under CPU autocast)."""
    gates = F.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
    i, _, g, o = gates.chunk(4, dim=-1)
    return torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))


@dataclass
class RAVENConfig(ModelConfig):
    nonverbal_hidden: int = 16  # each nonverbal sub-network's LSTM
    hidden: int = 64  # the LSTM over the shifted words
    beta: float = 1.0  # shift threshold: ||shift|| <= ||e|| / beta
    dropout: float = 0.1
    ctc: bool = False  # align audio and vision to the words with CTC (models/ctc.py)
    ctc_positions: int = 50
    ctc_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "nonverbal_hidden", "hidden")
        check(isinstance(self.beta, (int, float)) and not isinstance(self.beta, bool) and self.beta > 0,
              f"beta must be > 0, got {self.beta!r}")
        check_probability("dropout", self.dropout)
        check_ctc_fields(self)


class RAVEN(nn.Module):
    def __init__(self, config: RAVENConfig):
        super().__init__()
        self.config = cfg = config
        d_l, hn = cfg.dims[0], cfg.nonverbal_hidden
        self.aligner = WordAligner(cfg.dims, ctc=cfg.ctc, positions=cfg.ctc_positions)
        # index 0: audio, 1: vision
        self.nonverbal = nn.ModuleList(nn.LSTM(dim, hn, batch_first=True) for dim in cfg.dims[1:])
        self.gates = nn.ModuleList(nn.Linear(hn + d_l, 1) for _ in range(2))
        self.shifts = nn.ModuleList(nn.Linear(hn, d_l, bias=False) for _ in range(2))
        self.shift_bias = nn.Parameter(torch.zeros(d_l))
        self.lstm = nn.LSTM(d_l, cfg.hidden, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                                  nn.Linear(cfg.hidden, cfg.output_size))

    def forward(self, text, audio, vision, *, text_mask, audio_mask, vision_mask, labels=None) -> ModelOutput:
        cfg = self.config
        (text, text_mask), *nonverbal = [ensure_nonempty(x, m) for x, m in
                                         ((text, text_mask), (audio, audio_mask), (vision, vision_mask))]
        groups, ctc_loss = self.aligner(text_mask, nonverbal)
        words = zero_padding(text, text_mask)
        shifted, shift = self._shift(words, [self._per_word(lstm, *g) for lstm, g in zip(self.nonverbal, groups)])
        _, hidden = run_lstm(self.lstm, F.dropout(shifted, cfg.dropout, self.training), text_mask)
        hidden = hidden[:, -1]
        prediction = shape_prediction(self.head(hidden), cfg.task, cfg.num_labels)
        losses, loss = {}, None
        if labels is not None:
            loss = losses["task"] = compute_task_loss(prediction, labels, cfg)
            if ctc_loss is not None:
                losses["ctc"] = ctc_loss
                loss = loss + cfg.ctc_weight * ctc_loss
        extras = {"h": hidden, "shift": zero_padding(shift, text_mask)}
        return ModelOutput(prediction=prediction, loss=loss, losses=losses, extras=extras)

    @staticmethod
    def _per_word(lstm: nn.LSTM, groups: torch.Tensor, group_mask: torch.Tensor) -> torch.Tensor:
        """(B, T_l, F, D) frame groups -> (B, T_l, H): the LSTM's final state over each word's frames."""
        b, t_l, frames, dim = groups.shape
        if frames == 1:  # one frame per word (CTC, or word-aligned input): one step from the zero state
            return one_step(lstm, groups[:, :, 0]) * group_mask.to(groups.dtype)
        _, hidden = run_lstm(lstm, groups.reshape(b * t_l, frames, dim), group_mask.reshape(b * t_l, frames))
        return hidden[:, -1].view(b, t_l, -1)

    def _shift(self, words: torch.Tensor, nonverbal: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated modality-mixing and the bounded shift of each word embedding."""
        shift = self.shift_bias.to(words.dtype).expand_as(words)
        for h, gate, project in zip(nonverbal, self.gates, self.shifts):
            shift = shift + torch.sigmoid(gate(torch.cat([h, words], -1))) * project(h)
        eps = 1e-12
        norm_e = (words.pow(2).sum(-1, keepdim=True) + eps).sqrt()  # + eps: no NaN gradient at 0
        norm_m = (shift.pow(2).sum(-1, keepdim=True) + eps).sqrt()
        alpha = (norm_e / (self.config.beta * norm_m)).clamp(max=1.0)
        return words + alpha * shift, shift
