"""Sequential benchmarks (one chronological item sequence per user) as RecBole atomic files.

Inputs:

* S3-Rec text (``Beauty.txt``, ``Yelp.txt``, ...): one line per user, ``user item1 item2 ...``,
  oldest item first;
* SASRec text (``Video.txt``): one ``user item`` line per interaction, each user's lines
  together and in time order;
* the gSASRec ml-1m split (``train/input.txt``, ``val/input.txt``), see :func:`read_gsasrec_ml1m`.

Output: ``<folder>/<name>.inter`` with header ``user_id:token  item_id:token  timestamp:float``,
one row per interaction. The files have no times; the position of the item in its user's
sequence (1, 2, ...) stands in for the timestamp, so RecBole's ``order: TO`` + ``split: LS
valid_and_test`` gives the literature's leave-one-out (last item test, second last validation).
Ids are written as they are (RecBole remaps tokens). ``valid_fraction`` is not used: the split
is done by RecBole.
"""

import os

from masan_recbole.files import write_atomic

HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
GSASREC_NOTE = ("NOT the standard SASRec ml-1m: each user's sequence without its last 2 items "
                "(the gap-free part of the gSASRec split); label results as such")


def find_input(source, dataset_folder, subfolder, filename):
    """The input file, given the shared dataset folder, the folder holding the file, or the file."""
    if os.path.isfile(source):
        if os.path.basename(source) != filename:
            raise ValueError(f"{source}: this converter reads {filename} ({dataset_folder}/{subfolder}/), "
                             f"not {os.path.basename(source)}; pass that file or its folder")
        return source
    candidates = [os.path.join(source, filename), os.path.join(source, subfolder, filename),
                  os.path.join(source, dataset_folder, subfolder, filename)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{filename} not found; looked for {', '.join(candidates)}. --from takes the "
                            f"shared dataset folder ({dataset_folder}), its {subfolder}/ folder, or the file itself")


def _ids(tokens, path, number):
    """Integer ids of one line's tokens; a clear error for anything else."""
    for token in tokens:
        if not (token.isascii() and token.isdigit()):
            raise ValueError(f"{path}, line {number}: '{token}' is not an integer id")
    return [int(t) for t in tokens]


def _lines(path):
    """``(line number, tokens)`` of each line; empty lines and tabs are errors."""
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if "\t" in line:
                raise ValueError(f"{path}, line {number}: tab found, expected ids separated by spaces "
                                 f"(the s3rec_with_time_gaps copies have a tab before the gaps: use s3rec/)")
            tokens = line.split()
            if not tokens:
                raise ValueError(f"{path}, line {number}: empty line (remove it)")
            yield number, tokens


def read_s3rec(path):
    """``{user: [items, oldest first]}`` from an S3-Rec file (one line per user)."""
    sequences, first_line = {}, {}
    for number, tokens in _lines(path):
        user, *items = _ids(tokens, path, number)
        if not items:
            raise ValueError(f"{path}, line {number}: user {user} has no items")
        if user in sequences:
            raise ValueError(f"{path}, line {number}: user {user} again (first on line {first_line[user]}); "
                             f"an S3-Rec file has one line per user (a 'user item' file is SASRec format)")
        sequences[user], first_line[user] = items, number
    return sequences


def read_sasrec(path):
    """``{user: [items, oldest first]}`` from a SASRec file (``user item`` lines, each user's together)."""
    sequences, previous = {}, None
    for number, tokens in _lines(path):
        if len(tokens) != 2:
            raise ValueError(f"{path}, line {number}: expected 'user item', got {len(tokens)} values")
        user, item = _ids(tokens, path, number)
        if user != previous and user in sequences:
            raise ValueError(f"{path}, line {number}: user {user} again after other users; a SASRec file "
                             f"keeps each user's lines together, in time order")
        sequences.setdefault(user, []).append(item)
        previous = user
    return sequences


def read_gsasrec_ml1m(split_folder):
    """``({user: items}, files read)``: every user's sequence without its last two items.

    ``train/input.txt``: line k = user k's sequence without its last 2 items, or without its
    last 3 for the validation users; ``val/input.txt``: for the validation users, the sequence
    without its last 2 items, i.e. that user's train line + one item. A validation line belongs
    to the one user whose train line it extends (checked to be unique, so no seed is assumed).
    """
    train_path = os.path.join(split_folder, "train", "input.txt")
    val_path = os.path.join(split_folder, "val", "input.txt")
    sequences = {number: _ids(tokens, train_path, number) for number, tokens in _lines(train_path)}
    owners = {}
    for user, items in sequences.items():
        owners.setdefault(tuple(items), []).append(user)
    extended = set()
    for number, tokens in _lines(val_path):
        items = _ids(tokens, val_path, number)
        users = owners.get(tuple(items[:-1]), [])
        if len(users) != 1 or users[0] in extended:
            problem = (f"the train/input.txt lines of users {users} all equal it without its last item, so "
                       f"its user is unknown" if len(users) > 1 else
                       f"user {users[0]} was already extended by an earlier line" if users else
                       "no train/input.txt line equals it without its last item")
            raise ValueError(f"{val_path}, line {number}: {problem}; expected gSASRec's val/input.txt "
                             f"next to its train/input.txt")
        sequences[users[0]] = items
        extended.add(users[0])
    return sequences, [train_path, val_path]


