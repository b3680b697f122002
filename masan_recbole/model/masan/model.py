"""MASAN: multi-interest aware adaptive self-attention (reconstructed, docs/models.md#masan).

LightSANs (items attend to k pooled interests, decoupled position attention, no
positions in the item stream) whose softmax over the attention scores becomes
α-entmax with α chosen per sequence by ``alpha_w``. The authors' code is
unpublished; their logs fix the module tree and parameter counts (LightSANs +
``alpha_w`` per layer + one extra position row), the rest is our reading of their
abstract. With ``entmax_mode: softmax``, ``attn_padding_mask: false`` (LightSANs' padding
rule; the default masks padding) and LightSANs' weights the logits are RecBole's ``LightSANs``'
logits.
"""

import torch

from masan_recbole.model.base import ItemScoringRecommender
from masan_recbole.model.masan.entmax_attention import AdaptiveEntmax, AdaptiveLowRankEncoder, masked_mean

GLOBAL_PREFS = ("none", "mean_add")


class MASAN(ItemScoringRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = config["hidden_size"]
        self.global_pref = config["global_pref"]
        self.attn_padding_mask = config["attn_padding_mask"]
        if not isinstance(config["k_interests"], int) or config["k_interests"] < 1:
            raise ValueError(f"k_interests must be a whole number >= 1 (the interests items are pooled into), "
                             f"got {config['k_interests']!r}")
        if d % config["n_heads"]:
            raise ValueError(f"hidden_size {d} must be a multiple of n_heads {config['n_heads']}")
        if self.global_pref not in GLOBAL_PREFS:
            raise ValueError(f"global_pref '{self.global_pref}' is not one of {list(GLOBAL_PREFS)}")
        # The logged counts need L+1 position rows; only the first L are ever looked up.
        self.init_input(config, position_rows=self.max_seq_length + int(config["pos_table_extra_row"]))
        normaliser = AdaptiveEntmax(
            d,
            mode=config["entmax_mode"],
            dim=config["entmax_dim"],
            alpha_scope=config["alpha_scope"],
            alpha_eps=config["alpha_eps"],
            alpha_fixed=config["alpha_fixed"],
            n_iter=config["entmax_n_iter"],
        )
        self.trm_encoder = AdaptiveLowRankEncoder(
            n_layers=config["n_layers"],
            n_heads=config["n_heads"],
            k_interests=config["k_interests"],
            hidden_size=d,
            inner_size=config["inner_size"],
            hidden_dropout_prob=config["hidden_dropout_prob"],
            attn_dropout_prob=config["attn_dropout_prob"],
            hidden_act=config["hidden_act"],
            layer_norm_eps=config["layer_norm_eps"],
            normaliser=normaliser,
            padding_mask=config["attn_padding_mask"],
        )
        self.apply(self.init_weights)

    def padding_dependence(self):
        if self.attn_padding_mask:
            return None
        return ("with attn_padding_mask: false the interests pool the padding positions too "
                "(LightSANs' behaviour); set attn_padding_mask: true")

    def encode(self, item_seq, item_seq_len):
        """States at every position [B,L,d]."""
        return self.encode_with_stats(item_seq, item_seq_len)[0]

    def encode_with_stats(self, item_seq, item_seq_len):
        """States at every position [B,L,d], valid positions [B,L], and each layer's (Π, α)."""
        length = item_seq.size(1)
        valid = torch.arange(length, device=item_seq.device) < item_seq_len[:, None]  # [B,L]
        x = self.embed(item_seq, with_positions=False)  # positions are not added to the item stream
        states, stats = self.trm_encoder(x, self.position_embedding.weight[:length], valid)
        return states, valid, stats

    def forward(self, item_seq, item_seq_len):
        states, valid, _ = self.encode_with_stats(item_seq, item_seq_len)
        output = self.gather_indexes(states, item_seq_len - 1)  # [B,d]
        if self.global_pref == "mean_add":
            output = output + masked_mean(states, valid)
        return output

    @torch.no_grad()
    def explain(self, item_seq, item_seq_len):
        """For each layer, a dict with

        * ``alpha``: the entmax α of each sequence [B,1] (``alpha_scope: query``: of each position [B,L]);
        * ``weights``: the item-importance weights Π [B,h,L,k] (before attention dropout): with
          ``entmax_dim: -2``, Π[b,:,:,j] is interest j's distribution over the L positions.

        Runs in the model's current mode; call ``eval()`` first for deterministic weights.
        """
        _, _, stats = self.encode_with_stats(item_seq, item_seq_len)
        return [{"alpha": alpha.flatten(1), "weights": probs} for probs, alpha in stats]
