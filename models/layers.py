"""Building blocks shared by the model zoo, written once: masks and pooling, positional
encodings, multi-head attention, pre-LN attention blocks, FFN, packed LSTMs, gradient reversal.

Mask convention: bool, True = real row. Padding sits at the end of a sequence (prefix masks,
as `collate` builds them); the LSTM helpers rely on that. Masked positions never reach a real
output: they are excluded from every softmax, pooling and recurrence, and fully masked rows
give zeros, never NaN. Fill values come from the tensor's dtype, so the blocks run under AMP.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.predictive_attention import explicit_attention, prefer_explicit, written_out_backward

# ---------------------------------------------------------------------------- masks and pooling


def ensure_nonempty(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A modality with T = 0 in the whole batch becomes one padding row, so that every op
    downstream (conv, LSTM, attention) sees T >= 1; the all-False mask does the rest."""
    mask = mask.bool()
    if x.shape[1] > 0:
        return x, mask
    return x.new_zeros(x.shape[0], 1, x.shape[2]), mask.new_zeros(x.shape[0], 1)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over real entries only (mask broadcastable to logits); a row with no real entry
    gives zeros (the uniform softmax of the fill value times the zero mask), never NaN."""
    logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=dim) * mask


def masks_flags(masks) -> list[tuple[bool, bool]]:
    """mask_flags of several masks with one host sync for all of them."""
    stats = torch.stack([torch.stack([m.all(), m.any(1).all()]) for m in masks]).tolist()
    return [(bool(full), bool(has_key_all)) for full, has_key_all in stats]


def mask_flags(key_mask: torch.Tensor) -> tuple[bool, bool]:
    """(every row real, every sample has a real row): what key_softmax and the LSTM helper branch
    on. One host sync; callers that run many layers over one mask compute it once and pass it."""
    return masks_flags([key_mask])[0]


def key_softmax(logits: torch.Tensor, key_mask: torch.Tensor, flags: tuple[bool, bool] | None = None) -> torch.Tensor:
    """masked_softmax for attention maps (B, H, T_q, T_k) under a key-padding mask (B, T_k), with
    the same result but no pass over the T_q x T_k map that would change nothing: the fill only
    when some key is padding, the zeroing only when some sample has no key at all. `flags`:
    mask_flags(key_mask) when the caller already has them (saves the host syncs on CUDA)."""
    full, has_key_all = flags if flags is not None else mask_flags(key_mask)
    if not full:
        logits = logits.masked_fill(~key_mask[:, None, None, :], torch.finfo(logits.dtype).min)
    probs = torch.softmax(logits, dim=-1)
    if not has_key_all:
        probs = probs * key_mask.any(1)[:, None, None, None].to(probs.dtype)
    return probs


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) -> (B, D) mean over real rows; zeros for a sample with none."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class PresentStandardizer(nn.Module):
    """(B, F) -> (B, F) standardised per feature, as a StandardScaler in front of a logistic
    regression: in training by the batch's statistics over the rows flagged present (absent rows,
    all zeros, would drag them), with running averages kept for evaluation; absent rows stay 0."""

    def __init__(self, features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        # weights instead of x[present]: no host sync on an accelerator (a boolean index is one)
        weight = present.to(x.dtype).unsqueeze(-1)
        if not self.training:
            return (x - self.running_mean) / torch.sqrt(self.running_var + self.eps) * weight
        n = weight.sum()
        mean = (x * weight).sum(0) / n.clamp(min=1)
        var = ((x - mean).pow(2) * weight).sum(0) / n.clamp(min=1)
        enough = n > 1  # one present row has no spread: the running statistics stand in
        with torch.no_grad():
            step = self.momentum * enough.to(self.running_mean.dtype)
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), step)
            unbiased = var.detach() * n / (n - 1).clamp(min=1)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), step)
        mean = torch.where(enough, mean, self.running_mean.to(x.dtype))
        var = torch.where(enough, var, self.running_var.to(x.dtype))
        return (x - mean) / torch.sqrt(var + self.eps) * weight


class ProbabilityPrior(nn.Module):
    """(B, T, D) rows of which some columns are class probabilities (another model's, e.g. the
    facial extractor's expression classifier) -> (B, C) log-priors, one per output logit: logit c
    takes the summed probabilities of its columns `groups[c]` (none: no prior), averaged over the
    rows that count, normalised within its head (`head_sizes`) and log-centred there; 0 for a
    sample without such a row. Its inputs are z-normalised, so it keeps the normalisation of its
    columns (`set_normalization`, saved as buffers) to read the raw values. Rows that count: real,
    the optional presence column > 0.5, and the probability columns not all exactly 0 after
    normalisation (a column-dropout augmentation removed them)."""

    def __init__(self, groups: tuple[tuple[int, ...], ...], head_sizes: tuple[int, ...], presence: int = -1,
                 floor: float = 1e-4) -> None:
        super().__init__()
        columns = sorted({c for group in groups for c in group})
        self.num_columns, self.head_sizes, self.has_presence, self.floor = len(columns), tuple(head_sizes), presence >= 0, floor
        membership = torch.zeros(len(columns), len(groups))  # column -> the logits whose class it is part of
        for c, group in enumerate(groups):
            for column in group:
                membership[columns.index(column), c] = 1.0
        self.register_buffer("index", torch.tensor(columns + [presence] * self.has_presence), persistent=False)
        self.register_buffer("membership", membership, persistent=False)
        self.register_buffer("known", (membership.sum(0) > 0).float(), persistent=False)  # logits with a prior
        self.register_buffer("mean", torch.zeros(len(self.index)))
        self.register_buffer("std", torch.ones(len(self.index)))

    def set_normalization(self, mean, std) -> None:
        """The (D,) per-column mean and std the inputs were z-normalised with."""
        index = self.index.cpu()
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32)[index])
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32)[index])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = x[..., self.index].float()
        raw = z * self.std + self.mean
        rows = mask & (z[..., :self.num_columns] != 0).any(-1)
        if self.has_presence:
            rows = rows & (raw[..., self.num_columns] > 0.5)
        p = masked_mean(raw[..., :self.num_columns].clamp(min=0), rows) @ self.membership  # (B, C)
        out = []
        for p_h, known_h in zip(torch.split(p, self.head_sizes, -1), torch.split(self.known, self.head_sizes)):
            total = p_h.sum(-1, keepdim=True)
            log_p = torch.log(p_h / total.clamp(min=1e-6) + self.floor)
            centred = (log_p - (log_p * known_h).sum(-1, keepdim=True) / known_h.sum().clamp(min=1)) * known_h
            out.append(centred * (total > 1e-3))
        return torch.cat(out, -1).to(x.dtype)


def last_valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, D): each sample's last real row (prefix masks); zeros when it has none."""
    lengths = mask.sum(1)
    rows = x[torch.arange(x.shape[0], device=x.device), (lengths - 1).clamp(min=0)]
    return rows * (lengths > 0).unsqueeze(-1).to(x.dtype)


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the padded rows so a convolution sees the same zeros as its own edge padding."""
    return x * mask.unsqueeze(-1).to(x.dtype)


# ------------------------------------------------------------------------ positional encodings


def sinusoidal_positions(length: int, dim: int, *, device=None, dtype=None) -> torch.Tensor:
    """(length, dim) sine/cosine table of Vaswani et al.; computed in float32, returned in dtype."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table.to(dtype or torch.get_default_dtype())


def reference_positions(length: int, dim: int, *, device=None, dtype=None) -> torch.Tensor:
    """(length, dim) table of the MulT reference (fairseq/tensor2tensor): [sin | cos] halves side by
    side, frequencies 10000^(-i/(dim/2 - 1)), positions 1..length (its row 0 is the padding row);
    an odd dim gets a zero last column, as there. (dim < 4 divides by 1 where the reference
    divides by 0 and gives NaN.)"""
    half = dim // 2
    position = torch.arange(1, length + 1, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * (-math.log(10000.0) / max(half - 1, 1)))
    table = torch.cat([torch.sin(position * freq), torch.cos(position * freq)], dim=1)
    if dim % 2:
        table = torch.cat([table, table.new_zeros(length, 1)], dim=1)
    return table.to(dtype or torch.get_default_dtype())


class PositionalEncoding(nn.Module):
    """Adds a position code to (B, T, D): fixed sinusoids (any T) or a learned table (T <= max_len)."""

    def __init__(self, dim: int, *, kind: str = "sinusoidal", max_len: int = 1024):
        super().__init__()
        if kind not in ("sinusoidal", "learned"):
            raise ValueError(f"positional encoding must be 'sinusoidal' or 'learned', got {kind!r}")
        self.dim, self.kind, self.max_len = dim, kind, max_len
        self.table = nn.Embedding(max_len, dim) if kind == "learned" else None
        if self.table is not None:
            nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        if self.table is None:
            return x + sinusoidal_positions(length, self.dim, device=x.device, dtype=x.dtype)
        if length > self.max_len:
            raise ValueError(f"sequence of {length} rows is longer than the learned positional table ({self.max_len})")
        return x + self.table.weight[:length].to(x.dtype)


# --------------------------------------------------------------------------------- attention


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with key-padding masks. `need_weights=True` computes the
    maps explicitly and returns them (B, H, T_q, T_k). Otherwise: the explicit maps on CPU for
    small heads (`prefer_explicit`: faster there, at the memory of one kept map), else the fused
    kernel (F.scaled_dot_product_attention, no T x T tensor kept for backward). On CPU without
    attention dropout and outside autocast, explicit maps use `explicit_attention`'s written-out
    backward (`written_out_backward`)."""

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the model dimension ({dim})")
        self.num_heads, self.head_dim, self.dropout = num_heads, dim // num_heads, dropout
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor | None = None):
        """-> q, k, v each (B, H, T, head_dim); values from `key` unless `value` is given."""
        value = key if value is None else value
        return self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))

    def merge(self, heads: torch.Tensor) -> torch.Tensor:
        """(B, H, T, head_dim) -> output projection of the concatenated heads (B, T, D)."""
        b, _, t, _ = heads.shape
        return self.out_proj(heads.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))

    def forward(self, query, key, key_mask, *, value=None, need_weights: bool = False):
        q, k, v = self.project(query, key, value)
        return self.attend(q, k, v, key_mask, need_weights=need_weights)

    def attend(self, q, k, v, key_mask, *, need_weights: bool = False):
        p = self.dropout if self.training else 0.0
        if written_out_backward(q, p) and (need_weights or prefer_explicit(q, k.shape[2])):
            out, weights = explicit_attention(q, k, v, key_mask, mask_flags(key_mask), self.scale)
            return self.merge(out), weights if need_weights else None
        if need_weights:
            weights = key_softmax((q * self.scale) @ k.transpose(-1, -2), key_mask)
            return self.merge(F.dropout(weights, p, self.training) @ v), weights
        # the fused kernel gives NaN on a row with no real key: let such samples see their
        # first (padding) key, then zero their output
        has_key = key_mask.any(1)
        first = torch.arange(key_mask.shape[1], device=key_mask.device) == 0
        safe = key_mask | (~has_key[:, None] & first)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None, None, :], dropout_p=p)
        return self.merge(out * has_key[:, None, None, None].to(out.dtype)), None


class FeedForward(nn.Sequential):
    """Position-wise FFN: Linear -> activation -> dropout -> Linear."""

    def __init__(self, dim: int, hidden: int, *, dropout: float = 0.0, activation: str = "relu"):
        act = {"relu": nn.ReLU(), "gelu": nn.GELU()}[activation]
        super().__init__(nn.Linear(dim, hidden), act, nn.Dropout(dropout), nn.Linear(hidden, dim))


class AttentionBlock(nn.Module):
    """Pre-LN transformer block: attention of `x` over `source` (self-attention when source is
    None), then an FFN. `residual_from_norm=True` adds LN(x) instead of x to the attention
    output, as MFSA's eq. 3 and 8 write it; MulT adds x. `share_norm=True` normalises queries
    and keys with one LayerNorm (MulT). `source_value`: values from another tensor than the keys
    (MulT's keys and values carry separate embedding-dropout masks), same shape and mask."""

    def __init__(self, dim: int, num_heads: int, *, ffn_dim: int, attn_dropout: float = 0.0,
                 res_dropout: float = 0.0, ffn_dropout: float = 0.0, activation: str = "relu",
                 residual_from_norm: bool = False, share_norm: bool = False):
        super().__init__()
        self.residual_from_norm = residual_from_norm
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = None if share_norm else nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout=attn_dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout=ffn_dropout, activation=activation)
        self.drop = nn.Dropout(res_dropout)

    def forward(self, x, mask=None, source=None, source_mask=None, *, source_value=None, need_weights: bool = False):
        h = self.norm_q(x)
        value = None
        if source is None:
            kv, key_mask = h, mask
        else:
            norm = self.norm_kv or self.norm_q
            kv, key_mask = norm(source), source_mask
            value = None if source_value is None else norm(source_value)
        out, weights = self.attn(h, kv, key_mask, value=value, need_weights=need_weights)
        x = (h if self.residual_from_norm else x) + self.drop(out)
        return x + self.drop(self.ffn(self.norm_ffn(x))), weights


# -------------------------------------------------------------------------------------- LSTM


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor,
             full: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed (batch_first) LSTM over each sample's real rows only.
    Returns outputs (B, T, dirs * H), zero on padding, and the last layer's final hidden state
    (B, dirs, H) (forward: after the last real row; backward: after the first); both zero for a
    sample with no real row. A batch without any padding runs the LSTM unpacked: the same
    recurrence without the pack/sort/unpack passes (`full`: mask.all(), when the caller knows it)."""
    dirs = 2 if lstm.bidirectional else 1
    if full is None:
        full = bool(mask.all())
    if x.shape[1] > 0 and full:  # no padding anywhere: the same recurrence without packing
        out, (hidden, _) = lstm(x)
        return out, hidden[-dirs:].transpose(0, 1)
    lengths = mask.sum(1)
    # pack needs length >= 1: an empty sample runs over one padding row, then is zeroed
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    out, (hidden, _) = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    hidden = hidden[-dirs:].transpose(0, 1) * (lengths > 0)[:, None, None].to(hidden.dtype)
    return out * mask.unsqueeze(-1).to(out.dtype), hidden


# ------------------------------------------------------------------------ gradient reversal


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by -scale backward (Ganin & Lempitsky 2015)."""
    return _GradReverse.apply(x, scale)
