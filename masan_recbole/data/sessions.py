"""Session-based benchmarks (SR-GNN protocol) as RecBole benchmark atomic files.

Inputs, in the order a source folder is searched:

* SR-GNN/GCE-GNN pickles ``all_train_seq.txt`` (list of training sessions, date order) and
  ``test.txt`` (``(prefixes, labels)``), in the folder or its ``srgnn_pickle/``; read with an
  unpickler that refuses every global, so a crafted file cannot run code;
* their plain-text copies ``train_sessions.txt`` / ``test_sessions.txt`` (optionally ``.gz``;
  one session per line, item ids separated by spaces), in the folder or its ``text/``;
* the raw click logs (Diginetica ``train-item-views.csv``, Yoochoose ``yoochoose-clicks.dat``),
  preprocessed with SR-GNN's rules (:func:`preprocess_clicks`).

Output: ``<folder>/<name>.train.inter``, ``.valid.inter``, ``.test.inter``, one row per
prefix→next pair (header ``session_id:token  item_id_list:token_seq  item_id:token``). A
session ``[s1..sm]`` gives ``([s1..s(m-1)] → sm), …, ([s1] → s2)``, longest prefix first, as
SR-GNN's ``test.txt``. The validation sessions are the most recent training sessions, set apart
*before* the augmentation, so no pair of a validation session is trained on.
"""

import gzip
import os
import pickle
from typing import NamedTuple

import numpy as np
import pandas as pd

from masan_recbole.files import write_atomic

HEADER = "session_id:token\titem_id_list:token_seq\titem_id:token\n"
DAY = 86400


class RefusingUnpickler(pickle.Unpickler):
    """Reads pickles of plain containers and numbers only: any global (class or function) is an error."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"refusing to load the global {module}.{name}: SR-GNN session files hold only lists, "
            f"tuples and ints, so this file is not one (or it was crafted to run code)"
        )


def load_pickle(path):
    with open(path, "rb") as f:
        try:
            return RefusingUnpickler(f).load()
        except pickle.UnpicklingError as error:
            raise pickle.UnpicklingError(f"{path}: {error}") from None


def _check_sessions(sessions, path):
    if not isinstance(sessions, list) or not all(isinstance(s, list) for s in sessions):
        raise ValueError(f"{path}: expected a list of sessions (lists of item ids)")
    if not all(type(i) is int and i > 0 for s in sessions for i in s):
        raise ValueError(f"{path}: item ids must be positive ints (0 is the padding id)")
    return sessions


def _read_text_sessions(path):
    opener = gzip.open if path.endswith(".gz") else open
    sessions = []
    with opener(path, "rt") as f:
        for number, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            bad = next((t for t in tokens if not (t.isascii() and t.isdigit())), None)
            if bad is not None:
                raise ValueError(f"{path}, line {number}: '{bad}' is not an integer item id "
                                 "(one session per line, item ids separated by spaces)")
            sessions.append([int(t) for t in tokens])
    return _check_sessions(sessions, path)


def augment(sessions):
    """SR-GNN's prefix→next pairs, longest prefix first: ``(prefixes, targets)``."""
    prefixes, targets = [], []
    for s in sessions:
        for k in range(len(s) - 1, 0, -1):
            prefixes.append(s[:k])
            targets.append(s[k])
    return prefixes, targets


def chain_ids(prefixes, targets):
    """Session number of each pair: a pair continues the session of the previous one when it is
    the next pair of the same augmentation (previous prefix = this prefix + this target)."""
    ids, current = [], -1
    for i, (prefix, target) in enumerate(zip(prefixes, targets)):
        previous = prefixes[i - 1] if i else None
        if not (previous and len(previous) == len(prefix) + 1 and previous[-1] == target
                and previous[:-1] == prefix):
            current += 1
        ids.append(current)
    return ids


def _first_existing(folder, names):
    for name in names:
        for sub in ("", "srgnn_pickle", "text"):
            path = os.path.join(folder, sub, name)
            if os.path.isfile(path):
                return path
    return None


