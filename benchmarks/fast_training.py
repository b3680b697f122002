"""Fast training against RecBole's SASRec, same data, seeds and process.

    python -m benchmarks.fast_training --dataset ml-100k lastfm --seeds 2020 2021 \
        [--prefix-epochs 5] [--fast-epochs 100] [--fast-batch-size 128] [--device cpu|cuda] [--threads N] \
        [--key=value ...]

Four variants per dataset and seed: RecBole's SASRec (prefix samples, CE), ours
(prefix, CE), ours (all positions, CE), ours (all positions, sampled softmax). Each
records seconds per training epoch, the validation score after every epoch, epochs
and wall-clock (train + validation) to its best validation score, the wall-clock at
which it first reaches RecBole's best validation score of the same seed, and test
metrics of its best checkpoint (without the baseline among ``--variants``, no ratios:
an accuracy-only run). Prefix variants run ``--prefix-epochs`` epochs (on a
CPU this budget, not convergence, usually ends them: the table says so); the fast
variants run up to ``--fast-epochs`` with early stopping. Results:
``benchmarks/results/fast_training-<dataset>-<device>.json`` and ``.md``.
"""

import argparse
import json
import os
import sys

import torch

from benchmarks.harness import (describe_device, environment, mean_half_range, read_result, run_model, write_json,
                                write_text)
from masan_recbole.data.all_positions import window_stride
from masan_recbole.model.base import SSM_CORRECTION

BASELINE = "RecBole SASRec (prefix, CE)"
VARIANTS = {
    BASELINE: ("RecBoleSASRec", {}),
    "SASRec (prefix, CE)": ("SASRec", {}),
    "SASRec (all positions, CE)": ("SASRec", {"train_mode": "all_positions"}),
    "SASRec (all positions, SSM)": ("SASRec", {"train_mode": "all_positions", "loss_type": "SSM"}),
    "SASRec (all positions, SSM in-batch)": ("SASRec", {"train_mode": "all_positions", "loss_type": "SSM",
                                                        "ssm_sampler": "in_batch"}),
}
NEVER = -1.0  # a score the run never reached


def run_variant(model_name, dataset, config_dict):
    """One training run (:func:`benchmarks.harness.run_model`), summarised per epoch with the
    wall-clock (train + validation) so far."""
    result = run_model(model_name, dataset, config_dict)
    valid = {point["epoch"]: point for point in result["valid_curve"]}
    epochs, wall = [], 0.0
    for number, train_s in enumerate(result["train_seconds"], start=1):
        epoch = {"train_s": train_s}
        if number in valid:
            epoch.update(valid_s=valid[number]["seconds"], valid_score=valid[number]["score"])
        wall += train_s + epoch.get("valid_s", 0.0)
        epochs.append(dict(epoch, wall_s=wall))
    scored = [i for i, e in enumerate(epochs) if "valid_score" in e]
    best = max(scored, key=lambda i: epochs[i]["valid_score"])
    run = {
        "model": model_name,
        "train_rows": result["train_rows"],
        "epochs": epochs,
        "epochs_run": len(epochs),
        "seconds_per_epoch": result["train_seconds_per_epoch"],
        "best_epoch": best + 1,
        "best_valid_score": epochs[best]["valid_score"],
        "wall_to_best_s": epochs[best]["wall_s"],
        "test": result["test"],
    }
    config = result["config"]
    if config.get("train_mode") == "all_positions":
        run["window_stride"] = window_stride(config)
    run["loss_type"] = config["loss_type"]  # as resolved: command-line settings override a variant's
    if run["loss_type"] == "SSM":
        run.update(ssm_sampler=config["ssm_sampler"], ssm_num_negatives=config["ssm_num_negatives"],
                   ssm_correction=SSM_CORRECTION)
    return run


def first_epoch_reaching(run, score):
    """1-based number of the first epoch whose validation score is >= ``score`` (None if never)."""
    return next((i for i, e in enumerate(run["epochs"], 1) if e.get("valid_score", -1) >= score), None)


