"""MulT: Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019), following the
reference implementation (yaohungt/Multimodal-Transformer) with key-padding masks added.

Per modality: Conv1d projection to d. For each target t: two crossmodal transformers (t attends
to each other modality; `layers` pre-LN blocks whose keys/values are the embedded source),
their outputs concatenated along features (2d), a self-attention transformer (`mem_layers`) on
that, and the last real row read out. The three 2d vectors (6d) go through a residual block
(Linear-ReLU-dropout-Linear + input) and the output layer.

Presets (`MulTConfig.preset`): the per-dataset settings of the MulT paper's supplementary Table 5
(CMU-MOSI, CMU-MOSEI, IEMOCAP). The table's "crossmodal attention block dropout" is taken as
`attn_dropout` (text source and the self-attention transformers); the reference's audio- and
vision-source attention dropouts (0.0) are not in the table and are kept; its gradient clip
(0.8 MOSI/IEMOCAP, 1.0 MOSEI) is the trainer's `clip_grad`, not a model field.

As in the reference: attention dropout by source modality (`trans_l_with_a`, text attending to
audio, takes `attn_dropout_a`); keys and values of a crossmodal block embedded with separate
dropout masks; the positional table `reference_positions` ([sin | cos], positions from 1).
`positions="index"` is the table of checkpoints saved before this field existed (interleaved
sin/cos from position 0, `sinusoidal_positions`): a saved config without the field reads as that,
so old checkpoints keep their outputs. `reference_state_dict` maps the official code's weights.

Differences from the reference: key-padding masks in every attention and a masked last-row
readout (the reference pads with zeros and reads the last padded position); no future
(triangular) attention mask, which the reference turns on by default but which depends on the
padded lengths; positions count rows (1..T) where the reference gives position 0 (a zero code)
to any row whose first feature is exactly 0 and numbers only the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.base import (ModelConfig, ModelOutput, check, check_kernels, check_positive, check_probability, shape_prediction,
                         compute_task_loss)
from models.layers import (AttentionBlock, ensure_nonempty, last_valid, reference_positions, sinusoidal_positions,
                           zero_padding)

POSITIONS = {"reference": reference_positions, "index": sinusoidal_positions}


# Tsai et al. 2019, supplementary Table 5; conv kernels are (text, audio, vision), the table lists L/V/A
_PRESETS = {  # their batch size, epochs and lr are training settings: mfsa_pipe/training/settings.py
    "mosi": dict(dims=(300, 5, 20), task="regression", d=40, layers=4, num_heads=10, conv_kernels=(1, 3, 3),
                 embed_dropout=0.2, attn_dropout=0.2, out_dropout=0.1),
    "mosei": dict(dims=(300, 74, 35), task="regression", d=40, layers=4, num_heads=8, conv_kernels=(1, 3, 3),
                  embed_dropout=0.3, attn_dropout=0.1, out_dropout=0.1),
    "iemocap": dict(dims=(300, 74, 35), task="multilabel", num_labels=4, d=40, layers=4, num_heads=10,
                    conv_kernels=(3, 5, 3), embed_dropout=0.3, attn_dropout=0.25, out_dropout=0.1),
}


@dataclass
class MulTConfig(ModelConfig):
    PRESETS = _PRESETS  # the MulT paper's supplementary Table 5: "mosi", "mosei", "iemocap"

    # reference defaults (main.py): d_l = d_a = d_v = 30 (its batch, epochs and lr: training/settings.py)
    d: int = 30
    num_heads: int = 5
    layers: int = 5  # nlevels: blocks per crossmodal transformer
    # blocks of each self-attention transformer over a concatenated pair; None = max(layers, 3),
    # what the reference builds (get_network(layers=3) takes max(nlevels, 3))
    mem_layers: int | None = None
    conv_kernels: tuple[int, int, int] = (1, 1, 1)
    attn_dropout: float = 0.1  # source text, and the self-attention transformers
    attn_dropout_a: float = 0.0  # source audio
    attn_dropout_v: float = 0.0  # source vision
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    embed_dropout: float = 0.25
    out_dropout: float = 0.0
    positions: str = "reference"  # or "index": the table of checkpoints saved before this field

    @classmethod
    def from_dict(cls, data):
        # a config saved before `positions` existed was trained with the "index" table
        return super().from_dict({"positions": "index", **data})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "d", "num_heads", "layers")
        if self.mem_layers is None and isinstance(self.layers, int):
            self.mem_layers = max(self.layers, 3)
        check_positive(self, "mem_layers")
        check(self.d % self.num_heads == 0, f"num_heads ({self.num_heads}) must divide d ({self.d})")
        check_kernels(self)
        check(self.positions in POSITIONS, f"positions must be one of {sorted(POSITIONS)}, got {self.positions!r}")
        for name in ("attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "res_dropout",
                     "embed_dropout", "out_dropout"):
            check_probability(name, getattr(self, name))


class MulTEncoder(nn.Module):
    """The reference TransformerEncoder: scale by sqrt(dim), add positions, dropout, pre-LN
    blocks (queries and keys share a LayerNorm), final LayerNorm. With `source`, crossmodal."""

    def __init__(self, dim: int, num_heads: int, layers: int, *, attn_dropout: float, cfg: MulTConfig):
        super().__init__()
        self.scale, self.embed_dropout, self.table = math.sqrt(dim), cfg.embed_dropout, POSITIONS[cfg.positions]
        self.blocks = nn.ModuleList(
            AttentionBlock(dim, num_heads, ffn_dim=4 * dim, attn_dropout=attn_dropout, res_dropout=cfg.res_dropout,
                           ffn_dropout=cfg.relu_dropout, share_norm=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def _embed(self, x, *, draws: int = 1):
        """Scaled input plus positions, then `draws` independent embedding-dropout masks."""
        x = self.scale * x + self.table(x.shape[1], x.shape[2], device=x.device, dtype=x.dtype)
        return [F.dropout(x, self.embed_dropout, self.training) for _ in range(draws)]

    def forward(self, x, mask, source=None, source_mask=None):
        (x,) = self._embed(x)
        keys = values = None
        if source is not None:
            # the reference drops keys and values out with separate masks; the same tensor otherwise
            separate = self.training and self.embed_dropout > 0
            keys, *rest = self._embed(source, draws=2 if separate else 1)
            values = rest[0] if rest else None
        for block in self.blocks:
            x, _ = block(x, mask, keys, source_mask, source_value=values)
        return self.norm(x)


def residual_prediction(model: nn.Module, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MulT's output head, shared by PMR and MICA: hidden = proj2(dropout(relu(proj1(x)))) + x,
    -> (the prediction from `out`, hidden).
    The modules stay attributes of the model: their names are the reference's state-dict keys."""
    cfg = model.config
    hidden = model.proj2(F.dropout(F.relu(model.proj1(last)), cfg.out_dropout, model.training)) + last
    return shape_prediction(model.out(hidden), cfg.task, cfg.num_labels), hidden


