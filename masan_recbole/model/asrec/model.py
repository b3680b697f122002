"""ASRec (reference: WLHao0313/ASRec, HEAD Aug 2025): Fourier smoothing + hybrid attention.

Item and position embeddings (LN + dropout) are smoothed by a learnable causal
exponential moving average (:class:`FourierSmoothing`; the reference computes it with
FFTs, here it is the same sum as one [L,L] product; mixed with the input at strength
``A``), then pass through hybrid layers that average plain
self-attention with a gated, multi-scale, de-smoothing branch
(:class:`HybridAttentionLayer`). Attention is bidirectional over the history
(padding masked only), as in the reference. The last valid position scores every
item (CE, the reference's loss) or a sampled negative (BPR, our addition).

Differences from the reference (docs/models.md#asrec): its never-used parameters (SAMM
``head_weights``, the FSM's and the layer's LayerNorms) are not created; the AHFF
threshold quantile is a config constant (``ahff_quantile``), not a parameter that
never receives a gradient; the AHFF threshold is per sequence by default
(``ahff_threshold_scope``), so scores do not depend on the evaluation batch.
"""

from torch import nn

from masan_recbole.layers import padding_mask
from masan_recbole.model.asrec.fourier import FourierSmoothing
from masan_recbole.model.asrec.hybrid import HybridAttentionLayer
from masan_recbole.model.base import ItemScoringRecommender


class ASRec(ItemScoringRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = config["hidden_size"]
        self.init_input(config)
        self.fourier_smoothing = FourierSmoothing(d, config["A"])
        self.layers = nn.ModuleList(
            HybridAttentionLayer(
                n_heads=config["n_heads"],
                hidden_size=d,
                inner_size=config["inner_size"],
                max_seq_length=self.max_seq_length,
                hidden_dropout_prob=config["hidden_dropout_prob"],
                attn_dropout_prob=config["attn_dropout_prob"],
                hidden_act=config["hidden_act"],
                layer_norm_eps=config["layer_norm_eps"],
                conv_kernels=config["conv_kernels"],
                ahff_quantile=config["ahff_quantile"],
                ahff_dropout=config["ahff_dropout"],
                ahff_threshold_scope=config["ahff_threshold_scope"],
                ahff_on_input=config["ahff_on_input"],
            )
            for _ in range(config["n_layers"])
        )
        # Re-initialises Linear/Embedding/LayerNorm only: the convolutions, the SAMM
        # scalars and gate, the FSM parameters and v₃ keep their own init.
        self.apply(self.init_weights)

    def padding_dependence(self):
        return ("its multi-scale convolutions take the L positions as channels and its adaptive filter "
                "thresholds the spectrum of the whole padded window, so every output depends on L")

    def encode(self, item_seq, item_seq_len):
        """Output of the last hybrid layer [B,L,d]."""
        x = self.fourier_smoothing(self.embed(item_seq))
        mask = padding_mask(item_seq)  # bidirectional: every position sees every item
        for layer in self.layers:
            x = layer(x, mask)
        return x
