"""The attention of one PSA layer (MFSA eq. 2) as one autograd function with a written-out backward.

    logits = q k^T                    (q arrives scaled by 1/sqrt(head_dim))
    layer 1:      A = softmax(logits)                            carried on: logits
    layer l > 1:  mixed = (1 - mu) softmax(logits) + mu GELU(P)  (P: the chain conv's prediction)
                  A = softmax(mixed)                             carried on: mixed
    out = A v

with key-padding masks as `key_softmax` applies them and the carried map zeroed on padded rows
and columns (what the next layer's 3x3 conv must see). `PSALayer` composes the same maths from
autograd ops when this function does not apply (`written_out_backward`: CUDA, attention dropout
while training, autocast); the tests hold the two to the same outputs and gradients.

Without a prediction and without a carried map it is plain attention: `explicit_attention`, which
`MultiHeadAttention` takes instead of the fused kernel on CPU for small heads (see
`prefer_explicit`), for every model of the zoo.

Why a function of its own: at T = 500 every (B, K, T, T) map is 128 MiB and the backward of the
composed ops allocates a fresh one for each intermediate gradient (lerp's two scaled copies, the
sum of the carried map's two gradients, ...). Here the backward scales and accumulates in place,
and the skinny batched matmuls (T x T by T x head_dim) run in the orientation that is about 2x
faster on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def _times_tt(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """maps (..., T, S) @ x (..., S, D), computed as (x^T maps^T)^T: the same product, the
    orientation whose batched GEMM is about twice as fast for small D on CPU."""
    return (x.mT @ maps.mT).mT


def _mask_fill(maps: torch.Tensor, key_mask: torch.Tensor, flags) -> torch.Tensor:
    """In place: padded keys get the dtype's minimum (softmax gives them 0)."""
    if not flags[0]:
        maps.masked_fill_(~key_mask[:, None, None, :], torch.finfo(maps.dtype).min)
    return maps


def _zero_empty(maps: torch.Tensor, key_mask: torch.Tensor, flags) -> torch.Tensor:
    """In place: a sample without any real key gets an all-zero map (as key_softmax)."""
    if not flags[1]:
        maps.mul_(key_mask.any(1)[:, None, None, None].to(maps.dtype))
    return maps


def zero_padded_pairs(maps: torch.Tensor, key_mask: torch.Tensor, flags) -> torch.Tensor:
    """maps (B, K, T, T) with padded rows and columns zeroed (a new tensor; `maps` itself when
    nothing is padded): what the next layer's 3x3 conv must see, as for a shorter sample."""
    if flags[0]:
        return maps
    return maps.masked_fill(~(key_mask[:, None, :, None] & key_mask[:, None, None, :]), 0.0)


# the fused CPU kernel's blocks multiply (rows x head_dim) by (head_dim x cols): forward + backward
# at MOSI lengths (50-925 keys, batch 16, 2 cores) the explicit maps measured 1.4-2.4x faster at
# head_dim 5 (MFSA: 40 / 8 heads), 1.0-1.5x at 4-8 (MulT's), even or slower at 12 and above
_EXPLICIT_MAX_HEAD_DIM = 8
_EXPLICIT_MAX_MAP = 2**27  # elements of one (B, H, T_q, T_k) map: 512 MiB in float32


def written_out_backward(q: torch.Tensor, dropout: float) -> bool:
    """Whether PredictiveAttention applies: CPU (where it was measured and tested; CUDA keeps
    the composed ops its GPU checks ran), no attention dropout, no autocast."""
    return q.device.type == "cpu" and dropout == 0.0 and not torch.is_autocast_enabled("cpu")


def prefer_explicit(q: torch.Tensor, keys: int) -> bool:
    """Whether `explicit_attention` beats the fused kernel for q (B, H, T_q, head_dim) over
    `keys` keys: on CPU, small heads, a map that fits the size budget."""
    b, h, t, head_dim = q.shape
    return q.device.type == "cpu" and head_dim <= _EXPLICIT_MAX_HEAD_DIM and b * h * t * keys <= _EXPLICIT_MAX_MAP


def explicit_attention(q, k, v, key_mask, flags, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (softmax(scale q k^T) v over the real keys, the map without gradient); flags:
    mask_flags(key_mask). The backward of PredictiveAttention; no attention dropout."""
    out, _, attention = PredictiveAttention.apply(q * scale, k, v, None, key_mask, 0.0, False, flags)
    return out, attention


class PredictiveAttention(torch.autograd.Function):
    """apply(q, k, v, predicted, key_mask, mu, pass_on, flags) -> (out, carried, attention).
    predicted: GELU's input (B, K, T, T), or None in the first layer; flags: mask_flags(key_mask).
    carried is None unless pass_on; attention (the final map) carries no gradient."""

    @staticmethod
    def forward(ctx, q, k, v, predicted, key_mask, mu, pass_on, flags):
        logits = q @ k.mT
        carried = None
        if predicted is None:
            if pass_on:
                carried = zero_padded_pairs(logits, key_mask, flags)
            # the fill may not touch a carried `logits` (only happens without padding, when it is a no-op)
            attention = torch.softmax(_mask_fill(logits, key_mask, flags), -1)
            first = None
        else:
            predicted = predicted.contiguous()
            first = _zero_empty(torch.softmax(_mask_fill(logits, key_mask, flags), -1), key_mask, flags)
            del logits
            mixed = F.gelu(predicted)
            torch.lerp(first, mixed, mu, out=mixed)
            if pass_on:
                carried = zero_padded_pairs(mixed, key_mask, flags)
            if flags[0]:
                attention = torch.softmax(mixed, -1)
            else:  # `mixed` is not carried on here (carried is its zeroed copy): fill it in place
                attention = torch.softmax(_mask_fill(mixed, key_mask, flags), -1)
            del mixed
        _zero_empty(attention, key_mask, flags)
        out = _times_tt(attention, v)
        ctx.save_for_backward(q, k, v, attention, first, predicted, key_mask)
        ctx.mu, ctx.flags = mu, flags
        ctx.mark_non_differentiable(attention)
        ctx.set_materialize_grads(False)  # no (B, K, T, T) zeros for the map nobody differentiates
        return out, carried, attention

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_carried, _grad_attention):
        q, k, v, attention, first, predicted, key_mask = ctx.saved_tensors
        mu, flags = ctx.mu, ctx.flags
        grad_v = _times_tt(attention.mT, grad_out)
        grad = torch._softmax_backward_data(grad_out @ v.mT, attention, -1, attention.dtype)
        if grad_carried is not None:  # the carried map's gradient, zero where it was zeroed
            grad.add_(zero_padded_pairs(grad_carried, key_mask, flags))
        grad_predicted = None
        if predicted is not None:  # grad is d mixed here
            grad_predicted = torch.ops.aten.gelu_backward(grad, predicted).mul_(mu)
            grad = torch._softmax_backward_data(grad.mul_(1.0 - mu), first, -1, first.dtype)
        grad_q = _times_tt(grad, k)
        grad_k = _times_tt(grad.mT, q)
        return grad_q, grad_k, grad_v, grad_predicted, None, None, None, None
