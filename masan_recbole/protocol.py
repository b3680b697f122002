"""The papers' evaluation protocol as a config key: ``eval_exclude_history``.

RecBole's full-sort evaluation of a sequential model ranks every item but padding, the user's
earlier items included. S3-Rec, FMLP-Rec, FEARec and BSARec rank every item too, but first set the
scores of every item the user had before the target to 0 (their whole history in the dataset, not
only the last ``MAX_ITEM_LIST_LENGTH`` items the model reads). Their figures are only comparable
with figures made under that rule.

The score is 0, not -inf, because that is what those papers' code does, and the two differ: an
earlier item still takes a place in the ranking, above every item scoring below 0 (dot-product
scores often do), so -inf would rank targets higher than the papers do. A target that repeats an
earlier item gets 0 as well and is still ranked; it ties with the other earlier items, and the tie
goes the target's way: its rank is 1 + the items scoring strictly above it, the same rank whatever
order a top-k kernel leaves tied items in (the papers leave it to numpy's). Padding stays at
RecBole's -inf.

``eval_exclude_history``: ``false`` (RecBole's protocol), ``true`` (the papers', for validation and
test), ``both`` (RecBole's metrics as usual, and each metric again under the papers' rule as
``<metric>@<k>_history_excluded``, from the same pass over the data). It needs a leave-one-out
split ordered by time, the split the papers use: a user's history before the test target is all
their other items, before the validation target all but the test and validation targets.
"""

from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

MODES = (False, True, "both")
HISTORY_SCORE = 0.0
# the smallest float above 0: a repeated target placed just above the other earlier items
ABOVE_HISTORY_SCORE = float(torch.nextafter(torch.tensor(0.0), torch.tensor(1.0)))
SUFFIX = "_history_excluded"


class Histories(NamedTuple):
    """Every user's interactions in time order, concatenated: user u's are items[starts[u]:ends[u]]."""
    items: torch.Tensor  # [interactions] internal item ids
    starts: torch.Tensor  # [users] (internal user ids; 0 is padding, with no interactions)
    ends: torch.Tensor  # [users]

    def of(self, user):
        return self.items[self.starts[user]:self.ends[user]]


def mode(config):
    value = config["eval_exclude_history"]
    return False if value is None else value


def check_config(config):
    """Refuse settings under which the papers' rule is undefined, with the fix."""
    value = config["eval_exclude_history"]
    if value is None or value is False:
        return
    if value not in MODES:
        raise ValueError(f"eval_exclude_history must be false, true or both, got {value!r}")
    eval_args = config["eval_args"] or {}
    if config["benchmark_filename"]:
        raise ValueError("eval_exclude_history needs user histories, and a dataset read from train/valid/test files "
                         "(benchmark_filename) has none: set eval_exclude_history: false")
    if eval_args.get("split") != {"LS": "valid_and_test"} or eval_args.get("order") != "TO":
        raise ValueError(f"eval_exclude_history needs the papers' split, leave-one-out by time (eval_args split "
                         f"{{LS: valid_and_test}}, order TO), got split {eval_args.get('split')} and order "
                         f"{eval_args.get('order')}; set those, or eval_exclude_history: false")
    if eval_args.get("mode") not in ("full", {"valid": "full", "test": "full"}):
        raise ValueError(f"eval_exclude_history ranks every item (eval_args mode: full), got mode {eval_args.get('mode')}")


def user_histories(dataset):
    """The users' interactions ordered by time, from a RecBole dataset not yet split (afterwards a
    sequential dataset holds augmented rows only). The order is RecBole's own (a stable sort by
    time, then by user), so a user's last interaction is their test target under leave-one-out.
    None for data without a time column (sessions: each row is its own prefix, with no history)."""
    frame = dataset.inter_feat
    if not isinstance(frame, pd.DataFrame):
        raise ValueError("user_histories needs the dataset before data_preparation (its inter_feat a DataFrame)")
    if dataset.time_field is None or dataset.time_field not in frame:
        return None
    users = frame[dataset.uid_field].to_numpy()
    by_time = np.argsort(frame[dataset.time_field].to_numpy(), kind="stable")
    order = by_time[np.argsort(users[by_time], kind="stable")]
    counts = np.bincount(users, minlength=dataset.user_num)
    ends = np.cumsum(counts)
    return Histories(torch.as_tensor(frame[dataset.iid_field].to_numpy()[order], dtype=torch.long),
                     torch.as_tensor(ends - counts, dtype=torch.long), torch.as_tensor(ends, dtype=torch.long))


