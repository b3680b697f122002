"""benchmarks.searches: every search of a dataset gets the same budget, its data config named, and
goes on (--resume) where its trials file stopped."""

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