def wall_to_reach(run, score):
    """Wall-clock at the first epoch whose validation score is >= ``score`` (None if never)."""
    epoch = first_epoch_reaching(run, score)
    return None if epoch is None else run["epochs"][epoch - 1]["wall_s"]


def mean_spread(values):
    """Mean ± half the spread over seeds (the noise); None = not measured, NEVER = not reached."""
    known = [v for v in values if v is not None and v != NEVER]
    if not known:
        return "–" if all(v is None for v in values) else "never reached"
    text = mean_half_range(known)
    return text if len(known) == len(values) else f"{text} (reached in {len(known)} of {len(values)} seeds)"


def ratio(a, b):
    return None if a is None or b is None else a / b


def compare(runs):
    """Per seed: ratios against the baseline of the same seed."""
    base = runs[BASELINE]
    for run in runs.values():
        run["wall_to_baseline_best_s"] = wall_to_reach(run, base["best_valid_score"])
        run["ratios"] = {
            "seconds_per_epoch": ratio(run["seconds_per_epoch"], base["seconds_per_epoch"]),
            "wall_to_best": ratio(run["wall_to_best_s"], base["wall_to_best_s"]),
            "wall_to_baseline_best": ratio(run["wall_to_baseline_best_s"], base["wall_to_best_s"]),
        }


def fmt(value, spec=".2f"):
    return "–" if value is None else format(value, spec)


