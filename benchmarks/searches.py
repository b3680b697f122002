"""Run the tuned searches of benchmarks/searches.yaml with run_hyper.py --tool ray, each from a
clone of this repository at one commit, so that work on the code meanwhile changes no search.

    python -m benchmarks.searches --dataset lastfm [--models MASAN SASRec] [--commit SHA]
                                  [--max_concurrent 2] [--address auto]
    python -m benchmarks.searches --winners     # each search's best trial so far, and its edge values
    python -m benchmarks.searches --write-configs [--dataset lastfm]   # the finished winners as configs

Each search records its trials in benchmarks/results/tuning/<dataset>-<Model>.jsonl of this
checkout (one JSON line per ended trial, the clone's commit in each). Run again, the command goes
on with every search that has fewer trials than the budget (run_hyper.py --resume) and skips the
finished ones. The clone lives under --workdir with links to this checkout's datasets.

After a model's search ends, its widened search runs where the winner took an end of a range
(searches.yaml, ``widen``): the space is written once to configs/hyper/tuned/widened/, the trials go
to <dataset>-<Model>-widened.jsonl. ``--write-configs`` writes the best trial of both searches of
each finished model as configs/model/<Model>/<dataset>.yaml, the settings the converged ``-tuned``
runs and users take.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

import yaml

from benchmarks.run_lock import claim, holder, release
from masan_recbole.registry import is_plugin_model
from masan_recbole.tuning import flatten_bundles

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATRIX = os.path.join(REPO, "benchmarks", "searches.yaml")
TRIALS = os.path.join(REPO, "benchmarks", "results", "tuning")
SPACES = os.path.join(REPO, "configs", "hyper", "tuned")
CONFIGS = os.path.join(REPO, "configs", "model")


def clone_at(commit, workdir):
    """A clone of this repository at ``commit`` (made once), with links to this checkout's datasets."""
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", commit], capture_output=True, text=True,
                         check=True).stdout.strip()
    path = os.path.join(workdir, sha[:12])
    if not os.path.isdir(path):  # made aside and renamed: a second chain never sees a clone half made
        making = f"{path}.{os.getpid()}"
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", REPO, making], check=True)
        subprocess.run(["git", "-C", making, "checkout", "--quiet", "--detach", sha], check=True)
        try:
            os.rename(making, path)
        except OSError:  # another process's clone came first
            shutil.rmtree(making)
    for name in os.listdir(os.path.join(REPO, "dataset")):
        source, link = os.path.join(REPO, "dataset", name), os.path.join(path, "dataset", name)
        if os.path.isdir(source) and not os.path.lexists(link):
            os.symlink(source, link)
    return path


def recorded(path):
    """Trials of a search that ended with a result (a failed trial runs again on resume)."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        done = {}
        for line in filter(str.strip, f):
            record = json.loads(line)
            done[record["sample"]] = record.get("status") != "error"
    return sum(done.values())


def drop_failed(path):
    """Leave out a trials file's failed trials (a worker killed): the searches' code (083e07c) counts
    every recorded trial as done, so a failed one runs again, from its saved state, only once its line
    is gone."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line).get("status") != "error"]
    if len(kept) < len(lines):
        with open(f"{path}.tmp", "w") as f:
            f.writelines(kept)
        os.replace(f"{path}.tmp", path)


def read_space(path):
    """A search-space file's ``choice`` lists by name (every tuned space is made of choices)."""
    from masan_recbole.quick_start import read_search_space

    return read_search_space(path).get("choice", {})


