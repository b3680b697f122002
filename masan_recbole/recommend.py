"""Top-k recommendations from a saved checkpoint, in the dataset's own ids.

    python -m masan_recbole.recommend --checkpoint saved/SASRec-....pth --users 196 186 --k 10 [--exclude-history]
    python -m masan_recbole.recommend --checkpoint saved/SR-SAN-....pth --items 242 302 377 --k 20 --output top.csv

A user's input sequence is their whole known history (their test sequence plus
the test item, oldest first, the most recent ``MAX_ITEM_LIST_LENGTH`` kept): the
items come after everything the model was shown. ``--items`` scores one explicit
sequence (a session) instead.
"""

import argparse
import csv
import json
import logging
import sys

import torch
from recbole.data.interaction import Interaction

from masan_recbole.checkpoint import CheckpointError
from masan_recbole.quick_start import load_data_and_model

COLUMNS = ("user", "rank", "item", "score")


def _internal_ids(dataset, field, tokens, what):
    table = dataset.field2token_id[field]
    padding = [t for t in tokens if table.get(str(t)) == 0]
    if padding:
        raise ValueError(f"{padding[0]!r} is RecBole's padding token, not a {what} id; give real {what} ids")
    unknown = [t for t in tokens if str(t) not in table]
    if unknown:
        raise ValueError(
            f"unknown {what} id(s) {unknown} for dataset {dataset.dataset_name} "
            f"(field '{field}', {len(table) - 1} known ids, e.g. {list(table)[1:4]})"
        )
    return [table[str(t)] for t in tokens]


def _user_histories(dataset, users):
    """Internal item ids of each user's known history, oldest first (at most L + 1).

    After RecBole's split the dataset holds one row per prefix, in time order; a
    user's last row is their latest sequence and its target is their latest item.
    """
    inter = dataset.inter_feat
    uid, target = inter[dataset.uid_field], inter[dataset.iid_field]
    seqs, lengths = inter[dataset.item_id_list_field], inter[dataset.item_list_length_field]
    histories = []
    for user in users:
        last = (uid == user).nonzero()[-1].item()
        histories.append(seqs[last, : lengths[last]].tolist() + [target[last].item()])
    return histories


def _batch(model, sequences):
    length = model.max_seq_length
    sequences = [seq[-length:] for seq in sequences]
    items = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, seq in enumerate(sequences):
        items[row, : len(seq)] = torch.tensor(seq)
    lengths = torch.tensor([len(seq) for seq in sequences])
    return Interaction({model.ITEM_SEQ: items, model.ITEM_SEQ_LEN: lengths})


class Recommender:
    """A checkpoint loaded once; :meth:`top_k` answers many requests."""

    def __init__(self, checkpoint, device=None):
        if device is not None:
            try:
                device = torch.device(device)
            except RuntimeError:
                raise ValueError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"--device {device} was asked for but CUDA is not available here; use --device cpu")
        self.config, self.model, self.dataset, *_ = load_data_and_model(checkpoint)
        if getattr(self.model, "ITEM_SEQ", None) is None:
            raise ValueError(f"{self.config['model']} is not a sequential model; recommend serves sequential models")
        self.device = device or self.config["device"]
        self.model.to(self.device).eval()
        self.item_tokens = self.dataset.field2id_token[self.dataset.iid_field]

    def top_k(self, user_ids=None, item_sequences=None, k=10, exclude_history=False, batch_size=256):
        """Rows ``{user, rank, item, score}``; ``user`` is the given id, or ``session-<n>`` for sequences."""
        if (user_ids is None) == (item_sequences is None):
            raise ValueError("give either user_ids or item_sequences")
        if user_ids is not None:
            if self.config["benchmark_filename"]:
                raise ValueError(f"{self.dataset.dataset_name} holds sessions, not user histories: pass item sequences")
            users = _internal_ids(self.dataset, self.dataset.uid_field, user_ids, "user")
            sequences, names = _user_histories(self.dataset, users), [str(u) for u in user_ids]
        else:
            sequences = [_internal_ids(self.dataset, self.dataset.iid_field, seq, "item") for seq in item_sequences]
            names = [f"session-{n}" for n in range(len(sequences))]
        if any(len(seq) == 0 for seq in sequences):
            raise ValueError("every sequence needs at least one item")
        n_items = len(self.item_tokens) - 1  # id 0 is padding
        if not 0 < k <= n_items:
            raise ValueError(f"k must be between 1 and {n_items} (the number of items), got {k}")
        if exclude_history:
            eligible = n_items - max(len(set(seq)) for seq in sequences)
            if eligible < 1:
                raise ValueError("--exclude-history leaves no item to recommend: a history holds every item")
            if k > eligible:
                logging.getLogger("masan_recbole").warning(
                    f"k={k} is more than the {eligible} items left after excluding the longest history; "
                    f"returning {eligible} per sequence")
                k = eligible

        rows = []
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
            with torch.no_grad():
                scores = self.model.full_sort_predict(_batch(self.model, chunk).to(self.device)).float()
            scores[:, 0] = -torch.inf  # padding item
            if exclude_history:
                for row, seq in enumerate(chunk):
                    scores[row, seq] = -torch.inf
            top_scores, top_items = scores.topk(k, dim=1)  # [B,k]
            for row, name in enumerate(names[start : start + batch_size]):
                for rank in range(k):
                    rows.append({"user": name, "rank": rank + 1, "item": str(self.item_tokens[top_items[row, rank]]),
                                 "score": round(top_scores[row, rank].item(), 6)})
        return rows


def recommend(checkpoint, user_ids=None, item_sequences=None, k=10, exclude_history=False, device=None):
    """Top-``k`` items (external ids) for each user, or for each explicit item sequence."""
    return Recommender(checkpoint, device).top_k(user_ids, item_sequences, k, exclude_history)


def write(rows, output=None):
    if output is None:
        print("\t".join(COLUMNS))
        for row in rows:
            print("\t".join(str(row[c]) for c in COLUMNS))
    elif output.endswith(".json"):
        with open(output, "w") as f:
            json.dump(rows, f, indent=1)
    elif output.endswith(".csv"):
        with open(output, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    else:
        raise ValueError(f"--output must end in .csv or .json, got {output}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", nargs="+", help="external user ids")
    who.add_argument("--items", nargs="+", help="one item sequence (external ids, oldest first)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--exclude-history", action="store_true", help="never recommend an item already in the input")
    parser.add_argument("--output", help="write CSV or JSON instead of printing a table")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the checkpoint's, CPU without CUDA)")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from sys.argv
    try:
        rows = recommend(args.checkpoint, args.users, [args.items] if args.items else None, args.k,
                         args.exclude_history, args.device)
    except (ValueError, CheckpointError) as e:
        parser.exit(2, f"error: {e}\n")
    write(rows, args.output)


if __name__ == "__main__":
    main()