def temporal_projections(cfg) -> nn.ModuleList:
    """MulT's per-modality Conv1d (no bias) from each input size to `cfg.d`; PMR and MICA share it."""
    return nn.ModuleList(nn.Conv1d(dim, cfg.d, k, padding=k // 2, bias=False)
                         for dim, k in zip(cfg.dims, cfg.conv_kernels))


class MulT(nn.Module):
    def __init__(self, config: MulTConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.d
        self.proj = temporal_projections(cfg)
        drops = (cfg.attn_dropout, cfg.attn_dropout_a, cfg.attn_dropout_v)
        # cross[t][j]: target t attends to its j-th other modality (text: audio, vision; ...), with
        # the source's attention dropout (the reference's get_network: "la" takes attn_dropout_a)
        self.cross = nn.ModuleList(
            nn.ModuleList(MulTEncoder(d, cfg.num_heads, cfg.layers, attn_dropout=drops[s], cfg=cfg)
                          for s in range(3) if s != t)
            for t in range(3))
        self.mem = nn.ModuleList(MulTEncoder(2 * d, cfg.num_heads, cfg.mem_layers, attn_dropout=cfg.attn_dropout, cfg=cfg)
                                 for _ in range(3))
        self.proj1 = nn.Linear(6 * d, 6 * d)
        self.proj2 = nn.Linear(6 * d, 6 * d)
        self.out = nn.Linear(6 * d, cfg.output_size)

    def forward(self, text, audio, vision, *, text_mask, audio_mask, vision_mask, labels=None) -> ModelOutput:
        cfg = self.config
        pairs = [ensure_nonempty(x, m) for x, m in ((text, text_mask), (audio, audio_mask), (vision, vision_mask))]
        masks = [m for _, m in pairs]
        # the reference drops out the text input only
        xs = [F.dropout(x, cfg.embed_dropout, self.training) if i == 0 else x for i, (x, _) in enumerate(pairs)]
        hs = [proj(zero_padding(x, m).transpose(1, 2)).transpose(1, 2) for x, m, proj in zip(xs, masks, self.proj)]
        last = []
        for t in range(3):
            others = [s for s in range(3) if s != t]
            crossed = [enc(hs[t], masks[t], hs[s], masks[s]) for s, enc in zip(others, self.cross[t])]
            h = self.mem[t](torch.cat(crossed, -1), masks[t])
            last.append(last_valid(h, masks[t]))
        last = torch.cat(last, -1)  # (B, 6d)
        prediction, hidden = residual_prediction(self, last)
        losses, loss = {}, None
        if labels is not None:
            loss = losses["task"] = compute_task_loss(prediction, labels, cfg)
        return ModelOutput(prediction=prediction, loss=loss, losses=losses, extras={"h": hidden})


# ------------------------------------------------------------------ the official code's weights

_LETTERS = "lav"  # text, audio, vision in the reference's names


def _reference_encoder(state: dict, prefix: str, ours: str, layers: int) -> dict:
    """One reference TransformerEncoder (`prefix`) under our names (`ours`)."""
    out = {f"{ours}.norm.{p}": state[f"{prefix}.layer_norm.{p}"] for p in ("weight", "bias")}
    for i in range(layers):
        src, dst = f"{prefix}.layers.{i}", f"{ours}.blocks.{i}"
        for p in ("weight", "bias"):
            for name, part in zip(("q_proj", "k_proj", "v_proj"), state[f"{src}.self_attn.in_proj_{p}"].chunk(3)):
                out[f"{dst}.attn.{name}.{p}"] = part
            out[f"{dst}.attn.out_proj.{p}"] = state[f"{src}.self_attn.out_proj.{p}"]
            out[f"{dst}.norm_q.{p}"] = state[f"{src}.layer_norms.0.{p}"]
            out[f"{dst}.norm_ffn.{p}"] = state[f"{src}.layer_norms.1.{p}"]
            out[f"{dst}.ffn.0.{p}"] = state[f"{src}.fc1.{p}"]
            out[f"{dst}.ffn.3.{p}"] = state[f"{src}.fc2.{p}"]
    return out


def reference_state_dict(state: dict, config: MulTConfig) -> dict:
    """The official code's MULTModel state dict (yaohungt/Multimodal-Transformer, all three targets)
    as ours, for `MulT(config).load_state_dict`. Where an input size equals `d` the reference skips
    its projection: that projection becomes the identity."""
    out = {}
    for m, letter in enumerate(_LETTERS):
        weight = state[f"proj_{letter}.weight"]
        if config.dims[m] == config.d:
            k = config.conv_kernels[m]
            weight = torch.zeros(config.d, config.d, k, dtype=weight.dtype)
            weight[:, :, k // 2] = torch.eye(config.d)
        out[f"proj.{m}.weight"] = weight
        others = [s for s in range(3) if s != m]
        for j, s in enumerate(others):
            out.update(_reference_encoder(state, f"trans_{letter}_with_{_LETTERS[s]}", f"cross.{m}.{j}", config.layers))
        out.update(_reference_encoder(state, f"trans_{letter}_mem", f"mem.{m}", config.mem_layers))
    for name, ref in (("proj1", "proj1"), ("proj2", "proj2"), ("out", "out_layer")):
        for p in ("weight", "bias"):
            out[f"{name}.{p}"] = state[f"{ref}.{p}"]
    return out