def earlier_items(histories, users, targets):
    """(row, item) pairs of every item each user had before their target: the user's interactions
    but the last occurrence of the target. Found by item, not by position: interactions with equal
    times come in whichever order RecBole's sort left them, and RecBole's split decides which of
    them is the target. An earlier occurrence of the target stays (a repeat, as the papers' code
    treats it). users, targets: [B] -> rows, items: [H]."""
    targets = targets.cpu()
    starts, ends = histories.starts[users], histories.ends[users]  # [B]
    lengths = ends - starts  # [B]
    rows = torch.repeat_interleave(torch.arange(len(users)), lengths)  # [H+B]
    offsets = torch.arange(len(rows)) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
    items = histories.items[starts[rows] + offsets]  # [H+B]
    is_target = items == targets[rows]
    position = torch.where(is_target, torch.arange(len(rows)), torch.full_like(rows, -1))
    drop = torch.full((len(users),), -1, dtype=torch.long).scatter_reduce(0, rows, position, "amax")  # [B]
    if (drop < 0).any():
        wrong = (drop < 0).nonzero().flatten()[:5].tolist()
        raise ValueError(f"targets are not among their users' interactions (rows {wrong}): the papers' protocol "
                         "needs RecBole's leave-one-out split of the same data")
    keep = torch.ones(len(rows), dtype=torch.bool)
    keep[drop] = False
    return rows[keep], items[keep]


def without_targets(histories, users, targets):
    """The histories with each given user's target taken out (its last occurrence), the others
    emptied: what a validation target is judged against, given the test targets."""
    order = torch.argsort(users)
    users, targets = users[order], targets[order]
    rows, items = earlier_items(histories, users, targets)  # rows ascend: users' items stay together
    counts = torch.zeros(len(histories.starts), dtype=torch.long)
    counts[users] = torch.bincount(rows, minlength=len(users))
    ends = counts.cumsum(0)
    return Histories(items, ends - counts, ends)


def exclude_history(scores, rows, items):
    """A copy of scores [B, items] with ``items`` of the given ``rows`` (pairs) at HISTORY_SCORE."""
    excluded = scores.clone()
    excluded[rows.to(scores.device), items.to(scores.device)] = HISTORY_SCORE
    return excluded


# ------------------------------------------------------------------ installed into RecBole (patches)

def attach_histories(original, config, dataset):
    """RecBole's ``data_preparation``; with ``eval_exclude_history`` the validation and test loaders
    carry the histories their targets are judged against (read before the split changes the data)."""
    if not mode(config):
        return original(config, dataset)
    histories = user_histories(dataset)
    if histories is None:
        raise ValueError(f"eval_exclude_history needs a time column in {config['dataset']} to order each "
                         "user's history; set eval_exclude_history: false")
    train_data, valid_data, test_data = original(config, dataset)
    test_rows = test_data._dataset.inter_feat
    test_users, test_targets = test_rows[config["USER_ID_FIELD"]], test_rows[config["ITEM_ID_FIELD"]]
    test_data.histories = histories
    if valid_data is not None:
        # found by item, not as "all but the last two": see earlier_items
        valid_data.histories = without_targets(histories, test_users, test_targets)
    return train_data, valid_data, test_data


class _Pass(NamedTuple):
    histories: Histories
    collector: object  # with ``both``: a second collector for the history-excluded scores, else None
    samples: list  # the rows seen, for DDP's reduction of the second result


def evaluate(original, trainer, eval_data, *args, **kwargs):
    """RecBole's ``Trainer.evaluate``, scoring under the protocol its config asks for."""
    histories = getattr(eval_data, "histories", None)
    if not mode(trainer.config) or histories is None:
        return original(trainer, eval_data, *args, **kwargs)
    collector = None
    if mode(trainer.config) == "both":
        from recbole.evaluator import Collector

        collector = Collector(trainer.config)
        # what RecBole collected from the training data (item counts...) serves both passes
        for key, value in trainer.eval_collector.data_struct._data_dict.items():
            if key.startswith("data."):
                collector.data_struct.set(key, value)
    trainer._history_pass = _Pass(histories, collector, [0])
    try:
        result = original(trainer, eval_data, *args, **kwargs)
    finally:
        pass_ = trainer.__dict__.pop("_history_pass")
    if collector is not None and result is not None:
        collector.model_collect(trainer.model)
        excluded = trainer.evaluator.evaluate(collector.get_data_struct())
        if not trainer.config["single_spec"]:
            excluded = trainer._map_reduce(excluded, pass_.samples[0])
        result.update({key + SUFFIX: value for key, value in excluded.items()})
    return result


def full_sort_batch_eval(original, trainer, batched_data):
    """RecBole's full-sort scores of a batch; during an evaluation under the papers' rule, the
    scores with each user's earlier items at 0 (``both``: those go to the second collector)."""
    interaction, scores, positive_u, positive_i = original(trainer, batched_data)
    pass_ = getattr(trainer, "_history_pass", None)
    if pass_ is None:
        return interaction, scores, positive_u, positive_i
    users = interaction[trainer.config["USER_ID_FIELD"]][positive_u].cpu()  # [P] one target per row
    rows, items = earlier_items(pass_.histories, users, positive_i)
    excluded = exclude_history(scores, positive_u[rows.to(positive_u.device)], items)
    # a repeated target ties at 0 with the other earlier items: the tie goes its way (see above)
    repeats = rows[items == positive_i.cpu()[rows]].unique().to(positive_u.device)
    excluded[positive_u[repeats], positive_i[repeats]] = ABOVE_HISTORY_SCORE
    if pass_.collector is None:
        return interaction, excluded, positive_u, positive_i
    pass_.collector.eval_batch_collect(excluded, interaction, positive_u, positive_i)
    pass_.samples[0] += len(batched_data)
    return interaction, scores, positive_u, positive_i
