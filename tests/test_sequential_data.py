"""The sequential data pipeline: S3-Rec / SASRec / gSASRec-ml-1m files -> one RecBole .inter per data set,
split leave-one-out by RecBole with the shipped configs/dataset/<name>.yaml."""

import os

import numpy as np
import pytest
from recbole.config import Config
from recbole.data import create_dataset, data_preparation

from masan_recbole.data import convert, sequential
from masan_recbole.data.__main__ import main
from conftest import SHARED, needs_shared


NAMES = ["beauty", "sports", "toys", "yelp-s3rec", "lastfm", "video-games", "ml-1m-gsasrec"]
SEQUENCES = {3: [5, 1, 9], 1: [2, 2, 7, 1], 8: [9, 4]}  # user -> items, oldest first (not in user order)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def s3rec_text(sequences):
    return "".join(f"{user} {' '.join(map(str, items))}\n" for user, items in sequences.items())


def sasrec_text(sequences):
    return "".join(f"{user} {item}\n" for user, items in sequences.items() for item in items)


def write_gsasrec(split_folder, sequences, val_users):
    """gSASRec's files for full ``sequences`` (users 1..n): train = without the last 2 items
    (validation users: 3), val/input = the validation users' sequences without the last 2."""
    users = range(1, len(sequences) + 1)
    write(os.path.join(split_folder, "train", "input.txt"),
          "".join(" ".join(map(str, sequences[u][: -3 if u in val_users else -2])) + "\n" for u in users))
    write(os.path.join(split_folder, "val", "input.txt"),
          "".join(" ".join(map(str, sequences[u][:-2])) + "\n" for u in sorted(val_users)))
    return str(split_folder)


def read_rows(folder, name):
    with open(os.path.join(folder, name, f"{name}.inter")) as f:
        header, *rows = [line.rstrip("\n").split("\t") for line in f]
    assert header == ["user_id:token", "item_id:token", "timestamp:float"]
    return [tuple(map(int, r)) for r in rows]


def positioned(sequences):
    return [(u, i, p) for u, items in sequences.items() for p, i in enumerate(items, start=1)]


# --- the three formats --------------------------------------------------------------------------------

def test_s3rec_lines_become_rows_with_positions_as_timestamps(tmp_path):
    source = write(tmp_path / "Beauty.txt", s3rec_text(SEQUENCES))
    stats = convert("beauty", source, str(tmp_path / "out"))
    assert read_rows(tmp_path / "out", "beauty") == positioned(SEQUENCES)  # file order, repeats kept
    assert stats == {"users": 3, "items": 6, "interactions": 9, "source": [source]}


def test_sasrec_lines_become_the_same_rows(tmp_path):
    source = write(tmp_path / "Video.txt", sasrec_text(SEQUENCES))
    assert convert("video-games", source, str(tmp_path / "out"))["interactions"] == 9
    assert read_rows(tmp_path / "out", "video-games") == positioned(SEQUENCES)


def test_gsasrec_ml1m_keeps_every_sequence_without_its_last_two_items(tmp_path):
    full = {1: [1, 2, 3, 4, 5], 2: [6, 7, 8, 9], 3: [1, 2, 3, 4, 6, 7], 4: [6, 8, 8, 1, 2], 5: [3, 3, 3, 4]}
    split = write_gsasrec(tmp_path / "gsasrec_split", full, val_users={1, 4})
    stats = convert("ml-1m-gsasrec", split, str(tmp_path / "out"))
    assert read_rows(tmp_path / "out", "ml-1m-gsasrec") == positioned({u: s[:-2] for u, s in full.items()})
    assert (stats["users"], stats["items"], stats["interactions"]) == (5, 7, 14)
    assert "NOT the standard" in stats["warning"][0]


