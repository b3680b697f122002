"""Our SASRec vs RecBole's built-in SASRec: same data, same config, same initial
weights, one process. Reports train seconds per epoch, full-sort eval seconds and
test metrics, and our/RecBole ratios.

    python -m benchmarks.sasrec_speed --dataset ml-100k --epochs 1 [--rounds 2] [--device cpu|cuda] [--key=value ...]

With ``--rounds 2`` the models run in the order A B B A, so a change in the
machine's load during the run weighs on both alike; each figure is the mean
over rounds.
"""

import argparse
import json
import os
import sys

import masan_recbole  # noqa: F401  (registers the models, applies the compatibility fixes)
from benchmarks.harness import clock, environment, write_json
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed

MODELS = ("RecBoleSASRec", "SASRec")


def measure(model_name, dataset_name, config_dict, data, initial_state, epochs):
    config = Config(model=model_name, dataset=dataset_name, config_dict=config_dict)
    train_data, valid_data, test_data = data
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    if initial_state is not None:
        model.load_state_dict(initial_state)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    on_cuda = config["device"].type == "cuda"
    train_seconds, losses = [], []
    for epoch in range(epochs):
        start = clock(on_cuda)
        losses.append(float(trainer._train_epoch(train_data, epoch, show_progress=False)))
        train_seconds.append(clock(on_cuda) - start)
    start = clock(on_cuda)
    trainer.evaluate(valid_data, load_best_model=False)
    eval_seconds = clock(on_cuda) - start
    test = trainer.evaluate(test_data, load_best_model=False)
    return {
        "train_seconds_per_epoch": sum(train_seconds) / epochs,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "losses": losses,
        "test": {k: float(v) for k, v in test.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _mean(runs):
    out = dict(runs[-1], runs=runs)
    for key in ("train_seconds_per_epoch", "eval_seconds"):
        out[key] = sum(r[key] for r in runs) / len(runs)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="runs per model, in A B B A order")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", default=None, help="result JSON (default benchmarks/results/sasrec_speed-<dataset>-<device>.json)")
    args, rest = parser.parse_known_args()
    sys.argv = [sys.argv[0], *rest]  # --key=value overrides go to RecBole's Config
    config_dict = {"show_progress": False, "state": "WARNING", "metrics": ["Hit", "NDCG", "MRR"], "topk": [10]}
    if args.device != "auto":
        config_dict["device"] = args.device

    config = Config(model=MODELS[0], dataset=args.dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    initial_state = get_model(MODELS[0])(config, data[0]._dataset).state_dict()  # both start from these weights
    runs = {name: [] for name in MODELS}
    for round_ in range(args.rounds):
        for name in MODELS if round_ % 2 == 0 else MODELS[::-1]:
            result = measure(name, args.dataset, config_dict, data, initial_state, args.epochs)
            runs[name].append(result)
            print(name, json.dumps(result), flush=True)
    results = {name: _mean(rs) for name, rs in runs.items()}

    ours, theirs = results["SASRec"], results["RecBoleSASRec"]
    report = {
        "benchmark": "sasrec_speed",
        "dataset": args.dataset,
        "epochs": args.epochs,
        "rounds": args.rounds,
        **environment(config["device"]),
        "overrides": rest,
        "results": results,
        "ratio_ours_over_recbole": {
            "train_seconds_per_epoch": ours["train_seconds_per_epoch"] / theirs["train_seconds_per_epoch"],
            "eval_seconds": ours["eval_seconds"] / theirs["eval_seconds"],
        },
    }
    out = args.out or os.path.join("benchmarks", "results", f"sasrec_speed-{args.dataset}-{config['device'].type}.json")
    write_json(out, report)
    print(json.dumps(report["ratio_ours_over_recbole"]), "->", out)


if __name__ == "__main__":
    main()