def read_records(path):
    """A trials file's ended trials (failed ones left out), the last line of a sample kept."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        by_sample = {}
        for line in filter(str.strip, f):
            record = json.loads(line)
            by_sample[record["sample"]] = record
    return [r for r in by_sample.values() if r.get("status") != "error" and r.get("best_valid_score") is not None]


def best_trial(trials):
    """The trial of best validation score (the first of equal scores: the earlier sample); None for none."""
    return max(trials, key=lambda r: r["best_valid_score"], default=None)


def winner(path, space):
    """The trial of best validation score in a trials file (the first of equal scores: the earlier
    sample), and the settings it took at an end of its choice list (a search that would widen)."""
    ended = read_records(path)
    if not ended:
        return None, []
    best = best_trial(ended)
    edges = [name for name, values in space.items()
             if len(values) > 2 and isinstance(values[0], (int, float)) and best["params"].get(name) in (values[0], values[-1])]
    return best, edges


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def widened_choices(params, space, beyond):
    """The alternatives of a widened search: for each setting the winner ``params`` took at the first
    or last value of a numeric choice, that setting one step ``beyond`` (``{name: [below, above]}``),
    the winner's other values kept. [(name, value)], in the space's order."""
    steps = []
    for name, values in space.items():
        value = params.get(name)
        if name not in beyond or not all(is_number(v) for v in values) or len(values) < 2:
            continue
        below, above = beyond[name]
        ordered = sorted(values)
        if value == ordered[0] and below is not None:
            steps.append((name, below))
        elif value == ordered[-1] and above is not None:
            steps.append((name, above))
    return steps


def widened_space_text(dataset, model, best, space, beyond, trials_path):
    """The widened search's hyper.test file: the winner's other settings as one-value choices, and one
    ``widened`` choice whose dicts each move one setting beyond its end; None if nothing can widen."""
    steps = widened_choices(best["params"], space, beyond)
    if not steps:
        return None
    moved = [name for name, _ in steps]
    lines = [f"# {model} on {dataset}, widened once: the best trial of {os.path.relpath(trials_path, REPO)}",
             f"# (sample {best['sample']}, valid {best['best_valid_score']:.4f}) took an end of {', '.join(moved)}; each dict",
             "# below moves one of them one step beyond (benchmarks/searches.yaml, widen). Run with --grid."]
    lines += [f"{name} choice [{value!r}]" for name, value in best["params"].items() if name not in moved]
    alternatives = [{**{m: best["params"][m] for m in moved}, name: value} for name, value in steps]
    lines.append(f"widened choice {alternatives!r}")
    return "\n".join(lines) + "\n"


def print_winners():
    with open(MATRIX) as f:
        matrix = yaml.safe_load(f)
    for dataset, models in matrix["datasets"].items():
        for model in models:
            path = os.path.join(TRIALS, f"{dataset}-{model}.jsonl")
            if not os.path.exists(path):
                print(f"{dataset} {model}: no trials yet")
                continue
            best, edges = winner(path, read_space(os.path.join(REPO, "configs", "hyper", "tuned", f"{model}.test")))
            done = recorded(path)
            if best is None:
                print(f"{dataset} {model}: {done} trials, none with a validation score")
                continue
            hours = sum(r.get("cpu_seconds") or 0 for r in read_records(path)) / 3600
            print(f"{dataset} {model}: {done} of {matrix['budget']['num_samples']} trials, {hours:.1f} CPU h; "
                  f"best sample {best['sample']} "
                  f"valid {best['best_valid_score']:.4f} ({best['epochs']} epochs) {json.dumps(best['params'])}"
                  + (f"; at an end of its range: {', '.join(edges)}" if edges else ""))
            space_file = widened_space_path(dataset, model)
            if os.path.exists(space_file):
                ended = read_records(trials_path(dataset, model, widened=True))
                top = best_trial(ended)
                print(f"  widened: {len(ended)} of {len(read_space(space_file)['widened'])} trials"
                      + (f"; best valid {top['best_valid_score']:.4f} {json.dumps(top['params']['widened'])}" if top else ""))


def search_command(clone, dataset, model, budget, trials_file, max_concurrent, address, space_file=None):
    """run_hyper.py's command for a first search (ASHA over budget's draws) or, given the widened
    ``space_file``, for its widened search (--grid, no ASHA); the same data config, epochs and seed."""
    if space_file is None:
        space, name = os.path.join(clone, "configs", "hyper", "tuned", model + ".test"), f"{dataset}-{model}"
        sampling = ["--num_samples", str(budget["num_samples"]), "--search_seed", str(budget["search_seed"]),
                    "--asha", "--grace_period", str(budget["grace_period"])]
    else:
        space, name, sampling = space_file, f"{dataset}-{model}-widened", ["--grid"]
    command = [sys.executable, os.path.join(clone, "run_hyper.py"), "--tool", "ray", f"--model={model}",
               f"--dataset={dataset}", f"--params_file={space}",
               # the data config named for every model, RecBole's included
               f"--config_files={os.path.join(clone, 'configs', 'dataset', dataset + '.yaml')}",
               *sampling, "--cpus_per_trial", "1",
               "--max_concurrent", str(max_concurrent), "--trials_file", trials_file,
               "--output_file", os.path.join(clone, f"hyper_result-{name}.txt"),
               "--storage_path", os.path.join(clone, "saved", "ray"),
               f"--epochs={budget['epochs']}", f"--stopping_step={budget['stopping_step']}", f"--seed={budget['seed']}"]
    if os.path.exists(trials_file) and os.path.getsize(trials_file):
        command.append("--resume")
    if address:
        command += ["--address", address]
    return command


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset")
    parser.add_argument("--winners", action="store_true", help="print each search's best trial so far")
    parser.add_argument("--write-configs", action="store_true",
                        help="write each finished model's best trial as configs/model/<Model>/<dataset>.yaml")
    parser.add_argument("--models", nargs="*", default=None, help="default: the dataset's list in searches.yaml")
    parser.add_argument("--commit", default=None, help="the commit the searches run at (default: searches.yaml's)")
    parser.add_argument("--workdir", default=os.path.join(os.path.dirname(REPO), "searches"))
    parser.add_argument("--max_concurrent", type=int, default=2)
    parser.add_argument("--address", default=None, help="a running Ray (auto: the one on this host)")
    args = parser.parse_args(argv)
    if args.winners:
        return print_winners()
    with open(MATRIX) as f:
        matrix = yaml.safe_load(f)
    if args.write_configs:
        return write_configs(matrix, [args.dataset] if args.dataset else list(matrix["datasets"]))
    if not args.dataset:
        parser.error("give --dataset, or --winners, or --write-configs")
    budget = matrix["budget"]
    if args.dataset not in matrix["datasets"]:
        raise SystemExit(f"error: {args.dataset} is not in {MATRIX}; datasets there: {', '.join(matrix['datasets'])}")
    models = args.models or matrix["datasets"][args.dataset]
    clone = clone_at(args.commit or str(matrix["commit"]), args.workdir)
    os.makedirs(TRIALS, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": clone, "OMP_NUM_THREADS": "1"}
    for model in models:
        name = f"{args.dataset}-{model}"
        if not claim(args.workdir, name):  # two chains may list the same searches: each runs the ones free
            print(f"{name}: another process runs its searches (pid {holder(args.workdir, name)})")
            continue
        try:
            trials_file = trials_path(args.dataset, model)
            drop_failed(trials_file)
            done = recorded(trials_file)
            if done >= budget["num_samples"]:
                print(f"{args.dataset} {model}: {done} trials recorded, finished")
            else:
                command = search_command(clone, args.dataset, model, budget, trials_file, args.max_concurrent,
                                         args.address)
                print(f"{args.dataset} {model}: {done} of {budget['num_samples']} trials recorded; running\n  "
                      + " ".join(command), flush=True)
                subprocess.run(command, cwd=clone, env=env, check=False)
            if recorded(trials_file) >= budget["num_samples"]:
                widen(args.dataset, model, matrix, args.workdir, args.max_concurrent)
        finally:
            release(args.workdir, name)
    print(json.dumps({m: recorded(trials_path(args.dataset, m)) for m in models}))


def widen(dataset, model, matrix, workdir, max_concurrent):
    """The widened search of a finished search, its space written first if it has none yet; nothing
    when the winner took no end that can widen."""
    space_file = widened_space_path(dataset, model)
    if not os.path.exists(space_file):
        space = read_space(os.path.join(SPACES, f"{model}.test"))
        best, _ = winner(trials_path(dataset, model), space)
        text = best and widened_space_text(dataset, model, best, space, matrix["widen"]["beyond"],
                                           trials_path(dataset, model))
        if not text:
            print(f"{dataset} {model}: the winner took no end that widens")
            return
        os.makedirs(os.path.dirname(space_file), exist_ok=True)
        with open(space_file, "w") as f:
            f.write(text)
    trials_file = trials_path(dataset, model, widened=True)
    drop_failed(trials_file)
    size = len(read_space(space_file)["widened"])
    if recorded(trials_file) >= size:
        print(f"{dataset} {model}: widened search finished ({size} trials)")
        return
    clone = clone_at(str(matrix["widen"]["commit"]), workdir)
    command = search_command(clone, dataset, model, matrix["budget"], trials_file, max_concurrent, None, space_file)
    print(f"{dataset} {model}: widened search, {recorded(trials_file)} of {size} trials recorded; running\n  "
          + " ".join(command), flush=True)
    # a local Ray of the clone's code: a Ray started elsewhere would run its own
    subprocess.run(command, cwd=clone, env={**os.environ, "PYTHONPATH": clone, "OMP_NUM_THREADS": "1"}, check=False)


def tuned_winner(dataset, model, matrix):
    """The best trial of a model's searches once they are all finished (its widened one too, where the
    winner could widen), with the files it came from; None while any is still to run."""
    first = trials_path(dataset, model)
    if recorded(first) < matrix["budget"]["num_samples"]:
        return None
    space_file = widened_space_path(dataset, model)
    files = [first]
    if os.path.exists(space_file):
        if recorded(trials_path(dataset, model, widened=True)) < len(read_space(space_file)["widened"]):
            return None
        files.append(trials_path(dataset, model, widened=True))
    else:
        space = read_space(os.path.join(SPACES, f"{model}.test"))
        best, _ = winner(first, space)
        if widened_choices(best["params"], space, matrix["widen"]["beyond"]):
            return None  # its widened search has not begun
    trials = [(r, path) for path in files for r in read_records(path)]
    best, path = max(trials, key=lambda pair: pair[0]["best_valid_score"])
    return best, path, files


def tuned_config_text(dataset, model, best, path, files, valid_metric):
    """The config file of a model's tuned settings, its first lines naming where they come from."""
    head = [f"# {model} on {dataset}, tuned (benchmarks/searches.yaml): the trial of best validation {valid_metric}",
            f"# ({best['best_valid_score']:.4f}; the earlier trial of equal scores) of "
            + " and ".join(os.path.relpath(f, REPO) for f in files) + ":",
            f"# sample {best['sample']} of {os.path.basename(path)}, code {str(best.get('code'))[:12]}. "
            "Written by python -m benchmarks.searches --write-configs.",
            "# Test figures: docs/results.md (tuned). " + (
                f"Loaded for --model={model} --dataset={dataset}; model_dataset_config: false leaves it out."
                if is_plugin_model(model) else f"RecBole's {model}: give it with --config_files.")]
    return "\n".join(head) + "\n" + yaml.safe_dump(flatten_bundles(best["params"]), sort_keys=False)


def write_configs(matrix, datasets):
    for dataset in datasets:
        valid_metric = read_valid_metric(dataset)
        for model in matrix["datasets"][dataset]:
            found = tuned_winner(dataset, model, matrix)
            if found is None:
                print(f"{dataset} {model}: searches not finished")
                continue
            target = os.path.join(CONFIGS, model, f"{dataset}.yaml")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w") as f:
                f.write(tuned_config_text(dataset, model, *found, valid_metric))
            print(f"{dataset} {model}: {os.path.relpath(target, REPO)}")


def read_valid_metric(dataset):
    with open(os.path.join(REPO, "configs", "dataset", f"{dataset}.yaml")) as f:
        return (yaml.safe_load(f) or {}).get("valid_metric", "MRR@10")


def trials_path(dataset, model, widened=False):
    return os.path.join(TRIALS, f"{dataset}-{model}{'-widened' if widened else ''}.jsonl")


def widened_space_path(dataset, model):
    return os.path.join(SPACES, "widened", f"{dataset}-{model}.test")


if __name__ == "__main__":
    main()
