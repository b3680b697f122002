"""SR-SAN (Fang, arXiv 2102.01922): a plain Transformer encoder over the session; the
encoded last click scores every item.

h = Enc(E[s])[n-1], logits = h·Eᵀ, CE. E has no positions and no input LayerNorm;
Enc is PyTorch's ``TransformerEncoderLayer`` (post-LN, one dropout p) stacked
``n_layers`` times, bidirectional, with padded keys masked (``use_padding_mask``).

``dedup_items`` feeds the reference's SR-GNN "nodes" instead of the clicks: each
session's distinct items in ascending id order, the last click's node giving h.
"""

import math

import torch
from torch import nn

from masan_recbole.layers import activation
from masan_recbole.model.base import ItemScoringRecommender


def node_set(item_seq, item_seq_len):
    """Distinct items of each session, ascending and left-aligned [B,M] (0-padded to the
    batch's largest count M), and the index of the last click's item among them [B]."""
    values = item_seq.sort(dim=1).values  # pads (0) first
    new = torch.ones_like(values, dtype=torch.bool)
    new[:, 1:] = values[:, 1:] != values[:, :-1]
    keep = new & (values != 0)
    slot = torch.where(keep, keep.cumsum(1) - 1, values.size(1))  # dropped values go to a spare column
    nodes = torch.zeros(values.size(0), values.size(1) + 1, dtype=values.dtype, device=values.device)
    nodes.scatter_(1, slot, values)
    nodes = nodes[:, : int(keep.sum(1).max())]  # [B,M]
    last = item_seq.gather(1, (item_seq_len - 1).unsqueeze(1))  # [B,1]
    return nodes, ((nodes != 0) & (nodes < last)).sum(1)


class SRSAN(ItemScoringRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = config["hidden_size"]
        self.use_padding_mask = config["use_padding_mask"]
        self.dedup_items = config["dedup_items"]
        self.init_mode = config["init_mode"]
        self.initializer_range = config["initializer_range"]
        if d % config["n_heads"]:
            raise ValueError(f"hidden_size {d} must be a multiple of n_heads {config['n_heads']} "
                             "(each head gets hidden_size / n_heads dimensions)")
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=config["n_heads"],
            dim_feedforward=config["inner_size"],
            dropout=config["dropout_prob"],
            activation=activation(config["hidden_act"]),
            layer_norm_eps=config["layer_norm_eps"],
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config["n_layers"], enable_nested_tensor=False)
        self.reset_parameters()

    def reset_parameters(self):
        if self.init_mode == "uniform":  # the reference: every parameter, LayerNorm included
            bound = 1.0 / math.sqrt(self.item_embedding.embedding_dim)
            for parameter in self.parameters():
                nn.init.uniform_(parameter, -bound, bound)
        elif self.init_mode == "normal":  # RecBole's convention, extended to the fused Q,K,V projection
            self.apply(self.init_weights)
            for module in self.modules():
                if isinstance(module, nn.MultiheadAttention):
                    nn.init.normal_(module.in_proj_weight, std=self.initializer_range)
                    nn.init.zeros_(module.in_proj_bias)
        else:
            raise ValueError(f"init_mode '{self.init_mode}' is not one of ['normal', 'uniform']")

    def padding_dependence(self):
        if self.use_padding_mask:
            return None
        return "with use_padding_mask: false every click attends to the padding too; set use_padding_mask: true"

    def encode(self, item_seq, item_seq_len):
        """States of the clicks [B,L',d], L' = the batch's longest session: the files pad every
        row to the longest session of all, and without positions the columns past the batch's
        longest only cost time (masked, or absent in the reference's batches)."""
        item_seq = item_seq[:, : int(item_seq_len.max())]
        pad = item_seq == 0 if self.use_padding_mask else None  # True = ignored key
        return self.encoder(self.item_embedding(item_seq), src_key_padding_mask=pad)  # [B,L',d]

    def forward(self, item_seq, item_seq_len):
        if not self.dedup_items:
            return super().forward(item_seq, item_seq_len)
        nodes, last = node_set(item_seq, item_seq_len)  # [B,M], [B]
        return self.gather_indexes(self.encode(nodes, (nodes != 0).sum(1)), last)  # [B,d]
