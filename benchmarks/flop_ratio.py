"""Arithmetic of one training step, model against model: the floor under a speed ratio.

    python -m benchmarks.flop_ratio --models SASRec ASRec --dataset lastfm [--key=value ...]

Counts the FLOPs of matrix products and convolutions (torch.utils.flop_counter) in the forward
and backward pass of one training batch, every model with the same shapes (d 64, inner 256,
L 50, 2 layers, 2 heads, batch 256 unless given). A model that does more arithmetic than
another per step cannot train in less time per epoch unless the other computes something else.
"""

import argparse

SHAPES = {"hidden_size": 64, "inner_size": 256, "MAX_ITEM_LIST_LENGTH": 50, "n_layers": 2, "n_heads": 2,
          "train_batch_size": 256}


def step_flops(model_name, dataset, settings):
    """FLOPs of one training step's forward and backward, by operator."""
    from torch.utils.flop_counter import FlopCounterMode

    from masan_recbole.build import build_config, build_run

    config = build_config(model_name, dataset, config_dict={"state": "ERROR", **settings})
    run = build_run(config, trainer=False)
    model, train_data = run.model, run.train_data
    with FlopCounterMode(display=False) as counter:
        model.calculate_loss(next(iter(train_data))).backward()
    return {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


def main(argv=None):
    import torch
    import yaml

    import masan_recbole  # noqa: F401

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs=2, default=["SASRec", "ASRec"], metavar=("BASELINE", "MODEL"))
    parser.add_argument("--dataset", default="lastfm")
    args, rest = parser.parse_known_args(argv)
    settings = dict(SHAPES)
    for pair in rest:  # --key=value over the shared shapes
        key, _, value = pair.lstrip("-").partition("=")
        settings[key] = yaml.safe_load(value)
    torch.set_num_threads(1)
    totals = {}
    for name in args.models:
        flops = step_flops(name, args.dataset, settings)
        totals[name] = sum(flops.values())
        top = ", ".join(f"{op} {n / 1e9:.2f}" for op, n in sorted(flops.items(), key=lambda kv: -kv[1])[:5])
        print(f"{name}: {totals[name] / 1e9:.2f} GFLOP per training batch ({top})")
    baseline, model = args.models
    print(f"{model} / {baseline}: {totals[model] / totals[baseline]:.2f}x the arithmetic")


if __name__ == "__main__":
    main()
