"""All-position training: one sample per training sequence, a loss at every position.

RecBole turns a user's training items s_1..s_m into m-1 samples (prefix -> next item),
so a causal encoder runs over the same items about L times per epoch. With
``train_mode: all_positions`` the training split becomes windows of at most L inputs,
each with a target list: the next item at every position, 0 where no loss is taken.
Validation and test data are RecBole's own, untouched.

Windows. A sequence with n <= L targets is one window, and its targets are exactly the
pairs of RecBole's augmentation. A longer one is covered by windows of L inputs
ending at L, L+S, L+2S, ... and finally at n (S = ``train_window_stride``); each
window takes the loss only for the targets past the previous window's end, so every
target counts exactly once and sees at least L-S+1 items of context (RecBole: L).
S = 1 reproduces RecBole's pairs exactly; larger S costs fewer windows but trains the
last position (the one validation and test read for a long user) less often. The default
S = L/10 was chosen on converged runs against RecBole's prefix training (docs/fast_training.md).
"""

import numpy as np
import torch
from recbole.data import utils as data_utils
from recbole.data.interaction import Interaction

from masan_recbole.fields import targets_field

TRAIN_MODES = ("prefix", "all_positions")


def windows(n_targets, length, stride):
    """``(start, end, first_counted)`` per window over ``n_targets`` positions: inputs
    ``[start, end)``, loss on targets ``[first_counted, end)``."""
    if n_targets <= length:
        return [(0, n_targets, 0)]
    spans, end = [(0, length, 0)], length
    while end < n_targets:
        new_end = min(end + stride, n_targets)
        spans.append((new_end - length, new_end, end))
        end = new_end
    return spans


def window_stride(config):
    length = config["MAX_ITEM_LIST_LENGTH"]
    stride = config["train_window_stride"]
    if stride is None:
        stride = max(1, length // 10)
    if not isinstance(stride, int) or isinstance(stride, bool) or not 1 <= stride <= length:
        raise ValueError(
            f"train_window_stride must be an integer in [1, MAX_ITEM_LIST_LENGTH={length}] "
            f"or ~ (a tenth of it), got {config['train_window_stride']!r}"
        )
    return stride


def user_sequences(train_dataset, config):
    """Each user's training items s_1..s_m, rebuilt from RecBole's prefix rows.

    Within a user the rows are in sequence order (RecBole sorts stably), so the k-th
    row holds the prefix s_1..s_k (its last L items) and the target s_{k+1}."""
    feat = train_dataset.inter_feat
    uid_field, iid_field = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    length = config["MAX_ITEM_LIST_LENGTH"]
    uids = feat[uid_field].numpy()
    order = np.argsort(uids, kind="stable")
    uids = uids[order]
    prefixes = feat[iid_field + config["LIST_SUFFIX"]].numpy()[order]
    prefix_lengths = feat[config["ITEM_LIST_LENGTH_FIELD"]].numpy()[order]
    targets = feat[iid_field].numpy()[order]

    starts = np.flatnonzero(np.r_[True, uids[1:] != uids[:-1]])
    rank = np.arange(len(uids)) - np.repeat(starts, np.diff(np.r_[starts, len(uids)])) + 1
    if not np.array_equal(prefix_lengths, np.minimum(rank, length)):
        raise ValueError(
            "train_mode all_positions needs each user's training rows to be the prefixes of one "
            "sequence in order (RecBole's augmentation with eval_args order: TO and a split "
            "grouped by user, e.g. split: {LS: valid_and_test}); this training split is not."
        )
    ends = np.r_[starts[1:], len(uids)]
    return [
        (uids[a], np.concatenate([prefixes[a, :1], targets[a:b]])) for a, b in zip(starts, ends)
    ]


def all_positions_train_set(train_dataset, config):
    """A copy of RecBole's training split with one row per window (see module doc)."""
    length = config["MAX_ITEM_LIST_LENGTH"]
    stride = window_stride(config)
    uid_rows, input_rows, target_rows, input_lengths = [], [], [], []
    for uid, items in user_sequences(train_dataset, config):
        inputs, targets = items[:-1], items[1:]
        for start, end, first_counted in windows(len(targets), length, stride):
            row_inputs = np.zeros(length, dtype=np.int64)
            row_targets = np.zeros(length, dtype=np.int64)
            row_inputs[: end - start] = inputs[start:end]
            row_targets[first_counted - start : end - start] = targets[first_counted:end]
            uid_rows.append(uid)
            input_rows.append(row_inputs)
            target_rows.append(row_targets)
            input_lengths.append(end - start)

    iid_field = config["ITEM_ID_FIELD"]
    target_rows = torch.from_numpy(np.stack(target_rows))
    rows = Interaction({
        config["USER_ID_FIELD"]: torch.tensor(np.asarray(uid_rows)),
        iid_field + config["LIST_SUFFIX"]: torch.from_numpy(np.stack(input_rows)),
        config["ITEM_LIST_LENGTH_FIELD"]: torch.tensor(input_lengths),
        targets_field(config): target_rows,
        # the last target of each window, so code that reads the item column still finds one
        iid_field: target_rows[torch.arange(len(target_rows)), torch.tensor(input_lengths) - 1],
    })
    return train_dataset.copy(rows)


def data_preparation(original, config, dataset):
    """RecBole's ``data_preparation``; with ``train_mode: all_positions`` the training
    loader iterates over windows (:func:`all_positions_train_set`) instead of prefixes (the
    settings were checked with the config, masan_recbole.config.check_train_mode)."""
    train_data, valid_data, test_data = original(config, dataset)
    if config["train_mode"] == "all_positions":
        train_set = all_positions_train_set(train_data._dataset, config)
        train_data = data_utils.get_dataloader(config, "train")(config, train_set, None, shuffle=config["shuffle"])
    return train_data, valid_data, test_data