def write_inter(folder, name, sequences):
    """Write ``<folder>/<name>.inter`` atomically (temp file + rename); return the counts."""
    path = os.path.join(folder, f"{name}.inter")
    with write_atomic(path) as f:
        f.write(HEADER)
        for user, items in sequences.items():
            f.writelines(f"{user}\t{item}\t{position}\n" for position, item in enumerate(items, start=1))
    return {"users": len(sequences), "items": len({i for s in sequences.values() for i in s}),
            "interactions": sum(map(len, sequences.values()))}


def _convert(read, source, folder, name, dataset_folder, subfolder, filename):
    path = find_input(source, dataset_folder, subfolder, filename)
    sequences = read(path)
    if not sequences:
        raise ValueError(f"{path} holds no sequences (the file is empty); nothing was written")
    stats = write_inter(folder, name, sequences)
    stats["source"] = [path]
    return stats


def _text_converter(read, dataset_folder, subfolder, filename, description):
    """A converter of one text file (``read``: :func:`read_s3rec` or :func:`read_sasrec`)."""
    def converter(source, folder, name, valid_fraction=0.1):
        return _convert(read, source, folder, name, dataset_folder, subfolder, filename)

    converter.__doc__ = description
    return converter


def convert_ml1m_gsasrec(source, folder, name, valid_fraction=0.1):
    """ml-1m, NOT the standard benchmark: gSASRec split without each user's last 2 items (6,040 users / 987,531)."""
    train_file, val_file = os.path.join("train", "input.txt"), os.path.join("val", "input.txt")
    if os.path.isfile(source):
        if not os.path.abspath(source).endswith(os.sep + train_file):
            raise ValueError(f"{source}: pass gsasrec_split/{train_file} (or the ml-1m or gsasrec_split folder)")
        split_folder = os.path.dirname(os.path.dirname(os.path.abspath(source)))
    else:
        split_folder = next((f for f in (os.path.join(source, "gsasrec_split"),
                                         os.path.join(source, "ml-1m", "gsasrec_split")) if os.path.isdir(f)), source)
    for part in (train_file, val_file):
        if not os.path.isfile(os.path.join(split_folder, part)):
            raise FileNotFoundError(f"{os.path.join(split_folder, part)} not found. --from takes the shared ml-1m "
                                    f"folder, its gsasrec_split/ folder, or gsasrec_split/{train_file}")
    sequences, used = read_gsasrec_ml1m(split_folder)
    stats = write_inter(folder, name, sequences)
    stats["source"], stats["warning"] = used, [GSASREC_NOTE]
    return stats


# name -> converter; masan_recbole.data registers these next to the session converters
CONVERTERS = {
    name: _text_converter(read, folder, subfolder, filename, description)
    for name, (read, folder, subfolder, filename, description) in {
        "beauty": (read_s3rec, "amazon-beauty", "s3rec", "Beauty.txt",
                   "Amazon Beauty, S3-Rec 5-core Beauty.txt (22,363 users / 12,101 items / 198,502 interactions)."),
        "sports": (read_s3rec, "amazon-sports-outdoors", "s3rec", "Sports_and_Outdoors.txt",
                   "Amazon Sports and Outdoors, S3-Rec 5-core (35,598 users / 18,357 items / 296,337 interactions)."),
        "toys": (read_s3rec, "amazon-toys-games", "s3rec", "Toys_and_Games.txt",
                 "Amazon Toys and Games, S3-Rec 5-core (19,412 users / 11,924 items / 167,597 interactions)."),
        "yelp-s3rec": (read_s3rec, "yelp", "s3rec", "Yelp.txt",
                       "Yelp from 2019-01-01, S3-Rec 5-core Yelp.txt (30,431 users / 20,033 items / 316,354 interactions)."),
        "lastfm": (read_s3rec, "lastfm", "s3rec", "LastFM.txt",
                   "HetRec LastFM, S3-Rec LastFM.txt (1,090 users / 3,646 items / 52,551 interactions)."),
        "video-games": (read_sasrec, "amazon-video-games", "sasrec", "Video.txt",
                        "Amazon Video Games, SASRec Video.txt (31,013 users / 23,715 items / 287,107 interactions)."),
    }.items()
}
CONVERTERS["ml-1m-gsasrec"] = convert_ml1m_gsasrec
