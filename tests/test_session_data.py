"""The session data pipeline: SR-GNN files and raw click logs -> RecBole benchmark files."""

import gzip
import os
import pickle
import pickletools
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import run_recbole

from masan_recbole.data import CONVERTERS, convert, sessions
from masan_recbole.data.__main__ import main
from conftest import SHARED, needs_shared

RAW_SAMPLE = os.path.join(SHARED, "diginetica", "raw_sample", "sample_train-item-views.csv")

TRAIN = [[1, 2, 3], [4, 5], [2, 4], [3, 1, 5, 2]]  # date order: the last one is the most recent
TEST = [[5, 1, 2], [3, 4]]


def write_srgnn(folder, train=TRAIN, test=TEST):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "all_train_seq.txt"), "wb") as f:
        pickle.dump(train, f, protocol=3)
    with open(os.path.join(folder, "test.txt"), "wb") as f:
        pickle.dump(sessions.augment(test), f, protocol=3)
    return folder


def read_rows(folder, name, part):
    with open(os.path.join(folder, f"{name}.{part}.inter")) as f:
        header, *rows = [line.rstrip("\n").split("\t") for line in f]
    assert header == ["session_id:token", "item_id_list:token_seq", "item_id:token"]
    return [tuple(r) for r in rows]


def test_pickles_become_prefix_rows_with_the_recent_sessions_for_validation(tmp_path):
    source = write_srgnn(str(tmp_path / "src"))
    stats = convert("diginetica", source, str(tmp_path / "out"), valid_fraction=0.25)
    folder = str(tmp_path / "out" / "diginetica")
    assert read_rows(folder, "diginetica", "train") == [
        ("1", "1 2", "3"), ("1", "1", "2"), ("2", "4", "5"), ("3", "2", "4")]
    assert read_rows(folder, "diginetica", "valid") == [("4", "3 1 5", "2"), ("4", "3 1", "5"), ("4", "3", "1")]
    assert read_rows(folder, "diginetica", "test") == [("5", "5 1", "2"), ("5", "5", "1"), ("6", "3", "4")]
    assert {k: v for k, v in stats.items() if k != "source"} == {
        "train_sessions": 3, "train_pairs": 4, "valid_sessions": 1, "valid_pairs": 3, "test_sessions": 2,
        "test_pairs": 3, "items": 5, "max_item_id": 5, "longest_prefix": 3}


def test_text_copies_give_the_same_files(tmp_path):
    write_srgnn(str(tmp_path / "pickles" / "srgnn_pickle"))
    text = tmp_path / "plain" / "text"
    text.mkdir(parents=True)
    with gzip.open(text / "train_sessions.txt.gz", "wt") as f:
        f.write("".join(" ".join(map(str, s)) + "\n" for s in TRAIN))
    (text / "test_sessions.txt").write_text("".join(" ".join(map(str, s)) + "\n" for s in TEST))
    a = convert("tmall", str(tmp_path / "pickles"), str(tmp_path / "a"), valid_fraction=0.25)
    b = convert("tmall", str(tmp_path / "plain"), str(tmp_path / "b"), valid_fraction=0.25)
    assert a["source"][0].endswith("all_train_seq.txt") and b["source"][0].endswith("train_sessions.txt.gz")
    for part in ("train", "valid", "test"):
        assert read_rows(tmp_path / "a" / "tmall", "tmall", part) == read_rows(tmp_path / "b" / "tmall", "tmall", part)


def test_no_validation_session_is_trained_on(tmp_path):
    rng = np.random.default_rng(0)
    train = [rng.integers(1, 30, size=rng.integers(2, 9)).tolist() for _ in range(200)]
    stats = convert("nowplaying", write_srgnn(str(tmp_path / "src"), train), str(tmp_path / "out"))
    folder = tmp_path / "out" / "nowplaying"
    train_rows, valid_rows = read_rows(folder, "nowplaying", "train"), read_rows(folder, "nowplaying", "valid")
    assert stats["valid_sessions"] == 20 and not {r[0] for r in train_rows} & {r[0] for r in valid_rows}
    recent = sessions.augment(train[-20:])
    assert [(r[1], r[2]) for r in valid_rows] == [(" ".join(map(str, p)), str(t)) for p, t in zip(*recent)]
    assert len(train_rows) + len(valid_rows) == sum(len(s) - 1 for s in train)


