"""Top-k recommendations from a saved checkpoint, in the dataset's own ids.

    python -m masan_recbole.recommend --checkpoint saved/SASRec-....pth --users 196 186 --k 10 [--exclude-history]
    python -m masan_recbole.recommend --checkpoint saved/SR-SAN-....pth --items 242 302 377 --k 20 --output top.csv
    python -m masan_recbole.recommend --checkpoint saved/SASRec-....pth --all-users --k 10 --output all.csv

A user's input sequence is their whole known history (their test sequence plus
the test item, oldest first, the most recent ``MAX_ITEM_LIST_LENGTH`` kept): the
items come after everything the model was shown. ``--items`` scores one explicit
sequence (a session) instead. ``--all-users`` writes every user's top-k to a .csv
or .parquet file, one chunk of users at a time.
"""

import argparse
import contextlib
import csv
import json
import logging
import sys
import time

import torch
from recbole.data.interaction import Interaction

from masan_recbole import protocol
from masan_recbole.checkpoint import CheckpointError
from masan_recbole.files import write_atomic
from masan_recbole.quick_start import load_data_and_model

COLUMNS = ("user", "rank", "item", "score")
OUTPUTS = (".csv", ".json", ".parquet")
logger = logging.getLogger("masan_recbole")


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


def _last_rows(dataset):
    """Row of each user's latest sequence in ``inter_feat``, by internal user id; -1 for
    [PAD] and for users with a single interaction (RecBole makes no sequence for them).

    After RecBole's split the dataset holds one row per prefix, in time order, so a
    user's latest sequence is their last row.
    """
    uid = dataset.inter_feat[dataset.uid_field]
    rows = torch.arange(len(uid))
    return torch.full((dataset.user_num,), -1, dtype=torch.long).scatter_reduce_(0, uid, rows, reduce="amax")


def _user_histories(dataset, last_rows, users):
    """Internal item ids of each user's known history, oldest first (at most L + 1):
    their latest sequence and its target, their latest item."""
    inter = dataset.inter_feat
    rows = last_rows[users]  # [B]
    seqs = inter[dataset.item_id_list_field][rows].tolist()  # [B, L]
    lengths, targets = inter[dataset.item_list_length_field][rows].tolist(), inter[dataset.iid_field][rows].tolist()
    return [seq[:n] + [t] for seq, n, t in zip(seqs, lengths, targets)]


def _batch(model, sequences):
    length = model.max_seq_length
    sequences = [seq[-length:] for seq in sequences]
    items = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, seq in enumerate(sequences):
        items[row, : len(seq)] = torch.tensor(seq)
    lengths = torch.tensor([len(seq) for seq in sequences])
    return Interaction({model.ITEM_SEQ: items, model.ITEM_SEQ_LEN: lengths})


