"""Converged runs: each (model, dataset, seed) trained to early stopping on real data, one result
file per run, resumable across sessions.

    python -m benchmarks.converged --model MASAN --dataset lastfm --seed 2020 [--set key=value ...]
    python -m benchmarks.converged --all [--datasets lastfm ...]   # every pending run of the matrix, in order
    python -m benchmarks.converged --list                                          # the matrix and its state

The matrix (datasets, models, seeds, settings) is benchmarks/converged.yaml; an entry named otherwise
than its model (``MASAN-bucketed: {model: MASAN, settings: ...}``) is a variant with its own files. A run writes
``<out>/<dataset>-<model>-seed<seed>.json`` when it ends; until then its state lives in
``<out>/.state/<run>/`` (not committed): ``best.pth`` (RecBole's best-validation checkpoint),
``latest.pth`` (the whole training state after each validated epoch) and ``progress.json`` (curve
and epoch times). Started again, a run resumes from ``latest.pth`` with the project's exact resume,
so it ends with the numbers an uninterrupted run would have had. One thread per process by default:
on a 2-core machine start ``--all`` twice; a process takes the first pending run that no living
process holds (``.state/<run>/lock``).

The result file holds ``model``, ``dataset``, ``seed``, ``best_epoch``, ``epochs_run``,
``stopping_step``, ``test_result`` (the metrics of the best-validation model), ``valid_curve``,
``per_user_ndcg@10`` (test users in id order, for paired tests), the full config, seconds per epoch,
device, versions and commit.
"""

import argparse
import json
import math
import os
import sys
from typing import NamedTuple

import yaml

from benchmarks.harness import BENCHMARKS, clock, environment, portable_config, write_json

MATRIX = os.path.join(BENCHMARKS, "converged.yaml")
OUT = os.path.join(BENCHMARKS, "results", "converged")


def run_name(model, dataset, seed):
    return f"{dataset}-{model}-seed{seed}"


class Run(NamedTuple):
    dataset: str
    label: str  # the run's name in the matrix and its files: the model, or a variant of it ("MASAN-bucketed")
    model: str  # the model RecBole builds
    seed: int
    settings: dict


def load_matrix(path=MATRIX):
    """The matrix's runs in the file's order, each with the shared, dataset and entry settings merged."""
    with open(path) as f:
        spec = yaml.safe_load(f)
    runs = []
    for dataset, entry in spec["datasets"].items():
        for label, model_entry in entry["models"].items():
            for seed in model_entry["seeds"]:
                settings = {**spec.get("shared", {}), **entry.get("settings", {}), **model_entry.get("settings", {})}
                runs.append(Run(dataset, label, model_entry.get("model", label), seed, settings))
    return runs


def per_user_ndcg(trainer, test_data, k=10):
    """NDCG@k of each test user (one target each, RecBole's full-sort scores and masking), in user id order."""
    import torch

    users, values = [], []
    trainer.model.eval()
    with torch.no_grad():
        for batch in test_data:
            interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batch)
            target = scores[positive_u, positive_i]  # [P]
            rank = (scores[positive_u] > target[:, None]).sum(1) + 1  # 1 = first
            gain = torch.where(rank <= k, 1.0 / torch.log2(rank.double() + 1), torch.zeros_like(rank, dtype=torch.double))
            users += interaction[trainer.config["USER_ID_FIELD"]][positive_u].tolist()
            values += gain.tolist()
    order = sorted(range(len(users)), key=users.__getitem__)
    return [users[i] for i in order], [round(values[i], 6) for i in order]