@pytest.mark.parametrize("val_input, error", [
    ("6 9\n", "no train/input.txt line equals it"),
    # user 2 or user 4? refuse to guess
    ("6 7 8\n", r"the train/input.txt lines of users \[2, 4\] all equal it .* its user is unknown"),
    ("1 2 3\n1 2 4\n", "user 1 was already extended by an earlier line"),
])
def test_a_validation_line_that_extends_no_single_train_line_is_an_error(tmp_path, val_input, error):
    full = {1: [1, 2, 3, 4, 5], 2: [6, 7, 8, 9], 3: [1, 5, 5, 5], 4: [6, 7, 8, 1, 2]}
    split = write_gsasrec(tmp_path / "gsasrec_split", full, val_users={1, 4})
    write(os.path.join(split, "val", "input.txt"), val_input)
    with pytest.raises(ValueError, match=r"val/input.txt, line \d: " + error):
        convert("ml-1m-gsasrec", split, str(tmp_path / "out"))


# --- --from: the shared dataset folder, the folder with the file, or the file --------------------------

@pytest.mark.parametrize("source", ["datasets", "datasets/lastfm", "datasets/lastfm/s3rec",
                                    "datasets/lastfm/s3rec/LastFM.txt"])
def test_from_takes_the_dataset_folder_its_subfolder_or_the_file(tmp_path, source):
    write(tmp_path / "datasets" / "lastfm" / "s3rec" / "LastFM.txt", s3rec_text(SEQUENCES))
    write(tmp_path / "datasets" / "amazon-video-games" / "sasrec" / "Video.txt", sasrec_text(SEQUENCES))
    stats = convert("lastfm", str(tmp_path / source), str(tmp_path / "out"))
    assert stats["source"] == [str(tmp_path / "datasets" / "lastfm" / "s3rec" / "LastFM.txt")]
    assert read_rows(tmp_path / "out", "lastfm") == positioned(SEQUENCES)


@pytest.mark.parametrize("source", ["ml-1m", "ml-1m/gsasrec_split", "ml-1m/gsasrec_split/train/input.txt"])
def test_from_for_ml1m(tmp_path, source):
    full = {1: [1, 2, 3, 4], 2: [4, 3, 2, 1]}
    write_gsasrec(tmp_path / "ml-1m" / "gsasrec_split", full, val_users={2})
    assert convert("ml-1m-gsasrec", str(tmp_path / source), str(tmp_path / "out"))["interactions"] == 4


def test_missing_or_wrong_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Yelp.txt not found; looked for .*yelp/s3rec/Yelp.txt"):
        convert("yelp-s3rec", str(tmp_path), str(tmp_path / "out"))
    other = write(tmp_path / "Toys_and_Games.txt", s3rec_text(SEQUENCES))
    with pytest.raises(ValueError, match=r"reads Sports_and_Outdoors.txt .*not Toys_and_Games.txt"):
        convert("sports", other, str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match=r"train/input.txt not found"):
        convert("ml-1m-gsasrec", str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="source not found"):
        convert("toys", str(tmp_path / "nowhere"), str(tmp_path / "out"))


@pytest.mark.parametrize("name, filename, text, error", [
    ("toys", "Toys_and_Games.txt", "1 2 3\n2 4 x5\n", r"line 2: 'x5' is not an integer id"),
    ("toys", "Toys_and_Games.txt", "1 2 3\n\n2 4 5\n", r"line 2: empty line"),
    ("toys", "Toys_and_Games.txt", "1 2 3\n2 4\n1 5\n", r"line 3: user 1 again \(first on line 1\)"),
    ("toys", "Toys_and_Games.txt", "1 2 3\n2\n", r"line 2: user 2 has no items"),
    ("toys", "Toys_and_Games.txt", "1 2 3\t0 86400\n", r"line 1: tab found.*s3rec_with_time_gaps"),
    ("toys", "Toys_and_Games.txt", "1 -2 3\n", r"line 1: '-2' is not an integer id"),
    ("video-games", "Video.txt", "1 2\n1 3 4\n", r"line 2: expected 'user item', got 3 values"),
    ("video-games", "Video.txt", "1 2\n2 3\n1 4\n", r"line 3: user 1 again after other users"),
    ("video-games", "Video.txt", "1 2.5\n", r"line 1: '2.5' is not an integer id"),
])
def test_malformed_input_names_file_and_line(tmp_path, name, filename, text, error):
    source = write(tmp_path / filename, text)
    with pytest.raises(ValueError, match=error) as raised:
        convert(name, source, str(tmp_path / "out"))
    assert source in str(raised.value)
    assert not os.path.exists(tmp_path / "out" / name / f"{name}.inter")


