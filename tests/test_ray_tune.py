"""run_hyper.py --tool ray: the search-space mapping, the flags, and two MASAN trials at once
on a local Ray (ml-100k from the recbole wheel)."""

import json
import os
import math
import re
import types

import numpy as np
import pytest
from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Quantized

from masan_recbole import tuning
from masan_recbole.quick_start import main_hyper, read_search_space

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

    if not hasattr(experiment_analysis, "is_directory"):
        pytest.skip("this ray reads its local experiment folders itself: the patch has no target")
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
    (["--tool", "ray", "--grid", "--num_samples", "2"], "--num_samples cannot be used with --grid"),
    (["--tool", "hyperopt", "--grid"], "--grid cannot be used with --tool hyperopt"),
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


def fake_tune_run(finish, asked=None):
    """tune.run replaced: each trial of the grid the search asks for ends at once with the curve
    ``finish(sample)`` gives (None: the search is interrupted before that trial ends)."""
    def fake_run(trainable, **kwargs):
        if asked is not None:
            asked.update(kwargs)
        for sample in kwargs["config"]["sample"]["grid_search"]:
            curve = finish(sample)
            if curve is None:
                raise KeyboardInterrupt  # stopped part-way: the trials recorded so far stay
            last = {"valid_score": curve[-1], "epoch": len(curve), "valid_curve": curve, "cpu_seconds": 1.5,
                    "best_valid_result": {"mrr@10": max(curve)}, "trial_start": 0.0}
            if len(curve) >= 3:  # ran to its last epoch: tested
                last.update(valid_score=max(curve), test_result={"mrr@10": 0.2}, trial_end=2.0)
            trial = types.SimpleNamespace(trial_id=f"t{sample}", status="TERMINATED", error_file=None,
                                          config={"sample": sample}, last_result=last)
            for callback in kwargs["callbacks"]:
                callback.on_trial_complete(iteration=1, trials=[trial], trial=trial)
        return types.SimpleNamespace(trials=[])

    return fake_run


@pytest.fixture
def no_ray_start(monkeypatch):
    monkeypatch.setattr(tune, "with_parameters", lambda trainable, **kw: trainable)
    monkeypatch.setattr(tuning, "start_ray", lambda address, num_cpus: False)


def test_ray_flags_reach_tune_run(params_file, monkeypatch, tmp_path, no_ray_start):
    asked = {}
    monkeypatch.setattr(tune, "run", fake_tune_run(lambda sample: [0.1, 0.25, 0.2], asked))
    main_hyper([f"--params_file={params_file}", "--tool", "ray", "--num_samples", "1", "--max_concurrent", "3",
                "--gpus_per_trial", "0.5", "--asha", "--grace_period", "2", "--storage_path", "runs", "--epochs=7",
                "--output_file", "out.txt", "--search_seed", "5"])
    assert asked["config"] == {"sample": {"grid_search": [0]}} and asked["max_concurrent_trials"] == 3
    assert asked["resources_per_trial"] == {"cpu": 1, "gpu": 0.5}
    assert (asked["metric"], asked["mode"]) == ("valid_score", "max")  # MRR@10: bigger is better
    assert type(asked["scheduler"]).__name__ == "AsyncHyperBandScheduler"
    assert asked["scheduler"]._time_attr == "epoch" and asked["scheduler"]._max_t == 7
    assert min(milestone for milestone, _ in asked["scheduler"]._brackets[0]._rungs) == 2  # the grace period
    assert asked["storage_path"] == str(tmp_path / "runs")
    drawn = tuning.draw_samples(tuning.ray_search_space(read_search_space(params_file)), 1, 5)[0]
    assert (tmp_path / "out.txt").read_text() == (
        f"learning_rate:{drawn['learning_rate']}, k_interests:{drawn['k_interests']}\nValid result:\nmrr@10 : 0.25\n"
        "Test result:\nmrr@10 : 0.2\n\n")


def test_the_same_search_seed_draws_the_same_trials():
    space = tuning.ray_search_space({"choice": {"k_interests": [5, 10, 20]}, "loguniform": {"learning_rate": [-8, 0]}})
    first, again, other = (tuning.draw_samples(space, 12, seed) for seed in (2020, 2020, 2021))
    assert first == again and first != other
    assert all(isinstance(s["k_interests"], int) and isinstance(s["learning_rate"], float) for s in first)


def test_a_choice_of_dicts_sets_its_settings_together(tmp_path):
    path = tmp_path / "p.test"
    path.write_text("padding choice [{'attn_padding_mask': True, 'length_bucketing': True}, "
                    "{'attn_padding_mask': False, 'length_bucketing': False}]\n")
    space = tuning.ray_search_space(read_search_space(str(path)))
    flat = [tuning.flatten_bundles(s) for s in tuning.draw_samples(space, 20, 0)]
    assert {tuple(sorted(f.items())) for f in flat} == {
        (("attn_padding_mask", True), ("length_bucketing", True)), (("attn_padding_mask", False), ("length_bucketing", False))}