def train(model_name, dataset, seed, settings, out=OUT, threads=1, label=None):
    """Train one run to early stopping (resuming where a previous process stopped); write its result.
    ``label`` names a variant of the model (its files and its ``label`` field); default: the model."""
    import torch

    import masan_recbole  # noqa: F401  (the plugin's models and patches)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    torch.set_num_threads(threads)
    label = label or model_name
    name = run_name(label, dataset, seed)
    result_path = os.path.join(out, f"{name}.json")
    if os.path.isfile(result_path):
        print(f"{name}: finished already ({result_path})")
        return json.load(open(result_path))
    state_dir = os.path.join(out, ".state", name)
    latest, progress_path = os.path.join(state_dir, "latest.pth"), os.path.join(state_dir, "progress.json")
    config = Config(model=model_name, dataset=dataset, config_dict={
        "seed": seed, "checkpoint_dir": state_dir, "show_progress": False, **settings})
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    trainer.saved_model_file = os.path.join(state_dir, "best.pth")
    progress = {"valid_curve": [], "train_seconds": [], "valid_seconds": []}
    if os.path.isfile(latest):
        trainer.resume_checkpoint(latest)
        trainer.saved_model_file = os.path.join(state_dir, "best.pth")  # the best model stays where it is
        with open(progress_path) as f:
            saved = json.load(f)
        done = trainer.start_epoch  # progress.json may be one epoch ahead of latest.pth
        progress = {key: saved[key][:done] for key in progress}
        print(f"{name}: resuming after epoch {done - 1}")
    on_cuda = config["device"].type == "cuda"
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train_epoch(*args, **kwargs):
        start = clock(on_cuda)
        loss = train_epoch(*args, **kwargs)
        progress["train_seconds"].append(round(clock(on_cuda) - start, 3))
        return loss

    def timed_valid_epoch(*args, **kwargs):
        start = clock(on_cuda)
        score, result = valid_epoch(*args, **kwargs)
        progress["valid_seconds"].append(round(clock(on_cuda) - start, 3))
        progress["valid_curve"].append({"epoch": len(progress["train_seconds"]) - 1, "score": float(score),
                                        "metrics": {k: float(v) for k, v in result.items()}})
        return score, result

    def after_validation(epoch_idx, valid_score):
        # progress first: if killed between the two writes, resuming trims it to latest.pth's epoch
        write_json(progress_path, progress)
        trainer._save_checkpoint(epoch_idx, verbose=False, saved_model_file=latest)

    trainer._train_epoch, trainer._valid_epoch = timed_train_epoch, timed_valid_epoch
    stopped = trainer.cur_step > trainer.stopping_step or trainer.start_epoch >= trainer.epochs
    if not stopped:  # (a finished fit would save epoch -1 over the best model)
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=after_validation)
    test_result = trainer.evaluate(test_data, load_best_model=True)
    users, ndcg = per_user_ndcg(trainer, test_data)
    curve = progress["valid_curve"]
    best = max(curve, key=lambda p: p["score"]) if config["valid_metric_bigger"] else min(curve, key=lambda p: p["score"])
    epochs_run = len(progress["train_seconds"])
    record = {
        "model": model_name, "label": label, "dataset": dataset, "seed": seed,
        "best_epoch": best["epoch"], "epochs_run": epochs_run, "stopping_step": config["stopping_step"],
        "stopped_early": epochs_run < config["epochs"],
        "valid_metric": config["valid_metric"], "best_valid_score": best["score"], "best_valid_result": best["metrics"],
        "test_result": {k: float(v) for k, v in test_result.items()},
        "valid_curve": curve,
        "train_seconds_per_epoch": sum(progress["train_seconds"]) / epochs_run,
        "valid_seconds_per_epoch": sum(progress["valid_seconds"]) / max(1, len(progress["valid_seconds"])),
        "parameters": sum(p.numel() for p in model.parameters()),
        "per_user_ndcg@10": {"users": users, "ndcg": ndcg,
                             "mean": sum(ndcg) / len(ndcg), "recbole_ndcg@10": float(test_result.get("ndcg@10", math.nan))},
        "settings": settings,
        "config": portable_config(config),
        **environment(config["device"].type, threads),
    }
    write_json(result_path, record)
    print(f"{name}: best epoch {record['best_epoch']} of {epochs_run}, test {record['test_result']}")
    return record


def pending(runs, out):
    return [r for r in runs if not os.path.isfile(os.path.join(out, f"{run_name(r.label, r.dataset, r.seed)}.json"))]


def claim(out, name):
    """Take the run for this process (a lock file with its pid); False if a living process holds it."""
    folder = os.path.join(out, ".state", name)
    os.makedirs(folder, exist_ok=True)
    lock = os.path.join(folder, "lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(open(lock).read().strip() or 0)
                os.kill(pid, 0)
                return False  # held by a living process
            except (ValueError, ProcessLookupError):
                os.remove(lock)  # its process is gone
                continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def release(out, name):
    lock = os.path.join(out, ".state", name, "lock")
    if os.path.isfile(lock) and open(lock).read().strip() == str(os.getpid()):
        os.remove(lock)


def parse_set(pairs):
    settings = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        settings[key] = yaml.safe_load(value)
    return settings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model, or a variant's label from the matrix")
    parser.add_argument("--dataset")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="settings over the matrix's")
    parser.add_argument("--all", action="store_true", help="every pending run of the matrix, in order")
    parser.add_argument("--list", action="store_true", help="the matrix and which runs are done")
    parser.add_argument("--datasets", nargs="*", help="with --all/--list: only these datasets")
    parser.add_argument("--models", nargs="*", help="with --all/--list: only these models or variant labels")
    parser.add_argument("--matrix", default=MATRIX)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    runs = [r for r in load_matrix(args.matrix)
            if (not args.datasets or r.dataset in args.datasets) and (not args.models or r.label in args.models)]
    if args.list:
        for run in runs:
            name = run_name(run.label, run.dataset, run.seed)
            done = os.path.isfile(os.path.join(args.out, f"{name}.json"))
            started = os.path.isfile(os.path.join(args.out, ".state", name, "latest.pth"))
            print(f"{name:45} {'done' if done else 'started' if started else 'pending'}")
        return 0
    if args.all:
        while True:
            for run in pending(runs, args.out):
                name = run_name(run.label, run.dataset, run.seed)
                if claim(args.out, name):
                    try:
                        train(run.model, run.dataset, run.seed, {**run.settings, **parse_set(args.set)}, args.out,
                              args.threads, label=run.label)
                    finally:
                        release(args.out, name)
                    break
            else:
                return 0  # nothing pending that another process is not already running
    if not (args.model and args.dataset):
        parser.error("give --model and --dataset, or --all, or --list")
    same = [r for r in load_matrix(args.matrix) if r.dataset == args.dataset and r.label == args.model]
    entry = next((r for r in same if r.seed == args.seed), same[0] if same else None)
    model, base = (entry.model, entry.settings) if entry else (args.model, {})
    name = run_name(args.model, args.dataset, args.seed)
    if not claim(args.out, name):
        parser.error(f"{name} is being trained by another process ({os.path.join(args.out, '.state', name, 'lock')})")
    try:
        train(model, args.dataset, args.seed, {**base, **parse_set(args.set)}, args.out, args.threads, label=args.model)
    finally:
        release(args.out, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