class FailsHalfway:
    def __iter__(self):
        yield 1
        raise OSError("disk full")


def test_a_crash_while_writing_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    folder = str(tmp_path / "lastfm")
    sequential.write_inter(folder, "lastfm", {1: [1, 2]})
    with pytest.raises(OSError, match="disk full"):
        sequential.write_inter(folder, "lastfm", {1: [3, 4, 5], 2: FailsHalfway()})
    assert os.listdir(folder) == ["lastfm.inter"]
    assert read_rows(tmp_path, "lastfm") == [(1, 1, 1), (1, 2, 2)]


def test_command_line(tmp_path, capsys):
    assert main(["list"]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(NAMES) <= set(listed) and "NOT the standard" in listed["ml-1m-gsasrec"]
    write(tmp_path / "lastfm" / "s3rec" / "LastFM.txt", s3rec_text(SEQUENCES))
    assert main(["convert", "lastfm", "--from", str(tmp_path / "lastfm"), "--to", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "users           3\n" in out and "interactions    9\n" in out
    assert read_rows(tmp_path / "data", "lastfm") == positioned(SEQUENCES)
    write(tmp_path / "bad" / "LastFM.txt", "1 2 two\n")
    with pytest.raises(SystemExit) as exited:
        main(["convert", "lastfm", "--from", str(tmp_path / "bad"), "--to", str(tmp_path / "data")])
    assert exited.value.code == 2 and "line 1: 'two' is not an integer id" in capsys.readouterr().err


# --- RecBole on the converted files: leave-one-out, nothing filtered -----------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_shipped_configs_follow_the_full_ranking_leave_one_out_protocol(tmp_path, name):
    config = Config(model="SASRec", dataset=name, config_dict={"data_path": str(tmp_path), "state": "WARNING"})
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["eval_args"]["order"] == "TO" and config["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    assert config["user_inter_num_interval"] == config["item_inter_num_interval"] == "[0,inf)"
    assert config["MAX_ITEM_LIST_LENGTH"] == (200 if name == "ml-1m-gsasrec" else 50)
    reported = {f"{metric.lower()}@{k}" for metric in config["metrics"] for k in config["topk"]}
    assert {"hit@10", "ndcg@10", "hit@20", "ndcg@20"} <= reported
    # S3-Rec family (ICLRec, FEARec, BSARec) selects on NDCG@20, SASRec's data sets on NDCG@10
    assert config["valid_metric"] == ("NDCG@10" if name in ("video-games", "ml-1m-gsasrec") else "NDCG@20")


def random_sequences(rng, n_users, n_items, lengths):
    return {int(u): rng.integers(1, n_items + 1, size=int(rng.choice(lengths))).tolist()
            for u in rng.permutation(np.arange(1, n_users + 1))}


@pytest.mark.parametrize("name, filename, text, lengths", [
    ("lastfm", "LastFM.txt", s3rec_text, [5, 6, 9, 60]),  # longer than MAX_ITEM_LIST_LENGTH 50: cut
    ("video-games", "Video.txt", sasrec_text, [1, 2, 3, 7]),  # short users, as in the real file
])
def test_recbole_splits_leave_one_out_and_filters_nothing(tmp_path, name, filename, text, lengths):
    rng = np.random.default_rng(0)
    sequences = random_sequences(rng, 40, 30, lengths)
    assert {len(s) for s in sequences.values()} == set(lengths)
    convert(name, write(tmp_path / filename, text(sequences)), str(tmp_path / "data"))
    # the dataset's split with RecBole's prefix rows: not SASRec's tuned settings for it (all-position training)
    config = Config(model="SASRec", dataset=name,
                    config_dict={"data_path": str(tmp_path / "data"), "state": "WARNING", "model_dataset_config": False})
    dataset = create_dataset(config)
    items = {i for s in sequences.values() for i in s}
    assert (dataset.user_num, dataset.item_num) == (len(sequences) + 1, len(items) + 1)  # + padding id
    assert len(dataset.inter_feat) == sum(map(len, sequences.values()))
    splits = [loader.dataset.inter_feat for loader in data_preparation(config, dataset)]
    assert sum(map(len, splits)) == sum(len(s) - 1 for s in sequences.values())  # each prefix -> next item, once

    def targets(part):  # user -> [(history, target)] in row order
        found = {}
        for user, history, length, target in zip(part["user_id"], part["item_id_list"], part["item_length"],
                                                 part["item_id"]):
            found.setdefault(int(dataset.id2token("user_id", user)), []).append(
                ([int(t) for t in dataset.id2token("item_id", history[:length])],
                 int(dataset.id2token("item_id", target))))
        return found

    # RecBole splits a user's n-1 prefix rows: the last one tests, the one before validates, while
    # at least one row is left for training: 3 items -> train + test, 2 -> train only, 1 -> no row.
    train, valid, test = map(targets, splits)
    for user, s in sequences.items():
        assert test.get(user) == ([(s[-51:-1], s[-1])] if len(s) >= 3 else None)
        assert valid.get(user) == ([(s[-52:-2], s[-2])] if len(s) >= 4 else None)
        assert [t for _, t in train.get(user, [])] == (s[1:-2] if len(s) >= 4 else s[1:2])


# --- the shared benchmark copies: counts of their READMEs -----------------------------------------------

@needs_shared
@pytest.mark.parametrize("name, folder, users, items, interactions", [
    ("beauty", "amazon-beauty", 22_363, 12_101, 198_502),
    ("sports", "amazon-sports-outdoors", 35_598, 18_357, 296_337),
    ("toys", "amazon-toys-games", 19_412, 11_924, 167_597),
    ("yelp-s3rec", "yelp", 30_431, 20_033, 316_354),
    ("lastfm", "lastfm", 1_090, 3_646, 52_551),
    ("video-games", "amazon-video-games", 31_013, 23_715, 287_107),
    # the README gives users and interactions of the gap-free version; 3,416 items = all of SASRec's ml-1m
    ("ml-1m-gsasrec", "ml-1m", 6_040, 3_416, 987_531),
])
@pytest.mark.slow
def test_shared_files_match_their_readmes(tmp_path, name, folder, users, items, interactions):
    stats = convert(name, os.path.join(SHARED, folder), str(tmp_path))
    assert (stats["users"], stats["items"], stats["interactions"]) == (users, items, interactions)
    with open(tmp_path / name / f"{name}.inter") as f:
        assert sum(1 for _ in f) == interactions + 1


@needs_shared
def test_ml1m_validation_users_are_gsasrecs_seeded_draw():
    """The ordered match finds the 512 users gSASRec's preprocess_ml1m.py drew (README: RandomState(42))."""
    split = os.path.join(SHARED, "ml-1m", "gsasrec_split")
    sequences, (train_path, _) = sequential.read_gsasrec_ml1m(split)
    with open(train_path) as f:
        train_lengths = [len(line.split()) for line in f]
    extended = [u for u, length in enumerate(train_lengths, start=1) if len(sequences[u]) == length + 1]
    assert extended == sorted(np.random.RandomState(42).choice(6040, 512, replace=False).tolist())
