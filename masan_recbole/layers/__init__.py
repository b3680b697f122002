"""Layers that more than one model uses; a model's own layers live next to it in ``model/``."""

from masan_recbole.layers.transformer import (
    FeedForward,
    MultiHeadAttention,
    TransformerEncoder,
    TransformerLayer,
    activation,
    attention,
    causal_padding_mask,
    padding_mask,
)

__all__ = [
    "FeedForward",
    "MultiHeadAttention",
    "TransformerEncoder",
    "TransformerLayer",
    "activation",
    "attention",
    "causal_padding_mask",
    "padding_mask",
]
