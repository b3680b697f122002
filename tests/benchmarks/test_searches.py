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
