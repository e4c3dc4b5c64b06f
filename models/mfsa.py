"""MFSA: Multimodal Fusion with modality-Specific and -Agnostic representations (Yang et al.,
ACM MM 2022, section 3), for unaligned text/audio/vision sequences, with key-padding masks
throughout.

Pipeline per modality m (text, audio, vision; every per-modality axis uses that order):
  uni-modal extractor (eq. 1): Conv1d(d_m -> d) -> positional encoding -> packed Bi-LSTM, the
    two directions summed to d  ->  Z_m
  specific branch: M PSA layers (eq. 2-4), each followed by the weighted attention layer
    (eq. 5-6)  ->  Z_m^s  ->  S_m(masked mean of Z_m^s)  ->  h_m^s in R^{d_h}
  agnostic branch: N HCA layers of MRUs (eq. 7-10)  ->  Z_m^a  ->  A(masked mean)  ->  h_m^a
  losses: separation (eq. 13), double-discriminator adversarial (eq. 14-15), task; eq. 16
  fusion: the six h vectors as a length-6 token sequence (no modality or position embedding)
    -> one TransformerEncoderLayer (post-LN, ReLU FFN of fusion_ffn) -> flatten
    -> Linear-ReLU-Dropout-Linear head.

Points where the paper is silent, ambiguous or infeasible (quoted by the README):
- PSA prediction chain: the chain carries the pre-softmax map of each layer. Layer 1 passes its
  dot-product logits A_cur; layer l > 1 computes A = softmax(mu * GELU(Conv2d_3x3(A_prev)) +
  (1 - mu) * softmax(A_cur)) literally (eq. 2) and passes the argument of that outer softmax on.
  Padded rows/columns of the carried map are zeroed so the 3x3 conv sees the same zeros as its
  own edge padding (padding invariance). `chain_groups` > 1 makes the conv grouped (= heads:
  depthwise), a cheaper option; the paper's conv is full (K in, K out, groups = 1).
- Weighted attention layer: eq. 5 flattens Z_m^s to T_m*d and uses W_m in R^{T_m d x T_m d}
  (4e8 parameters for vision at T = 500, and tied to one fixed length). Factorised here:
  gamma_m = p_m^T tanh(W_m s_m + b_m) with s_m the masked mean of Z_m^s over time (d),
  W_m in R^{wal_hidden x d}, p_m in R^{wal_hidden}; psi = softmax over the modalities present in
  the sample (an absent modality gets weight 0); Z_m^s <- psi_m * Z_m^s. Keeps the idea: one
  learned score per modality from its whole sequence, softmax across modalities.
- Sequence -> vector for the encoders S_m and A: masked mean over time, then Linear-GELU-Linear.
- Separation loss (eq. 13), `sep_loss_form`: "per_sample" (default, the paper's pairing: each
  sample's h_m^s against its own h_m^a) with both vectors L2-normalised and a mean over samples
  instead of a sum: L = sum_m mean_i cos^2(h_m,i^s, h_m,i^a), 0 iff every sample's pair is
  orthogonal, at most 1 per modality, independent of batch size, d_h and the norms of h.
  "batch" (DSN): rows L2-normalised, per modality ||H_s^T H_a||_F^2 / n^2, summed: 0 iff every
  specific feature is orthogonal, across the batch, to every agnostic feature (what the model
  used before the option existed; saved configs without the field read as "batch").
- Table 4 "w/o Modality-Specific" / "w/o Modality-Agnostic" (`use_specific` / `use_agnostic`
  False): "using only either representation in the feature fusion phase" (section 5.2). The
  left-out triple is not fused (3 tokens, a head over 3 d_h); its branch, encoders, L_sep and
  adversarial term still train, as the regularisation rows of the table are separate ablations.
  `drop_specific_branch` / `drop_agnostic_branch` remove the whole branch and its losses (what
  use_* = False did before; saved configs of that time are read so, see upgrade_saved_config).
- Importance discriminator: w_m = 1 - D_i(h_m^a)[m] with D_i fed h^a.detach(): L_agn trains D_i
  through w (lowering L_agn = raising D_i's likelihood of the true modality, i.e. D_i learns to
  recognise modalities, the "converged" D_i the paper assumes) but never pushes h^a itself.
  D_i is nn.Linear(d_h, 3) with a bias (the paper writes softmax(h^T W_i), no bias).
- PSA and MRU feed-forward: Linear(d, ffn_mult * d = 4d)-GELU-Linear (the paper: "position-wise
  feed-forward network", no width or activation).
- Modality discriminator D_m: Linear-GELU-Linear (d_h -> 3), shared by both branches; the
  agnostic input passes a gradient reversal layer (scale grl_lambda).
- Adversarial and separation terms skip samples whose modality has no real row.
- Attention: multi-head with an output projection (as in Vaswani et al.), scaled by
  1/sqrt(d/heads). MRU and PSA residuals add LN(Z) as eq. 3/8 write them. The paper gives no
  dropout rates: attention-map dropout defaults to 0 (as MulT for audio and vision; at T = 500
  its random masks were a quarter of a CPU training step), residual/FFN/embedding/head 0.1.
- Cost (same maths, cheaper passes): on CPU, the attention of a PSA layer that builds its maps
  (chain, carried map or returned maps) is one autograd function with a written-out backward
  (models/predictive_attention.py: in-place scaling and accumulation, no zero-filled gradients
  for the returned map, the faster orientation of the T x T by T x head_dim matmuls). On CUDA,
  under attention dropout or under autocast the same maths runs from autograd ops
  (`PSALayer._composed`; the path the session-1 GPU checks ran).
  The chain conv runs in channels-last layout (oneDNN, ~3x faster forward + backward on CPU),
  the mixing is one lerp, mask fills and zeroing over the T x T maps are skipped when they would
  change nothing. Plain attention (MRUs, PSA layers without maps) takes the explicit maps on CPU
  when heads are small (head_dim <= 8: 40 / 8 = 5 here; the fused CPU kernel measured 1.4-2.4x
  slower) and the fused SDPA kernel otherwise; this lives in the shared MultiHeadAttention, so
  MulT gets it too. A modality without padding in the batch runs its
  Bi-LSTM unpacked (same recurrence; on CUDA the packed, unsorted path cost ~90 ms of a 280 ms
  H200 step). The mask facts the layers branch on (all rows real, every sample non-empty) are
  read once per forward (one host sync) instead of in every layer. `checkpoint_psa=True`
  recomputes each PSA layer in backward (same outputs and gradients, ~40% less peak memory on
  an H200 at batch 16, ~40% slower step); off by default.
- HCA eq. 10: the coarse MRU takes the mixed output as its target, the fine MRUs take the
  coarse output (the paper writes the coarse output on both sides). Layer l > 1 reads the
  previous HCA layer's outputs as sources and targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.base import (MODALITIES, ModelConfig, ModelOutput, check, check_kernels, check_positive, check_probability,
                         compute_task_loss, masked_task_loss, shape_prediction)
from models.layers import (AttentionBlock, FeedForward, MultiHeadAttention, PositionalEncoding, ProbabilityPrior,
                           ensure_nonempty, grad_reverse, key_softmax, mask_flags, masked_mean, masked_softmax, masks_flags,
                           PresentStandardizer, run_lstm, zero_padding)
from models.predictive_attention import PredictiveAttention, written_out_backward, zero_padded_pairs

# section 4.2 (CMU-MOSI, CMU-MOSEI, IEMOCAP); dims are the MulT-pickle feature sizes
_PRESETS = {  # their batch size, epochs and lr are training settings: mfsa_pipe/training/settings.py
    "mosi": dict(dims=(300, 5, 20), task="regression", num_heads=8, mu=0.25, alpha=1e-2, beta=3e-2),
    "mosei": dict(dims=(300, 74, 35), task="regression", num_heads=10, mu=0.15, alpha=3e-2, beta=5e-2),
    "iemocap": dict(dims=(300, 74, 35), task="multilabel", num_labels=4, num_heads=8, mu=0.2, alpha=1e-2, beta=2e-2),
}

_SWITCHES = ("use_sep_loss", "use_adv_loss", "use_specific", "use_agnostic", "use_psa", "use_prediction_chain",
             "use_wal", "use_hca", "use_mixed_mru", "use_coarse_mru", "use_fine_mru")
SEP_LOSS_FORMS = ("per_sample", "batch")


def upgrade_saved_config(data: dict) -> dict:
    """A config dict saved before `sep_loss_form` existed, as the model it built then: the batch
    separation loss, and `use_specific` / `use_agnostic` = False removing the whole branch (now
    `drop_*_branch`). A saved dict is recognised by carrying all eleven Table 4 switches (every
    `to_dict()` has); partial dicts (user settings) keep today's defaults."""
    if "sep_loss_form" in data or not set(_SWITCHES) <= set(data):
        return data
    return {**data, "sep_loss_form": "batch", "drop_specific_branch": not data["use_specific"],
            "drop_agnostic_branch": not data["use_agnostic"]}


