"""LightSANs' low-rank building blocks: items pooled into k interests, and position-to-position attention.

Both modules keep the parameter names of RecBole's ``LightMultiHeadAttention``
(``theta``; ``pos_q_linear``, ``pos_k_linear``, ``pos_ln``), so LightSANs weights
copy over with a prefix change only.
"""

import math

import torch
from torch import nn


class ItemToInterestAggregation(nn.Module):
    """Pools a sequence of L vectors into k "interest" vectors.

        D = softmax_L(X θ)        [B,L,k]   (each interest is a distribution over positions)
        Z = Dᵀ X                  [B,k,d]

    θ ∈ ℝ^{d×k} is a raw parameter drawn from N(0, 1), as in LightSANs (model-level
    init hooks that touch Linear/Embedding leave it alone). ``valid`` [B,L] (optional)
    removes padding positions from the softmax.
    """

    def __init__(self, hidden_size, k_interests):
        super().__init__()
        self.theta = nn.Parameter(torch.randn(hidden_size, k_interests))

    def forward(self, x, valid=None):  # x [B,L,d]
        logits = x @ self.theta  # [B,L,k]
        if valid is not None:
            logits = logits.masked_fill(~valid[:, :, None], float("-inf"))
        weights = torch.softmax(logits, dim=1)
        return weights.transpose(1, 2) @ x  # [B,k,d]


# The score of a masked position: exp underflows to an exact 0 in float32 (RecBole's mask value).
PADDING_SCORE = -10000.0


class DecoupledPositionAttention(nn.Module):
    """Attention between positions only, independent of the items (LightSANs' decoupled position encoding).

        P' = LN(P);  Q = (P' W_q + b_q) / √(2 d_h);  K = P' W_k + b_k      (split into h heads)
        G = softmax over dim −2 of (Q Kᵀ / √d_h)                            [1,h,L,L]

    The position scale is applied twice (1/(d_h√2) overall) and the softmax runs over
    the query axis (columns of G sum to 1): both as in LightSANs. The caller applies
    G to its per-head values, C_pos = G V.

    Given ``valid`` [B,L], padding positions are left out on both axes: the softmax runs
    over the valid queries only and padding keys get weight 0, so G [B,h,L,L] on the valid
    positions does not depend on how much padding follows (LightSANs keeps them in).
    """

    def __init__(self, n_heads, hidden_size, layer_norm_eps):
        super().__init__()
        if hidden_size % n_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_size = hidden_size // n_heads
        self.pos_q_linear = nn.Linear(hidden_size, hidden_size)
        self.pos_k_linear = nn.Linear(hidden_size, hidden_size)
        self.pos_ln = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def split_heads(self, x):  # [L,d] -> [1,h,L,d/h]
        return x.view(1, x.size(0), self.n_heads, self.head_size).transpose(1, 2)

    def forward(self, pos_emb, valid=None):  # pos_emb [L,d], valid [B,L] or None
        pos = self.pos_ln(pos_emb)
        query = self.split_heads(self.pos_q_linear(pos)) * (2 * self.head_size) ** -0.5
        key = self.split_heads(self.pos_k_linear(pos))
        scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_size)  # [1,h,L,L]
        if valid is None:
            return torch.softmax(scores, dim=-2)
        scores = scores.masked_fill(~valid[:, None, :, None], PADDING_SCORE)  # [B,h,L,L]: padding queries out
        return torch.softmax(scores, dim=-2) * valid[:, None, None, :]  # padding keys weigh 0
