"""Hyper-parameter search on Ray Tune (``run_hyper.py --tool ray``).

Trials run in parallel, on a local Ray or on an existing cluster, each in its own Ray worker
process; ASHA can stop the weak ones early on the validation metric, which each trial reports
after every validation. RecBole's own Ray path is not used: it asks one GPU and five samples
per search whatever the flags say. ray is imported only when a search starts, so this module
(and the results format it shares with the hyperopt path) loads without it.
"""

import math
import os
import re
import sys
import time

from recbole.trainer import HyperTuning
from recbole.utils import dict2str

DEFAULT_STORAGE = os.path.join("saved", "ray")


def results_entry(params, valid_result, test_result):
    """One trial as RecBole writes it (``HyperTuning.export_result``); ``test_result`` may be a
    line of text for a trial that was never tested."""
    test = test_result if isinstance(test_result, str) else dict2str(test_result)
    return (HyperTuning.params2str(params) + "\n" + "Valid result:\n" + dict2str(valid_result or {}) + "\n"
            + "Test result:\n" + test + "\n\n")


def plain(result):
    """A result dict with plain floats: 0.1234 in every file and print, not np.float64(0.1234)."""
    return {k: float(v) for k, v in (result or {}).items()}


def _tune():
    try:
        from ray import tune
        from ray.tune import Callback  # noqa: F401  (absent from the stand-in of the ray_optional patch)
    except ImportError:
        raise ValueError("--tool ray needs ray: pip install 'ray==2.6.3' (or use --tool hyperopt)") from None
    return tune


def ray_search_space(params_dict):
    """RecBole's ``params_dict`` (``{kind: {name: values}}``, as read from a hyper.test file)
    as a Ray Tune search space, with hyperopt's meaning for each kind."""
    tune = _tune()
    space = {}
    for kind, names in params_dict.items():
        for name, value in names.items():
            if kind == "choice":
                space[name] = tune.choice(list(value))
            elif kind == "uniform":
                space[name] = tune.uniform(*value)
            elif kind == "loguniform":
                # hyperopt's bounds are natural logs: loguniform -8,0 samples e^-8 .. 1
                space[name] = tune.loguniform(math.exp(value[0]), math.exp(value[1]))
            elif kind == "quniform":
                low, high, q = value
                if all(float(v).is_integer() for v in value):
                    # whole numbers stay ints, so integer keys (hidden_size) pass the config's type check
                    space[name] = tune.qrandint(int(low), int(high), int(q))
                elif q == 1:
                    # ray 2.6.3's quantizer returns a float domain's samples unrounded when q == 1
                    raise ValueError(f"{name}: quniform with q=1 needs whole-number bounds, got {value}")
                else:
                    try:
                        space[name] = tune.quniform(low, high, q)
                    except ValueError as e:  # Ray wants both bounds on the grid of q
                        raise ValueError(f"{name}: quniform {low},{high},{q}: {e}") from None
            else:
                raise ValueError(f"{name}: search kind {kind!r} is not one of choice, uniform, loguniform, quniform")
    return space


def _prepare_worker():
    """Ray's worker_process_setup_hook: runs first in every worker of the search. Ray loads it by
    reference, which imports this module and so first its package: masan_recbole/__init__
    applies the patch layer (a worker imports ray.tune before any trial code, and ray.tune
    needs numpy's old names) and registers the plugin's models. This checks the result."""
    from masan_recbole.registry import plugin_models

    if "MASAN" not in plugin_models():
        raise RuntimeError("masan_recbole's models are not registered in this Ray worker")


def start_ray(address=None, num_cpus=None):
    """Connect to the cluster at ``address`` ("auto": the one this host belongs to) or start a
    local Ray, with every worker importing the plugin first. Returns whether Ray was started
    here (an already initialised Ray is used as it is)."""
    _tune()
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        # Ray starts workers at nice 15, so a local search waits behind any other busy process
        # (two converged runs on this 2-core machine stretched two one-epoch trials to 14 minutes);
        # trials are the user's main work, as a hyperopt trial is. A value the user set stays.
        os.environ.setdefault("RAY_worker_niceness", "0")
    # Workers' own output stays in the trials' folders (RecBole's log/, Ray's error.txt): printed
    # here, two trials' epoch logs would interleave with Ray's status tables.
    ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": _prepare_worker})
    return True