@dataclass
class MFSAConfig(ModelConfig):
    PRESETS = _PRESETS  # section 4.2: "mosi", "mosei", "iemocap" (d=40, d_h=128, M=5, N=2)

    d: int = 40  # hidden size of every sequence representation
    d_h: int = 128  # size of h^s, h^a
    num_heads: int = 8  # K, in PSA and MRUs
    psa_layers: int = 5  # M
    hca_layers: int = 2  # N
    mu: float = 0.25  # weight of the predicted attention map (eq. 2)
    alpha: float = 1e-2  # separation loss weight (eq. 16)
    beta: float = 3e-2  # adversarial losses weight (eq. 16)
    conv_kernels: tuple[int, int, int] = (3, 3, 3)  # uni-modal Conv1d kernel per modality (odd)
    positional: str = "sinusoidal"  # or "learned" (then T <= max_len)
    max_len: int = 1024
    ffn_mult: int = 4  # FFN hidden = ffn_mult * d
    dropout: float = 0.1  # residual and FFN dropout
    attn_dropout: float = 0.0  # on attention maps; the paper gives none (MulT: 0 for audio/vision)
    embed_dropout: float = 0.1  # after the positional encoding
    out_dropout: float = 0.1  # in the encoders and the head
    chain_groups: int = 1  # groups of the prediction-chain Conv2d: 1 = paper, num_heads = depthwise
    wal_hidden: int = 40
    fusion_heads: int = 8
    fusion_ffn: int = 256
    grl_lambda: float = 1.0
    return_attention: bool = True  # keep "psa_attention" / "mru_attention" in extras
    # gradient checkpointing of each PSA layer while training: its (B, K, T, T) maps are not kept for
    # backward but recomputed (same outputs and gradients, RNG state preserved for dropout); trades
    # about one extra PSA forward per step for most of the training step's peak memory
    checkpoint_psa: bool = False
    # eq. 13: "per_sample" (the paper: each sample's h^s against its own h^a) or "batch" (DSN:
    # specific features against agnostic features across the batch); see separation_loss
    sep_loss_form: str = "per_sample"
    # Table 4 ablations. use_specific / use_agnostic: that representation enters the fusion phase
    # ("w/o Modality-Specific" / "-Agnostic"; its branch and losses still train)
    use_sep_loss: bool = True
    use_adv_loss: bool = True
    use_specific: bool = True
    use_agnostic: bool = True
    use_psa: bool = True
    use_prediction_chain: bool = True
    use_wal: bool = True
    use_hca: bool = True
    use_mixed_mru: bool = True
    use_coarse_mru: bool = True
    use_fine_mru: bool = True
    # remove a whole branch (specific: PSA, WAL, S_m, L_sep, L_spe; agnostic: HCA, A, L_sep, L_agn,
    # D_i); needs use_specific / use_agnostic off. What use_* = False meant before sep_loss_form.
    drop_specific_branch: bool = False
    drop_agnostic_branch: bool = False
    # not in the paper: add to the head's output a linear read-out of each present modality's
    # masked mean and standard deviation of its input rows (zero for an absent modality). On a few
    # hundred clips the pooled statistics carry most of what can be learned (a logistic regression
    # on them beats the attention stack); this lets one model hold both (the default model uses it)
    pooled_logits: bool = False
    # per modality (text, audio, vision): the read-out also takes the masked max and min over time.
    # For a sentence's word vectors the extremes carry what a mean washes out (one strong word):
    # a logistic regression on MELD train's GloVe statistics, MELD dev weighted F1 0.469 -> 0.494
    pooled_extremes: tuple[bool, bool, bool] = (False, False, False)
    # per modality: the pooled statistics standardised per feature before the read-out (running
    # statistics over the samples where the modality is present), as a logistic regression's
    # StandardScaler
    pooled_standardize: tuple[bool, bool, bool] = (False, False, False)
    # dropout on the pooled statistics before the read-out; None: out_dropout
    pooled_dropout: float | None = None
    # weight of an auxiliary task loss on the logits of the read-outs of `pooled_aux_modalities`
    # alone (summed; over the samples that have one of them), so that they learn as a logistic
    # regression would instead of only the residual the attention stack leaves them
    pooled_aux_weight: float = 0.0
    pooled_aux_modalities: tuple[bool, bool, bool] = (True, True, True)
    # the auxiliary loss only over samples that have no modality outside pooled_aux_modalities: a
    # sample whose label belongs to another modality (a clip paired with a sentence of another
    # emotion, labelled with the sentence's) does not teach the clip's read-outs that label
    pooled_aux_exclusive: bool = False
    # not in the paper: a fixed prior from another model's class probabilities among the vision
    # columns (the facial extractor's expression classifier): each logit whose class has columns in
    # face_prior_columns (one list of vision columns per output logit, all heads in order; their
    # probabilities summed, [] = no prior) takes face_prior_weight * the centred log of their mean over
    # the face rows (face_prior_presence: the column flagging a face; -1: every real row). Faces seen in
    # training can be few (the default model's: 8 speakers); the prior carries what a classifier
    # trained on many faces knows to faces unlike them. face_prior_in_training off: the model is trained
    # without it and it is added in evaluation (calibration and every measurement see it): trained with
    # it, the model learns to cancel it where it errs on the training faces, and on other faces too.
    # face_prior_weight: one weight for every head, or one per head (the heads' order)
    face_prior_weight: float | tuple[float, ...] = 0.0
    face_prior_columns: tuple[tuple[int, ...], ...] = ()
    face_prior_presence: int = -1
    face_prior_in_training: bool = True
    # the prior only where the face is all there is (no words, no voice): with a voice beside it the
    # read-outs trained on these faces did better in the default model's cross-validation
    face_prior_face_only: bool = False
    # not in the paper: a decision bias added (in evaluation only) to the logits of every sample with
    # words, one value per output logit (all heads in order; () = none). Fitted after training on
    # sentences (training.evaluation.fit_text_logit_bias): a model trained on a mix of sources reads
    # the words with the mix's class prior (the default model's said neutral for 63 % of MELD dev's
    # sentences, 42 % of them are, and sad for 1 %, 10 % are)
    text_logit_bias: tuple[float, ...] = ()
    # not in the paper: in evaluation only, add this weight times the logits the model gives each
    # present modality fed alone (the others empty) to those of the whole sample, where two or more
    # are present: a product of the fused expert and the single-modality ones (log-probabilities add;
    # a softmax ignores each view's constant). The fused logits alone let one weak, out-of-domain
    # modality outvote two confident ones (a neutral English face and words, a voice unlike the 8
    # training voices: fear). The views reuse the sample's extractor outputs and share one fusion pass.
    # One weight for every head, or one per head (the heads' order)
    alone_views_weight: float | tuple[float, ...] = 0.0

    FITTED_AFTER_TRAINING: ClassVar[tuple[str, ...]] = ("text_logit_bias",)

    @classmethod
    def from_dict(cls, data):
        return super().from_dict(upgrade_saved_config(data))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "d", "d_h", "num_heads", "psa_layers", "hca_layers", "max_len", "ffn_mult",
                       "chain_groups", "wal_hidden", "fusion_heads", "fusion_ffn")
        check(self.d % self.num_heads == 0, f"num_heads ({self.num_heads}) must divide d ({self.d})")
        check(self.d_h % self.fusion_heads == 0, f"fusion_heads ({self.fusion_heads}) must divide d_h ({self.d_h})")
        check(self.num_heads % self.chain_groups == 0,
              f"chain_groups ({self.chain_groups}) must divide num_heads ({self.num_heads})")
        check(isinstance(self.mu, (int, float)) and 0.0 <= self.mu <= 1.0, f"mu must be in [0, 1], got {self.mu!r}")
        for name in ("alpha", "beta", "grl_lambda"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and value >= 0, f"{name} must be >= 0, got {value!r}")
        for name in ("dropout", "attn_dropout", "embed_dropout", "out_dropout"):
            check_probability(name, getattr(self, name))
        check_kernels(self)
        check(self.positional in ("sinusoidal", "learned"),
              f"positional must be 'sinusoidal' or 'learned', got {self.positional!r}")
        check(self.sep_loss_form in SEP_LOSS_FORMS,
              f"sep_loss_form must be one of {SEP_LOSS_FORMS}, got {self.sep_loss_form!r}")
        for name in _SWITCHES + ("return_attention", "checkpoint_psa", "drop_specific_branch", "drop_agnostic_branch",
                                 "pooled_logits", "pooled_aux_exclusive"):
            check(isinstance(getattr(self, name), bool), f"{name} must be a bool, got {getattr(self, name)!r}")
        if isinstance(self.pooled_standardize, bool):  # one switch for all three modalities
            self.pooled_standardize = (self.pooled_standardize,) * 3
        for name in ("pooled_extremes", "pooled_standardize", "pooled_aux_modalities"):
            value = getattr(self, name)
            check(isinstance(value, tuple) and len(value) == 3 and all(isinstance(x, bool) for x in value),
                  f"{name} must be three bools (text, audio, vision), got {value!r}")
        for name in ("pooled_extremes", "pooled_standardize"):
            check(self.pooled_logits or not any(getattr(self, name)), f"{name} needs pooled_logits on")
        check(isinstance(self.pooled_aux_weight, (int, float)) and self.pooled_aux_weight >= 0,
              f"pooled_aux_weight must be >= 0, got {self.pooled_aux_weight!r}")
        check(self.pooled_logits or not self.pooled_aux_weight, "pooled_aux_weight needs pooled_logits on")
        check(not self.pooled_aux_weight or any(self.pooled_aux_modalities),
              "pooled_aux_weight needs at least one of pooled_aux_modalities on")
        if self.pooled_dropout is not None:
            check_probability("pooled_dropout", self.pooled_dropout)
        self._check_face_prior()
        self._check_text_logit_bias()
        self._check_alone_views_weight()
        check(self.use_specific or self.use_agnostic,
              "use_specific and use_agnostic are both off: the model would have no representation to fuse")
        for branch in ("specific", "agnostic"):
            check(not (getattr(self, f"drop_{branch}_branch") and getattr(self, f"use_{branch}")),
                  f"drop_{branch}_branch removes the branch, so its representation cannot be fused: "
                  f"set use_{branch} to false too")
        check(not self.use_hca or self.use_mixed_mru or self.use_coarse_mru or self.use_fine_mru,
              "use_hca is on but every MRU (mixed, coarse, fine) is off; turn use_hca off instead")

    @property
    def face_prior_weights(self) -> tuple[float, ...]:
        """face_prior_weight per head (one head unless multihead)."""
        return _per_head(self.face_prior_weight, len(self.output_groups))

    @property
    def alone_views_weights(self) -> tuple[float, ...]:
        """alone_views_weight per head (one head unless multihead)."""
        return _per_head(self.alone_views_weight, len(self.output_groups))

    def _check_weight_per_head(self, name: str, *, finite: bool = False) -> tuple:
        """A weight field given once or per head: a JSON list read back as a tuple; each a number >= 0
        (finite: and not inf). -> its weights as given (one, or one per head)."""
        if isinstance(getattr(self, name), list):  # as a checkpoint's JSON stores a tuple
            setattr(self, name, tuple(getattr(self, name)))
        value = getattr(self, name)
        weights = value if isinstance(value, tuple) else (value,)
        check(bool(weights) and all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0
                                    and (not finite or math.isfinite(w)) for w in weights),
              f"{name} must be a number >= 0 or one per head, got {value!r}")
        return weights

    def _check_alone_views_weight(self) -> None:
        weights, heads = self._check_weight_per_head("alone_views_weight", finite=True), len(self.output_groups)
        check(not isinstance(self.alone_views_weight, tuple) or len(weights) == heads,
              f"alone_views_weight gives {len(weights)} weights for {heads} head(s)")

    def _check_face_prior(self) -> None:
        self.face_prior_columns = tuple(tuple(group) for group in self.face_prior_columns)
        weights = self._check_weight_per_head("face_prior_weight")
        for name in ("face_prior_in_training", "face_prior_face_only"):
            check(isinstance(getattr(self, name), bool), f"{name} must be a bool, got {getattr(self, name)!r}")
        if not any(weights):
            return
        if isinstance(self.face_prior_weight, tuple) and self.task in ("classification", "multihead"):
            heads = len(self.output_groups)
            check(len(weights) == heads, f"face_prior_weight gives {len(weights)} weights for {heads} head(s)")
        check(self.task in ("classification", "multihead"),
              f"face_prior_weight needs a classification or multihead task, not {self.task!r}")
        vision, groups = self.dims[2], self.face_prior_columns
        check(len(groups) == self.output_size and any(groups)
              and all(isinstance(c, int) and 0 <= c < vision for group in groups for c in group),
              f"face_prior_columns must give, for each of the {self.output_size} output logits, a list of vision "
              f"columns (0..{vision - 1}; [] for none), at least one not empty; got {groups!r}")
        check(isinstance(self.face_prior_presence, int) and -1 <= self.face_prior_presence < vision,
              f"face_prior_presence must be a vision column (0..{vision - 1}) or -1, got {self.face_prior_presence!r}")

    def _check_text_logit_bias(self) -> None:
        self.text_logit_bias = tuple(self.text_logit_bias)
        if not self.text_logit_bias:
            return
        check(self.task in ("classification", "multihead"),
              f"text_logit_bias needs a classification or multihead task, not {self.task!r}")
        check(len(self.text_logit_bias) == self.output_size
              and all(isinstance(v, (int, float)) and math.isfinite(v) for v in self.text_logit_bias),
              f"text_logit_bias must give one finite number per output logit ({self.output_size}), "
              f"got {self.text_logit_bias!r}")


