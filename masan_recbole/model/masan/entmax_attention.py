"""Low-rank self-attention whose score normaliser is α-entmax with a learned, sequence-adaptive α (MASAN).

The attention is LightSANs' (queries attend to k pooled interests, plus a decoupled
position-to-position attention); only the softmax over the scores is replaced by
:class:`AdaptiveEntmax`. With ``mode="softmax"`` the layers compute exactly what
RecBole's ``LightTransformerEncoder`` computes, under the same parameter names
(except ``position_attention.`` in front of the position parameters).
"""

import copy
import math

import torch
from entmax import entmax15, sparsemax
from torch import nn

from masan_recbole.layers import FeedForward
from masan_recbole.model.masan.entmax import entmax_newton
from masan_recbole.model.masan.interest import DecoupledPositionAttention, ItemToInterestAggregation

# Score given to padding positions when they are masked: RecBole's mask value. It
# yields exact zeros under softmax (exp underflows in float32) and every entmax.
MASKED_SCORE = -10000.0


def masked_mean(x, valid):
    """Mean of x [B,L,d] over the positions where valid [B,L] is True -> [B,d]."""
    weights = valid.to(x.dtype).unsqueeze(-1)  # [B,L,1]
    return (x * weights).sum(1) / weights.sum(1)


class AdaptiveEntmax(nn.Module):
    """Normalises attention scores with α-entmax, α learned per sequence or per query.

        α-entmax(s) = argmax_{p ∈ Δ} ⟨p, s⟩ + H_α(p)   (Tsallis entropy; 1 → softmax, 1.5 → entmax15, 2 → sparsemax)
        α = max(1 + σ(w·x̄ + b), 1 + ε)                 x̄ = mean of X over the valid positions (``alpha_scope="sequence"``)
        α_t = max(1 + σ(w·x_t + b), 1 + ε)             one α per query position (``alpha_scope="query"``)

    α lies in [1+ε, 2]: the gradient of α-entmax with respect to α grows as 1/(α−1)²,
    hence the floor. ``adaptive`` and ``fixed`` compute α-entmax with
    :func:`~masan_recbole.model.masan.entmax.entmax_newton` (``entmax_bisect``'s outputs
    and gradients, found by Newton's method; ``n_iter`` bounds its steps). Modes:
    ``adaptive`` (the above, ``alpha_w`` = (w, b)), ``softmax``, ``entmax15``,
    ``sparsemax`` (exact sort-based functions of the ``entmax`` package) and ``fixed``
    (the constant ``alpha_fixed``). Only ``adaptive`` has parameters.

    ``dim`` is the axis normalised: −2 is LightSANs' sequence axis of scores [B,h,L,k]
    (each interest gets a sparse distribution over the items), −1 the interest axis.
    A per-query α varies along the sequence axis, so it needs ``dim=-1``.
    """

    MODES = ("adaptive", "softmax", "entmax15", "sparsemax", "fixed")
    CONSTANT_ALPHA = {"softmax": 1.0, "entmax15": 1.5, "sparsemax": 2.0}

    def __init__(self, hidden_size, mode="adaptive", dim=-2, alpha_scope="sequence", alpha_eps=0.01,
                 alpha_fixed=1.5, n_iter=24):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"entmax_mode '{mode}' is not one of {list(self.MODES)}")
        if dim not in (-1, -2):
            raise ValueError(f"entmax_dim must be -2 (sequence axis) or -1 (interest axis), got {dim}")
        if alpha_scope not in ("sequence", "query"):
            raise ValueError(f"alpha_scope '{alpha_scope}' is not one of ['sequence', 'query']")
        if mode == "adaptive" and alpha_scope == "query" and dim != -1:
            raise ValueError("alpha_scope 'query' gives each query its own alpha, so it needs entmax_dim -1")
        if not 0 < alpha_eps < 1:
            raise ValueError(f"alpha_eps must lie in (0, 1), got {alpha_eps}")
        if mode == "fixed" and not alpha_fixed > 1:
            raise ValueError(f"alpha_fixed must be > 1 (use entmax_mode 'softmax' for alpha = 1), got {alpha_fixed}")
        self.mode, self.dim, self.alpha_scope = mode, dim, alpha_scope
        self.alpha_eps, self.n_iter = alpha_eps, n_iter
        self.alpha_fixed = self.CONSTANT_ALPHA.get(mode, alpha_fixed)
        if mode == "adaptive":
            self.alpha_w = nn.Linear(hidden_size, 1)

    def alpha(self, x, valid):
        """α for hidden states x [B,L,d]: [B,1,1,1] per sequence, [B,1,L,1] per query (broadcasts over heads)."""
        if self.mode != "adaptive":
            return x.new_full((x.size(0), 1, 1, 1), self.alpha_fixed)
        if self.alpha_scope == "sequence":
            logit = self.alpha_w(masked_mean(x, valid))[:, :, None, None]  # [B,1,1,1]
        else:
            logit = self.alpha_w(x)[:, None]  # [B,1,L,1]
        return (1 + torch.sigmoid(logit)).clamp(min=1 + self.alpha_eps)

    def forward(self, scores, x, valid):
        """scores [B,h,L,k] -> (probabilities, same shape; α as from :meth:`alpha`)."""
        alpha = self.alpha(x, valid)
        if self.mode == "softmax":
            probs = torch.softmax(scores, dim=self.dim)
        elif self.mode == "entmax15":
            probs = entmax15(scores, dim=self.dim)
        elif self.mode == "sparsemax":
            probs = sparsemax(scores, dim=self.dim)
        else:  # adaptive, fixed: Newton on the threshold; alpha has size 1 along dim
            probs = entmax_newton(scores, alpha, dim=self.dim, n_iter=self.n_iter)
        return probs, alpha


