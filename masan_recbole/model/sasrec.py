"""SASRec (Kang & McAuley, ICDM 2018) as RecBole implements it, on the shared Transformer layers.

Behaviour and parameter names are RecBole's ``SASRec`` (a RecBole state_dict
loads unchanged): positions added to item embeddings, LN + dropout, a causal
post-LN Transformer, the last valid position scores every item (CE), a sampled
negative (BPR) or sampled negatives (SSM). Being causal, it can also train on the
next item at every position (``train_mode: all_positions``).
"""

from masan_recbole.layers import TransformerEncoder, causal_padding_mask
from masan_recbole.model.base import ItemScoringRecommender


class SASRec(ItemScoringRecommender):
    causal = True  # can train with train_mode: all_positions

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = config["hidden_size"]
        self.init_input(config)
        self.trm_encoder = TransformerEncoder(
            n_layers=config["n_layers"],
            n_heads=config["n_heads"],
            hidden_size=d,
            inner_size=config["inner_size"],
            hidden_dropout_prob=config["hidden_dropout_prob"],
            attn_dropout_prob=config["attn_dropout_prob"],
            hidden_act=config["hidden_act"],
            layer_norm_eps=config["layer_norm_eps"],
        )
        self.apply(self.init_weights)

    def encode(self, item_seq, item_seq_len):
        """States at every position [B,L,d]; position t sees items 0..t only."""
        return self.trm_encoder(self.embed(item_seq), causal_padding_mask(item_seq))