def read_srgnn(folder):
    """``(train sessions, (test prefixes, test targets), files read)`` from pickles or their text copies;
    None when the folder has neither."""
    train = _first_existing(folder, ["all_train_seq.txt"])
    test = _first_existing(folder, ["test.txt"])
    if train and test:
        pairs = load_pickle(test)
        if not (isinstance(pairs, (tuple, list)) and len(pairs) == 2 and len(pairs[0]) == len(pairs[1])):
            raise ValueError(f"{test}: expected (prefixes, labels) of equal length")
        prefixes, targets = _check_sessions(list(pairs[0]), test), list(pairs[1])
        _check_sessions([targets], test)
        return _check_sessions(load_pickle(train), train), (prefixes, targets), [train, test]
    train = _first_existing(folder, ["train_sessions.txt", "train_sessions.txt.gz"])
    test = _first_existing(folder, ["test_sessions.txt", "test_sessions.txt.gz"])
    if train and test:
        return _read_text_sessions(train), augment(_read_text_sessions(test)), [train, test]
    return None


class Preprocessed(NamedTuple):
    """SR-GNN sessions: ``train``/``test`` lists of item numbers (1..), sorted by date; the date of
    each session (seconds); ``items[k - 1]``: the raw id of item number k."""

    train: list
    test: list
    train_dates: np.ndarray
    test_dates: np.ndarray
    items: np.ndarray


def preprocess_clicks(session, item, date, test_days):
    """SR-GNN's ``preprocess.py`` on a click log.

    ``session``, ``item``: one entry per click, sessions contiguous, clicks in session order and
    sessions numbered 0.. in order of first appearance; ``date``: per session, seconds (the date
    of its last row). Rules: drop sessions of one click; count each item's clicks once, over the
    remaining sessions; drop clicks on items seen fewer than 5 times, then sessions left with
    fewer than 2 clicks. Test = sessions dated after ``max date - test_days``, train = strictly
    before (a session dated exactly on the boundary is in neither, as in SR-GNN). Sessions are
    sorted by date (stable). Items are renumbered 1.. in order of first appearance over the
    training sessions; test clicks on other items are dropped, then test sessions under 2 clicks.
    Returns :class:`Preprocessed`.
    """
    length = np.bincount(session, minlength=len(date))
    keep = length[session] > 1
    counts = pd.Series(item[keep]).value_counts()
    keep &= pd.Series(item).map(counts).fillna(0).to_numpy() >= 5
    kept = np.bincount(session[keep], minlength=len(date)) >= 2
    keep &= kept[session]
    split = date[kept].max() - test_days * DAY

    def ordered(selected):  # clicks of the selected sessions, sessions by date, click order kept
        ids = np.flatnonzero(selected)
        rank = np.full(len(date), -1)
        rank[ids[np.argsort(date[ids], kind="stable")]] = np.arange(len(ids))
        clicks = np.flatnonzero(keep & selected[session])
        clicks = clicks[np.argsort(rank[session[clicks]], kind="stable")]
        return session[clicks], item[clicks]

    train_session, train_item = ordered(kept & (date < split))
    codes, items = pd.factorize(train_item)
    test_session, test_item = ordered(kept & (date > split))
    test_codes = pd.Index(items).get_indexer(test_item)
    seen = test_codes >= 0
    test_session, test_codes = test_session[seen], test_codes[seen]
    long_enough = (np.bincount(test_session, minlength=len(date)) >= 2)[test_session]
    test_session, test_codes = test_session[long_enough], test_codes[long_enough]
    return Preprocessed(_split(train_session, codes + 1), _split(test_session, test_codes + 1),
                        date[_firsts(train_session)], date[_firsts(test_session)], np.asarray(items))


def _firsts(session):
    """The session code of each run of contiguous clicks."""
    return session[np.r_[True, session[1:] != session[:-1]]] if len(session) else session


def _split(session, item):
    """Per-session lists from contiguous clicks."""
    if not len(session):
        return []
    starts = np.flatnonzero(session[1:] != session[:-1]) + 1
    return [part.tolist() for part in np.split(item, starts)]