def _per_head(weight: float | tuple[float, ...], heads: int) -> tuple[float, ...]:
    """A config weight given once or per head, as one float per head."""
    return tuple(float(w) for w in weight) if isinstance(weight, tuple) else (float(weight),) * heads


# ----------------------------------------------------------------------------------- modules


class UnimodalExtractor(nn.Module):
    """eq. 1: Conv1d to d, positional encoding, Bi-LSTM over real rows; directions summed."""

    def __init__(self, in_dim: int, kernel: int, cfg: MFSAConfig):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, cfg.d, kernel, padding=kernel // 2, bias=False)
        self.pos = PositionalEncoding(cfg.d, kind=cfg.positional, max_len=cfg.max_len)
        self.drop = nn.Dropout(cfg.embed_dropout)
        self.lstm = nn.LSTM(cfg.d, cfg.d, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, flags: tuple[bool, bool] | None = None) -> torch.Tensor:
        x = self.conv(zero_padding(x, mask).transpose(1, 2)).transpose(1, 2)
        out, _ = run_lstm(self.lstm, self.drop(self.pos(x)), mask, None if flags is None else flags[0])
        forward, backward = out.chunk(2, dim=-1)
        return forward + backward


class PSALayer(nn.Module):
    """eq. 2-4: pre-LN self-attention whose map mixes in a conv prediction from the previous
    layer's map (when `predictive`), residual from LN(Z), then a pre-LN FFN."""

    def __init__(self, cfg: MFSAConfig, *, predictive: bool):
        super().__init__()
        self.mu = cfg.mu
        self.norm = nn.LayerNorm(cfg.d)
        self.attn = MultiHeadAttention(cfg.d, cfg.num_heads, dropout=cfg.attn_dropout)
        self.chain = (nn.Conv2d(cfg.num_heads, cfg.num_heads, 3, padding=1, groups=cfg.chain_groups)
                      if predictive else None)
        self.norm_ffn = nn.LayerNorm(cfg.d)
        self.ffn = FeedForward(cfg.d, cfg.ffn_mult * cfg.d, dropout=cfg.dropout, activation="gelu")
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, z, mask, previous=None, *, pass_on: bool = False, need_weights: bool = False, flags=None):
        """-> (Z^s, attention map (B, K, T, T) or None, map for the next layer's chain or None).
        flags: mask_flags(mask), computed once per forward by MFSA (None: computed here)."""
        h = self.norm(z)
        q, k, v = self.attn.project(h, h)
        chained = self.chain is not None and previous is not None
        if not chained and not pass_on and not need_weights:  # plain attention (attend picks the kernel)
            out, attention, carried = self.attn.attend(q, k, v, mask)[0], None, None
        else:
            flags = flags if flags is not None else mask_flags(mask)
            # channels-last: the same conv, ~3x faster fwd+bwd on CPU (oneDNN) than NCHW
            predicted = self.chain(previous.contiguous(memory_format=torch.channels_last)) if chained else None
            if written_out_backward(q, self.attn.dropout if self.training else 0.0):
                heads, carried, attention = PredictiveAttention.apply(q * self.attn.scale, k, v, predicted, mask,
                                                                       self.mu, pass_on, flags)
            else:  # the same maths from autograd ops (CUDA, attention dropout, autocast)
                heads, carried, attention = self._composed(q, k, v, predicted, mask, pass_on, flags)
            out = self.attn.merge(heads)
        z = h + self.drop(out)  # eq. 3: the residual is LN(Z)
        return z + self.drop(self.ffn(self.norm_ffn(z))), attention, carried

    def _composed(self, q, k, v, predicted, mask, pass_on, flags):
        logits = (q * self.attn.scale) @ k.transpose(-1, -2)
        attention = key_softmax(logits, mask, flags)
        if predicted is not None:  # eq. 2; lerp = one pass for the mixing
            # under autocast the conv runs in bf16/fp16 while the softmax stays fp32
            logits = torch.lerp(attention, F.gelu(predicted.contiguous()).to(attention.dtype), self.mu)
            attention = key_softmax(logits, mask, flags)
        carried = None
        if pass_on:  # zero padded rows and columns: the conv must see what a shorter sample sees
            carried = zero_padded_pairs(logits, mask, flags)
        return F.dropout(attention, self.attn.dropout, self.training) @ v, carried, attention


