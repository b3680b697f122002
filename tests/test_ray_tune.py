"""run_hyper.py --tool ray: the search-space mapping, the flags, and two MASAN trials at once
on a local Ray (ml-100k from the recbole wheel)."""

import math
import os
import re
import types

import numpy as np
import pytest
from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Quantized

from masan_recbole import tuning
from masan_recbole.quick_start import main_hyper

# tiny MASAN trials: ml-100k users with at most 60 ratings, one small layer
TINY = ["--hidden_size=8", "--inner_size=16", "--n_layers=1", "--MAX_ITEM_LIST_LENGTH=10",
        "--user_inter_num_interval=[0,60]", "--train_batch_size=4096", "--eval_batch_size=4096"]


def samples(domain, n=200):
    # one at a time, as Ray's search draws them (a batch of Quantized samples comes back as floats)
    rng = np.random.default_rng(0)
    return [domain.sample(random_state=rng) for _ in range(n)]


def test_choice_maps_to_tune_choice():
    (name, domain), = tuning.ray_search_space({"choice": {"entmax_mode": ["adaptive", "softmax"]}}).items()
    assert name == "entmax_mode" and isinstance(domain, Categorical)
    assert set(samples(domain)) == {"adaptive", "softmax"}


def test_uniform_maps_to_tune_uniform():
    domain = tuning.ray_search_space({"uniform": {"hidden_dropout_prob": [0.1, 0.5]}})["hidden_dropout_prob"]
    assert isinstance(domain, Float) and (domain.lower, domain.upper) == (0.1, 0.5)
    values = samples(domain)
    assert 0.1 <= min(values) and max(values) <= 0.5 and len(set(values)) > 100


def test_loguniform_bounds_are_natural_logs_as_in_hyperopt():
    # hyperopt's loguniform(-8, 0) samples exp(uniform(-8, 0)): e^-8 .. 1, not 10^-8 .. 10^0
    domain = tuning.ray_search_space({"loguniform": {"learning_rate": [-8, 0]}})["learning_rate"]
    assert isinstance(domain.get_sampler(), LogUniform)
    assert domain.lower == pytest.approx(math.exp(-8)) and domain.upper == pytest.approx(1.0)
    values = samples(domain, 2000)
    assert math.exp(-8) <= min(values) and max(values) <= 1.0
    assert np.median(np.log(values)) == pytest.approx(-4, abs=0.5)  # uniform in log space


def test_quniform_of_whole_numbers_gives_ints_on_the_grid():
    domain = tuning.ray_search_space({"quniform": {"hidden_size": [16, 64, 16]}})["hidden_size"]
    assert isinstance(domain, Integer) and isinstance(domain.get_sampler(), Quantized)
    values = samples(domain)
    assert set(values) == {16, 32, 48, 64} and all(isinstance(v, (int, np.integer)) for v in values)


def test_quniform_of_fractions_is_quantized_and_q_1_is_refused():
    domain = tuning.ray_search_space({"quniform": {"lr_gamma": [0.2, 0.8, 0.2]}})["lr_gamma"]
    assert isinstance(domain, Float) and isinstance(domain.get_sampler(), Quantized)
    assert {round(v, 6) for v in samples(domain)} == {0.2, 0.4, 0.6, 0.8}
    with pytest.raises(ValueError, match="lr_gamma: quniform 0.1,0.9,0.2: .*not divisible"):
        tuning.ray_search_space({"quniform": {"lr_gamma": [0.1, 0.9, 0.2]}})
    # ray 2.6.3 leaves a float domain unrounded when q == 1: refused rather than sampled wrong
    with pytest.raises(ValueError, match="q=1 needs whole-number bounds"):
        tuning.ray_search_space({"quniform": {"lr_gamma": [0.5, 3.5, 1]}})


def test_local_experiment_folders_need_no_pyarrow(tmp_path):
    # tune.run reads its experiment folder back with this; unpatched it asks for pyarrow.
    from ray.tune.analysis import experiment_analysis

    (tmp_path / "experiment_state.json").write_text("{}")
    assert experiment_analysis.is_directory(str(tmp_path))
    assert experiment_analysis.is_directory(f"file://{tmp_path}")
    assert not experiment_analysis.is_directory(str(tmp_path / "experiment_state.json"))


