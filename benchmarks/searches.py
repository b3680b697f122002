"""Run the tuned searches of benchmarks/searches.yaml with run_hyper.py --tool ray, each from a
clone of this repository at one commit, so that work on the code meanwhile changes no search.

    python -m benchmarks.searches --dataset lastfm [--models MASAN SASRec] [--commit SHA]
                                  [--max_concurrent 2] [--address auto]
    python -m benchmarks.searches --winners     # each search's best trial so far, and its edge values

Each search records its trials in benchmarks/results/tuning/<dataset>-<Model>.jsonl of this
checkout (one JSON line per ended trial, the clone's commit in each). Run again, the command goes
on with every search that has fewer trials than the budget (run_hyper.py --resume) and skips the
finished ones. The clone lives under --workdir with links to this checkout's datasets.
"""

import argparse
import json
import os
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATRIX = os.path.join(REPO, "benchmarks", "searches.yaml")
TRIALS = os.path.join(REPO, "benchmarks", "results", "tuning")


def clone_at(commit, workdir):
    """A clone of this repository at ``commit`` (made once), with links to this checkout's datasets."""
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", commit], capture_output=True, text=True,
                         check=True).stdout.strip()
    path = os.path.join(workdir, sha[:12])
    if not os.path.isdir(path):
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", REPO, path], check=True)
        subprocess.run(["git", "-C", path, "checkout", "--quiet", "--detach", sha], check=True)
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


def read_space(path):
    """A search-space file's ``choice`` lists by name (every tuned space is made of choices)."""
    from masan_recbole.quick_start import read_search_space

    return read_search_space(path).get("choice", {})


def winner(path, space):
    """The trial of best validation score in a trials file (the first of equal scores: the earlier
    sample), and the settings it took at an end of its choice list (a search that would widen)."""
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    ended = [r for r in records if r.get("status") != "error" and r.get("best_valid_score") is not None]
    if not ended:
        return None, []
    best = max(ended, key=lambda r: r["best_valid_score"])
    edges = [name for name, values in space.items()
             if len(values) > 2 and isinstance(values[0], (int, float)) and best["params"].get(name) in (values[0], values[-1])]
    return best, edges


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
            with open(path) as f:
                hours = sum(json.loads(line).get("cpu_seconds") or 0 for line in f if line.strip()) / 3600
            print(f"{dataset} {model}: {done} of {matrix['budget']['num_samples']} trials, {hours:.1f} CPU h; "
                  f"best sample {best['sample']} "
                  f"valid {best['best_valid_score']:.4f} ({best['epochs']} epochs) {json.dumps(best['params'])}"
                  + (f"; at an end of its range: {', '.join(edges)}" if edges else ""))


def search_command(clone, dataset, model, budget, trials_file, max_concurrent, address):
    command = [sys.executable, os.path.join(clone, "run_hyper.py"), "--tool", "ray", f"--model={model}",
               f"--dataset={dataset}", f"--params_file={os.path.join(clone, 'configs', 'hyper', 'tuned', model + '.test')}",
               # the data config named for every model, RecBole's included
               f"--config_files={os.path.join(clone, 'configs', 'dataset', dataset + '.yaml')}",
               "--num_samples", str(budget["num_samples"]), "--search_seed", str(budget["search_seed"]),
               "--asha", "--grace_period", str(budget["grace_period"]), "--cpus_per_trial", "1",
               "--max_concurrent", str(max_concurrent), "--trials_file", trials_file,
               "--output_file", os.path.join(clone, f"hyper_result-{dataset}-{model}.txt"),
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
    parser.add_argument("--models", nargs="*", default=None, help="default: the dataset's list in searches.yaml")
    parser.add_argument("--commit", default=None, help="the commit the searches run at (default: searches.yaml's)")
    parser.add_argument("--workdir", default=os.path.join(os.path.dirname(REPO), "searches"))
    parser.add_argument("--max_concurrent", type=int, default=2)
    parser.add_argument("--address", default=None, help="a running Ray (auto: the one on this host)")
    args = parser.parse_args(argv)
    if args.winners:
        return print_winners()
    if not args.dataset:
        parser.error("give --dataset, or --winners")
    with open(MATRIX) as f:
        matrix = yaml.safe_load(f)
    budget = matrix["budget"]
    if args.dataset not in matrix["datasets"]:
        raise SystemExit(f"error: {args.dataset} is not in {MATRIX}; datasets there: {', '.join(matrix['datasets'])}")
    models = args.models or matrix["datasets"][args.dataset]
    clone = clone_at(args.commit or str(matrix["commit"]), args.workdir)
    os.makedirs(TRIALS, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": clone, "OMP_NUM_THREADS": "1"}
    for model in models:
        trials_file = os.path.join(TRIALS, f"{args.dataset}-{model}.jsonl")
        done = recorded(trials_file)
        if done >= budget["num_samples"]:
            print(f"{args.dataset} {model}: {done} trials recorded, finished")
            continue
        command = search_command(clone, args.dataset, model, budget, trials_file, args.max_concurrent, args.address)
        print(f"{args.dataset} {model}: {done} of {budget['num_samples']} trials recorded; running\n  "
              + " ".join(command), flush=True)
        subprocess.run(command, cwd=clone, env=env, check=False)
    print(json.dumps({m: recorded(os.path.join(TRIALS, f"{args.dataset}-{m}.jsonl")) for m in models}))


if __name__ == "__main__":
    main()
