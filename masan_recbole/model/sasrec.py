"""SASRec (Kang & McAuley, ICDM 2018) as RecBole implements it, with SDPA attention.

Behaviour and parameter names are RecBole's ``SASRec`` (a RecBole state_dict
loads unchanged): positions added to item embeddings, LN + dropout, a causal
post-LN Transformer, the last valid position scores every item (CE) or a sampled
negative (BPR).
"""

import torch
from torch import nn

from masan_recbole.layers import TransformerEncoder, causal_padding_mask
from masan_recbole.model.base import ItemScoringRecommender


class SASRec(ItemScoringRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = config["hidden_size"]
        self.initializer_range = config["initializer_range"]
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, d)
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
        self.LayerNorm = nn.LayerNorm(d, eps=config["layer_norm_eps"])
        self.dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.init_loss(config)
        self.apply(self.init_weights)

    def encode(self, item_seq):
        """States at every position [B,L,d]; position t sees items 0..t only."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        x = self.item_embedding(item_seq) + self.position_embedding(positions)  # [B,L,d]
        x = self.dropout(self.LayerNorm(x))
        return self.trm_encoder(x, causal_padding_mask(item_seq))

    def forward(self, item_seq, item_seq_len):
        return self.gather_indexes(self.encode(item_seq), item_seq_len - 1)  # [B,d]
