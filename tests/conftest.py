"""Shared fixtures: a generated atomic dataset with learnable sequential structure,
and tiny RecBole configs that train in seconds on a CPU."""

import os
import sys

import numpy as np
import pytest
import torch

import masan_recbole

# The suite runs as the plugin's entry points do (speed patches, console, dataset configs for every
# model); a plain import's behaviour is tested in fresh processes (tests/test_plain_import.py).
masan_recbole.opt_in()

SYNTH = "synth"
# The real benchmark files beside the checkout (absent on a clean CI clone: those tests skip).
SHARED = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "datasets"))
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason=f"shared datasets not found at {SHARED}")


def write_sequences_dataset(root, name=SYNTH, n_users=150, n_items=40, seed=0, p_follow=0.85):
    """Users walk the items in order (item i -> i+1, wrapping) with probability
    ``p_follow`` and jump to a random item otherwise: a sequential model can learn
    the next item, a popularity ranking cannot. Returns the dataset folder."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for user in range(1, n_users + 1):
        item = int(rng.integers(1, n_items + 1))
        for t in range(int(rng.integers(12, 25))):
            lines.append(f"{user}\t{item}\t{int(rng.integers(1, 6))}\t{1_000_000 + 100 * user + t}")
            item = item % n_items + 1 if rng.random() < p_follow else int(rng.integers(1, n_items + 1))
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    write_sequences_dataset(str(root))
    return str(root)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    # Tiny tensors and many small kernels: on a busy 2-core CPU, two OpenMP threads
    # spin-wait on each other and make the tests several times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def isolated_run(tmp_path, monkeypatch):
    """RecBole writes log/ and saved/ into the working directory and reads --key=value
    from sys.argv: give each test its own directory and a clean command line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])


def make_tiny_config(data_root, checkpoint_dir):
    return {
        "data_path": data_root,
        "checkpoint_dir": str(checkpoint_dir),
        "epochs": 2,
        "train_batch_size": 256,
        "eval_batch_size": 512,
        "learning_rate": 0.005,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "n_heads": 2,
        "MAX_ITEM_LIST_LENGTH": 20,
        "hidden_dropout_prob": 0.1,
        "attn_dropout_prob": 0.1,
        "show_progress": False,
        "state": "WARNING",
        "seed": 2020,
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [10],
        "valid_metric": "MRR@10",
        # Stated so that general models (Pop) split and order exactly like sequential ones.
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
    }


@pytest.fixture
def tiny_config(data_root, tmp_path):
    """A config dict for a seconds-long run on the generated dataset; update it per test."""
    return make_tiny_config(data_root, tmp_path / "saved")


@pytest.fixture(scope="session")
def trained_sasrec(data_root, tmp_path_factory):
    """Checkpoint of a tiny SASRec trained once on the generated dataset (3 epochs)."""
    from recbole.quick_start import run_recbole

    folder = tmp_path_factory.mktemp("trained_sasrec")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setattr(sys, "argv", ["pytest"])
        config = dict(make_tiny_config(data_root, folder / "saved"), epochs=3)
        run_recbole(model="SASRec", dataset=SYNTH, config_dict=config)
    (name,) = os.listdir(folder / "saved")
    return str(folder / "saved" / name)