class WeightedAttentionLayer(nn.Module):
    """eq. 5-6, factorised (see the module docstring): psi = softmax_m p_m^T tanh(W_m mean(Z_m^s) + b_m)."""

    def __init__(self, cfg: MFSAConfig):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(cfg.d, cfg.wal_hidden) for _ in MODALITIES)
        self.score = nn.ModuleList(nn.Linear(cfg.wal_hidden, 1, bias=False) for _ in MODALITIES)

    def forward(self, zs, masks, present):
        gamma = torch.cat([score(torch.tanh(proj(masked_mean(z, m))))
                           for z, m, proj, score in zip(zs, masks, self.proj, self.score)], dim=1)
        psi = masked_softmax(gamma, present)
        return [z * psi[:, i, None, None] for i, z in enumerate(zs)], psi


class HCALayer(nn.Module):
    """eq. 7-10 for the three targets: mixed MRU over [L; A; V], coarse MRU over the other two
    (target: the mixed output), fine = sum of two single-source MRUs (target: the coarse output)."""

    def __init__(self, cfg: MFSAConfig):
        super().__init__()

        def mru():
            return AttentionBlock(cfg.d, cfg.num_heads, ffn_dim=cfg.ffn_mult * cfg.d, attn_dropout=cfg.attn_dropout,
                                  res_dropout=cfg.dropout, ffn_dropout=cfg.dropout, activation="gelu",
                                  residual_from_norm=True)

        self.mixed = nn.ModuleList(mru() for _ in MODALITIES) if cfg.use_mixed_mru else None
        self.coarse = nn.ModuleList(mru() for _ in MODALITIES) if cfg.use_coarse_mru else None
        self.fine = nn.ModuleList(nn.ModuleList((mru(), mru())) for _ in MODALITIES) if cfg.use_fine_mru else None

    def forward(self, zs, masks, *, need_weights: bool = False):
        everything, everything_mask = torch.cat(zs, 1), torch.cat(masks, 1)
        outs, maps = [], {}
        for t, name in enumerate(MODALITIES):
            others = [s for s in range(3) if s != t]
            z = zs[t]
            if self.mixed is not None:
                z, w = self.mixed[t](z, source=everything, source_mask=everything_mask,
                                     need_weights=need_weights and self.coarse is None and self.fine is None)
                if w is not None:
                    maps[f"{name}<-text+audio+vision"] = w
            if self.coarse is not None:
                pair = [MODALITIES[s] for s in others]
                z, w = self.coarse[t](z, source=torch.cat([zs[s] for s in others], 1),
                                      source_mask=torch.cat([masks[s] for s in others], 1),
                                      need_weights=need_weights and self.fine is None)
                if w is not None:
                    maps[f"{name}<-{'+'.join(pair)}"] = w
            if self.fine is not None:
                target, z = z, 0
                for s, unit in zip(others, self.fine[t]):
                    out, w = unit(target, source=zs[s], source_mask=masks[s], need_weights=need_weights)
                    z = z + out
                    if w is not None:
                        maps[f"{name}<-{MODALITIES[s]}"] = w
            outs.append(z)
        return outs, maps


