"""benchmarks.searches: every search of a dataset gets the same budget, its data config named, and
goes on (--resume) where its trials file stopped."""

import pytest
import yaml

from benchmarks import searches


def test_each_search_gets_the_budget_its_data_config_and_resumes_from_its_trials(tmp_path):
    with open(searches.MATRIX) as f:
        matrix = yaml.safe_load(f)
    budget = matrix["budget"]
    trials = tmp_path / "lastfm-MASAN.jsonl"
    first = searches.search_command("/clone", "lastfm", "MASAN", budget, str(trials), 2, None)
    assert "--resume" not in first
    assert "--config_files=/clone/configs/dataset/lastfm.yaml" in first
    assert "--params_file=/clone/configs/hyper/tuned/MASAN.test" in first
    assert first[first.index("--num_samples") + 1] == str(budget["num_samples"])
    assert f"--epochs={budget['epochs']}" in first and first[first.index("--grace_period") + 1] == str(budget["grace_period"])
    trials.write_text('{"sample": 0, "status": "tested"}\n{"sample": 1, "status": "error"}\n')
    assert searches.recorded(str(trials)) == 1  # the failed trial is still to run
    again = searches.search_command("/clone", "lastfm", "MASAN", budget, str(trials), 2, "auto")
    assert again[-3:] == ["--resume", "--address", "auto"]
    widened = searches.search_command("/clone", "lastfm", "MASAN", budget, str(tmp_path / "w.jsonl"), 1, None, "/w.test")
    assert "--grid" in widened and "--asha" not in widened and "--num_samples" not in widened
    assert "--params_file=/w.test" in widened and f"--epochs={budget['epochs']}" in widened
    # every model of every dataset has a search space, and the budget covers the minimum
    for models in matrix["datasets"].values():
        for model in models:
            assert (searches.os.path.isfile(searches.os.path.join(searches.REPO, "configs", "hyper", "tuned",
                                                                 f"{model}.test")))
    assert budget["num_samples"] >= 12


def test_the_winner_is_the_best_ended_trial_and_its_range_ends_are_named(tmp_path):
    import json

    space = {"learning_rate": [0.0005, 0.001, 0.002, 0.005], "hidden_size": [32, 64, 128], "train_batch_size": [256, 2048],
             "padding": [{"attn_padding_mask": True}, {"attn_padding_mask": False}]}
    trials = tmp_path / "lastfm-SASRec.jsonl"
    rows = [{"sample": 0, "status": "stopped", "best_valid_score": 0.01, "epochs": 3,
             "params": {"learning_rate": 0.0005, "hidden_size": 64}},
            {"sample": 1, "status": "tested", "best_valid_score": 0.05, "epochs": 30,
             "params": {"learning_rate": 0.005, "hidden_size": 64, "train_batch_size": 256}},
            {"sample": 2, "status": "error", "best_valid_score": 0.09, "epochs": 1, "params": {}}]
    trials.write_text("".join(json.dumps(r) + "\n" for r in rows))
    best, edges = searches.winner(str(trials), space)
    assert best["sample"] == 1 and edges == ["learning_rate"]  # two-valued lists have no inside to widen into
    assert searches.winner(str(trials), {})[1] == []


def write_trials(path, rows):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_finished_search_widens_each_end_one_step_and_its_best_becomes_the_config(tmp_path, monkeypatch):
    from masan_recbole import tuning
    from masan_recbole.quick_start import read_search_space

    for name in ("TRIALS", "SPACES", "CONFIGS"):
        monkeypatch.setattr(searches, name, str(tmp_path / name.lower()))
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "MASAN.test").write_text(
        "learning_rate choice [0.001,0.005]\nhidden_size choice [32,64,128]\nk_interests choice [5,10,20]\n"
        "padding choice [{'attn_padding_mask': True, 'length_bucketing': True}, "
        "{'attn_padding_mask': False, 'length_bucketing': False}]\n")
    (tmp_path / "trials").mkdir()
    matrix = {"budget": {"num_samples": 2}, "datasets": {"lastfm": ["MASAN"]},
              "widen": {"beyond": {"learning_rate": [0.0002, 0.01], "hidden_size": [16, 256], "k_interests": [3, None]}}}
    winner = {"learning_rate": 0.001, "hidden_size": 128, "k_interests": 20,
              "padding": {"attn_padding_mask": False, "length_bucketing": False}}
    write_trials(tmp_path / "trials" / "lastfm-MASAN.jsonl", [
        {"sample": 0, "status": "tested", "best_valid_score": 0.05, "params": winner, "code": "abc"},
        {"sample": 1, "status": "stopped", "best_valid_score": 0.01, "params": dict(winner, hidden_size=64)}])
    # learning_rate 0.001 is the first value, hidden_size 128 the last; k_interests 20 has nothing beyond
    assert searches.widened_choices(winner, searches.read_space(str(tmp_path / "spaces" / "MASAN.test")),
                                    matrix["widen"]["beyond"]) == [("learning_rate", 0.0002), ("hidden_size", 256)]
    assert searches.tuned_winner("lastfm", "MASAN", matrix) is None  # its widened search is still to run
    widened = tmp_path / "trials" / "lastfm-MASAN-widened.jsonl"
    write_trials(widened, [{"sample": 0, "status": "tested", "best_valid_score": 0.04, "params": {}},
                           {"sample": 1, "status": "tested", "best_valid_score": 0.06, "code": "def",
                            "params": {**{k: v for k, v in winner.items() if k != "hidden_size"},
                                       "widened": {"learning_rate": 0.001, "hidden_size": 256}}}])
    monkeypatch.setattr(searches, "clone_at", lambda commit, workdir: pytest.fail("its trials are recorded"))
    searches.widen("lastfm", "MASAN", matrix, str(tmp_path), 1)  # writes the space; both trials are recorded
    space_file = tmp_path / "spaces" / "widened" / "lastfm-MASAN.test"
    grid = [tuning.flatten_bundles(s) for s in tuning.grid_samples(read_search_space(str(space_file)))]
    base = {"k_interests": 20, "attn_padding_mask": False, "length_bucketing": False}
    assert grid == [{**base, "learning_rate": 0.0002, "hidden_size": 128}, {**base, "learning_rate": 0.001, "hidden_size": 256}]
    searches.write_configs(matrix, ["lastfm"])
    text = (tmp_path / "configs" / "MASAN" / "lastfm.yaml").read_text()
    assert "sample 1 of lastfm-MASAN-widened.jsonl" in text and "(0.0600;" in text and "code def" in text
    assert yaml.safe_load(text) == {**base, "learning_rate": 0.001, "hidden_size": 256}


def test_failed_trials_are_dropped_so_that_the_searches_code_runs_them_again(tmp_path):
    path = tmp_path / "lastfm-MASAN.jsonl"
    write_trials(path, [{"sample": 0, "status": "tested"}, {"sample": 1, "status": "error"}, {"sample": 2, "status": "stopped"}])
    searches.drop_failed(str(path))
    assert [line for line in path.read_text().splitlines()] == ['{"sample": 0, "status": "tested"}',
                                                               '{"sample": 2, "status": "stopped"}']
    searches.drop_failed(str(tmp_path / "none.jsonl"))  # no file yet: nothing to do