class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    source = write_srgnn(str(tmp_path / "src"))
    payload = pickle.dumps([[1, 2], RunsAShellCommand(marker)], protocol=3)
    ops = {op.name for op, _, _ in pickletools.genops(payload)}
    assert {"GLOBAL", "REDUCE"} <= ops and b"system" in payload  # a real code-running pickle
    with open(os.path.join(source, "all_train_seq.txt"), "wb") as f:
        f.write(payload)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load the global .*system"):
        convert("diginetica", source, str(tmp_path / "out"))
    assert not marker.exists()


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no converter for 'movies'; known: .*diginetica"):
        convert("movies", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="all_train_seq.txt .*train-item-views.csv"):
        convert("diginetica", str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="valid_fraction must be between 0 and 1"):
        convert("tmall", write_srgnn(str(tmp_path / "src")), str(tmp_path / "out"), valid_fraction=1.0)


@pytest.mark.slow
def test_command_line(tmp_path, capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.split("\n")
    assert sorted(line.split()[0] for line in listed if line) == sorted(CONVERTERS)
    source = write_srgnn(str(tmp_path / "src"))
    proc = subprocess.run([sys.executable, "-m", "masan_recbole.data", "convert", "yoochoose1_64", "--from", source,
                           "--to", str(tmp_path / "data"), "--valid-fraction", "0.25"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "train_pairs     4" in proc.stdout
    assert sorted(os.listdir(tmp_path / "data" / "yoochoose1_64")) == [
        f"yoochoose1_64.{part}.inter" for part in ("test", "train", "valid")]


def test_converted_files_load_in_recbole_with_one_item_vocabulary(tmp_path):
    source = write_srgnn(str(tmp_path / "src"))
    convert("diginetica", source, str(tmp_path / "data"), valid_fraction=0.25)
    config = Config(model="SR-SAN", dataset="diginetica",
                    config_dict={"data_path": str(tmp_path / "data"), "state": "WARNING",
                                 "topk": [5], "valid_metric": "MRR@5"})  # 5 items: top-20 lists cannot fill
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    assert dataset.num("item_id") == 6  # items 1..5 + padding
    assert [len(d.dataset) for d in (train, valid, test)] == [4, 3, 3]
    batch = test.dataset.inter_feat
    first = batch["item_id_list"][0][: batch["item_length"][0]]
    assert dataset.id2token("item_id", first).tolist() == ["5", "1"]
    assert dataset.id2token("item_id", batch["item_id"][0]) == "2"


# --- raw click logs (SR-GNN's preprocess.py rules) -------------------------------------------------

def diginetica_log(rows):
    return "session_id;user_id;item_id;timeframe;eventdate\n" + "\n".join(
        f"{s};NA;{i};{t};{d}" for s, i, t, d in rows)


def test_raw_diginetica_rules_on_a_handmade_log(tmp_path):
    rows = [(100 + k, 1, 1, "2016-05-01") for k in range(3)] + [(100 + k, 2, 2, "2016-05-01") for k in range(3)] + [
        (103, 3, 1, "2016-05-01"), (103, 1, 2, "2016-05-01"),
        (1, 3, 30, "2016-05-02"), (1, 1, 10, "2016-05-02"), (1, 2, 20, "2016-05-02"),  # sorted by timeframe
        (2, 1, 5, "2016-05-03"), (2, 9, 6, "2016-05-03"),
        (7, 9, 1, "2016-05-03"), (7, 9, 2, "2016-05-03"), (7, 9, 3, "2016-05-03"),
        (3, 2, 1, "2016-05-18"), (3, 3, 2, "2016-05-18"),  # dated max - 7 days: in neither split
        (4, 3, 1, "2016-05-20"), (4, 7, 2, "2016-05-20"), (4, 7, 3, "2016-05-20"),
        (5, 2, 1, "2016-05-24"), (5, 1, 2, "2016-05-25"), (5, 3, 3, "2016-05-25"),  # dated by its last row
        (6, 9, 1, "2016-05-25"),  # one click: dropped, and its click is not counted
        (400, 7, 1, "2016-05-24"), (400, 7, 2, "2016-05-24"), (401, 7, 1, "2016-05-24"), (401, 2, 2, "2016-05-24"),
    ]
    (tmp_path / "train-item-views.csv").write_text(diginetica_log(rows))
    result = sessions.preprocess_clicks(*sessions.read_diginetica_raw(str(tmp_path / "train-item-views.csv")), 7)
    # Item 9 has 4 counted clicks: sessions 2 and 7 lose it and drop out. Train, by date with ties in
    # order of first appearance: 100..102 (rows not contiguous), 103, 1.
    assert result.train == [[1, 2], [1, 2], [1, 2], [3, 1], [1, 2, 3]]
    assert list(result.items) == [1, 2, 3]
    # Item 7 (5 clicks) never occurs in train: sessions 4, 400, 401 keep under 2 clicks and drop out.
    assert result.test == [[2, 1, 3]]
    day = pd.Timestamp("2016-05-01").timestamp()
    assert list(result.train_dates - day) == [0, 0, 0, 0, 86400] and list(result.test_dates - day) == [24 * 86400]


def yoochoose_log(rows, header):
    lines = ["session_id,timestamp,item_id,category"] if header else []
    return "\n".join(lines + [f"{s},{t},{i},0" for s, t, i in rows]) + "\n"


@pytest.mark.parametrize("header", [True, False])
def test_raw_yoochoose_rules_and_the_recent_fraction(tmp_path, header):
    rows = []
    for k in range(5):  # five old sessions make items 1, 2, 3 frequent
        rows += [(10 + k, f"2014-04-0{k + 1}T10:00:00.000Z", 1), (10 + k, f"2014-04-0{k + 1}T10:01:00.000Z", 2),
                 (10 + k, f"2014-04-0{k + 1}T10:02:00.000Z", 3)]
    rows += [(20, "2014-04-08T10:05:00.000Z", 3), (20, "2014-04-08T10:00:00.000Z", 1),  # file order kept
             (30, "2014-04-09T10:00:00.500Z", 2), (30, "2014-04-09T10:00:01.000Z", 3),  # test (last day)
             (40, "2014-04-08T10:00:00.000Z", 1), (40, "2014-04-08T10:00:01.999Z", 2)]  # = max - 1 day
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(yoochoose_log(rows, header))
    result = sessions.preprocess_clicks(*sessions.read_yoochoose_raw(str(path)), test_days=1)
    assert result.train == [[1, 2, 3]] * 5 + [[3, 1]]
    assert result.test == [[2, 3]]
    assert list(result.test_dates - result.train_dates[-1]) == [86400 + 1]
    # 11 training pairs, the most recent int(11 / 4) = 2 kept: the last session's pair and the
    # shortest pair of the session before, which keeps its first two clicks.
    recent = sessions.keep_recent_pairs(result.train, 4)
    assert recent == [[1, 2], [3, 1]]
    pairs = sessions.augment(result.train)
    assert sessions.augment(recent) == (pairs[0][-2:], pairs[1][-2:])


@pytest.mark.skipif(not os.path.isfile(RAW_SAMPLE), reason=f"raw Diginetica excerpt not found at {RAW_SAMPLE}")
def test_raw_diginetica_excerpt(tmp_path):
    result = sessions.preprocess_clicks(*sessions.read_diginetica_raw(RAW_SAMPLE), test_days=7)
    raw = pd.read_csv(RAW_SAMPLE, sep=";")
    sizes = raw.groupby("session_id").size()
    clicks = raw[raw.session_id.map(sizes) > 1].item_id.value_counts()
    assert min(map(len, result.train + result.test)) >= 2
    train_items = {i for s in result.train for i in s}
    assert all(clicks[result.items[i - 1]] >= 5 for i in train_items)
    assert {i for s in result.test for i in s} <= train_items == set(range(1, len(result.items) + 1))
    assert result.train_dates.max() < result.test_dates.min()
    assert result.test_dates.min() > pd.Timestamp(raw.eventdate.max()).timestamp() - 7 * 86400
    assert np.all(np.diff(result.train_dates) >= 0) and np.all(np.diff(result.test_dates) >= 0)
    # Same sessions as CRIPAC-DIG/SR-GNN's own datasets/preprocess.py gives on this file (run once, by hand).
    assert (len(result.train), len(result.test), len(result.items)) == (469, 39, 309)
    stats = convert("diginetica", os.path.dirname(RAW_SAMPLE), str(tmp_path))
    assert stats["source"] == [RAW_SAMPLE]
    assert stats["train_pairs"] + stats["valid_pairs"] == sum(len(s) - 1 for s in result.train)


# --- the shared benchmark copies: counts of their READMEs ----------------------------------------------

@needs_shared
@pytest.mark.parametrize("name, folder, train_pairs, test_pairs, test_sessions, items", [
    ("diginetica", "diginetica", 719_470, 60_858, 15_963, 43_097),
    ("yoochoose1_64", "yoochoose/yoochoose1_64", 369_859, 55_898, 15_324, 17_745),
    ("tmall", "tmall", 351_268, 25_898, 1_027, 40_727),
    ("nowplaying", "nowplaying", 825_304, 89_824, 14_479, 60_416),
])
@pytest.mark.slow
def test_shared_benchmarks_match_their_readmes(tmp_path, name, folder, train_pairs, test_pairs, test_sessions, items):
    stats = convert(name, os.path.join(SHARED, folder), str(tmp_path))
    assert stats["train_pairs"] + stats["valid_pairs"] == train_pairs
    assert (stats["test_pairs"], stats["test_sessions"], stats["items"]) == (test_pairs, test_sessions, items)
    n_sessions = stats["train_sessions"] + stats["valid_sessions"]
    assert stats["valid_sessions"] == round(0.1 * n_sessions)


@pytest.mark.slow
@needs_shared
def test_a_slice_of_real_diginetica_trains_sr_san(tmp_path):
    train, (prefixes, targets), _ = sessions.read_srgnn(os.path.join(SHARED, "diginetica"))
    sessions.write_benchmark(str(tmp_path / "diginetica"), "diginetica", train[-3000:], (prefixes[:500], targets[:500]))
    result = run_recbole(model="SR-SAN", dataset="diginetica", config_dict={
        "data_path": str(tmp_path), "checkpoint_dir": str(tmp_path / "saved"), "epochs": 1, "hidden_size": 16,
        "inner_size": 32, "train_batch_size": 256, "show_progress": False, "state": "WARNING"})
    assert set(result["test_result"]) == {"hit@10", "hit@20", "mrr@10", "mrr@20"}
    assert 0 <= result["test_result"]["mrr@20"] <= result["test_result"]["hit@20"] <= 1


def test_raw_diginetica_with_other_columns_names_the_file_and_its_columns(tmp_path):
    path = tmp_path / "train-item-views.csv"
    path.write_text("sessionId;userId;itemId;timeframe;eventdate\n1;NA;5;10;2016-05-01\n")
    with pytest.raises(ValueError, match=r"train-item-views.csv: the header lacks column\(s\) session_id, item_id; "
                                         r"it has \['sessionId', 'userId', 'itemId', 'timeframe', 'eventdate'\]"):
        sessions.read_diginetica_raw(str(path))
