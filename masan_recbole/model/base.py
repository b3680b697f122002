"""What every plugin model shares: item scoring, CE/BPR losses, RecBole's init."""

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss
from torch import nn


class ItemScoringRecommender(SequentialRecommender):
    """A sequential model whose ``forward`` gives one state per sequence [B,d],
    scored against ``self.item_embedding`` (the input table, shared).

    Subclasses build ``self.item_embedding`` (usually through :meth:`init_input`) and
    ``forward(item_seq, item_seq_len)``, and call :meth:`init_loss` in ``__init__``.
    """

    def init_input(self, config, position_rows=None):
        """The item table (shared with the output), a position table of ``position_rows``
        rows (default L), and the input LayerNorm and dropout."""
        d = config["hidden_size"]
        self.initializer_range = config["initializer_range"]
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        self.position_embedding = nn.Embedding(position_rows or self.max_seq_length, d)
        self.LayerNorm = nn.LayerNorm(d, eps=config["layer_norm_eps"])
        self.dropout = nn.Dropout(config["hidden_dropout_prob"])

    def embed(self, item_seq, with_positions=True):
        """Dropout(LN(E[s] + P)) [B,L,d]; without positions Dropout(LN(E[s]))."""
        x = self.item_embedding(item_seq)  # [B,L,d]
        if with_positions:
            x = x + self.position_embedding(torch.arange(item_seq.size(1), device=item_seq.device))
        return self.dropout(self.LayerNorm(x))

    def init_loss(self, config):
        self.loss_type = config["loss_type"]
        losses = {"CE": nn.CrossEntropyLoss, "BPR": BPRLoss}
        if self.loss_type not in losses:
            raise ValueError(f"loss_type '{self.loss_type}' is not one of {sorted(losses)}")
        self.loss_fct = losses[self.loss_type]()

    def init_weights(self, module):
        """RecBole's convention: Linear/Embedding ~ N(0, initializer_range), bias 0, LayerNorm (1, 0)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def calculate_loss(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BPR":
            neg_items = interaction[self.NEG_ITEM_ID]
            pos_score = (seq_output * self.item_embedding(pos_items)).sum(-1)  # [B]
            neg_score = (seq_output * self.item_embedding(neg_items)).sum(-1)
            return self.loss_fct(pos_score, neg_score)
        logits = seq_output @ self.item_embedding.weight.T  # [B,N]
        return self.loss_fct(logits, pos_items)

    def predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (seq_output * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)  # [B]

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return seq_output @ self.item_embedding.weight.T  # [B,N]
