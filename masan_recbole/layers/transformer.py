"""Post-LN Transformer blocks with RecBole's parameter names.

The modules mirror ``recbole.model.layers`` (``MultiHeadAttention``,
``FeedForward``, ``TransformerLayer``, ``TransformerEncoder``) attribute for
attribute, so a RecBole ``state_dict`` loads unchanged. The attention itself is
:func:`attention`: ``torch.nn.functional.scaled_dot_product_attention`` (fused
scaling, masking, softmax and dropout) wherever torch has a fused kernel for the
call, and the same formula written out where it has none (CPU with dropout).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "gelu": F.gelu,  # the erf form, as RecBole's, in one fused kernel (forward and backward)
    "relu": F.relu,
    "swish": F.silu,  # x * sigmoid(x)
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act '{name}' is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def causal_padding_mask(item_seq):
    """Boolean attention mask [B,1,L,L]: query i sees key j <= i where item j is not padding."""
    length = item_seq.size(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=item_seq.device).tril()
    return causal & (item_seq != 0)[:, None, None, :]


def padding_mask(item_seq):
    """Boolean attention mask [B,1,1,L]: every query sees every non-padding key."""
    return (item_seq != 0)[:, None, None, :]


def attention(q, k, v, attn_mask=None, dropout_p=0.0):
    """softmax(QKᵀ/√d_h, masked) V with dropout ``dropout_p`` on the weights; q, k, v [B,h,L,d_h].

    ``attn_mask``: boolean (True = may attend) or additive float, broadcastable to [B,h,L,L]. As
    in SDPA, a query that may attend to no key gets a zero output.

    On CPU, SDPA has no fused kernel with dropout: training takes its reference ("math")
    path, which draws the dropout mask inside ATen with ``bernoulli_`` (beyond the reach of
    the ``fast_cpu_dropout`` patch that every other dropout of the model, and RecBole's
    attention, goes through) and scans every row of the weights for a fully masked one.
    That path is written out here instead, with the scaling and the mask in one kernel and
    the weights' dropout through ``F.dropout``, as RecBole's ``MultiHeadAttention`` applies
    it; the formula is SDPA's, up to float rounding.
    """
    if q.device.type != "cpu" or dropout_p == 0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    scores = torch.matmul(q, k.transpose(-1, -2))  # [B,h,L,L]
    scale = 1.0 / math.sqrt(q.size(-1))
    blind = None  # queries that see no key, [B,1 or h,L,1]
    if attn_mask is None:
        scores = scores * scale
    elif attn_mask.dtype == torch.bool:
        # a large finite negative, not -inf: a fully masked row then gives no NaN to clean up
        additive = torch.zeros(attn_mask.shape, dtype=scores.dtype, device=scores.device)
        scores = torch.add(additive.masked_fill_(~attn_mask, torch.finfo(scores.dtype).min), scores, alpha=scale)
        blind = ~attn_mask.any(-1, keepdim=True)
    else:
        scores = torch.add(attn_mask, scores, alpha=scale)
    weights = scores.softmax(-1)
    if blind is not None and blind.any():  # only an all-padding sequence has such a query
        weights = weights.masked_fill(blind, 0.0)
    return torch.matmul(F.dropout(weights, dropout_p, training=True), v)


class MultiHeadAttention(nn.Module):
    """LN(X + Dropout(W_o · softmax(QKᵀ/√d_h + mask) V)), heads concatenated."""

    def __init__(self, n_heads, hidden_size, hidden_dropout_prob, attn_dropout_prob, layer_norm_eps):
        super().__init__()
        if hidden_size % n_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.attn_dropout_prob = attn_dropout_prob
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.out_dropout = nn.Dropout(hidden_dropout_prob)

    def split_heads(self, x):  # [B,L,d] -> [B,h,L,d/h]
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, -1).transpose(1, 2)

    def forward(self, x, attn_mask):
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        dropout = self.attn_dropout_prob if self.training else 0.0
        context = attention(q, k, v, attn_mask, dropout).transpose(1, 2).reshape(x.shape)  # [B,L,d]
        return self.LayerNorm(x + self.out_dropout(self.dense(context)))


class FeedForward(nn.Module):
    """LN(X + Dropout(W₂ act(W₁X + b₁) + b₂))."""

    def __init__(self, hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps):
        super().__init__()
        self.dense_1 = nn.Linear(hidden_size, inner_size)
        self.intermediate_act_fn = activation(hidden_act)
        self.dense_2 = nn.Linear(inner_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout_prob)

    def forward(self, x):
        h = self.dense_2(self.intermediate_act_fn(self.dense_1(x)))
        return self.LayerNorm(x + self.dropout(h))


class TransformerLayer(nn.Module):
    def __init__(self, n_heads, hidden_size, inner_size, hidden_dropout_prob, attn_dropout_prob,
                 hidden_act, layer_norm_eps):
        super().__init__()
        self.multi_head_attention = MultiHeadAttention(
            n_heads, hidden_size, hidden_dropout_prob, attn_dropout_prob, layer_norm_eps
        )
        self.feed_forward = FeedForward(hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps)

    def forward(self, x, attn_mask):
        return self.feed_forward(self.multi_head_attention(x, attn_mask))


class TransformerEncoder(nn.Module):
    """``n_layers`` independent :class:`TransformerLayer` s; returns the last layer's output."""

    def __init__(self, n_layers=2, n_heads=2, hidden_size=64, inner_size=256, hidden_dropout_prob=0.5,
                 attn_dropout_prob=0.5, hidden_act="gelu", layer_norm_eps=1e-12):
        super().__init__()
        self.layer = nn.ModuleList(
            TransformerLayer(n_heads, hidden_size, inner_size, hidden_dropout_prob, attn_dropout_prob,
                             hidden_act, layer_norm_eps)
            for _ in range(n_layers)
        )

    def forward(self, x, attn_mask):
        for layer in self.layer:
            x = layer(x, attn_mask)
        return x