def _encoder(cfg: MFSAConfig) -> nn.Module:
    return nn.Sequential(nn.Linear(cfg.d, cfg.d_h), nn.GELU(), nn.Dropout(cfg.out_dropout), nn.Linear(cfg.d_h, cfg.d_h))


def separation_loss(h_s: torch.Tensor, h_a: torch.Tensor, present: torch.Tensor | None = None, *,
                    form: str = "per_sample") -> torch.Tensor:
    """eq. 13. h_s, h_a: (B, d_h) or (B, M, d_h); present: (B, M) bool, the samples to count per
    modality (default: all). Both forms L2-normalise every h first (no reward for shrinking h).

    "per_sample" (the paper's): per modality the mean over the n counted samples of
    (h_s,i . h_a,i)^2, i.e. of cos^2 between a sample's h^s and its own h^a; summed over
    modalities. 0 iff every sample's pair is orthogonal; at most 1 per modality. The paper's sum
    over samples of unnormalised products becomes a mean of squared cosines so that the scale
    (and the weight alpha) depends neither on the batch size nor on d_h or the norms of h.
    "batch" (DSN): per modality ||H_s^T H_a||_F^2 / n^2, summed over modalities: 0 iff every
    specific feature (column) is orthogonal to every agnostic feature across the batch; at most
    1 per modality."""
    check(form in SEP_LOSS_FORMS, f"form must be one of {SEP_LOSS_FORMS}, got {form!r}")
    if h_s.dim() == 2:
        h_s, h_a = h_s.unsqueeze(1), h_a.unsqueeze(1)
    if present is None:
        present = torch.ones(h_s.shape[:2], dtype=torch.bool, device=h_s.device)
    weight = present.to(h_s.dtype)
    s, a = F.normalize(h_s, dim=-1), F.normalize(h_a, dim=-1)
    n = present.sum(0).clamp(min=1).to(h_s.dtype)  # (M,)
    if form == "per_sample":
        cos2 = (s * a).sum(-1).pow(2)  # (B, M)
        return ((cos2 * weight).sum(0) / n).sum()
    s, a = s * weight.unsqueeze(-1), a * weight.unsqueeze(-1)
    cross = torch.einsum("bmi,bmj->mij", s, a)  # per modality H_s^T H_a
    return (cross.pow(2).sum((1, 2)) / n.pow(2)).sum()


