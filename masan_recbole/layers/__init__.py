"""Reusable layers of the plugin's models."""

from masan_recbole.layers.entmax_attention import (
    AdaptiveEntmax,
    AdaptiveLowRankAttention,
    AdaptiveLowRankEncoder,
    AdaptiveLowRankLayer,
    masked_mean,
)
from masan_recbole.layers.fourier import AdaptiveHighFrequencyFilter, FourierSmoothing
from masan_recbole.layers.hybrid import GatedMultiScaleAttention, HybridAttentionLayer
from masan_recbole.layers.interest import DecoupledPositionAttention, ItemToInterestAggregation
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
    "AdaptiveEntmax",
    "AdaptiveHighFrequencyFilter",
    "AdaptiveLowRankAttention",
    "AdaptiveLowRankEncoder",
    "AdaptiveLowRankLayer",
    "DecoupledPositionAttention",
    "FeedForward",
    "FourierSmoothing",
    "GatedMultiScaleAttention",
    "HybridAttentionLayer",
    "ItemToInterestAggregation",
    "MultiHeadAttention",
    "TransformerEncoder",
    "TransformerLayer",
    "activation",
    "causal_padding_mask",
    "masked_mean",
    "padding_mask",
]
