"""eval_exclude_history: RecBole's full-sort evaluation under the papers' rule (the user's earlier
items scored 0 before ranking), checked against ranks computed here from the dataset file."""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import SYNTH
from masan_recbole.build import build_config, build_run

METRICS, TOPK = ["Hit", "NDCG", "MRR"], [1, 5, 10]


def file_sequences(data_root, dataset):
    """Each user's items in time order, read from the generated file, as RecBole's internal ids."""
    frame = pd.read_csv(os.path.join(data_root, SYNTH, f"{SYNTH}.inter"), sep="\t")
    frame.columns = [c.split(":")[0] for c in frame.columns]
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable")
    return {int(dataset.token2id("user_id", str(u))): [int(i) for i in dataset.token2id("item_id", g.item_id.astype(str).tolist())]
            for u, g in frame.groupby("user_id")}


def expected_metrics(ranks):
    ranks = np.asarray(ranks, dtype=float)
    result = {}
    for k in TOPK:
        hit = ranks <= k
        result.update({f"hit@{k}": hit.mean(), f"ndcg@{k}": (hit / np.log2(ranks + 1)).mean(),
                       f"mrr@{k}": (hit / ranks).mean()})
    return result


def reference_ranks(table, sequences, users, phase):
    """The papers' rule, written out per user: rank of the target among the scores with the items
    before it set to 0 (test: the last item; validation: the one before, the test item unseen)."""
    plain, excluded = [], []
    for user in users:
        sequence = sequences[user] if phase == "test" else sequences[user][:-1]
        earlier, target = sequence[:-1], sequence[-1]
        row = table[user].clone()
        row[0] = -math.inf
        plain.append(int((row > row[target]).sum()) + 1)
        row[earlier] = 0.0
        excluded.append(int((row > row[target]).sum()) + 1)
    return plain, excluded


@pytest.fixture
def scored_run(tiny_config, data_root, monkeypatch):
    """A built run whose model scores from a fixed table: earlier items high (100+), others in (-1, 1)."""
    def build(mode):
        config = build_config("SASRec", SYNTH, config_dict=dict(
            tiny_config, MAX_ITEM_LIST_LENGTH=5, metrics=METRICS, topk=TOPK, metric_decimal_place=12,
            eval_exclude_history=mode))
        built = build_run(config)
        sequences = file_sequences(data_root, built.dataset)
        rng = np.random.default_rng(0)
        table = torch.tensor(rng.uniform(-1, 1, (built.dataset.user_num, built.dataset.item_num)), dtype=torch.float)
        for user, items in sequences.items():
            table[user, items[:-1]] += 100
        monkeypatch.setattr(built.model, "full_sort_predict", lambda interaction: table[interaction["user_id"]].clone())
        return built, sequences, table
    return build


@pytest.mark.parametrize("phase", ["valid", "test"])
def test_the_papers_rule_equals_ranks_written_out_per_user(scored_run, phase):
    built, sequences, table = scored_run(True)
    loader = built.valid_data if phase == "valid" else built.test_data
    users = sorted(sequences)
    plain, excluded = reference_ranks(table, sequences, users, phase)
    result = built.trainer.evaluate(loader, load_best_model=False)
    assert dict(result) == pytest.approx(expected_metrics(excluded), abs=1e-9)
    assert result["hit@10"] > expected_metrics(plain)["hit@10"]  # the rule changed the figures
    # with a 5-item model input, users with longer histories need the whole one, not the window
    assert max(len(s) for s in sequences.values()) > 5 + 2
    assert any(s[-1] in s[:-1] for s in sequences.values())  # a repeated target: scored 0, still ranked


def test_both_gives_each_protocol_from_one_pass(scored_run):
    built, sequences, table = scored_run("both")
    plain, excluded = reference_ranks(table, sequences, sorted(sequences), "test")
    result = built.trainer.evaluate(built.test_data, load_best_model=False)
    assert {k: v for k, v in result.items() if not k.endswith("_history_excluded")} == pytest.approx(
        expected_metrics(plain), abs=1e-9)
    assert {k.removesuffix("_history_excluded"): v for k, v in result.items() if k.endswith("_history_excluded")} \
        == pytest.approx(expected_metrics(excluded), abs=1e-9)


def test_off_by_default_recboles_ranking_is_unchanged(scored_run):
    built, sequences, table = scored_run(False)
    plain, _ = reference_ranks(table, sequences, sorted(sequences), "test")
    assert dict(built.trainer.evaluate(built.test_data, load_best_model=False)) == pytest.approx(
        expected_metrics(plain), abs=1e-9)


@pytest.mark.parametrize("settings, message", [
    ({"eval_exclude_history": "yes"}, "must be false, true or both"),
    ({"eval_exclude_history": True, "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "mode": "full"}},
     "leave-one-out by time"),
    ({"eval_exclude_history": True, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni100"}},
     "ranks every item"),
    ({"valid_metric": "ndcg@10_history_excluded"}, "valid_metric 'ndcg@10_history_excluded' is not one of"),
])
def test_settings_the_rule_cannot_serve_are_refused(tiny_config, settings, message):
    import recbole.data

    config = build_config("SASRec", SYNTH, config_dict={**tiny_config, **settings})
    with pytest.raises(ValueError, match=message):
        recbole.data.create_dataset(config)


@pytest.mark.slow
def test_run_recbole_reports_the_papers_protocol_beside_recboles(tiny_config, tmp_path):
    """The converged harness's recorded figures for a saved run equal what the config key gives
    from RecBole's evaluator on the same checkpoint; with both, early stopping can follow either."""
    from benchmarks import converged
    from masan_recbole.quick_start import train_and_test

    out = tmp_path / "out"
    settings = {k: tiny_config[k] for k in ("data_path", "hidden_size", "inner_size", "n_layers", "n_heads",
                                            "MAX_ITEM_LIST_LENGTH", "train_batch_size", "eval_batch_size",
                                            "metrics", "topk", "valid_metric", "load_col", "eval_args")}
    settings.update(epochs=2, state="ERROR")
    record = converged.train("SASRec", SYNTH, 2020, settings, out=str(out))
    best = out / ".state" / f"{SYNTH}-SASRec-seed2020" / "best.pth"
    config = build_config("SASRec", SYNTH, config_dict={**settings, "seed": 2020, "eval_exclude_history": True,
                                                         "checkpoint_dir": str(tmp_path / "saved")})
    built = build_run(config)
    result = built.trainer.evaluate(built.test_data, model_file=str(best))
    assert {k: round(float(v), 4) for k, v in result.items()} == record["test_result_history_excluded"]
    assert record["test_result_history_excluded"] != record["test_result"]

    result = train_and_test("SASRec", SYNTH, config_dict={
        **settings, "eval_exclude_history": "both", "valid_metric": "ndcg@10_history_excluded",
        "checkpoint_dir": str(tmp_path / "both")})
    assert set(result["test_result"]) == set(record["test_result"]) | {
        k + "_history_excluded" for k in record["test_result"]}
    assert result["best_valid_score"] == result["best_valid_result"]["ndcg@10_history_excluded"]
    json.dumps({k: float(v) for k, v in result["test_result"].items()})  # plain numbers