def _trial(params, job):
    """One trial, in a Ray worker whose working directory is the trial's folder (so RecBole's
    log/ and saved/ of the trial land there). Reports after every validation, then once more
    with the test result."""
    import ray
    import recbole.data
    import torch
    from ray.air import session
    from recbole.config import Config
    from recbole.utils import get_trainer, init_logger, init_seed

    from masan_recbole.registry import get_model

    start = time.time()
    # as many threads as Ray reserved CPUs: torch would take every core of the host, per trial
    torch.set_num_threads(max(1, math.floor(job["cpus_per_trial"])))
    sys.argv = sys.argv[:1]  # a Ray worker's argv holds Ray's own --key=value flags, not RecBole settings
    gpus = ",".join(str(g) for g in ray.get_gpu_ids())  # Ray's choice: RecBole's gpu_id default would move it
    settings = {k: v.item() if hasattr(v, "item") else v for k, v in params.items()}  # numpy scalars -> plain
    config = Config(model=job["model"], dataset=job["dataset"], config_file_list=job["config_files"],
                    config_dict={**job["config_dict"], **settings, "gpu_id": gpus, "device": "cuda" if gpus else "cpu"})
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = recbole.data.create_dataset(config)
    train_data, valid_data, test_data = recbole.data.data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epoch = 0

    def report_validation(epoch_idx, valid_score):
        nonlocal epoch
        epoch = epoch_idx + 1
        session.report({"valid_score": float(valid_score), "epoch": epoch,
                        "best_valid_result": plain(trainer.best_valid_result)})

    best_score, best_valid = trainer.fit(train_data, valid_data, verbose=False, saved=True,
                                         callback_fn=report_validation)
    test_result = trainer.evaluate(test_data, load_best_model=True)
    session.report({"valid_score": float(best_score), "epoch": epoch, "best_valid_result": plain(best_valid),
                    "test_result": plain(test_result), "trial_start": start, "trial_end": time.time()})


def _entry(trial, settings):
    result = trial.last_result or {}
    test = result.get("test_result")
    if test is None:
        test = f"not tested: stopped by ASHA after epoch {result.get('epoch', 0)}"
    return results_entry({k: trial.config[k] for k in settings}, result.get("best_valid_result"), test)


def _results_writer(tune, output_file, settings):
    class AppendEachTrial(tune.Callback):
        """Appends each trial to the results file as it ends (in the driver, so workers on other
        hosts need no access to it): an interrupted search keeps what it found."""

        def on_trial_complete(self, iteration, trials, trial, **info):
            with open(output_file, "a") as f:
                f.write(_entry(trial, settings))

    return AppendEachTrial()


