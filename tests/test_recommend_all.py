"""Top-k for every user, streamed to a file one chunk at a time."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from collections import defaultdict

import numpy as np
import pytest

from conftest import make_tiny_config
from masan_recbole.recommend import Recommender, main, recommend_all_users

K = 5


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def by_user(rows):
    users = defaultdict(list)
    for row in rows:
        users[row["user"]].append(row)
    return users


def ml100k_file():
    import recbole

    return os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter")


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    """A SASRec checkpoint trained one epoch on ml-100k (from the recbole wheel)."""
    from recbole.quick_start import run_recbole

    folder = tmp_path_factory.mktemp("ml100k")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setattr(sys, "argv", ["pytest"])
        run_recbole(model="SASRec", dataset="ml-100k", config_dict={
            "epochs": 1, "hidden_size": 16, "inner_size": 32, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 50,
            "train_batch_size": 2048, "eval_batch_size": 4096, "checkpoint_dir": str(folder / "saved"),
            "show_progress": False, "state": "WARNING"})
    (name,) = os.listdir(folder / "saved")
    return str(folder / "saved" / name)


@pytest.fixture(scope="module")
def ml100k_histories():
    """External user id -> set of the items they rated, from the raw file."""
    items = defaultdict(set)
    with open(ml100k_file()) as f:
        next(f)
        for line in f:
            user, item = line.split("\t")[:2]
            items[user].add(item)
    return items


@pytest.mark.slow
def test_cli_all_users_matches_the_per_user_path(ml100k, ml100k_histories, tmp_path):
    out = tmp_path / "all.csv"
    done = subprocess.run([sys.executable, "-m", "masan_recbole.recommend", "--checkpoint", ml100k, "--all-users",
                           "--k", str(K), "--chunk-size", "100", "--output", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "943 users, 4715 rows" in done.stderr and "users/s" in done.stderr
    rows = read_csv(out)
    assert len(rows) == 943 * K
    users = by_user(rows)
    assert set(users) == set(ml100k_histories)
    assert all([int(r["rank"]) for r in user_rows] == list(range(1, K + 1)) for user_rows in users.values())
    rec = Recommender(ml100k)
    for user in ["1", "196", "943", rows[-1]["user"]]:  # the last user sits in the last, partial chunk
        expected = rec.top_k(user_ids=[user], k=K)
        # same items in the same order; scores to float32 rounding (a chunk of 100 and a batch of 1
        # are different matrix products)
        assert [r["item"] for r in users[user]] == [r["item"] for r in expected]
        assert [float(r["score"]) for r in users[user]] == pytest.approx([r["score"] for r in expected], abs=1e-5)


@pytest.mark.slow
def test_exclude_history_removes_every_history_item(ml100k, ml100k_histories, tmp_path):
    # A user's input is their latest L + 1 = 51 items, the excluded items their whole history:
    # the long histories are where the two differ
    assert sum(len(items) > 51 for items in ml100k_histories.values()) > 300
    seen = {}
    for exclude in (False, True):
        out = tmp_path / f"exclude-{exclude}.csv"
        summary = recommend_all_users(ml100k, str(out), k=K, exclude_history=exclude, chunk_size=256)
        assert summary["users"] == 943 and summary["rows"] == 943 * K and summary["users_per_s"] > 0
        seen[exclude] = sum(r["item"] in ml100k_histories[r["user"]] for r in read_csv(out))
        if exclude:
            rows = by_user(read_csv(out))
            expected = Recommender(ml100k).top_k(user_ids=["7"], k=K, exclude_history=True)
            assert [r["item"] for r in rows["7"]] == [r["item"] for r in expected]
    assert seen[False] > 0, "without --exclude-history the model recommends some rated items (else this proves nothing)"
    assert seen[True] == 0


@pytest.mark.slow
def test_parquet_round_trip(ml100k, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    recommend_all_users(ml100k, str(tmp_path / "all.csv"), k=3, chunk_size=300)
    recommend_all_users(ml100k, str(tmp_path / "all.parquet"), k=3, chunk_size=300)
    table = pq.read_table(tmp_path / "all.parquet")
    assert table.column_names == ["user", "rank", "item", "score"]
    from_csv = [(r["user"], int(r["rank"]), r["item"], float(r["score"])) for r in read_csv(tmp_path / "all.csv")]
    assert [tuple(row.values()) for row in table.to_pylist()] == from_csv


def cli_error(capsys, *args):
    with pytest.raises(SystemExit) as exit:
        main(["--checkpoint", "none.pth", *args])  # refused before the checkpoint is read: it need not exist
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def test_output_errors_are_one_line(capsys):
    assert "--output" in cli_error(capsys, "--all-users")
    assert ".csv or .parquet" in cli_error(capsys, "--all-users", "--output", "all.json")
    assert "must end in .csv, .json or .parquet" in cli_error(capsys, "--users", "1", "--output", "top.txt")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert "pip install pyarrow" in cli_error(capsys, "--all-users", "--output", "all.parquet")


# --- memory: one chunk, whatever the number of users ------------------------------------------------------------

N_ITEMS = 3000


def write_users(root, name, n_users):
    """``n_users`` users of random items; lengths drawn per user from one seeded stream, so
    the first 2,000 users of a 20,000-user file are the 2,000-user file."""
    folder = os.path.join(root, name)
    os.makedirs(folder)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(1, n_users + 1):
        rng = np.random.default_rng(user)
        for t, item in enumerate(rng.integers(1, N_ITEMS + 1, size=int(rng.integers(5, 30)))):
            lines.append(f"{user}\t{item}\t{1_000_000 + t}")
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("\n".join(lines) + "\n")


def untrained_checkpoint(root, name):
    """An untrained SASRec's checkpoint for dataset ``name`` (no training: its memory is what counts)."""
    import recbole.data
    from recbole.config import Config
    from recbole.data import create_dataset

    from masan_recbole.checkpoint import data_record, encode_config, save_checkpoint
    from masan_recbole.registry import get_model

    config = Config(model="SASRec", dataset=name, config_dict=make_tiny_config(root, os.path.join(root, "saved")))
    dataset = create_dataset(config)
    train, _, _ = recbole.data.data_preparation(config, dataset)
    model = get_model("SASRec")(config, train._dataset)
    path = os.path.join(root, f"{name}.pth")
    save_checkpoint({"config": encode_config(config), "state_dict": model.state_dict(),
                     "other_parameter": model.other_parameter(), "data": data_record(dataset)}, path)
    return path


