"""benchmarks.per_user: pack and unpack give back the same users and values in the same order, for
the shapes result files hold (one run of user ids, sessions repeating an id) and for any other."""

import glob
import json
import os
import random

import pytest

from benchmarks.harness import BENCHMARKS
from benchmarks.per_user import pack, unpack

NDCG = [0.0, 1.0, 0.63093, 0.5, 0.430677, 0.386853, 0.356207, 0.333333, 0.315465, 0.30103, 0.289065]
RESULTS = os.path.join(BENCHMARKS, "results", "converged")
PER_USER_KEYS = ("per_user_ndcg@10", "per_user_ndcg@10_history_excluded")


def round_trip(users, values):
    # through JSON text, as a result file stores it
    return unpack(json.loads(json.dumps(pack(users, values))))


def test_consecutive_users_with_mostly_misses_pack_to_one_range():
    users = list(range(1, 1001))
    values = [NDCG[u % 11] if u % 9 == 0 else 0.0 for u in users]
    packed = pack(users, values)
    assert packed["user_ranges"] == [[1, 1000]] and "user_repeats" not in packed
    assert packed["palette"][0] == 0.0 and packed["codes"].startswith("8")  # users 1 to 8 missed
    assert round_trip(users, values) == (users, values)


def test_sessions_repeat_their_id_and_long_repeats_split():
    users = [5, 5, 5, 6, 8, 8] + [9] * 130 + [10]
    values = [NDCG[i % 11] for i in range(len(users))]
    packed = pack(users, values)
    assert packed["user_ranges"] == [[5, 6], [8, 9], [9, 9], [9, 10]]  # 9 is 61 + 61 + 8 times
    assert round_trip(users, values) == (users, values)


@pytest.mark.parametrize("distinct", [1, 2, 52, 53, 3000])
def test_any_order_and_any_number_of_distinct_values_come_back(distinct):
    rng = random.Random(distinct)
    palette = [round(rng.random(), 6) for _ in range(distinct)]
    users = [rng.randint(-3, 10**6) for _ in range(500)]
    values = [rng.choice(palette) for _ in users]
    assert round_trip(users, values) == (users, values)
    assert round_trip(sorted(users), values) == (sorted(users), values)


def test_empty_lists_and_the_plain_form():
    assert round_trip([], []) == ([], [])
    assert unpack({"users": [3, 1], "ndcg": [0.5, 0.0], "mean": 0.25}) == ([3, 1], [0.5, 0.0])
    with pytest.raises(ValueError):
        pack([1, 2], [0.0])


def result_files():
    return sorted(glob.glob(os.path.join(RESULTS, "*.json")))


@pytest.mark.parametrize("path", result_files(), ids=os.path.basename)
def test_the_result_files_lists_round_trip_and_give_their_recorded_mean(path):
    with open(path) as f:
        record = json.load(f)
    held = [record[key] for key in PER_USER_KEYS if record.get(key)]
    assert held, "no per-user figures"
    for packed in held:
        assert "users" not in packed, "plain lists: pack them"
        users, values = unpack(packed)
        assert round_trip(users, values) == (users, values)
        assert {k: v for k, v in packed.items() if k in pack(users, values)} == pack(users, values)
        # the mean was computed from the plain lists when the run was scored; Python 3.12's sum() of
        # floats is compensated, 3.11's is not, so the last bits may differ between the two
        assert sum(values) / len(values) == pytest.approx(packed["mean"], rel=1e-12, abs=0)
