"""Hyper-parameter search on Ray Tune (``run_hyper.py --tool ray``).

Trials run in parallel, on a local Ray or on an existing cluster, each in its own Ray worker
process; ASHA can stop the weak ones early on the validation metric, which each trial reports
after every validation. RecBole's own Ray path is not used: it asks one GPU and five samples
per search whatever the flags say. ray is imported only when a search starts, so this module
(and the results format it shares with the hyperopt path) loads without it.

A search draws its ``num_samples`` settings up front from ``search_seed``, so the same command
draws the same trials; ``grid`` runs each combination of the choices once instead (a small space
searched exhaustively, such as one setting at a time beyond a first search's winner). With a trials file each trial that ends is appended to it as one line of
JSON (its settings, validation curve, epochs, CPU seconds, test result); ``resume`` reads it back,
runs only the trials it lacks, and gives ASHA the recorded curves, so a search stopped part-way
goes on where it stopped. A trial that was running when the search stopped goes on from its last
validated epoch (:class:`TrialState`), with the numbers it would have had uninterrupted.
"""

import hashlib
import itertools
import json
import math
import os
import re
import shutil
import subprocess
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


def draw_samples(space, num_samples, seed):
    """``num_samples`` settings drawn from a Ray search space, one at a time (as Ray draws them)
    from a generator seeded with ``seed``: the same seed draws the same trials."""
    import numpy as np

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(num_samples):
        drawn = {name: domain.sample(random_state=rng) for name, domain in space.items()}
        samples.append({name: value.item() if hasattr(value, "item") else value for name, value in drawn.items()})
    return samples


def grid_samples(params_dict):
    """Every combination of the ``choice`` lists, once each, the first line's values varying
    slowest (the file's order); a grid has no draws, so other kinds of line are refused."""
    other = {name: kind for kind, names in params_dict.items() if kind != "choice" for name in names}
    if other:
        raise ValueError(f"--grid needs `choice` lines only: {', '.join(f'{n} is {k}' for n, k in other.items())}")
    names, values = zip(*params_dict["choice"].items())
    return [dict(zip(names, combination)) for combination in itertools.product(*values)]


def flatten_bundles(params):
    """A ``choice`` whose values are dicts chooses several settings at once (settings that only
    make sense together, such as ``attn_padding_mask`` with ``length_bucketing``): the chosen dict's
    keys are set, the choice's own name is not."""
    flat = {}
    for name, value in params.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[name] = value
    return flat


