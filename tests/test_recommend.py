"""Top-k recommendations from a checkpoint, in external ids."""

import csv
import os
import subprocess
import sys

import pytest
import torch

from masan_recbole.recommend import Recommender

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def trained(trained_sasrec):
    return trained_sasrec


@pytest.mark.slow
def test_top1_equals_argmax_of_full_sort_predict(trained):
    from recbole.data.interaction import Interaction

    from masan_recbole.quick_start import load_data_and_model

    _, model, dataset, _, _, test_data = load_data_and_model(trained)
    batch = next(iter(test_data))[0]  # each user's test sequence, from RecBole's own split
    model.eval()
    tokens = dataset.field2id_token
    rec = Recommender(trained)
    for row in range(3):
        seq = batch["item_id_list"][row, : batch["item_length"][row]]
        full = torch.cat([seq, batch["item_id"][row : row + 1]])[-model.max_seq_length:]  # + the test item
        with torch.no_grad():
            scores = model.full_sort_predict(Interaction({
                "item_id_list": torch.stack([batch["item_id_list"][row], torch.nn.functional.pad(
                    full, (0, model.max_seq_length - len(full)))]),
                "item_length": torch.tensor([len(seq), len(full)])}))
        scores[:, 0] = -torch.inf
        session_top = rec.top_k(item_sequences=[[tokens["item_id"][i] for i in seq]], k=1)[0]
        assert session_top["item"] == tokens["item_id"][scores[0].argmax()]
        # A user's recommendation comes after the whole history: test sequence + test item.
        user = tokens["user_id"][batch["user_id"][row]]
        assert rec.top_k(user_ids=[user], k=1)[0]["item"] == tokens["item_id"][scores[1].argmax()]


def test_exclude_history_and_ranks(trained):
    rec = Recommender(trained)
    rows = rec.top_k(item_sequences=[["1", "2", "3"]], k=5, exclude_history=True)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert not {"1", "2", "3"} & {r["item"] for r in rows}
    assert rows == sorted(rows, key=lambda r: -r["score"])


def test_unknown_ids_are_named(trained):
    rec = Recommender(trained)
    with pytest.raises(ValueError, match=r"unknown user id\(s\) \['nobody', '99999'\]"):
        rec.top_k(user_ids=["nobody", "99999", "1"])
    with pytest.raises(ValueError, match=r"unknown item id\(s\) \['x'\]"):
        rec.top_k(item_sequences=[["1", "x"]])


@pytest.mark.slow
def test_cli_writes_csv(trained, tmp_path):
    out = tmp_path / "top.csv"
    subprocess.run([sys.executable, "-m", "masan_recbole.recommend", "--checkpoint", trained, "--users", "1", "2",
                    "--k", "3", "--exclude-history", "--output", str(out)], cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [(r["user"], r["rank"]) for r in rows] == [("1", "1"), ("1", "2"), ("1", "3"), ("2", "1"), ("2", "2"), ("2", "3")]
    bad = subprocess.run([sys.executable, "-m", "masan_recbole.recommend", "--checkpoint", trained, "--users", "ghost"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown user id(s) ['ghost']" in bad.stderr