def markdown(report):
    metric = report["valid_metric"]
    names = {name for runs in report["runs"].values() for name in runs}
    budgets = []
    if any("all positions" not in name for name in names):
        budgets.append(f"prefix variants {report['prefix_epochs']} epochs (budget)")
    if any("all positions" in name for name in names):
        budgets.append(f"fast variants up to {report['fast_epochs']}")
    lines = [
        f"Dataset {report['dataset']}, device {describe_device(report)}, seeds {report['seeds']}; {', '.join(budgets)}; "
        f"early stopping {report['stopping_step']}. Validation metric {metric}. "
        + ("Ratios against RecBole's SASRec of the same seed; 'to RecBole's best' = wall-clock until the "
           "variant's validation score first reaches RecBole's best." if BASELINE in names else
           "No baseline in this run: accuracy only.")
        + (f" Settings: {' '.join(report['settings'])}." if report["settings"] else ""),
        "",
        "| variant | seed | train rows | s/epoch | × | epochs (best) | wall to own best s | to RecBole's best s | × "
        f"| best valid {metric} | test NDCG@10 | test Hit@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for seed, runs in report["runs"].items():
        for name, run in runs.items():
            if "error" in run:
                lines.append(f"| {name} | {seed} | error: {run['error']} |" + " |" * 9)
                continue
            r = run.get("ratios") or dict.fromkeys(("seconds_per_epoch", "wall_to_best", "wall_to_baseline_best"))
            lines.append(
                f"| {name} | {seed} | {run['train_rows']:,} | {run['seconds_per_epoch']:.1f} | "
                f"{fmt(r['seconds_per_epoch'], '.3f')} | {run['epochs_run']} ({run['best_epoch']}) | "
                f"{run['wall_to_best_s']:.0f} | {fmt(run.get('wall_to_baseline_best_s'), '.0f')} | "
                f"{fmt(r['wall_to_baseline_best'], '.3f')} | {run['best_valid_score']:.4f} | "
                f"{run['test']['ndcg@10']:.4f} | {run['test']['hit@10']:.4f} |"
            )
    lines += ["", "Mean over seeds (± half the spread between the two seeds: the noise):", "",
              f"| variant | s/epoch × | to RecBole's best × | best valid {metric} | test NDCG@10 | test Hit@10 |",
              "|---|---:|---:|---:|---:|---:|"]
    for name in VARIANTS:
        runs = [r[name] for r in report["runs"].values() if "test" in r.get(name, {})]
        if not runs:
            continue
        # without the baseline in this run there are no ratios (None); with it, None = never reached
        ratios = [r.get("ratios") for r in runs]
        per_epoch = [r and r["seconds_per_epoch"] for r in ratios]
        to_best = [r and (NEVER if r["wall_to_baseline_best"] is None else r["wall_to_baseline_best"]) for r in ratios]
        lines.append(
            f"| {name} | {mean_spread(per_epoch)} | {mean_spread(to_best)} | "
            f"{mean_spread([r['best_valid_score'] for r in runs])} | "
            f"{mean_spread([r['test']['ndcg@10'] for r in runs])} | {mean_spread([r['test']['hit@10'] for r in runs])} |"
        )
    return "\n".join(lines) + "\n"


# Result files written before the stride was recorded (and its default became L/10) used L/2.
OLD_DEFAULT_STRIDE = "L/2 (default before 34398e3)"
# Sampled-softmax runs recorded before the logQ fix of aef39a7 corrected every logit by
# -log q (so uniform negatives went uncorrected); since then only the negatives, by -log(K q).
OLD_SSM_CORRECTION = "SSM logits as before the logQ fix"
NEUTRAL_SETTINGS = ("--checkpoint_dir=", "--state=", "--data_path=", "--show_progress=")


def summarise(paths):
    """One accuracy table (markdown) from several result files of one dataset, e.g. long
    RecBole runs and the fast variants measured in separate processes. Runs are grouped by
    variant, training budget and result-affecting settings; seeds of a group are averaged.
    Timings are left out: they come from different processes and are not comparable. The
    cost column counts training rows instead (RecBole prefix samples or windows, one encoder
    pass over at most L items each) processed until the validation score first reaches the
    best of RecBole's SASRec with the same seed, as a ratio of the rows RecBole needed. Reads
    every schema version (benchmarks/harness.py): the keys it uses are the same in all."""
    groups, datasets, metric = {}, set(), None
    for path in paths:
        report = read_result(path)
        datasets.add(report["dataset"])
        metric = report["valid_metric"]
        settings = " ".join(s for s in report["settings"]
                            if not s.startswith(NEUTRAL_SETTINGS + ("--train_window_stride=",)))
        given = [s.split("=", 1)[1] for s in report["settings"] if s.startswith("--train_window_stride=")]
        for seed, runs in report["runs"].items():
            for name, run in runs.items():
                if "test" not in run:
                    continue
                fast = "all positions" in name
                if fast:
                    stride = run.get("window_stride") or (given[-1] if given else OLD_DEFAULT_STRIDE)
                    budget = f"≤ {report['fast_epochs']} epochs, batch {report['fast_batch_size']}, window stride {stride}"
                else:
                    budget = f"{report['prefix_epochs']} epochs"
                label = f"{name}, {budget}" + (f", {settings}" if settings else "")
                legacy_loss = "SSM" if "SSM" in name or "--loss_type=SSM" in report["settings"] else "CE"
                if run.get("loss_type", legacy_loss) == "SSM" and run.get("ssm_correction") != SSM_CORRECTION:
                    label += f", {OLD_SSM_CORRECTION}"
                groups.setdefault(label, []).append((seed, report["stopping_step"], run, path))
    if len(datasets) != 1:
        raise SystemExit(f"--summarise takes result files of one dataset, got {sorted(datasets)}")

    baselines = {}  # seed -> RecBole's run with the most epochs
    for label, runs in groups.items():
        for seed, _, run, _ in runs:
            if label.startswith(BASELINE) and run["epochs_run"] > baselines.get(seed, {"epochs_run": 0})["epochs_run"]:
                baselines[seed] = run

    def rows_to_baseline_best(seed, run):
        base = baselines.get(seed)
        if base is None:
            return None
        reached = first_epoch_reaching(run, base["best_valid_score"])
        return NEVER if reached is None else reached * run["train_rows"] / (base["best_epoch"] * base["train_rows"])

    lines = [f"Dataset {datasets.pop()}: best validation {metric} and test metrics of the best checkpoint; "
             "mean over seeds ± half their spread (the noise). Epochs: run (best), early-stopping patience. "
             "Rows ×: training rows processed until the validation score first reaches RecBole's best of the "
             "same seed, over the rows RecBole needed.",
             "", f"| variant | seeds | epochs | rows to RecBole's best × | best valid {metric} | test NDCG@10 "
             "| test Hit@10 | test MRR@10 |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for label, runs in groups.items():
        runs.sort(key=lambda r: r[0])
        epochs = "; ".join(f"{run['epochs_run']} ({run['best_epoch']}), {patience}" for _, patience, run, _ in runs)
        lines.append(f"| {label} | {', '.join(seed for seed, *_ in runs)} | {epochs} | "
                     f"{mean_spread([rows_to_baseline_best(seed, run) for seed, _, run, _ in runs])} | "
                     f"{mean_spread([run['best_valid_score'] for _, _, run, _ in runs])} | "
                     + " | ".join(mean_spread([run["test"][m] for _, _, run, _ in runs])
                                  for m in ("ndcg@10", "hit@10", "mrr@10")) + " |")
    lines += ["", "Files: " + ", ".join(f"`{p}`" for p in paths)]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs="+", default=["ml-100k"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--prefix-epochs", type=int, default=5)
    parser.add_argument("--fast-epochs", type=int, default=100)
    parser.add_argument("--fast-batch-size", type=int, default=128, help="sequences per batch, all-position modes")
    parser.add_argument("--stopping-step", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (torch.set_num_threads); 1 keeps timings stable on a shared machine")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--summarise", nargs="+", metavar="JSON",
                        help="print one accuracy table from earlier result files of one dataset; runs nothing")
    args, rest = parser.parse_known_args()
    if args.summarise:
        print(summarise(args.summarise), end="")
        return
    sys.argv = sys.argv[:1] + rest  # --key=value settings for RecBole (every variant)

    if args.threads:
        torch.set_num_threads(args.threads)
    common = {"show_progress": False, "stopping_step": args.stopping_step, "metrics": ["Hit", "NDCG", "MRR"],
              "topk": [10], "valid_metric": "NDCG@10"}
    if args.device:
        common["device"] = args.device
    for dataset in args.dataset:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        report = {"dataset": dataset, **environment(device), "seeds": args.seeds, "prefix_epochs": args.prefix_epochs, "fast_epochs": args.fast_epochs,
                  "fast_batch_size": args.fast_batch_size, "stopping_step": args.stopping_step,
                  "valid_metric": common["valid_metric"], "settings": rest, "runs": {}}
        stem = os.path.join(args.out, f"fast_training-{dataset}-{device}")
        for seed in args.seeds:
            runs = report["runs"][str(seed)] = {}
            for name in args.variants:
                model, extra = VARIANTS[name]
                fast = extra.get("train_mode") == "all_positions"
                config_dict = dict(common, seed=seed, **extra,
                                   epochs=args.fast_epochs if fast else args.prefix_epochs)
                if fast:
                    config_dict["train_batch_size"] = args.fast_batch_size
                print(f"[{dataset} seed {seed}] {name}", flush=True)
                try:
                    runs[name] = run_variant(model, dataset, config_dict)
                except Exception as error:  # keep the other variants' results
                    runs[name] = {"error": f"{type(error).__name__}: {error}"}
                print(json.dumps({k: v for k, v in runs[name].items() if k != "epochs"}), flush=True)
                if "error" not in runs.get(BASELINE, {"error": "not run"}):
                    compare({k: v for k, v in runs.items() if "error" not in v})
                # after every variant, so an interrupted benchmark keeps what it measured
                write_json(stem + ".json", report)
                write_text(stem + ".md", markdown(report))
        print(markdown(report))


if __name__ == "__main__":
    main()