def test_a_trial_killed_for_memory_fails_alone():
    # What Tune's actor manager does when Ray's memory monitor kills a trial's worker: unpatched,
    # it raises "Caught unexpected exception" and the whole search ends.
    from ray.air.execution._internal.actor_manager import RayActorManager
    from ray.exceptions import OutOfMemoryError, RayActorError

    seen = []
    actor = types.SimpleNamespace(actor_id="a1", _on_error=lambda actor, error: seen.append(("actor", error)))
    task = types.SimpleNamespace(_tracked_actor=actor, _on_error=lambda actor, error: seen.append(("task", error)))
    manager = object.__new__(RayActorManager)
    manager._failed_actor_ids = set()
    manager._cleanup_actor = lambda tracked_actor: None
    RayActorManager._actor_task_failed(manager, task, OutOfMemoryError("Task was killed due to the node running low"))
    assert [kind for kind, _ in seen] == ["actor", "task"] and manager._failed_actor_ids == {"a1"}
    assert all(isinstance(e, RayActorError) and "running low" in str(e) for _, e in seen)


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "MASAN.test"
    path.write_text("learning_rate choice [0.003,0.001]\nk_interests choice [5,10]\n")
    return str(path)


@pytest.mark.parametrize("flags, message", [
    (["--tool", "hyperopt", "--num_samples", "2"], "--num_samples cannot be used with --tool hyperopt"),
    (["--max_concurrent", "2"], "--max_concurrent cannot be used with --tool hyperopt"),
    (["--tool", "ray", "--max_evals", "3", "--algo", "random"], "--algo, --max_evals cannot be used with --tool ray"),
    (["--tool", "ray", "--num_samples", "0"], "--num_samples must be at least 1"),
    (["--tool", "ray", "--learning_rate=0.01"], "learning_rate set on the command line and searched"),
    (["--tool", "ray", "--device=cpu"], "--device is not used with --tool ray"),
])
def test_wrong_flags_are_one_line_errors(flags, message, params_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        main_hyper(["--model=MASAN", "--dataset=ml-100k", f"--params_file={params_file}", *flags])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_missing_ray_is_a_one_line_error(params_file, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` fails, as without ray
    with pytest.raises(SystemExit) as exit_:
        main_hyper([f"--params_file={params_file}", "--tool", "Ray"])  # RecBole's spelling works too
    assert exit_.value.code == 2 and "--tool ray needs ray: pip install" in capsys.readouterr().err


def test_ray_flags_reach_tune_run(params_file, monkeypatch, tmp_path):
    # tune.run replaced: what the search asks of Ray, and the results file made from its trials
    asked = {}

    def fake_run(trainable, **kwargs):
        asked.update(kwargs)
        trial = types.SimpleNamespace(
            trial_id="t_00000", status="TERMINATED", error_file=None, config={"learning_rate": 0.003, "k_interests": 5},
            last_result={"valid_score": 0.25, "epoch": 3, "best_valid_result": {"mrr@10": 0.25},
                         "test_result": {"mrr@10": 0.2}})
        for callback in kwargs["callbacks"]:
            callback.on_trial_complete(iteration=1, trials=[trial], trial=trial)
        return types.SimpleNamespace(trials=[trial])

    monkeypatch.setattr(tune, "run", fake_run)
    monkeypatch.setattr(tune, "with_parameters", lambda trainable, **kw: trainable)
    monkeypatch.setattr(tuning, "start_ray", lambda address, num_cpus: False)
    main_hyper([f"--params_file={params_file}", "--tool", "ray", "--num_samples", "4", "--max_concurrent", "3",
                "--gpus_per_trial", "0.5", "--asha", "--storage_path", "runs", "--epochs=7",
                "--output_file", "out.txt"])
    assert asked["num_samples"] == 4 and asked["max_concurrent_trials"] == 3
    assert asked["resources_per_trial"] == {"cpu": 1, "gpu": 0.5}
    assert (asked["metric"], asked["mode"]) == ("valid_score", "max")  # MRR@10: bigger is better
    assert type(asked["scheduler"]).__name__ == "AsyncHyperBandScheduler"
    assert asked["scheduler"]._time_attr == "epoch" and asked["scheduler"]._max_t == 7
    assert asked["storage_path"] == str(tmp_path / "runs")
    assert (tmp_path / "out.txt").read_text() == (
        "learning_rate:0.003, k_interests:5\nValid result:\nmrr@10 : 0.25\nTest result:\nmrr@10 : 0.2\n\n")


@pytest.mark.slow
def test_two_masan_trials_run_at_once_on_a_local_ray(params_file, tmp_path):
    tuning.start_ray(num_cpus=2)
    try:
        analysis = main_hyper(["--model=MASAN", "--dataset=ml-100k", f"--params_file={params_file}", "--tool", "ray",
                               "--num_samples", "2", "--max_concurrent", "2", "--cpus_per_trial", "1",
                               "--output_file", "result.txt", "--epochs=2", *TINY])
    finally:
        import ray

        ray.shutdown()
    trials = analysis.trials
    assert [t.status for t in trials] == ["TERMINATED"] * 2
    first, second = (t.last_result for t in trials)
    # each trial recorded when it started and ended: the two overlap
    assert max(first["trial_start"], second["trial_start"]) < min(first["trial_end"], second["trial_end"])
    # one report per validation (2 epochs) and one with the test result
    assert all(t.last_result["training_iteration"] == 3 for t in trials)
    text = (tmp_path / "result.txt").read_text()
    entries = re.findall(r"learning_rate:(\S+), k_interests:(\d+)\nValid result:\nrecall@10 : .*\nTest result:\n"
                         r"recall@10 : ", text)
    assert sorted(entries) == sorted((str(t.config["learning_rate"]), str(t.config["k_interests"])) for t in trials)
    # Ray's experiment folder is under saved/ray, with each trial's RecBole checkpoint in its own folder
    assert len(list((tmp_path / "saved" / "ray").glob("MASAN-ml-100k-*/_trial_*/saved/MASAN-*.pth"))) == 2


def test_a_local_ray_runs_trials_at_normal_priority(monkeypatch):
    import os

    import ray

    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    assert tuning.start_ray(num_cpus=1)
    try:
        # Ray's own default is nice 15: trials would wait behind every other busy process
        assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == 0
    finally:
        ray.shutdown()


class Killed(Exception):
    """The trial's process ends here, as a stopped search ends it."""


def run_trial(monkeypatch, job, kill_after=None):
    """tuning._trial outside Ray: its reports collected; with ``kill_after``, the process ends at that report."""
    reports = []

    def report(result):
        reports.append(dict(result))
        if kill_after is not None and len(reports) == kill_after:
            raise Killed

    monkeypatch.setattr(tuning, "_reporter", lambda: report)
    monkeypatch.setattr(tune, "get_context", lambda: types.SimpleNamespace(get_trial_dir=lambda: job["trial_dir"]),
                        raising=False)
    monkeypatch.setattr("ray.get_gpu_ids", lambda: [])
    try:
        tuning._trial({"sample": 0}, job)
    except Killed:
        pass
    return reports


def test_a_trial_cut_off_goes_on_from_its_last_epoch_to_the_same_result(tiny_config, tmp_path, monkeypatch):
    def job(name):
        (tmp_path / name).mkdir()
        return {"model": "SASRec", "dataset": "synth",
                "config_files": [], "cpus_per_trial": 1, "samples": [{"learning_rate": 0.01}],
                "config_dict": {**tiny_config, "epochs": 4, "stopping_step": 10},
                "state_dir": str(tmp_path / name / "states"), "trial_dir": str(tmp_path / name)}

    whole = run_trial(monkeypatch, job("whole"))
    cut = job("cut")
    assert len(run_trial(monkeypatch, cut, kill_after=2)) == 2  # killed at its second validation's report
    resumed = run_trial(monkeypatch, cut)
    # the two saved epochs are reported again (for ASHA), then training goes on from the third
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4, 4]
    assert resumed[-1]["valid_curve"] == whole[-1]["valid_curve"] and len(whole[-1]["valid_curve"]) == 4
    assert resumed[-1]["test_result"] == whole[-1]["test_result"]
    assert resumed[-1]["cpu_seconds"] > resumed[2]["cpu_seconds"] - 1e-9  # the first run's seconds carried over
    # each finished trial's best model also where RecBole keeps it (checkpoint_dir), as without a state
    assert len(list((tmp_path / "saved").glob("SASRec-*.pth"))) == 2
    state = tuning.TrialState(cut["state_dir"], 0)
    assert os.path.isfile(state.latest)
    state.remove()
    assert not os.path.exists(state.folder)
