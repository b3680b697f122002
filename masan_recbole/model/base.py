"""What every plugin model shares: item scoring, the losses (CE, BPR, sampled softmax),
all-position training for causal models, mixed precision and ``torch.compile``."""

import contextlib
import math

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss
from torch import nn

from masan_recbole.fields import targets_field
from masan_recbole.precision import autocast_dtype

LOSSES = ("CE", "BPR", "SSM")
ALL_POSITIONS_WEIGHTS = ("per_target", "per_batch")
SSM_SAMPLERS = ("uniform", "in_batch")
SSM_CORRECTION = "-log(K q) on negatives"  # the logQ correction of sampled_softmax, named in result files


class ItemScoringRecommender(SequentialRecommender):
    """A sequential model whose ``forward`` gives one state per sequence [B,d],
    scored against ``self.item_embedding`` (the input table, shared).

    The contract: a subclass builds ``self.item_embedding`` (usually through
    :meth:`init_input`) and ``encode(item_seq, item_seq_len)`` -> [B,L,d], the state at
    every position; ``forward`` reads the last valid one (override it where the sequence
    state is something else). Causal models (the state at t depends only on items <= t)
    set ``causal = True``, which lets them train with ``train_mode: all_positions``.

    Config keys (defaults in ``configs/overall.yaml``): ``loss_type`` CE | BPR | SSM;
    ``ssm_num_negatives``, ``ssm_sampler`` (uniform | in_batch); ``all_positions_weight``
    (per_target | per_batch, see :meth:`all_positions_scale`); ``mixed_precision``
    (auto: bf16 on a CUDA device that supports it, fp32 elsewhere | bf16 | off);
    ``compile`` (wrap ``forward``/``encode`` in ``torch.compile``).
    """

    causal = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.loss_type = config["loss_type"]
        if self.loss_type not in LOSSES:
            raise ValueError(f"loss_type '{self.loss_type}' is not one of {list(LOSSES)}")
        self.loss_fct = BPRLoss() if self.loss_type == "BPR" else nn.CrossEntropyLoss()
        self.TARGETS = targets_field(config)
        self.init_all_positions_weight(config, dataset)
        if self.loss_type == "SSM":
            self.init_sampled_softmax(config, dataset)
        self.autocast_dtype = autocast_dtype(config)
        if config["compile"]:
            # both entry points of the scoring path: forward for prefix training and full-sort
            # scores, encode for all-position training (a model's forward need not call encode)
            self.encode = torch.compile(self.encode)
            self.forward = torch.compile(self.forward)

    def encode(self, item_seq, item_seq_len):
        """States at every position [B,L,d] of item_seq [B,L] (0 = padding)."""
        raise NotImplementedError(f"{type(self).__name__} must define encode(item_seq, item_seq_len)")

    def padding_dependence(self):
        """None when a sequence's scores do not depend on the padding after it, so a batch
        may be cut to its longest sequence (``length_bucketing``); otherwise why they do."""
        return None

    def forward(self, item_seq, item_seq_len):
        """The sequence state [B,d]: the encoded last valid position."""
        return self.gather_indexes(self.encode(item_seq, item_seq_len), item_seq_len - 1)

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

    def init_all_positions_weight(self, config, dataset):
        self.all_positions_weight = config["all_positions_weight"] or "per_target"  # None: outside the plugin's configs
        if self.all_positions_weight not in ALL_POSITIONS_WEIGHTS:
            raise ValueError(f"all_positions_weight '{self.all_positions_weight}' is not one of "
                             f"{list(ALL_POSITIONS_WEIGHTS)}")
        # the training rows' mean number of targets: a batch of B rows counts as B * this many targets;
        # None on a prefix training set (or a stand-in dataset that only counts items)
        feat = getattr(dataset, "inter_feat", None)
        has_targets = feat is not None and self.TARGETS in feat
        self.targets_per_row = (feat[self.TARGETS] > 0).sum().item() / len(feat) if has_targets else None

    def init_sampled_softmax(self, config, dataset):
        self.ssm_num_negatives = config["ssm_num_negatives"]
        self.ssm_sampler = config["ssm_sampler"]
        if self.ssm_sampler not in SSM_SAMPLERS:
            raise ValueError(f"ssm_sampler '{self.ssm_sampler}' is not one of {list(SSM_SAMPLERS)}")
        if self.ssm_num_negatives < 1:
            raise ValueError(f"ssm_num_negatives must be >= 1, got {self.ssm_num_negatives}")
        # In-batch negatives are other samples' targets: drawn with probability q(item) =
        # its share of the training targets (on average over batches).
        feat = dataset.inter_feat
        targets = feat[self.TARGETS] if self.TARGETS in feat else feat[self.ITEM_ID]
        counts = torch.bincount(targets.flatten(), minlength=self.n_items).double()
        counts[0] = 0
        self.register_buffer("log_q", (counts.clamp(min=1) / counts.sum()).log().float(), persistent=False)

    def autocast(self, device_type):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.autocast_dtype)

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
        item_seq = interaction[self.ITEM_SEQ]
        with self.autocast(item_seq.device.type):
            if self.TARGETS in interaction:  # all_positions: the next item at every position, 0 = none
                targets = interaction[self.TARGETS]  # [B,L]
                counted = targets > 0
                states = self.encode(item_seq, interaction[self.ITEM_SEQ_LEN])[counted]  # [P,d]
                return self.item_loss(states, targets[counted]) * self.all_positions_scale(len(states), len(targets))
            states = self.forward(item_seq, interaction[self.ITEM_SEQ_LEN])  # [B,d]
            pos_items = interaction[self.POS_ITEM_ID]
            neg_items = interaction[self.NEG_ITEM_ID] if self.loss_type == "BPR" else None
            return self.item_loss(states, pos_items, neg_items)

    def all_positions_scale(self, n_targets, n_rows):
        """Factor on an all-position batch's mean loss. per_target turns it into the batch's summed loss over
        n_rows * (the training rows' mean targets), a constant per batch size: every target of an epoch then
        weighs the same, as in prefix training. The plain mean would weigh a target by 1 / its batch's count,
        and length-bucketed batches of short sequences hold up to L times fewer targets than long ones."""
        if self.all_positions_weight == "per_batch":
            return 1.0
        if self.targets_per_row is None:
            raise ValueError("all-position batches reached a model built on a training set without targets; "
                             "build the model on the all-position training loader's dataset (train_data._dataset)")
        return n_targets / (n_rows * self.targets_per_row)

    def item_loss(self, states, pos_items, neg_items=None):
        """Loss of states [P,d] whose next items are ``pos_items`` [P]."""
        if self.loss_type == "CE":
            return self.loss_fct(states @ self.item_embedding.weight.T, pos_items)  # logits [P,N]
        if self.loss_type == "BPR":
            if neg_items is None:  # all_positions: one uniform negative per position
                neg_items = torch.randint(1, self.n_items, pos_items.shape, device=pos_items.device)
            pos_score = (states * self.item_embedding(pos_items)).sum(-1)  # [P]
            neg_score = (states * self.item_embedding(neg_items)).sum(-1)
            return self.loss_fct(pos_score, neg_score)
        return self.sampled_softmax(states, pos_items)

    def sampled_softmax(self, states, pos_items):
        """Softmax over the true item and K negatives shared by the batch, drawn with
        probability q: uniformly, or (in_batch) from the batch's own targets.

        Each negative's logit is corrected by -log(K q): (1/K) sum_k exp(o_k) / q_k estimates
        the softmax denominator over all other items without bias, so with uniform negatives
        the loss tends to full-catalog CE as K grows (Bengio & Senecal 2008, Blanc & Rendle
        2018). The true item is always in the denominator, not sampled, so its logit is left
        as is (Khrylchenko et al. 2025); correcting it too would cancel the uniform correction
        and shrink the negatives' weight in the denominator by K / catalog size. in_batch
        takes q = the item's share of all training targets, its chance of being drawn only
        on average over batches; items that are never a target are never drawn, and a
        sequence's own later targets sit in its batch, so this is popularity-weighted hard
        negatives with an approximate correction, not an unbiased estimate."""
        k = self.ssm_num_negatives
        if self.ssm_sampler == "uniform":
            neg_items = torch.randint(1, self.n_items, (k,), device=pos_items.device)
            log_q = -math.log(self.n_items - 1)
        else:
            neg_items = pos_items[torch.randint(0, len(pos_items), (k,), device=pos_items.device)]
            log_q = self.log_q[neg_items][None, :]
        pos_logits = (states * self.item_embedding(pos_items)).sum(-1, keepdim=True)  # [P,1]
        # fp32 before the shift: under bf16 autocast a shift of log(N/K) would be rounded again
        neg_logits = (states @ self.item_embedding(neg_items).T).float() - (math.log(k) + log_q)  # [P,K]
        # a negative that is the true item is no negative ("accidental hit")
        neg_logits = neg_logits.masked_fill(neg_items[None, :] == pos_items[:, None], float("-inf"))
        logits = torch.cat([pos_logits.float(), neg_logits], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))

    def predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (seq_output * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)  # [B]

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return seq_output @ self.item_embedding.weight.T  # [B,N]