def _numbered(ids):
    """Contiguous per-row session codes 0.. in order of first appearance."""
    return pd.factorize(ids)[0]


def read_diginetica_raw(path):
    """Sessions of Diginetica's ``train-item-views.csv`` (``;``-separated): clicks sorted by
    ``timeframe`` (stable), session date = ``eventdate`` of its last row in the file."""
    wanted = ["session_id", "item_id", "timeframe", "eventdate"]
    with open(path) as f:
        found = f.readline().rstrip("\r\n").split(";")
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ValueError(f"{path}: the header lacks column(s) {', '.join(missing)}; it has {found} (';'-separated). "
                         "Diginetica's train-item-views.csv starts with session_id;user_id;item_id;timeframe;eventdate: "
                         "is this that file?")
    df = pd.read_csv(path, sep=";", usecols=wanted,
                     dtype={"session_id": np.int64, "item_id": np.int64, "timeframe": np.int64, "eventdate": str})
    df["session"] = _numbered(df["session_id"].to_numpy())
    last_date = df.groupby("session", sort=True)["eventdate"].last()
    date = pd.to_datetime(last_date, format="%Y-%m-%d").astype("int64").to_numpy() // 10**9
    session = df["session"].to_numpy()
    order = np.argsort(df["timeframe"].to_numpy(), kind="stable")
    order = order[np.argsort(session[order], kind="stable")]  # by session, then timeframe, ties in file order
    return session[order], df["item_id"].to_numpy()[order], date


def read_yoochoose_raw(path):
    """Sessions of Yoochoose's ``yoochoose-clicks.dat`` (``,``-separated, header optional): clicks
    in file order, session date = its last row's timestamp cut to whole seconds."""
    with open(path) as f:
        has_header = f.readline().startswith("session")
    df = pd.read_csv(path, sep=",", header=None, skiprows=int(has_header),
                     names=["session_id", "timestamp", "item_id", "category"],
                     usecols=["session_id", "timestamp", "item_id"],
                     dtype={"session_id": np.int64, "timestamp": str, "item_id": np.int64})
    session = _numbered(df["session_id"].to_numpy())
    order = np.argsort(session, kind="stable")  # each session's rows together, in file order
    last_time = df["timestamp"].groupby(session).last()
    date = pd.to_datetime(last_time.str.slice(0, 19), format="%Y-%m-%dT%H:%M:%S").astype("int64").to_numpy() // 10**9
    return session[order], df["item_id"].to_numpy()[order], date


def keep_recent_pairs(sessions, divisor):
    """The most recent ``1/divisor`` of the training pairs (SR-GNN's yoochoose1_64 / 1_4 cut),
    as sessions: a session cut in the middle keeps only its first clicks, whose pairs are the kept ones."""
    pairs = np.array([len(s) - 1 for s in sessions])
    wanted = int(pairs.sum() / divisor)
    after = np.cumsum(pairs[::-1])[::-1] - pairs  # pairs in later sessions
    first = int(np.flatnonzero(after < wanted)[0]) if wanted else len(sessions)
    kept = sessions[first:]
    if kept:
        kept[0] = kept[0][: wanted - after[first] + 1]
    return kept


def _write(path, rows):
    with write_atomic(path) as f:
        f.write(HEADER)
        f.writelines(f"{sid}\t{' '.join(map(str, prefix))}\t{target}\n" for sid, prefix, target in rows)


def _session_rows(sessions, first_id):
    for number, s in enumerate(sessions, start=first_id):
        tokens = [str(i) for i in s]
        for k in range(len(s) - 1, 0, -1):
            yield number, tokens[:k], tokens[k]


def _pair_count(sessions):
    return sum(len(s) - 1 for s in sessions)


