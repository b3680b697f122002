"""Fast training against RecBole's SASRec, same data, seeds and process: what all-position
training and the sampled softmax save per epoch and in wall-clock to RecBole's best validation score.

    python -m benchmarks.fast_training --dataset ml-100k lastfm --seeds 2020 2021 \
        [--variants NAME ...] [--prefix-epochs 5] [--fast-epochs 100] [--fast-batch-size 128] \
        [--stopping-step 5] [--device cpu|cuda] [--threads N] [--out DIR] [--key=value ...]

Variants per dataset and seed (``--variants`` picks some; RecBole's SASRec, the baseline, always
runs): RecBole's SASRec (prefix samples, CE), ours (prefix, CE), ours (all positions, CE), ours
(all positions, sampled softmax, uniform or in-batch negatives). Each records seconds per training
epoch, the validation score after every epoch, epochs and wall-clock (train + validation) to its
best validation score, the wall-clock at which it first reaches RecBole's best validation score of
the same seed, and test metrics of its best checkpoint. Prefix variants run ``--prefix-epochs``
epochs; the all-position variants run up to ``--fast-epochs`` with early stopping. Converged
comparisons are benchmarks.converged's. ``--key=value`` settings go to every variant. Results:
``<out>/fast_training-<dataset>-<device>.json`` and ``.md``, rewritten after every variant.
"""

import argparse
import json
import os
import sys

import torch

from benchmarks.harness import describe_device, environment, mean_half_range, run_model, write_json, write_text
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
    for number, train_s in enumerate(result["train_seconds"]):  # RecBole's epoch numbers, from 0
        epoch = {"train_s": train_s}
        if number in valid:
            epoch.update(valid_s=valid[number]["seconds"], valid_score=valid[number]["score"])
        wall += train_s + epoch.get("valid_s", 0.0)
        epochs.append(dict(epoch, wall_s=wall))
    scored = [i for i, e in enumerate(epochs) if "valid_score" in e]
    top = max(epochs[i]["valid_score"] for i in scored)
    best = [i for i in scored if epochs[i]["valid_score"] == top][-1]  # of equal scores RecBole keeps the last
    run = {
        "model": model_name,
        "train_rows": result["train_rows"],
        "epochs": epochs,
        "epochs_run": len(epochs),
        "seconds_per_epoch": result["train_seconds_per_epoch"],
        "best_epoch": best,
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


def wall_to_reach(run, score):
    """Wall-clock at the first epoch whose validation score is >= ``score`` (None if never)."""
    return next((e["wall_s"] for e in run["epochs"] if e.get("valid_score", -1) >= score), None)


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
    budgets = [f"prefix variants {report['prefix_epochs']} epochs (budget)"]
    if any("all positions" in name for name in names):
        budgets.append(f"fast variants up to {report['fast_epochs']}")
    lines = [
        f"Dataset {report['dataset']}, device {describe_device(report)}, seeds {report['seeds']}; {', '.join(budgets)}; "
        f"early stopping {report['stopping_step']}. Validation metric {metric}. Ratios against RecBole's "
        "SASRec of the same seed; 'to RecBole's best' = wall-clock until the variant's validation score "
        "first reaches RecBole's best."
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
        # no ratios (None) where the baseline of that seed failed; a None ratio = never reached
        ratios = [r.get("ratios") for r in runs]
        per_epoch = [r and r["seconds_per_epoch"] for r in ratios]
        to_best = [r and (NEVER if r["wall_to_baseline_best"] is None else r["wall_to_baseline_best"]) for r in ratios]
        lines.append(
            f"| {name} | {mean_spread(per_epoch)} | {mean_spread(to_best)} | "
            f"{mean_spread([r['best_valid_score'] for r in runs])} | "
            f"{mean_spread([r['test']['ndcg@10'] for r in runs])} | {mean_spread([r['test']['hit@10'] for r in runs])} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs="+", default=["ml-100k"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="variants to run; RecBole's SASRec, the baseline, runs in any case")
    parser.add_argument("--prefix-epochs", type=int, default=5)
    parser.add_argument("--fast-epochs", type=int, default=100)
    parser.add_argument("--fast-batch-size", type=int, default=128, help="sequences per batch, all-position modes")
    parser.add_argument("--stopping-step", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (torch.set_num_threads); 1 keeps timings stable on a shared machine")
    parser.add_argument("--out", default="benchmarks/results")
    args, rest = parser.parse_known_args()
    variants = [BASELINE] + [name for name in args.variants if name != BASELINE]  # the ratios need it
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
            for name in variants:
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
                if "error" not in runs[BASELINE]:  # the baseline runs first
                    compare({k: v for k, v in runs.items() if "error" not in v})
                # after every variant, so an interrupted benchmark keeps what it measured
                write_json(stem + ".json", report)
                write_text(stem + ".md", markdown(report))
        print(markdown(report))


if __name__ == "__main__":
    main()