# Two peaks while recommend_all_users streams, each above where it starts (model and data
# loaded): resident memory, which counts torch's tensors (Linux resets its peak, VmHWM, on
# writing 5 to /proc/self/clear_refs), and tracemalloc's peak of Python objects, which counts
# rows and histories even where they fit in memory Python already holds from data loading.
MEASURE = textwrap.dedent("""
    import gc, json, sys, tracemalloc
    import masan_recbole
    from masan_recbole import recommend

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key))  # kB

    start = {}
    stream = recommend.Recommender.all_users

    def measured(self, *args, **kwargs):
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start["rss"] = status("VmRSS:")
        tracemalloc.start()
        yield from stream(self, *args, **kwargs)

    recommend.Recommender.all_users = measured
    summary = recommend.recommend_all_users(sys.argv[1], sys.argv[2], k=10, chunk_size=256)
    print(json.dumps({"rss_kb": status("VmHWM:") - start["rss"],
                      "python_kb": tracemalloc.get_traced_memory()[1] // 1024, **summary}))
""")
# glibc otherwise moves its threshold for returning large blocks to the system as blocks are
# freed, which makes the resident peak of one chunk vary by its score matrix (3 MB) from run to run.
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}


@pytest.mark.slow
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs")
def test_memory_does_not_grow_with_the_number_of_users(tmp_path):
    peaks = {"rss_kb": {}, "python_kb": {}}
    for n_users in (2_000, 20_000):
        name = f"users{n_users}"
        write_users(str(tmp_path), name, n_users)
        checkpoint = untrained_checkpoint(str(tmp_path), name)
        out = tmp_path / f"{name}.csv"
        done = subprocess.run([sys.executable, "-c", MEASURE, checkpoint, str(out)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1", **FIXED_MALLOC})
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["users"] == n_users and result["rows"] == 10 * n_users
        for measure in peaks:
            peaks[measure][n_users] = result[measure]
    print(f"peak memory while streaming: {peaks}")
    # 20,000 users' rows would take tens of MB, their histories over 10 MB; a chunk is the same at both sizes.
    for measure, peak in peaks.items():
        assert peak[20_000] <= 1.2 * peak[2_000], (measure, peaks)


def test_users_with_a_single_interaction(tmp_path, caplog):
    """RecBole makes no sequence for them: --users names them, --all-users leaves them out."""
    write_users(str(tmp_path), "few", 30)
    with open(tmp_path / "few" / "few.inter", "a") as f:
        f.write("lonely\t7\t1000000\n")
    rec = Recommender(untrained_checkpoint(str(tmp_path), "few"))
    with pytest.raises(ValueError, match=r"user\(s\) \['lonely'\] have a single interaction"):
        rec.top_k(user_ids=["1", "lonely"])
    rows = [row for chunk in rec.all_users(k=2, chunk_size=8) for row in chunk]
    assert {row["user"] for row in rows} == {str(u) for u in range(1, 31)} and len(rows) == 60
    assert "1 user(s) with a single interaction" in caplog.text
    assert rows[:2] == rec.top_k(user_ids=["1"], k=2)