def test_a_grid_runs_every_combination_once_in_the_files_order(params_file, monkeypatch, tmp_path, no_ray_start):
    asked = {}
    monkeypatch.setattr(tune, "run", fake_tune_run(lambda sample: [0.1 * (sample + 1)], asked))
    records = main_hyper([f"--params_file={params_file}", "--tool", "ray", "--grid", "--trials_file", "t.jsonl",
                          "--output_file", "out.txt", "--epochs=1"])
    assert asked["config"] == {"sample": {"grid_search": [0, 1, 2, 3]}}
    assert [records[i]["params"] for i in range(4)] == [
        {"learning_rate": 0.003, "k_interests": 5}, {"learning_rate": 0.003, "k_interests": 10},
        {"learning_rate": 0.001, "k_interests": 5}, {"learning_rate": 0.001, "k_interests": 10}]
    assert json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])["search"]["grid"] is True
    with pytest.raises(ValueError, match="--grid needs `choice` lines only: learning_rate is loguniform"):
        tuning.grid_samples({"choice": {"k_interests": [5]}, "loguniform": {"learning_rate": [-8, 0]}})


def test_a_stopped_search_resumes_with_only_the_missing_trials(params_file, monkeypatch, tmp_path, no_ray_start):
    curves = {0: [0.1, 0.2, 0.3], 1: [0.05], 2: [0.3, 0.35, 0.4], 3: [0.2, 0.25, 0.3]}
    flags = [f"--params_file={params_file}", "--tool", "ray", "--num_samples", "4", "--asha", "--epochs=3",
             "--trials_file", "trials.jsonl", "--output_file", "out.txt"]
    # first run: stopped after two trials ended (sample 1 by ASHA, after one epoch)
    monkeypatch.setattr(tune, "run", fake_tune_run(lambda s: curves[s] if s < 2 else None))
    with pytest.raises(KeyboardInterrupt):
        main_hyper(flags)
    records = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert [(r["sample"], r["status"], r["epochs"], r["valid_curve"]) for r in records] == [
        (0, "tested", 3, [0.1, 0.2, 0.3]), (1, "stopped", 1, [0.05])]
    assert records[0]["cpu_seconds"] == 1.5 and records[0]["best_valid_score"] == 0.3
    # run again without --resume: refused, nothing is overwritten
    with pytest.raises(SystemExit):
        main_hyper(flags)
    # resumed: only samples 2 and 3 run, and ASHA already holds the recorded trials' scores
    asked = {}
    monkeypatch.setattr(tune, "run", fake_tune_run(lambda s: curves[s], asked))
    records = main_hyper(flags + ["--resume"])
    assert asked["config"] == {"sample": {"grid_search": [2, 3]}}
    rungs = dict(asked["scheduler"]._brackets[0]._rungs)
    assert rungs[1] == {"recorded_0": 0.1, "recorded_1": 0.05}
    assert sorted(records) == [0, 1, 2, 3] and len((tmp_path / "trials.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "out.txt").read_text().count("Valid result") == 4
    # a trial that failed (a worker killed for memory) runs again on the next resume
    failed = dict(records[3], status="error", error="failed: the node ran low on memory")
    with open(tmp_path / "trials.jsonl", "a") as f:
        f.write(json.dumps(failed) + "\n")
    asked.clear()
    main_hyper(flags + ["--resume"])
    assert asked["config"] == {"sample": {"grid_search": [3]}}
    # the same file with another budget is another search
    with pytest.raises(SystemExit):
        main_hyper(flags[:4] + ["5"] + flags[5:] + ["--resume"])


def test_resuming_another_searchs_file_names_what_differs(tmp_path):
    key = {"model": "MASAN", "num_samples": 4}
    (tmp_path / "t.jsonl").write_text(json.dumps({"sample": 0, "search": {**key, "num_samples": 5}}) + "\n")
    with pytest.raises(ValueError, match=r"records another search \(it differs in num_samples\)"):
        tuning.read_trials(str(tmp_path / "t.jsonl"), key)
    (tmp_path / "t.jsonl").write_text("not json\n")
    with pytest.raises(ValueError, match="line 1: not a trial record"):
        tuning.read_trials(str(tmp_path / "t.jsonl"), key)


@pytest.mark.slow
def test_two_masan_trials_run_at_once_on_a_local_ray(params_file, tmp_path):
    tuning.start_ray(num_cpus=2)
    try:
        records = main_hyper(["--model=MASAN", "--dataset=ml-100k", f"--params_file={params_file}", "--tool", "ray",
                              "--num_samples", "2", "--max_concurrent", "2", "--cpus_per_trial", "1",
                              "--output_file", "result.txt", "--trials_file", "trials.jsonl", "--epochs=2", *TINY])
    finally:
        import ray

        ray.shutdown()
    assert sorted(records) == [0, 1] and all(r["status"] == "tested" for r in records.values())
    first, second = records[0], records[1]
    # each trial recorded when it started and ended: the two overlap
    assert max(first["trial_start"], second["trial_start"]) < min(first["trial_end"], second["trial_end"])
    # one validation per epoch, CPU seconds measured in the trial's worker
    assert all(r["epochs"] == 2 and len(r["valid_curve"]) == 2 and r["cpu_seconds"] > 0 for r in records.values())
    lines = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert sorted(line["sample"] for line in lines) == [0, 1]
    text = (tmp_path / "result.txt").read_text()
    entries = re.findall(r"learning_rate:(\S+), k_interests:(\d+)\nValid result:\nrecall@10 : .*\nTest result:\n"
                         r"recall@10 : ", text)
    assert sorted(entries) == sorted((str(r["params"]["learning_rate"]), str(r["params"]["k_interests"]))
                                     for r in records.values())
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
