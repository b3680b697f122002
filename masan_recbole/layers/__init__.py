"""Reusable layers of the plugin's models."""

from masan_recbole.layers.transformer import (
    FeedForward,
    MultiHeadAttention,
    TransformerEncoder,
    TransformerLayer,
    activation,
    causal_padding_mask,
    padding_mask,
)

__all__ = [
    "FeedForward",
    "MultiHeadAttention",
    "TransformerEncoder",
    "TransformerLayer",
    "activation",
    "causal_padding_mask",
    "padding_mask",
]
