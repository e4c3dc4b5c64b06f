"""PMR: Progressive Modality Reinforcement (Lv et al., CVPR 2021), for unaligned sequences.

Per modality: Conv1d projection to d, scaled by sqrt(d), plus the MulT reference's positional
table, embedding dropout. A message hub holds the common message: at the start, the three
embedded sequences side by side along time (its key mask the three masks side by side). Each of
`layers` reinforcement layers then
  1. sends: every modality attends to the hub (a pre-LN crossmodal block, modality as query), so
     each modality is reinforced by the common message;
  2. collects: the hub attends to each reinforced modality (one crossmodal block per modality,
     hub as query) and the new hub is the mean of the three results, so the common message is
     reinforced by every modality in turn.
The hub and the modalities thus complement each other progressively over the layers. Each
reinforced modality then goes through a self-attention transformer (`mem_layers` blocks) and
its last real row is read out; the three d-vectors (3d) go through MulT's residual block
(Linear-ReLU-dropout-Linear + input) and the output layer.

Choices where the paper leaves room (README deviations table): the hub's initialisation (the
three sequences concatenated along time), the hub update (mean of the three collected
messages), the readout (last real row per modality, as MulT), and the defaults (MulT's
reference sizes: d 30, 5 heads, 4 reinforcement layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.base import (ModelConfig, ModelOutput, check_kernels, check_positive, check_probability,
                         compute_task_loss)
from models.layers import AttentionBlock, ensure_nonempty, last_valid, masked_mean, reference_positions, zero_padding
from models.mult import residual_prediction, temporal_projections


@dataclass
class PMRConfig(ModelConfig):
    d: int = 30
    num_heads: int = 5
    layers: int = 4  # reinforcement layers (send + collect)
    mem_layers: int = 2  # self-attention blocks per modality after the last reinforcement
    conv_kernels: tuple[int, int, int] = (1, 1, 1)
    attn_dropout: float = 0.1
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    embed_dropout: float = 0.25
    out_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "d", "num_heads", "layers", "mem_layers")
        if self.d % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide d ({self.d})")
        check_kernels(self)
        for name in ("attn_dropout", "relu_dropout", "res_dropout", "embed_dropout", "out_dropout"):
            check_probability(name, getattr(self, name))


def crossmodal_block(cfg, dim: int) -> AttentionBlock:
    """MulT's pre-LN block (queries and keys share a LayerNorm)."""
    return AttentionBlock(dim, cfg.num_heads, ffn_dim=4 * dim, attn_dropout=cfg.attn_dropout,
                          res_dropout=cfg.res_dropout, ffn_dropout=cfg.relu_dropout, share_norm=True)


def embed_modalities(model: nn.Module, inputs, masks) -> list[torch.Tensor]:
    """Conv1d projection (padding zeroed first), sqrt(d) scale, reference positions, dropout."""
    cfg, out = model.config, []
    for x, m, proj in zip(inputs, masks, model.proj):
        h = proj(zero_padding(x, m).transpose(1, 2)).transpose(1, 2)
        h = math.sqrt(cfg.d) * h + reference_positions(h.shape[1], cfg.d, device=h.device, dtype=h.dtype)
        out.append(F.dropout(h, cfg.embed_dropout, model.training))
    return out


class PMR(nn.Module):
    def __init__(self, config: PMRConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.d
        self.proj = temporal_projections(cfg)
        # send[i][m]: modality m reinforced by the hub; collect[i][m]: the hub reinforced by m
        self.send = nn.ModuleList(nn.ModuleList(crossmodal_block(cfg, d) for _ in range(3)) for _ in range(cfg.layers))
        self.collect = nn.ModuleList(nn.ModuleList(crossmodal_block(cfg, d) for _ in range(3))
                                     for _ in range(cfg.layers))
        self.mem = nn.ModuleList(nn.ModuleList(crossmodal_block(cfg, d) for _ in range(cfg.mem_layers))
                                 for _ in range(3))
        self.norm = nn.ModuleList(nn.LayerNorm(d) for _ in range(3))
        self.proj1 = nn.Linear(3 * d, 3 * d)
        self.proj2 = nn.Linear(3 * d, 3 * d)
        self.out = nn.Linear(3 * d, cfg.output_size)

    def reinforce(self, hs, masks):
        """The reinforcement layers: -> the reinforced modalities and the last hub."""
        hub, hub_mask = torch.cat(hs, 1), torch.cat(masks, 1)
        for send, collect in zip(self.send, self.collect):
            hs = [block(h, m, hub, hub_mask)[0] for h, m, block in zip(hs, masks, send)]
            hub = torch.stack([block(hub, hub_mask, h, m)[0] for h, m, block in zip(hs, masks, collect)]).mean(0)
        return hs, hub

    def forward(self, text, audio, vision, *, text_mask, audio_mask, vision_mask, labels=None) -> ModelOutput:
        cfg = self.config
        pairs = [ensure_nonempty(x, m) for x, m in ((text, text_mask), (audio, audio_mask), (vision, vision_mask))]
        masks = [m for _, m in pairs]
        hs, hub = self.reinforce(embed_modalities(self, [x for x, _ in pairs], masks), masks)
        last = []
        for h, m, blocks, norm in zip(hs, masks, self.mem, self.norm):
            for block in blocks:
                h, _ = block(h, m)
            last.append(last_valid(norm(h), m))
        last = torch.cat(last, -1)  # (B, 3d)
        prediction, hidden = residual_prediction(self, last)
        losses, loss = {}, None
        if labels is not None:
            loss = losses["task"] = compute_task_loss(prediction, labels, cfg)
        # "hub": the last common message, averaged over its real rows (B, d)
        extras = {"h": hidden, "hub": masked_mean(hub, torch.cat(masks, 1))}
        return ModelOutput(prediction=prediction, loss=loss, losses=losses, extras=extras)