class AdaptiveLowRankAttention(nn.Module):
    """LightSANs' low-rank decomposed self-attention with a pluggable score normaliser (post-LN sub-layer).

        Q, K, V = X W_q, X W_k, X W_v                                  [B,L,d] -> h heads
        K̃ = Agg_K(K), Ṽ = Agg_V(V)                                      [B,k,d] (ItemToInterestAggregation)
        Π = normaliser(Q K̃ᵀ / √d_h)                                    [B,h,L,k]
        C = Dropout(Π) Ṽ + G V                                         G: DecoupledPositionAttention [1,h,L,L]
        out = LN(X + Dropout(merge_heads(C) W_o + b_o))

    No causal mask: the interests pool the whole input window. With ``padding_mask``
    the padding positions are left out of every normalisation over the sequence axis (the
    interest pooling, Π when the normaliser runs over dim −2, and the position attention
    G), so a sequence's output does not depend on the padding after it; LightSANs and
    MASAN's logs keep them in. The normaliser is registered last (MASAN's module tree:
    LightSANs' attention + ``alpha_w``).
    """

    def __init__(self, n_heads, k_interests, hidden_size, hidden_dropout_prob, attn_dropout_prob,
                 layer_norm_eps, normaliser, padding_mask=False):
        super().__init__()
        if hidden_size % n_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_size = hidden_size // n_heads
        self.padding_mask = padding_mask
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attpooling_key = ItemToInterestAggregation(hidden_size, k_interests)
        self.attpooling_value = ItemToInterestAggregation(hidden_size, k_interests)
        self.position_attention = DecoupledPositionAttention(n_heads, hidden_size, layer_norm_eps)
        self.attn_dropout = nn.Dropout(attn_dropout_prob)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.out_dropout = nn.Dropout(hidden_dropout_prob)
        self.normaliser = normaliser

    def split_heads(self, x):  # [B,n,d] -> [B,h,n,d/h]
        return x.view(x.size(0), x.size(1), self.n_heads, self.head_size).transpose(1, 2)

    def forward(self, x, pos_emb, valid):
        """x [B,L,d], pos_emb [L,d], valid [B,L] -> (out [B,L,d], Π [B,h,L,k], α)."""
        query, key, value = self.query(x), self.key(x), self.value(x)
        pool_mask = valid if self.padding_mask else None
        interest_keys = self.split_heads(self.attpooling_key(key, pool_mask))  # [B,h,k,dh]
        interest_values = self.split_heads(self.attpooling_value(value, pool_mask))
        scores = self.split_heads(query) @ interest_keys.transpose(-1, -2) / math.sqrt(self.head_size)  # [B,h,L,k]
        if self.padding_mask and self.normaliser.dim == -2:
            scores = scores.masked_fill(~valid[:, None, :, None], MASKED_SCORE)
        probs, alpha = self.normaliser(scores, x, valid)
        context = self.attn_dropout(probs) @ interest_values  # [B,h,L,dh]
        position_weights = self.position_attention(pos_emb, valid if self.padding_mask else None)  # [1 or B,h,L,L]
        context = context + position_weights @ self.split_heads(value)
        context = context.transpose(1, 2).reshape(x.shape)  # [B,L,d]
        return self.LayerNorm(x + self.out_dropout(self.dense(context))), probs, alpha


class AdaptiveLowRankLayer(nn.Module):
    """:class:`AdaptiveLowRankAttention` then the position-wise :class:`FeedForward` sub-layer."""

    def __init__(self, attention, feed_forward):
        super().__init__()
        self.multi_head_attention = attention
        self.feed_forward = feed_forward

    def forward(self, x, pos_emb, valid):
        x, probs, alpha = self.multi_head_attention(x, pos_emb, valid)
        return self.feed_forward(x), probs, alpha


class AdaptiveLowRankEncoder(nn.Module):
    """``n_layers`` copies of one :class:`AdaptiveLowRankLayer`.

    The layers are deep copies of a single one, as in LightSANs: weights that a model's
    init hook re-draws end up independent, while the raw interest parameters θ start
    equal in every layer. ``normaliser`` is the :class:`AdaptiveEntmax` to copy into
    each layer.
    """

    def __init__(self, n_layers, n_heads, k_interests, hidden_size, inner_size, hidden_dropout_prob,
                 attn_dropout_prob, hidden_act, layer_norm_eps, normaliser, padding_mask=False):
        super().__init__()
        attention = AdaptiveLowRankAttention(n_heads, k_interests, hidden_size, hidden_dropout_prob,
                                             attn_dropout_prob, layer_norm_eps, normaliser, padding_mask)
        feed_forward = FeedForward(hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps)
        layer = AdaptiveLowRankLayer(attention, feed_forward)
        self.layer = nn.ModuleList(copy.deepcopy(layer) for _ in range(n_layers))

    def forward(self, x, pos_emb, valid):
        """x [B,L,d] -> (last layer's output [B,L,d], [(Π, α) of each layer])."""
        stats = []
        for layer in self.layer:
            x, probs, alpha = layer(x, pos_emb, valid)
            stats.append((probs, alpha))
        return x, stats
