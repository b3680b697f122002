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
import platform
import sys
import time

import torch

import masan_recbole  # noqa: F401
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed

METRICS = ("ndcg@10", "hit@10", "mrr@10")


def run_model(model_name, dataset_name, config_dict, epochs):
    config = Config(model=model_name, dataset=dataset_name, config_dict=dict(config_dict, epochs=epochs))
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)

    epoch_seconds, eval_seconds = [], []
    train_epoch, evaluate = trainer._train_epoch, trainer.evaluate

    def timed_train_epoch(*args, **kwargs):
        start = time.perf_counter()
        loss = train_epoch(*args, **kwargs)
        epoch_seconds.append(time.perf_counter() - start)
        return loss

    def timed_evaluate(*args, **kwargs):
        start = time.perf_counter()
        result = evaluate(*args, **kwargs)
        eval_seconds.append(time.perf_counter() - start)
        return result

    trainer._train_epoch, trainer.evaluate = timed_train_epoch, timed_evaluate
    if config["device"].type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test = trainer.evaluate(test_data, load_best_model=True)
    return {
        "train_seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "train_seconds": epoch_seconds,
        "eval_seconds": sum(eval_seconds[:-1]) / max(1, len(eval_seconds) - 1),
        "epochs": len(epoch_seconds),
        "best_valid_score": float(best_valid),
        "test": {k: float(v) for k, v in test.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_cuda_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if config["device"].type == "cuda" else None,
        "device": str(config["device"]),
    }


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
        print(name, json.dumps(results[name]), flush=True)
    device = results[args.models[0]]["device"]
    report = {
        "benchmark": "compare",
        "dataset": args.dataset,
        "epochs": args.epochs,
        "baseline": args.baseline or args.models[-1],
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "overrides": rest,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "results": results,
    }
    out = args.out or os.path.join("benchmarks", "results", f"compare-{args.dataset}-{device.split(':')[0]}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    with open(out[: -len(".json")] + ".md", "w") as f:
        f.write(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