def write_benchmark(folder, name, train_sessions, test_pairs, valid_fraction=0.1):
    """Write ``<folder>/<name>.{train,valid,test}.inter``; return the counts of each split.

    The last ``valid_fraction`` of ``train_sessions`` (the most recent ones) become validation
    sessions. Sessions are numbered from 1 across the three files.
    """
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be between 0 and 1 (exclusive), got {valid_fraction}")
    n_valid = int(round(valid_fraction * len(train_sessions)))
    if n_valid == 0 or n_valid == len(train_sessions):
        raise ValueError(f"{len(train_sessions)} training sessions cannot be split with valid_fraction "
                         f"{valid_fraction}: each of train and valid needs at least one session")
    train, valid = train_sessions[:-n_valid], train_sessions[-n_valid:]
    prefixes, targets = test_pairs
    if not targets:
        raise ValueError("no test pairs: every test session has fewer than 2 clicks")
    test_ids = [len(train_sessions) + 1 + i for i in chain_ids(prefixes, targets)]
    os.makedirs(folder, exist_ok=True)
    _write(os.path.join(folder, f"{name}.train.inter"), _session_rows(train, 1))
    _write(os.path.join(folder, f"{name}.valid.inter"), _session_rows(valid, len(train) + 1))
    _write(os.path.join(folder, f"{name}.test.inter"), zip(test_ids, prefixes, targets))
    items = {i for s in train_sessions for i in s} | set(targets) | {i for p in prefixes for i in p}
    return {
        "train_sessions": len(train), "train_pairs": _pair_count(train),
        "valid_sessions": len(valid), "valid_pairs": _pair_count(valid),
        "test_sessions": len(set(test_ids)), "test_pairs": len(targets),
        "items": len(items), "max_item_id": max(items),
        "longest_prefix": max(max(len(s) for s in train_sessions) - 1, max(map(len, prefixes))),
    }


def _convert(source, folder, name, valid_fraction, raw_files=(), read_raw=None):
    """Pickles, else text copies, else the first of ``raw_files`` found, read by
    ``read_raw(path) -> (train sessions, test sessions)``."""
    found = read_srgnn(source)
    raw = _first_existing(source, raw_files)
    if found is not None:
        train, test_pairs, used = found
    elif raw is not None:
        train, test = read_raw(raw)
        test_pairs, used = augment(test), [raw]
    else:
        expected = ", or ".join(["all_train_seq.txt + test.txt (pickles)",
                                 "train_sessions.txt + test_sessions.txt", *raw_files])
        raise FileNotFoundError(f"{source}: no session files found; expected {expected} "
                                f"(directly or under srgnn_pickle/ or text/)")
    stats = write_benchmark(folder, name, train, test_pairs, valid_fraction)
    stats["source"] = used
    return stats


def _yoochoose(divisor):
    def read(path):
        sessions = preprocess_clicks(*read_yoochoose_raw(path), test_days=1)
        return keep_recent_pairs(sessions.train, divisor), sessions.test

    return read


def convert_diginetica(source, folder, name, valid_fraction=0.1):
    """Diginetica (CIKM Cup 2016): SR-GNN pickles / text, or raw train-item-views.csv (7-day test split)."""
    return _convert(source, folder, name, valid_fraction, ["train-item-views.csv", "sample_train-item-views.csv"],
                    lambda path: preprocess_clicks(*read_diginetica_raw(path), test_days=7)[:2])


def convert_yoochoose1_64(source, folder, name, valid_fraction=0.1):
    """Yoochoose 1/64: SR-GNN pickles / text, or raw yoochoose-clicks.dat (1-day test, newest 1/64 of train pairs)."""
    return _convert(source, folder, name, valid_fraction, ["yoochoose-clicks.dat"], _yoochoose(64))


def convert_yoochoose1_4(source, folder, name, valid_fraction=0.1):
    """Yoochoose 1/4: SR-GNN pickles / text, or raw yoochoose-clicks.dat (1-day test, newest 1/4 of train pairs)."""
    return _convert(source, folder, name, valid_fraction, ["yoochoose-clicks.dat"], _yoochoose(4))


def convert_srgnn(source, folder, name, valid_fraction=0.1):
    """Any SR-GNN/GCE-GNN-format session data set (Tmall, Nowplaying, ...): pickles or their text copies."""
    return _convert(source, folder, name, valid_fraction)
