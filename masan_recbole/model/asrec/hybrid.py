"""ASRec's hybrid attention layer: plain self-attention averaged with a gated,
multi-scale, de-smoothing attention branch (the reference's SAMM), then a feed-forward block.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from masan_recbole.layers import FeedForward, MultiHeadAttention, attention
from masan_recbole.model.asrec.fourier import AdaptiveHighFrequencyFilter


class GatedMultiScaleAttention(nn.Module):
    """The SAMM branch of ASRec (h heads of size d_h, g = 2·d_h)::

        C      = softmax(QKᵀ/√d_h + M) V                        per head [B,h,L,d_h]
        [r|u]  = σ(W_g [V; C] + b_g)                             W_g: g×g
        C      ← (1−u) ⊙ C + u ⊙ gelu(C + r ⊙ V)                 heads merged -> [B,L,d]
        T_k    = AHFF(S_k) + S_k,  S_k = Conv1d_k(C)             k ∈ conv_kernels
        U      = Σ_k s_k ⊙ T_k                                   s_k ∈ ℝ^{L×1}
        Z      = (U / ‖U‖₂)²,  W = softmax_d(Z) + softmax_L(Z)   (‖·‖ and softmax_d over d)
        out    = LN(X + Dropout(Dense(gelu(w_o·U − w_n·(W ⊙ U)))))

    The convolutions have the L positions as channels and slide over the hidden
    axis (same padding), so they mix all positions; the input length must be
    ``max_seq_length``. w_o·U − w_n·(W ⊙ U) subtracts a re-weighted copy of U
    ("de-smoothing") against attention's low-pass effect.

    ``ahff``: the shared AHFF applied to every S_k, or None (then T_k = S_k).

    Init as the reference: the convolutions, scales s_k, w_o, w_n and the gate draw
    U(−1/√g, 1/√g) (so w_o and w_n do not start at their nominal 1.0 / 0.6); the
    Linear and LayerNorm layers are left to the model's init hook.
    """

    def __init__(self, n_heads, hidden_size, max_seq_length, hidden_dropout_prob, attn_dropout_prob,
                 layer_norm_eps, conv_kernels, ahff):
        super().__init__()
        if hidden_size % n_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}")
        if not conv_kernels or any(k < 1 or k % 2 == 0 for k in conv_kernels):
            raise ValueError(f"conv_kernels must be odd positive sizes (same padding), got {conv_kernels}")
        self.n_heads = n_heads
        self.attn_dropout_prob = attn_dropout_prob
        gate_size = 2 * hidden_size // n_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.gate_weight = nn.Parameter(torch.empty(gate_size, gate_size))
        self.gate_bias = nn.Parameter(torch.empty(gate_size))
        self.convs = nn.ModuleList(
            nn.Conv1d(max_seq_length, max_seq_length, kernel_size=k, padding=k // 2) for k in conv_kernels
        )
        self.scales = nn.Parameter(torch.empty(len(conv_kernels), max_seq_length, 1))  # s_k
        self.keep_weight = nn.Parameter(torch.empty(()))  # w_o
        self.contrast_weight = nn.Parameter(torch.empty(()))  # w_n
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.out_dropout = nn.Dropout(hidden_dropout_prob)
        self.ahff = ahff
        bound = 1.0 / math.sqrt(gate_size)
        for param in (self.gate_weight, self.gate_bias, self.scales, self.keep_weight, self.contrast_weight,
                      *self.convs.parameters()):
            nn.init.uniform_(param, -bound, bound)

    def split_heads(self, x):  # [B,L,d] -> [B,h,L,d/h]
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, -1).transpose(1, 2)

    def gated_attention(self, x, attn_mask):  # [B,L,d] -> [B,L,d]
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        dropout = self.attn_dropout_prob if self.training else 0.0
        context = attention(q, k, v, attn_mask, dropout)  # [B,h,L,d/h]
        # The gate works per head and position, so it runs in the [B,L,h,d/h] layout: v is
        # then the value projection itself (no copy), the attention output is transposed
        # once here instead of after the gate, and the result is [B,L,d] as it stands.
        v, context = v.transpose(1, 2), context.transpose(1, 2).contiguous()  # [B,L,h,d/h]
        gates = torch.sigmoid(F.linear(torch.cat([v, context], dim=-1), self.gate_weight, self.gate_bias))
        reset, update = gates.chunk(2, dim=-1)  # [B,L,h,d/h] each
        context = (1 - update) * context + update * F.gelu(context + reset * v)
        return context.view(x.shape)

    def multi_scale(self, context):  # [B,L,d] -> [B,L,d]
        mixed = None
        for scale, conv in zip(self.scales, self.convs):
            s = conv(context)  # channels = positions, slides over d
            t = self.ahff(s) + s if self.ahff is not None else s
            mixed = scale * t if mixed is None else mixed + scale * t
        return mixed

    def desmooth(self, u):  # [B,L,d] -> [B,L,d]
        z = F.normalize(u, dim=-1).square()
        weights = torch.softmax(z, dim=-1) + torch.softmax(z, dim=1)
        return u * (self.keep_weight - self.contrast_weight * weights)  # w_o·U − w_n·(W ⊙ U), one pass over U

    def forward(self, x, attn_mask):
        u = self.multi_scale(self.gated_attention(x, attn_mask))
        return self.LayerNorm(x + self.out_dropout(self.dense(F.gelu(self.desmooth(u)))))


class HybridAttentionLayer(nn.Module):
    """One ASRec layer::

        Y   = v₃ · MHA(X) + (1 − v₃) · SAMM(X)       v₃ learned, starts at 0.5, unconstrained
        out = FFN(Y)                                 post-LN sub-layers, as SASRec's

    ``ahff_on_input``: the AHFF filters the layer input X (fed to both branches)
    instead of the SAMM's convolution outputs, as the paper's architecture figure
    draws it; the default (False) is the reference code's placement.
    """

    def __init__(self, n_heads, hidden_size, inner_size, max_seq_length, hidden_dropout_prob, attn_dropout_prob,
                 hidden_act, layer_norm_eps, conv_kernels, ahff_quantile, ahff_dropout,
                 ahff_threshold_scope="sequence", ahff_on_input=False):
        super().__init__()
        ahff = AdaptiveHighFrequencyFilter(hidden_size, ahff_quantile, ahff_dropout, layer_norm_eps,
                                           ahff_threshold_scope)
        self.input_filter = ahff if ahff_on_input else None
        self.attention = MultiHeadAttention(n_heads, hidden_size, hidden_dropout_prob, attn_dropout_prob,
                                            layer_norm_eps)
        self.samm = GatedMultiScaleAttention(
            n_heads, hidden_size, max_seq_length, hidden_dropout_prob, attn_dropout_prob, layer_norm_eps,
            conv_kernels, ahff=None if ahff_on_input else ahff,
        )
        self.mix_weight = nn.Parameter(torch.tensor(0.5))  # v₃
        self.feed_forward = FeedForward(hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps)

    def forward(self, x, attn_mask):  # [B,L,d] -> [B,L,d]; attn_mask bool [B,1,1,L]
        if self.input_filter is not None:
            x = self.input_filter(x)
        attention = self.attention(x, attn_mask)  # first, as before: dropout draws in the same order
        y = torch.lerp(self.samm(x, attn_mask), attention, self.mix_weight)  # v₃·MHA + (1−v₃)·SAMM
        return self.feed_forward(y)