def search(model, dataset, params_dict, output_file, config_files=None, num_samples=10, max_concurrent=None,
           cpus_per_trial=1, gpus_per_trial=0, address=None, asha=False, storage_path=DEFAULT_STORAGE,
           num_cpus=None):
    """Search ``params_dict`` with ``num_samples`` trials on Ray Tune; ``--key=value`` settings in
    ``sys.argv`` apply to every trial, as in the hyperopt path. ``num_cpus`` caps a local Ray
    (default: every core). Writes ``output_file`` in RecBole's format and returns Ray's
    ``ExperimentAnalysis``."""
    tune = _tune()
    from recbole.config import Config

    from masan_recbole.files import write_atomic

    if num_samples < 1:
        raise ValueError(f"--num_samples must be at least 1, got {num_samples}")
    if max_concurrent is not None and max_concurrent < 1:
        raise ValueError(f"--max_concurrent must be at least 1, got {max_concurrent}")
    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise ValueError(f"--cpus_per_trial must be above 0 and --gpus_per_trial at least 0, "
                         f"got {cpus_per_trial} and {gpus_per_trial}")
    space = ray_search_space(params_dict)
    config_files = [os.path.abspath(f) for f in config_files or []]
    # Checked here, once, so that a bad setting is one line rather than a failure in every trial.
    # gpu_id "" and device cpu: building it must not set CUDA_VISIBLE_DEVICES for the local Ray.
    config = Config(model=model, dataset=dataset, config_file_list=config_files,
                    config_dict={"gpu_id": "", "device": "cpu"})
    given = config.cmd_config_dict
    for key in ("device", "gpu_id"):
        if key in given:
            raise ValueError(f"--{key} is not used with --tool ray: Ray places each trial; "
                             "use --gpus_per_trial to give trials a GPU")
    both = sorted(set(space) & set(given))
    if both:
        raise ValueError(f"{', '.join(both)} set on the command line and searched by the params file; drop one")
    job = {"model": model, "dataset": dataset, "config_files": config_files, "cpus_per_trial": cpus_per_trial,
           # trials run in their own folder: the dataset's root is passed as an absolute path
           "config_dict": {**given, "data_path": os.path.dirname(os.path.abspath(config["data_path"]))}}
    mode = "max" if config["valid_metric_bigger"] else "min"
    scheduler = None
    if asha:
        # the trial's own epochs end it (stop_last_trials=False), so a trial ASHA keeps is always tested
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="epoch", max_t=max(1, config["epochs"]),
                                  grace_period=1, stop_last_trials=False)
    storage_path = os.path.abspath(storage_path)
    name = f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    with write_atomic(output_file):
        pass  # starts the results file empty; each trial is appended as it ends

    started = start_ray(address, num_cpus)
    try:
        print(f"Ray Tune: {num_samples} trials of {model} on {dataset}, valid metric {config['valid_metric']} "
              f"({mode}); experiment folder {os.path.join(storage_path, name)}")
        analysis = tune.run(
            tune.with_parameters(_trial, job=job), name=name, config=space, num_samples=num_samples,
            resources_per_trial={"cpu": cpus_per_trial, "gpu": gpus_per_trial},
            max_concurrent_trials=max_concurrent, scheduler=scheduler, metric="valid_score", mode=mode,
            storage_path=storage_path, callbacks=[_results_writer(tune, output_file, space)],
            reuse_actors=False,  # a fresh process per trial: RecBole keeps global state (seeds, loggers)
            raise_on_failed_trial=False, verbose=1)
    finally:
        if started:
            import ray

            ray.shutdown()
    trials = sorted(analysis.trials, key=lambda t: t.trial_id)
    ended = [t for t in trials if t.status == "TERMINATED"]
    with write_atomic(output_file) as f:  # RecBole's order: trial by trial
        f.writelines(_entry(t, space) for t in ended)
    failed = [t for t in trials if t.status == "ERROR"]
    for t in failed:
        print(f"trial {t.trial_id} failed: {t.error_file}", file=sys.stderr)
    if failed and not ended:
        raise ValueError(f"every trial failed; the first one's error: {_trial_error(failed[0].error_file)} "
                         f"(all in {os.path.join(storage_path, name)})")
    tested = [t for t in ended if "test_result" in t.last_result]
    if tested:
        best = (max if mode == "max" else min)(tested, key=lambda t: t.last_result["valid_score"])
        print("best params:", {k: best.config[k] for k in space})
        print("best result:", {k: best.last_result[k] for k in ("valid_score", "best_valid_result", "test_result")})
    print(f"results: {output_file}; Ray's records of each trial: {os.path.join(storage_path, name)}")
    return analysis


def _trial_error(path):
    """The line of a trial's error.txt that says what went wrong: the exception of its traceback,
    else the line under Ray's "Failure # 1" header (a worker killed for memory has no traceback)."""
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
    except (OSError, TypeError):
        return "(no error file)"
    raised = [line for line in lines if re.match(r"[\w.]*(Error|Exception)\b[^:\s]*: ", line)]
    return raised[-1] if raised else (lines[1:2] or ["(empty error file)"])[0]