def check_output(output):
    """Refuse an unknown suffix, or .parquet without pyarrow, before a model is loaded."""
    if output is None:
        return
    if not output.endswith(OUTPUTS):
        raise ValueError(f"--output must end in .csv, .json or .parquet, got {output}")
    if output.endswith(".parquet"):
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ValueError(f"writing {output} needs pyarrow, which is not installed: pip install pyarrow "
                             "(or write .csv)") from None


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
        histories = []
        self.config, self.model, self.dataset, *_ = load_data_and_model(
            checkpoint, before_split=lambda dataset: histories.append(protocol.user_histories(dataset)) or dataset)
        self.histories = histories[0]  # every user's whole history (None without a time column)
        if getattr(self.model, "ITEM_SEQ", None) is None:
            raise ValueError(f"{self.config['model']} is not a sequential model; recommend serves sequential models")
        self.device = device or self.config["device"]
        self.model.to(self.device).eval()
        self.item_tokens = self.dataset.field2id_token[self.dataset.iid_field]
        self.n_items = len(self.item_tokens) - 1  # id 0 is padding
        self._user_rows = None  # each user's last row in the dataset, found on the first user request

    def _last_rows(self):
        if self.config["benchmark_filename"]:
            raise ValueError(f"{self.dataset.dataset_name} holds sessions, not user histories: pass item sequences")
        if self._user_rows is None:
            self._user_rows = _last_rows(self.dataset)
        return self._user_rows

    def _check_k(self, k, exclude_history, longest):
        """``k``, capped at the items left after excluding a history of ``longest`` items."""
        if not 0 < k <= self.n_items:
            raise ValueError(f"k must be between 1 and {self.n_items} (the number of items), got {k}")
        if exclude_history:
            eligible = self.n_items - longest
            if eligible < 1:
                raise ValueError("--exclude-history leaves no item to recommend: a history holds every item")
            if k > eligible:
                logger.warning(f"k={k} is more than the {eligible} items left after excluding the longest history; "
                               f"returning {eligible} per sequence")
                k = eligible
        return k

    def _seen(self, users, sequences):
        """The items to exclude per row: a user's whole history (the same one the papers' protocol
        reads, masan_recbole.protocol), not only the window the model reads; for a given
        sequence, its items."""
        if users is None or self.histories is None:
            return sequences
        return [self.histories.of(user).tolist() for user in users]

    def _longest_history(self):
        """The most distinct items in any user's history: what --exclude-history may remove."""
        if self.histories is None:
            return min(self.n_items, self.model.max_seq_length + 1)
        owners = torch.repeat_interleave(torch.arange(len(self.histories.starts)),
                                         self.histories.ends - self.histories.starts)
        pairs = torch.unique(owners * (self.n_items + 1) + self.histories.items)
        return int(torch.bincount(pairs // (self.n_items + 1)).max())

    def _top_k_rows(self, names, sequences, k, exclude_history, seen=None):
        """Rows for one batch of sequences (internal item ids), in ``names`` order. With
        ``exclude_history`` the items of ``seen`` (default: the sequences) are never recommended:
        unlike the papers' evaluation rule (scores set to 0, the items still ranked), a served list
        must not hold them."""
        with torch.no_grad():
            scores = self.model.full_sort_predict(_batch(self.model, sequences).to(self.device)).float()  # [B,n+1]
        scores[:, 0] = -torch.inf  # padding item
        if exclude_history:
            for row, items in enumerate(sequences if seen is None else seen):
                scores[row, items] = -torch.inf
        top_scores, top_items = scores.topk(k, dim=1)  # [B,k]
        items = self.item_tokens[top_items.cpu().numpy()].tolist()
        return [{"user": name, "rank": rank + 1, "item": str(item), "score": round(score, 6)}
                for name, row_items, row_scores in zip(names, items, top_scores.tolist())
                for rank, (item, score) in enumerate(zip(row_items, row_scores))]

    def top_k(self, user_ids=None, item_sequences=None, k=10, exclude_history=False, batch_size=256):
        """Rows ``{user, rank, item, score}``; ``user`` is the given id, or ``session-<n>`` for sequences."""
        if (user_ids is None) == (item_sequences is None):
            raise ValueError("give either user_ids or item_sequences")
        if user_ids is not None:
            last_rows = self._last_rows()
            users = _internal_ids(self.dataset, self.dataset.uid_field, user_ids, "user")
            single = [u for u, i in zip(user_ids, users) if last_rows[i] < 0]
            if single:
                raise ValueError(f"user(s) {single} have a single interaction in {self.dataset.dataset_name}: "
                                 "RecBole keeps no sequence for them; pass their item as --items")
            sequences, names = _user_histories(self.dataset, last_rows, users), [str(u) for u in user_ids]
        else:
            sequences = [_internal_ids(self.dataset, self.dataset.iid_field, seq, "item") for seq in item_sequences]
            names, users = [f"session-{n}" for n in range(len(sequences))], None
        if any(len(seq) == 0 for seq in sequences):
            raise ValueError("every sequence needs at least one item")
        seen = self._seen(users, sequences)
        k = self._check_k(k, exclude_history, max(len(set(items)) for items in seen))
        rows = []
        for start in range(0, len(sequences), batch_size):
            end = start + batch_size
            rows += self._top_k_rows(names[start:end], sequences[start:end], k, exclude_history, seen[start:end])
        return rows

    def all_users(self, k=10, exclude_history=False, chunk_size=256):
        """Every user's rows, one list per chunk of ``chunk_size`` users, in internal id order.

        A generator, so that only one chunk's histories, scores and rows exist at a time.
        Each user's rows equal ``top_k(user_ids=[user], ...)``. With ``exclude_history``
        k is capped for the longest history in the dataset, the same for every chunk.
        """
        if chunk_size < 1:
            raise ValueError(f"--chunk-size must be at least 1, got {chunk_size}")
        last_rows = self._last_rows()
        users = (last_rows >= 0).nonzero().squeeze(1)  # [U] internal ids; one int per user, not a sequence
        single = self.dataset.user_num - 1 - len(users)
        if single:
            logger.warning(f"{single} user(s) with a single interaction have no sequence in RecBole's dataset "
                           "and are left out")
        k = self._check_k(k, exclude_history, self._longest_history())
        user_tokens = self.dataset.field2id_token[self.dataset.uid_field]
        for start in range(0, len(users), chunk_size):
            chunk = users[start : start + chunk_size]
            names = [str(token) for token in user_tokens[chunk.numpy()]]
            sequences = _user_histories(self.dataset, last_rows, chunk)
            yield self._top_k_rows(names, sequences, k, exclude_history, self._seen(chunk.tolist(), sequences))


def recommend(checkpoint, user_ids=None, item_sequences=None, k=10, exclude_history=False, device=None):
    """Top-``k`` items (external ids) for each user, or for each explicit item sequence."""
    return Recommender(checkpoint, device).top_k(user_ids, item_sequences, k, exclude_history)


@contextlib.contextmanager
def _table_writer(output):
    """A function that appends rows to ``output`` (.csv or .parquet); the file appears whole
    once the block ends, or not at all."""
    if output.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("user", pa.string()), ("rank", pa.int64()), ("item", pa.string()),
                            ("score", pa.float64())])
        with write_atomic(output, "wb") as f, pq.ParquetWriter(f, schema) as writer:
            yield lambda rows: writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    elif output.endswith(".csv"):
        with write_atomic(output, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            yield writer.writerows
    else:
        raise ValueError(f"rows are written to .csv or .parquet, got {output}")


def recommend_all_users(checkpoint, output, k=10, exclude_history=False, chunk_size=256, device=None):
    """Top-``k`` for every user of the checkpoint's dataset, streamed to ``output`` (.csv, or
    .parquet with pyarrow). Memory holds the model and one chunk of users, whatever their number.

    Returns ``{"users", "rows", "seconds", "users_per_s"}``; seconds count scoring and writing,
    not loading.
    """
    if not output.endswith((".csv", ".parquet")):
        raise ValueError(f"--all-users writes a .csv or .parquet --output, got {output}")
    check_output(output)
    recommender = Recommender(checkpoint, device)
    users = rows = 0
    started = time.perf_counter()
    with _table_writer(output) as write_rows:
        for chunk in recommender.all_users(k, exclude_history, chunk_size):
            write_rows(chunk)
            users += sum(row["rank"] == 1 for row in chunk)
            rows += len(chunk)
            del chunk  # drop it before the next one is made
    seconds = time.perf_counter() - started
    summary = {"users": users, "rows": rows, "seconds": seconds, "users_per_s": users / max(seconds, 1e-9)}
    logger.info(f"{users} users, {rows} rows in {seconds:.1f} s ({summary['users_per_s']:.0f} users/s): {output}")
    return summary


def write(rows, output=None):
    if output is None:
        print("\t".join(COLUMNS))
        for row in rows:
            print("\t".join(str(row[c]) for c in COLUMNS))
    elif output.endswith(".json"):
        with write_atomic(output, "w") as f:
            json.dump(rows, f, indent=1)
    else:
        with _table_writer(output) as write_rows:
            write_rows(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", nargs="+", help="external user ids")
    who.add_argument("--items", nargs="+", help="one item sequence (external ids, oldest first)")
    who.add_argument("--all-users", action="store_true", help="every user of the dataset, written to --output")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--exclude-history", action="store_true",
                        help="never recommend an item the user already had (their whole history; with --items, the given items)")
    parser.add_argument("--output", help="write CSV, JSON or Parquet (needs pyarrow) instead of printing a table")
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="--all-users: users scored and written at a time (memory: chunk x items scores)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the checkpoint's, CPU without CUDA)")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from sys.argv
    try:
        check_output(args.output)
        if args.all_users:
            if args.output is None:
                raise ValueError("--all-users writes a file: give --output all.csv (or .parquet)")
            summary = recommend_all_users(args.checkpoint, args.output, args.k, args.exclude_history,
                                          args.chunk_size, args.device)
            print(f"{summary['users']} users, {summary['rows']} rows in {summary['seconds']:.1f} s "
                  f"({summary['users_per_s']:.0f} users/s): {args.output}", file=sys.stderr)
            return
        rows = recommend(args.checkpoint, args.users, [args.items] if args.items else None, args.k,
                         args.exclude_history, args.device)
    except (ValueError, CheckpointError) as e:
        parser.exit(2, f"error: {e}\n")
    write(rows, args.output)


if __name__ == "__main__":
    main()
