"""Several models, one dataset, one process: seconds per training epoch, full-sort
evaluation seconds and test metrics, with ratios against a baseline model.

    python -m benchmarks.compare --models MASAN LightSANs SASRec --dataset ml-100k --epochs 2 \
        [--baseline SASRec] [--device cpu|cuda] [--key=value ...]

``--key=value`` settings apply to every model (e.g. ``--hidden_size=64``); each model
keeps its own defaults otherwise. Results go to
``benchmarks/results/compare-<dataset>-<device>.json`` and a Markdown table beside it.
"""

import argparse
import hashlib
import json
import os
import platform
import resource
import sys
import time

import torch

import masan_recbole  # noqa: F401
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed

METRICS = ("ndcg@10", "hit@10", "mrr@10")


def current_rss_mb():
    """Resident memory of this process now (Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb():
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


# Machine-specific keys: left out of the config snapshot and its hash, so the same settings
# hash alike on a laptop and on a GPU server.
MACHINE_KEYS = {"device", "gpu_id", "use_gpu", "data_path", "checkpoint_dir", "local_rank", "single_spec", "nproc",
                "world_size", "offset", "ip", "port", "state", "show_progress", "log_wandb", "wandb_project"}


def portable_config(config):
    """RecBole's final settings as JSON-safe values, without the machine-specific keys."""
    def plain(value):
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)

    return {k: plain(v) for k, v in sorted(config.final_config_dict.items()) if k not in MACHINE_KEYS}


def config_hash(settings):
    """Short sha256 of a JSON-safe dict, stable across key order."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def run_model(model_name, dataset_name, config_dict, epochs=None, config_file_list=None):
    """Train ``model_name`` on ``dataset_name`` (RecBole's fit with early stopping), then test the
    best-validation checkpoint. Times every training epoch and every validation (full-sort)
    evaluation, and keeps the validation score of each epoch."""
    config_dict = dict(config_dict) if epochs is None else dict(config_dict, epochs=epochs)
    config = Config(model=model_name, dataset=dataset_name, config_file_list=config_file_list,
                    config_dict=config_dict)
    on_cuda = config["device"].type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_start = current_rss_mb()
    start = time.perf_counter()
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    data_seconds = time.perf_counter() - start
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)

    def clock():
        if on_cuda:  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize()
        return time.perf_counter()

    epoch_seconds, valid_curve = [], []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train_epoch(*args, **kwargs):
        start = clock()
        loss = train_epoch(*args, **kwargs)
        epoch_seconds.append(clock() - start)
        return loss

    def timed_valid_epoch(*args, **kwargs):
        start = clock()
        score, result = valid_epoch(*args, **kwargs)
        valid_curve.append({"epoch": len(epoch_seconds), "seconds": clock() - start, "score": float(score),
                            "metrics": {k: float(v) for k, v in result.items()}})
        return score, result

    trainer._train_epoch, trainer._valid_epoch = timed_train_epoch, timed_valid_epoch
    best_valid, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    start = clock()
    test = trainer.evaluate(test_data, load_best_model=True)
    test_seconds = clock() - start
    eval_seconds = [point["seconds"] for point in valid_curve]
    return {
        "train_seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "train_seconds": epoch_seconds,
        "eval_seconds": sum(eval_seconds) / len(eval_seconds) if eval_seconds else None,
        "test_eval_seconds": test_seconds,
        "data_seconds": data_seconds,
        "epochs": len(epoch_seconds),
        "valid_metric": config["valid_metric"],
        "valid_curve": valid_curve,
        "best_valid_score": float(best_valid),
        "best_valid": {k: float(v) for k, v in (best_valid_result or {}).items()},
        "test": {k: float(v) for k, v in test.items()},
        "train_rows": len(train_data._dataset),
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_cuda_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None,
        "peak_rss_mb": peak_rss_mb(),
        "rss_start_mb": rss_start,
        "device": str(config["device"]),
        "config_hash": config_hash(portable_config(config)),
        "config": portable_config(config),
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
        summary = {k: v for k, v in results[name].items() if k not in ("config", "valid_curve")}
        print(name, json.dumps(summary), flush=True)
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