def code_version():
    """The commit the package was loaded from, with ``-dirty`` for uncommitted changes; None
    outside a git work tree (an installed wheel)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) if commit else None


def read_trials(path, search_key):
    """The trials recorded in ``path`` for the search ``search_key``, by sample index. A file of
    another search (other model, space, seed, budget...) is refused rather than mixed in."""
    records = {}
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                sample = int(record["sample"])
                recorded_search = record["search"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{path}, line {lineno}: not a trial record of run_hyper.py --tool ray; "
                                 "give another --trials_file") from None
            if recorded_search != search_key:
                differ = sorted(k for k in set(search_key) | set(recorded_search)
                                if search_key.get(k) != recorded_search.get(k))
                raise ValueError(f"{path} records another search (it differs in {', '.join(differ)}); "
                                 "resume it with its own settings or give another --trials_file")
            records[sample] = record
    return records


def prime_asha(scheduler, records, metric_sign):
    """Replays recorded validation curves into ASHA's rungs, as if those trials had just run:
    the trials still to run are then cut against them. Needs ASHA's bracket bookkeeping
    (``_brackets``, ``_Bracket.on_result``), present in ray 2.6.3 to 2.5x; returns False where
    it is missing, and the search then cuts only against its own new trials."""
    import types

    brackets = getattr(scheduler, "_brackets", None)
    if not brackets or not hasattr(brackets[0], "on_result"):
        return False
    for sample, record in sorted(records.items()):
        stand_in = types.SimpleNamespace(trial_id=f"recorded_{sample}")
        for epoch, score in enumerate(record.get("valid_curve") or [], start=1):
            brackets[0].on_result(stand_in, epoch, metric_sign * score)
    return True


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


def _reporter():
    """Tune's per-trial report: ``tune.report(metrics)`` in current ray, ``ray.air.session.report``
    in ray 2.6.3 (whose ``tune.report`` is the older keyword form)."""
    from ray import tune

    if hasattr(tune, "get_context"):
        return tune.report
    from ray.air import session

    return session.report


def _trial(config, job):
    """One trial, in a Ray worker whose working directory is the trial's folder (so RecBole's
    log/ and saved/ of the trial land there). Reports after every validation, then once more
    with the test result."""
    import ray
    import recbole.data
    import torch
    from recbole.config import Config
    from recbole.utils import get_trainer, init_logger, init_seed

    from masan_recbole.registry import get_model

    start, cpu_start = time.time(), time.process_time()
    report = _reporter()
    # as many threads as Ray reserved CPUs: torch would take every core of the host, per trial
    torch.set_num_threads(max(1, math.floor(job["cpus_per_trial"])))
    sys.argv = sys.argv[:1]  # a Ray worker's argv holds Ray's own --key=value flags, not RecBole settings
    gpus = ",".join(str(g) for g in ray.get_gpu_ids())  # Ray's choice: RecBole's gpu_id default would move it
    sample = config["sample"]
    settings = flatten_bundles(job["samples"][sample])
    config = Config(model=job["model"], dataset=job["dataset"], config_file_list=job["config_files"],
                    config_dict={**job["config_dict"], **settings, "gpu_id": gpus, "device": "cuda" if gpus else "cpu"})
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = recbole.data.create_dataset(config)
    train_data, valid_data, test_data = recbole.data.data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    state = TrialState(job["state_dir"], sample) if job.get("state_dir") else None
    curve, cpu_before, model_file = [], 0.0, trainer.saved_model_file  # RecBole's place in the trial's folder
    if state is not None:
        curve, cpu_before, start = state.resume(trainer, start)

    def progress():
        return {"epoch": len(curve), "valid_curve": list(curve), "best_valid_result": plain(trainer.best_valid_result),
                "cpu_seconds": cpu_before + time.process_time() - cpu_start, "trial_start": start}

    for done in range(1, len(curve) + 1):  # a resumed trial's epochs again, so that ASHA sees them in order
        report({"valid_score": curve[done - 1], **progress(), "epoch": done, "valid_curve": curve[:done]})

    def report_validation(epoch_idx, valid_score):
        curve.append(float(valid_score))
        if state is not None:  # saved before reporting: ASHA may end the process at the report
            state.save(trainer, epoch_idx, progress())
        report({"valid_score": float(valid_score), **progress()})

    if trainer.cur_step > trainer.stopping_step or trainer.start_epoch >= trainer.epochs:
        # resumed after its last epoch (cut off before its test): fit would train on, and save epoch -1 as best
        best_score, best_valid = trainer.best_valid_score, trainer.best_valid_result
    else:
        best_score, best_valid = trainer.fit(train_data, valid_data, verbose=False, saved=True,
                                             callback_fn=report_validation)
    test_result = trainer.evaluate(test_data, load_best_model=True)
    if state is not None:  # the best model where RecBole keeps it; the state goes once the trial is recorded
        shutil.copy2(trainer.saved_model_file, model_file)
    report({**progress(), "valid_score": float(best_score), "best_valid_result": plain(best_valid),
            "test_result": plain(test_result), "trial_end": time.time()})


def trial_states(storage_path, search_key):
    """The folder of a search's trial states: one per search (its key's digest), so that no other
    search resumes from them."""
    digest = hashlib.sha1(json.dumps(search_key, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(storage_path, "trial-states", f"{search_key['model']}-{search_key['dataset']}-{digest}")


class TrialState:
    """A trial's training state after each validation (``<state_dir>/sample-<i>/``: RecBole's best
    model, the whole training state, and the curve and CPU seconds so far), so that a trial cut off
    by a stopped search goes on from its last validated epoch, with the numbers an uninterrupted
    trial would have had (the trainer's exact resume), instead of starting again."""

    def __init__(self, state_dir, sample):
        self.folder = os.path.join(state_dir, f"sample-{sample}")
        self.latest, self.progress = os.path.join(self.folder, "latest.pth"), os.path.join(self.folder, "progress.json")

    def resume(self, trainer, start):
        """(curve, CPU seconds, start time) of the saved state, the trainer restored to it; or a fresh start."""
        os.makedirs(self.folder, exist_ok=True)
        best = os.path.join(self.folder, "best.pth")
        trainer.saved_model_file = best
        if not (os.path.isfile(self.latest) and os.path.isfile(self.progress)):
            return [], 0.0, start
        trainer.resume_checkpoint(self.latest)
        trainer.saved_model_file = best  # resuming points it at latest.pth; the best model stays apart
        with open(self.progress) as f:
            saved = json.load(f)
        # the progress file is written first: one validation ahead of latest.pth at most
        validations = trainer.start_epoch // trainer.eval_step
        return saved["valid_curve"][:validations], saved["cpu_seconds"], saved["trial_start"]

    def save(self, trainer, epoch_idx, progress):
        from masan_recbole.files import write_atomic

        with write_atomic(self.progress) as f:
            json.dump(progress, f)
        trainer._save_checkpoint(epoch_idx, verbose=False, saved_model_file=self.latest)

    def remove(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def trial_record(sample, params, search_key, result, status, error=None):
    """One line of the trials file: what a trial was given and what it did."""
    result = result or {}
    curve = result.get("valid_curve") or []
    record = {"sample": sample, "params": params, "status": status,
              "epochs": len(curve), "valid_curve": curve,
              "best_valid_score": max(curve) if curve and search_key["mode"] == "max" else min(curve) if curve else None,
              "best_valid_result": result.get("best_valid_result"), "test_result": result.get("test_result"),
              "cpu_seconds": round(result.get("cpu_seconds", 0.0), 1),
              "wall_seconds": round(result["trial_end"] - result["trial_start"], 1)
              if "trial_end" in result else None,
              "code": code_version(), "search": search_key}
    if "test_result" in result:
        record["best_valid_score"] = result["valid_score"]
    if error:
        record["error"] = error
    return record


def _entry(record):
    test = record.get("test_result")
    if test is None:
        test = record.get("error") or f"not tested: stopped by ASHA after epoch {record['epochs']}"
    return results_entry(record["params"], record.get("best_valid_result"), test)


def _trial_logger(tune, job, search_key, trials_file, records):
    class RecordEachTrial(tune.Callback):
        """Records each trial as it ends (in the driver, so workers on other hosts need no access
        to the files): an interrupted search keeps what it found, and resumes from it."""

        def _record(self, trial, status, error=None):
            sample = trial.config["sample"]
            record = trial_record(sample, job["samples"][sample], search_key, trial.last_result, status, error)
            records[sample] = record
            if trials_file:
                with open(trials_file, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if status != "error" and job.get("state_dir"):  # a failed trial resumes from its state
                TrialState(job["state_dir"], sample).remove()

        def on_trial_complete(self, iteration, trials, trial, **info):
            tested = "test_result" in (trial.last_result or {})
            self._record(trial, "tested" if tested else "stopped")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._record(trial, "error", f"failed: {_trial_error(getattr(trial, 'error_file', None))}")

    return RecordEachTrial()


def search(model, dataset, params_dict, output_file, config_files=None, num_samples=None, max_concurrent=None,
           cpus_per_trial=1, gpus_per_trial=0, address=None, asha=False, storage_path=DEFAULT_STORAGE,
           num_cpus=None, search_seed=0, grace_period=1, trials_file=None, resume=False, grid=False):
    """Search ``params_dict`` with ``num_samples`` trials (default 10) drawn from ``search_seed`` on Ray
    Tune, or with ``grid`` one trial per combination of its choices;
    ``--key=value`` settings in ``sys.argv`` apply to every trial, as in the hyperopt path.
    ``num_cpus`` caps a local Ray (default: every core). ASHA stops trials at rungs from
    ``grace_period`` epochs to ``epochs``. Writes ``output_file`` in RecBole's format and, with
    ``trials_file``, one JSON line per trial; ``resume`` runs only the trials that file lacks.
    Returns the trial records by sample index."""
    tune = _tune()
    from recbole.config import Config

    from masan_recbole.files import write_atomic

    if grid and num_samples is not None:
        raise ValueError("--num_samples cannot be used with --grid: the grid's combinations are the trials")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"--num_samples must be at least 1, got {num_samples}")
    if max_concurrent is not None and max_concurrent < 1:
        raise ValueError(f"--max_concurrent must be at least 1, got {max_concurrent}")
    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise ValueError(f"--cpus_per_trial must be above 0 and --gpus_per_trial at least 0, "
                         f"got {cpus_per_trial} and {gpus_per_trial}")
    if grace_period < 1:
        raise ValueError(f"--grace_period must be at least 1 epoch, got {grace_period}")
    if resume and not trials_file:
        raise ValueError("--resume needs --trials_file, the file the search recorded its trials in")
    if trials_file and not resume and os.path.exists(trials_file) and os.path.getsize(trials_file):
        raise ValueError(f"{trials_file} already records trials; add --resume to go on with that search, "
                         "or give another --trials_file")
    samples = grid_samples(params_dict) if grid else None
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
    searched = set(space) | {k for values in params_dict.get("choice", {}).values()
                             for v in values if isinstance(v, dict) for k in v}
    both = sorted(searched & set(given))
    if both:
        raise ValueError(f"{', '.join(both)} set on the command line and searched by the params file; drop one")
    mode = "max" if config["valid_metric_bigger"] else "min"
    if grid:
        num_samples = len(samples)
    else:
        num_samples = num_samples or 10
        samples = draw_samples(space, num_samples, search_seed)
    # What makes two runs the same search: a trials file is resumed only by the search that wrote it.
    search_key = {"model": model, "dataset": dataset, "params": params_dict, "search_seed": search_seed,
                  **({"grid": True} if grid else {}),
                  "num_samples": num_samples, "asha": bool(asha), "grace_period": grace_period,
                  "max_epochs": config["epochs"], "valid_metric": config["valid_metric"], "mode": mode,
                  "settings": {k: v for k, v in sorted(given.items())},
                  "config_files": [os.path.basename(f) for f in config_files]}
    search_key = json.loads(json.dumps(search_key, default=str))  # as it reads back from the file
    records = read_trials(trials_file, search_key) if resume and os.path.exists(trials_file) else {}
    storage_path = os.path.abspath(storage_path)
    todo = [i for i in range(num_samples) if i not in records]
    job = {"model": model, "dataset": dataset, "config_files": config_files, "cpus_per_trial": cpus_per_trial,
           "samples": samples,
           # with a trials file, each trial's state after every validation, under one folder per search
           "state_dir": trial_states(storage_path, search_key) if trials_file else None,
           # trials run in their own folder: the dataset's root is passed as an absolute path
           "config_dict": {**given, "data_path": os.path.dirname(os.path.abspath(config["data_path"]))}}
    scheduler = None
    if asha:
        # the trial's own epochs end it (stop_last_trials=False), so a trial ASHA keeps is always tested
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="epoch", max_t=max(1, config["epochs"]),
                                  grace_period=grace_period, stop_last_trials=False)
        if records and not prime_asha(scheduler, records, 1 if mode == "max" else -1):
            print("this ray's ASHA cannot be given the recorded trials: the rest are cut among themselves",
                  file=sys.stderr)
    name = f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    with write_atomic(output_file) as f:  # each trial is appended as it ends
        f.writelines(_entry(records[i]) for i in sorted(records))
    if records:
        print(f"{trials_file}: {len(records)} of {num_samples} trials recorded; {len(todo)} to run")
    if todo:
        started = start_ray(address, num_cpus)
        try:
            print(f"Ray Tune: {len(todo)} trials of {model} on {dataset}, valid metric {config['valid_metric']} "
                  f"({mode}); experiment folder {os.path.join(storage_path, name)}")
            tune.run(
                tune.with_parameters(_trial, job=job), name=name, config={"sample": tune.grid_search(todo)},
                resources_per_trial={"cpu": cpus_per_trial, "gpu": gpus_per_trial},
                max_concurrent_trials=max_concurrent, scheduler=scheduler,
                metric="valid_score", mode=mode,
                storage_path=storage_path, callbacks=[_trial_logger(tune, job, search_key, trials_file, records)],
                reuse_actors=False,  # a fresh process per trial: RecBole keeps global state (seeds, loggers)
                raise_on_failed_trial=False, verbose=1)
        finally:
            if started:
                import ray

                ray.shutdown()
    with write_atomic(output_file) as f:  # RecBole's order: trial by trial
        f.writelines(_entry(records[i]) for i in sorted(records))
    failed = [r for r in records.values() if r["status"] == "error"]
    for r in failed:
        print(f"trial {r['sample']} {r['error']}", file=sys.stderr)
    if failed and len(failed) == len(records):
        raise ValueError(f"every trial failed; the first one {failed[0]['error']} "
                         f"(all in {os.path.join(storage_path, name)})")
    tested = [r for r in records.values() if r["status"] == "tested"]
    if tested:
        best = (max if mode == "max" else min)(tested, key=lambda r: r["best_valid_score"])
        print("best params:", best["params"])
        print("best result:", {k: best[k] for k in ("best_valid_score", "best_valid_result", "test_result")})
    print(f"results: {output_file}" + (f"; trial records: {trials_file}" if trials_file else "")
          + f"; Ray's records of each trial: {os.path.join(storage_path, name)}")
    return records


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