def pooled_statistics(x: torch.Tensor, mask: torch.Tensor, *, extremes: bool = False) -> torch.Tensor:
    """(B, 2D): masked mean and standard deviation over time of (B, T, D); with `extremes`
    (B, 4D): then the masked max and min. Zeros where a sample has no real row."""
    real = mask.any(1, keepdim=True).to(x.dtype)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean.unsqueeze(1)).pow(2), mask)
    stats = [mean, torch.sqrt(var + 1e-6) * real]
    if extremes:
        padded = ~mask.unsqueeze(-1)
        stats += [x.masked_fill(padded, float("-inf")).amax(1).nan_to_num(0.0, 0.0, 0.0) * real,
                  x.masked_fill(padded, float("inf")).amin(1).nan_to_num(0.0, 0.0, 0.0) * real]
    return torch.cat(stats, -1)


class MFSA(nn.Module):
    def __init__(self, config: MFSAConfig):
        super().__init__()
        self.config = cfg = config
        self.extractors = nn.ModuleList(UnimodalExtractor(dim, k, cfg) for dim, k in zip(cfg.dims, cfg.conv_kernels))
        # a branch is built unless dropped; use_specific / use_agnostic only decide what is fused
        self.has_specific, self.has_agnostic = not cfg.drop_specific_branch, not cfg.drop_agnostic_branch
        self.run_psa = self.has_specific and cfg.use_psa
        self.run_hca = self.has_agnostic and cfg.use_hca
        if self.run_psa:  # separate PSA stacks per modality; layer 1 has no chain (eq. 2)
            self.psa = nn.ModuleList(
                nn.ModuleList(PSALayer(cfg, predictive=cfg.use_prediction_chain and i > 0) for _ in MODALITIES)
                for i in range(cfg.psa_layers))
            self.wal = nn.ModuleList(WeightedAttentionLayer(cfg) for _ in range(cfg.psa_layers)) if cfg.use_wal else None
        if self.run_hca:
            self.hca = nn.ModuleList(HCALayer(cfg) for _ in range(cfg.hca_layers))
        if self.has_specific:
            self.specific = nn.ModuleList(_encoder(cfg) for _ in MODALITIES)
        if self.has_agnostic:
            self.agnostic = _encoder(cfg)
        if cfg.use_adv_loss:
            self.modality_discriminator = nn.Sequential(nn.Linear(cfg.d_h, cfg.d_h), nn.GELU(), nn.Linear(cfg.d_h, 3))
            if self.has_agnostic:
                self.importance_discriminator = nn.Linear(cfg.d_h, 3)
        tokens = 3 * (int(cfg.use_specific) + int(cfg.use_agnostic))
        self.fusion = nn.TransformerEncoderLayer(cfg.d_h, cfg.fusion_heads, cfg.fusion_ffn, cfg.dropout, batch_first=True)
        self.head = nn.Sequential(nn.Linear(tokens * cfg.d_h, cfg.d_h), nn.ReLU(), nn.Dropout(cfg.out_dropout),
                                  nn.Linear(cfg.d_h, cfg.output_size))
        if cfg.pooled_logits:
            drop = cfg.out_dropout if cfg.pooled_dropout is None else cfg.pooled_dropout
            self.pooled = nn.ModuleList(
                nn.Sequential(nn.Dropout(drop), nn.Linear((4 if extremes else 2) * dim, cfg.output_size))
                for dim, extremes in zip(cfg.dims, cfg.pooled_extremes))
            self.pooled_scalers = nn.ModuleList(
                PresentStandardizer((4 if extremes else 2) * dim) if standardize else nn.Identity()
                for dim, extremes, standardize in zip(cfg.dims, cfg.pooled_extremes, cfg.pooled_standardize))
        heads = cfg.output_groups
        self.face_prior = ProbabilityPrior(cfg.face_prior_columns, heads, cfg.face_prior_presence) \
            if any(cfg.face_prior_weights) else None
        # the heads' weights per logit; from the config, so not saved with the weights
        self.register_buffer("face_prior_scale", torch.tensor(cfg.face_prior_weights).repeat_interleave(
            torch.tensor(heads)) if self.face_prior is not None else None, persistent=False)
        self.register_buffer("alone_views_scale", torch.tensor(cfg.alone_views_weights).repeat_interleave(
            torch.tensor(heads)) if any(cfg.alone_views_weights) else None, persistent=False)
        # from the config, not a learned weight: not saved with the weights (older checkpoints load)
        self.register_buffer("text_bias", torch.tensor(cfg.text_logit_bias, dtype=torch.float32)
                             if cfg.text_logit_bias else None, persistent=False)

    def use_input_normalization(self, mean: dict, std: dict) -> None:
        """The per-modality feature mean and std its inputs are z-normalised with (models.base.
        UsesInputNormalization: the trainer calls this; a checkpoint restores it): the face prior
        reads raw probabilities."""
        if self.face_prior is not None:
            self.face_prior.set_normalization(mean["vision"], std["vision"])

    # the chain's share of the time is measured by hooks on these (benchmarks/bench_models.py)
    def chain_convs(self) -> list[nn.Conv2d]:
        if not self.run_psa:
            return []
        return [layer.chain for layers in self.psa for layer in layers if layer.chain is not None]

    def _specific_branch(self, zs, masks, present, extras, flags):
        cfg = self.config
        if self.run_psa:
            carried = [None, None, None]
            for i, layers in enumerate(self.psa):
                pass_on = cfg.use_prediction_chain and i + 1 < cfg.psa_layers
                need_weights = cfg.return_attention and i + 1 == cfg.psa_layers
                maps = {}
                for m, name in enumerate(MODALITIES):
                    layer = layers[m]
                    if cfg.checkpoint_psa and self.training and torch.is_grad_enabled():
                        zs[m], maps[name], carried[m] = checkpoint(layer, zs[m], masks[m], carried[m], pass_on=pass_on,
                                                                   need_weights=need_weights, flags=flags[m],
                                                                   use_reentrant=False)
                    else:
                        zs[m], maps[name], carried[m] = layer(zs[m], masks[m], carried[m], pass_on=pass_on,
                                                              need_weights=need_weights, flags=flags[m])
                if self.wal is not None:
                    zs, psi = self.wal[i](zs, masks, present)
                    extras["psi"] = psi
            if cfg.return_attention:
                extras["psa_attention"] = maps
        return torch.stack([enc(masked_mean(z, m)) for z, m, enc in zip(zs, masks, self.specific)], 1)

    def _agnostic_branch(self, zs, masks, extras):
        cfg = self.config
        if self.run_hca:
            for i, layer in enumerate(self.hca):
                zs, maps = layer(zs, masks, need_weights=cfg.return_attention and i + 1 == cfg.hca_layers)
            if cfg.return_attention:
                extras["mru_attention"] = maps
        return torch.stack([self.agnostic(masked_mean(z, m)) for z, m in zip(zs, masks)], 1)

    def _adversarial(self, h_s, h_a, present, losses):
        cfg = self.config
        weight = present.to(h_s.dtype if h_s is not None else h_a.dtype)
        batch = weight.shape[0]
        labels = torch.arange(3, device=weight.device).expand(batch, 3)
        if h_s is not None:  # eq. 15
            log_p = F.log_softmax(self.modality_discriminator(h_s), -1).gather(-1, labels[..., None]).squeeze(-1)
            losses["spe"] = -(weight * log_p).sum() / batch
        if h_a is not None:  # eq. 14, through the gradient reversal layer, weighted by w = 1 - D_i
            importance = torch.softmax(self.importance_discriminator(h_a.detach()), -1)
            w = 1.0 - importance.gather(-1, labels[..., None]).squeeze(-1)
            log_p = F.log_softmax(self.modality_discriminator(grad_reverse(h_a, cfg.grl_lambda)), -1)
            log_p = log_p.gather(-1, labels[..., None]).squeeze(-1)
            losses["agn"] = -(weight * w * log_p).sum() / batch

    def _pooled_logits(self, pairs, present) -> list[torch.Tensor]:
        """Per modality, a linear read-out of its pooled statistics (exactly 0 where it is absent)."""
        out = []
        cfg = self.config
        for i, ((x, m), read, scale) in enumerate(zip(pairs, self.pooled, self.pooled_scalers)):
            stats = pooled_statistics(x, m, extremes=cfg.pooled_extremes[i])
            if cfg.pooled_standardize[i]:  # else scale is an Identity placeholder (keeps the indices)
                stats = scale(stats, present[:, i])
            out.append(read(stats) * present[:, i, None].to(stats.dtype))
        return out

    def _face_prior_logits(self, vision_pair, present) -> torch.Tensor:
        """face_prior_weight (its head's) x the prior (0 where no face counts; with face_prior_face_only
        also where words or voice are present)."""
        prior = self.face_prior(*vision_pair)
        if self.config.face_prior_face_only:
            prior = prior * (~present[:, :2].any(1, keepdim=True)).to(prior.dtype)
        return self.face_prior_scale * prior

    def _pooled_aux_loss(self, pooled: list[torch.Tensor], present, labels) -> torch.Tensor:
        """The task loss of the chosen read-outs' summed logits, over the samples that have one of them
        (with pooled_aux_exclusive: and none of the others)."""
        cfg = self.config
        chosen = [i for i, on in enumerate(cfg.pooled_aux_modalities) if on]
        others = [i for i, on in enumerate(cfg.pooled_aux_modalities) if not on]
        keep = present[:, chosen].any(1)
        if cfg.pooled_aux_exclusive and others:
            keep = keep & ~present[:, others].any(1)
        logits = sum(pooled[i] for i in chosen)
        return masked_task_loss(shape_prediction(logits, cfg.task, cfg.num_labels), labels, keep, cfg)

    def _encode(self, pairs, flags) -> list[torch.Tensor]:
        """eq. 1 per modality: each modality's rows alone decide its Z (a sample without rows gets zeros)."""
        return [extractor(x, m, f) for (x, m), extractor, f in zip(pairs, self.extractors, flags)]

    def _fuse(self, pairs, zs, flags, present):
        """(raw output logits, pooled read-outs' logits or None, extras with h_s / h_a) from the
        extractors' Z of the (x, mask) pairs; flags: masks_flags of their masks; present: (B, 3)."""
        cfg = self.config
        masks = [m for _, m in pairs]
        extras = {}
        h_s = self._specific_branch(list(zs), masks, present, extras, flags) if self.has_specific else None
        h_a = self._agnostic_branch(list(zs), masks, extras) if self.has_agnostic else None
        if h_s is not None:
            extras["h_s"] = h_s
        if h_a is not None:
            extras["h_a"] = h_a

        # (B, 6, d_h): [h^s_L, A, V, h^a_L, A, V]; Table 4's "w/o" rows leave one triple out
        tokens = torch.cat([h for h, fused in ((h_s, cfg.use_specific), (h_a, cfg.use_agnostic)) if fused], 1)
        raw = self.head(self.fusion(tokens).flatten(1))
        pooled = self._pooled_logits(pairs, present) if cfg.pooled_logits else None
        if pooled is not None:
            raw = raw + sum(pooled)
        if self.face_prior is not None and (cfg.face_prior_in_training or not self.training):
            raw = raw + self._face_prior_logits(pairs[2], present)
        if self.text_bias is not None and not self.training:
            raw = raw + self.text_bias * present[:, :1].to(raw.dtype)
        return raw, pooled, extras

    def _logits_with_alone_views(self, pairs, present, flags):
        """_fuse of the samples, plus alone_views_weight x that of each present modality alone where two or
        more are present. The views reuse the samples' Z (a modality's Z depends on its rows only; an
        absent one's is zero) and pass through the fusion in one batch with them."""
        batch = present.shape[0]
        zs = self._encode(pairs, flags)
        sample, modality = (present & (present.sum(1, keepdim=True) >= 2)).nonzero(as_tuple=True)
        if not sample.numel():
            return self._fuse(pairs, zs, flags, present)

        def with_views(t: torch.Tensor, j: int) -> torch.Tensor:  # the samples' rows, then their views' (j alone)
            own = (modality == j).view(-1, *[1] * (t.dim() - 1))
            view = t[sample] & own if t.dtype == torch.bool else t[sample] * own.to(t.dtype)
            return torch.cat([t, view])

        pairs = [(with_views(x, j), with_views(m, j)) for j, (x, m) in enumerate(pairs)]
        zs = [with_views(z, j) for j, z in enumerate(zs)]
        views = torch.zeros_like(present[sample]).scatter_(1, modality[:, None], True)  # each view: its one modality
        raw, pooled, extras = self._fuse(pairs, zs, masks_flags([m for _, m in pairs]), torch.cat([present, views]))
        raw = raw[:batch].index_add(0, sample, raw[batch:] * self.alone_views_scale.to(raw.dtype))
        return raw, _first_rows(pooled, batch), _first_rows(extras, batch)

    def forward(self, text, audio, vision, *, text_mask, audio_mask, vision_mask, labels=None) -> ModelOutput:
        cfg = self.config
        pairs = [ensure_nonempty(x, m) for x, m in ((text, text_mask), (audio, audio_mask), (vision, vision_mask))]
        present = torch.stack([m.any(1) for _, m in pairs], 1)  # (B, 3)
        # (all rows real, every sample has a row) per modality: one host sync here instead of a few per layer
        flags = masks_flags([m for _, m in pairs])
        if self.alone_views_scale is not None and not self.training:
            raw, pooled, extras = self._logits_with_alone_views(pairs, present, flags)
        else:
            raw, pooled, extras = self._fuse(pairs, self._encode(pairs, flags), flags, present)
        prediction = shape_prediction(raw, cfg.task, cfg.num_labels)

        losses = {}
        h_s, h_a = extras.get("h_s"), extras.get("h_a")
        if cfg.use_sep_loss and h_s is not None and h_a is not None:
            losses["sep"] = separation_loss(h_s, h_a, present, form=cfg.sep_loss_form)
        if cfg.use_adv_loss:
            self._adversarial(h_s, h_a, present, losses)
        loss = None
        if labels is not None:
            losses["task"] = compute_task_loss(prediction, labels, cfg)
            loss = losses["task"]
            if "sep" in losses:
                loss = loss + cfg.alpha * losses["sep"]
            if cfg.pooled_aux_weight:
                losses["pooled"] = self._pooled_aux_loss(pooled, present, labels)
                loss = loss + cfg.pooled_aux_weight * losses["pooled"]
            adversarial = [losses[k] for k in ("agn", "spe") if k in losses]
            if adversarial:
                loss = loss + cfg.beta * sum(adversarial)
        return ModelOutput(prediction=prediction, loss=loss, losses=losses, extras=extras)


def _first_rows(value, n: int):
    """value with every tensor cut to its first n rows (lists, tuples and dicts of them too)."""
    if isinstance(value, torch.Tensor):
        return value[:n]
    if isinstance(value, dict):
        return {k: _first_rows(v, n) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_first_rows(v, n) for v in value)
    return value
