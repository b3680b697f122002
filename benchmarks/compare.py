"""Several models, one dataset, one process: seconds per training epoch, full-sort
evaluation seconds and test metrics, with ratios against a baseline model.

    python -m benchmarks.compare --models MASAN LightSANs SASRec --dataset ml-100k --epochs 2 \
        [--baseline SASRec] [--device cpu|cuda] [--key=value ...]

``--key=value`` settings apply to every model (e.g. ``--hidden_size=64``); each model
keeps its own defaults otherwise. Results go to
``benchmarks/results/compare-<dataset>-<device>.json`` and a Markdown table beside it.
"""

import argparse
import json
import os
import sys

from benchmarks.harness import environment, run_model, write_json, write_text

METRICS = ("ndcg@10", "hit@10", "mrr@10")


def markdown(report):
    base = report["results"][report["baseline"]]
    lines = [
        f"{report['dataset']}, {report['epochs']} epoch(s), {report['device_name']} ({report['device']}), "
        f"settings {report['overrides'] or 'model defaults'}",
        "",
        "| model | params | s/epoch | × " + report["baseline"] + " | eval s | " + " | ".join(METRICS) + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(METRICS),
    ]
    for name, r in report["results"].items():
        ratio = r["train_seconds_per_epoch"] / base["train_seconds_per_epoch"]
        metrics = " | ".join(f"{r['test'].get(m, float('nan')):.4f}" for m in METRICS)
        lines.append(f"| {name} | {r['parameters']:,} | {r['train_seconds_per_epoch']:.1f} | {ratio:.2f} | "
                     f"{r['eval_seconds']:.2f} | {metrics} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--baseline", help="ratios are against this model (default: the last one)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", help="result JSON path")
    args, rest = parser.parse_known_args()
    sys.argv = [sys.argv[0], *rest]  # --key=value settings go to RecBole's Config
    config_dict = {"show_progress": False, "state": "WARNING", "metrics": ["Hit", "NDCG", "MRR"], "topk": [10],
                   "stopping_step": args.epochs + 1}
    if args.device != "auto":
        config_dict["device"] = args.device

    results = {}
    for name in args.models:
        results[name] = run_model(name, args.dataset, config_dict, args.epochs)
        summary = {k: v for k, v in results[name].items() if k not in ("config", "valid_curve")}
        print(name, json.dumps(summary), flush=True)
    device = results[args.models[0]]["device"]
    report = {
        "benchmark": "compare",
        "dataset": args.dataset,
        "epochs": args.epochs,
        "baseline": args.baseline or args.models[-1],
        **environment(device),
        "overrides": rest,
        "results": results,
    }
    out = args.out or os.path.join("benchmarks", "results", f"compare-{args.dataset}-{device.split(':')[0]}.json")
    write_json(out, report)
    write_text(out[: -len(".json")] + ".md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
