"""MICA: Modality-Invariant Crossmodal Attention (Liang et al., ICCV 2021, "Attention is not
enough: mitigating the distribution discrepancy in asynchronous multimodal sequence fusion").

The MulT layout (per target modality: two crossmodal transformers, one per source, their outputs
side by side, a self-attention transformer, the last real row; the three 2d-vectors through a
residual block and the output layer), with the crossmodal attention computed in a
modality-invariant space: in every crossmodal block the queries (from the target) and the keys
(from the source) are pulled into one distribution by the alignment loss `align`, the mean over
blocks of
  - marginal alignment: the squared distance between the mean and between the standard
    deviation (per feature) of the real query rows and the real key rows of the batch;
  - element alignment of high-confidence correlations: each real query row and the key it
    attends to most (attention averaged over heads), 1 - cosine similarity, weighted by that
    attention probability (the confidence).
Training minimises task + align_weight * align.

Choices where the paper leaves room (README deviations table): the alignment statistics (first
and second moments for the marginal term, cosine distance weighted by the attention probability
for the element term), `align_weight` 0.1, and the MulT reference's sizes and positional table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.base import (ModelConfig, ModelOutput, check, check_kernels, check_positive, check_probability,
                         compute_task_loss)
from models.layers import AttentionBlock, ensure_nonempty, last_valid
from models.pmr import crossmodal_block, embed_modalities
from models.mult import residual_prediction, temporal_projections


@dataclass
class MICAConfig(ModelConfig):
    d: int = 30
    num_heads: int = 5
    layers: int = 4  # crossmodal blocks per (target, source) pair
    mem_layers: int = 3  # self-attention blocks per target over its two crossmodal outputs
    conv_kernels: tuple[int, int, int] = (1, 1, 1)
    attn_dropout: float = 0.1
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    embed_dropout: float = 0.25
    out_dropout: float = 0.0
    align_weight: float = 0.1  # weight of the distribution-alignment loss

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "d", "num_heads", "layers", "mem_layers")
        check(self.d % self.num_heads == 0, f"num_heads ({self.num_heads}) must divide d ({self.d})")
        check_kernels(self)
        for name in ("attn_dropout", "relu_dropout", "res_dropout", "embed_dropout", "out_dropout"):
            check_probability(name, getattr(self, name))
        check(isinstance(self.align_weight, (int, float)) and self.align_weight >= 0,
              f"align_weight must be >= 0, got {self.align_weight!r}")


def _heads_merged(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, head_dim) -> (B, T, H * head_dim)."""
    b, h, t, e = x.shape
    return x.transpose(1, 2).reshape(b, t, h * e)


def invariant_block(block: AttentionBlock, x, mask, source, source_mask):
    """One crossmodal block that also returns its queries and keys (B, T, d) and the attention
    maps (B, H, T_q, T_k), for the alignment loss."""
    h, kv = block.norm_q(x), block.norm_q(source)
    q, k, v = block.attn.project(h, kv)
    out, weights = block.attn.attend(q, k, v, source_mask, need_weights=True)
    x = x + block.drop(out)
    x = x + block.drop(block.ffn(block.norm_ffn(x)))
    return x, _heads_merged(q), _heads_merged(k), weights


def alignment_loss(q, q_mask, k, k_mask, weights) -> torch.Tensor:
    """Marginal (moments of the real rows) plus confidence-weighted element alignment; 0 when
    either side has no real row in the batch."""
    real_q, real_k = q[q_mask], k[k_mask]
    if real_q.shape[0] == 0 or real_k.shape[0] == 0:
        return q.sum() * 0.0 + k.sum() * 0.0
    marginal = ((real_q.mean(0) - real_k.mean(0)).pow(2).mean()
                + (real_q.std(0, unbiased=False) - real_k.std(0, unbiased=False)).pow(2).mean())
    # (B, T_q): the most attended key; its probability weighs the pair as a constant
    confidence, index = weights.detach().float().mean(1).max(-1)
    matched = k.gather(1, index.unsqueeze(-1).expand(-1, -1, k.shape[-1]))
    distance = 1.0 - F.cosine_similarity(q.float(), matched.float(), dim=-1)
    confidence = confidence * q_mask.to(confidence.dtype)  # rows without any key have confidence 0
    element = (confidence * distance).sum() / confidence.sum().clamp(min=1e-6)
    return marginal.float() + element


class MICA(nn.Module):
    def __init__(self, config: MICAConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.d
        self.proj = temporal_projections(cfg)
        # cross[t][j][i]: block i of target t attending to its j-th other modality
        self.cross = nn.ModuleList(nn.ModuleList(nn.ModuleList(crossmodal_block(cfg, d) for _ in range(cfg.layers))
                                                 for _ in range(2)) for _ in range(3))
        self.cross_norm = nn.ModuleList(nn.ModuleList(nn.LayerNorm(d) for _ in range(2)) for _ in range(3))
        self.mem = nn.ModuleList(nn.ModuleList(crossmodal_block(cfg, 2 * d) for _ in range(cfg.mem_layers))
                                 for _ in range(3))
        self.mem_norm = nn.ModuleList(nn.LayerNorm(2 * d) for _ in range(3))
        self.proj1 = nn.Linear(6 * d, 6 * d)
        self.proj2 = nn.Linear(6 * d, 6 * d)
        self.out = nn.Linear(6 * d, cfg.output_size)

    def crossmodal(self, t: int, hs, masks):
        """Target t attending to each other modality: -> (B, T_t, 2d) and its alignment terms."""
        outputs, terms = [], []
        for s, blocks, norm in zip([s for s in range(3) if s != t], self.cross[t], self.cross_norm[t]):
            x = hs[t]
            for block in blocks:
                x, q, k, weights = invariant_block(block, x, masks[t], hs[s], masks[s])
                terms.append(alignment_loss(q, masks[t], k, masks[s], weights))
            outputs.append(norm(x))
        return torch.cat(outputs, -1), terms

    def forward(self, text, audio, vision, *, text_mask, audio_mask, vision_mask, labels=None) -> ModelOutput:
        cfg = self.config
        pairs = [ensure_nonempty(x, m) for x, m in ((text, text_mask), (audio, audio_mask), (vision, vision_mask))]
        masks = [m for _, m in pairs]
        hs = embed_modalities(self, [x for x, _ in pairs], masks)
        last, terms = [], []
        for t in range(3):
            h, pair_terms = self.crossmodal(t, hs, masks)
            terms += pair_terms
            for block in self.mem[t]:
                h, _ = block(h, masks[t])
            last.append(last_valid(self.mem_norm[t](h), masks[t]))
        last = torch.cat(last, -1)  # (B, 6d)
        prediction, hidden = residual_prediction(self, last)
        losses = {"align": torch.stack(terms).mean()}
        loss = None
        if labels is not None:
            losses["task"] = compute_task_loss(prediction, labels, cfg)
            loss = losses["task"] + cfg.align_weight * losses["align"]
        return ModelOutput(prediction=prediction, loss=loss, losses=losses, extras={"h": hidden})
