"""Speed table: seconds per training epoch and per full-sort validation pass, padded against
``length_bucketing: true``, per dataset and model, with the same-run model ratios of issue #15.

    python -m benchmarks.speed_table [--datasets beauty lastfm diginetica] [--quick] [--rounds 2] \
        [--train-batches N] [--eval-batches N] [--threads 1] [--out benchmarks/results]

Everything runs in one process through the real trainer path: RecBole's (or the plugin's)
``Trainer._train_epoch`` and ``Trainer.evaluate`` over the real data loaders, padded
(RecBole's) and bucketed (``masan_recbole/data/bucketing.py``). Per dataset every model is
built once; then each round times every (model, arm) once, in order, and the next round
in the reverse order (A B ... B A), so a drift in the machine's load weighs on every
figure alike. A figure is the mean over rounds; the table's ratios are ratios of those means.

Subsets. A full epoch may be too slow on a loaded CPU: with ``--train-batches N`` (or a
per-dataset default, see ``DATASETS``) each timing covers only the first N batches of an
epoch, the same N for both arms. Training batches come in a random order in both arms
(padded: RecBole's shuffle; bucketed: the groups are shuffled, only the one short batch
comes last), so the first N batches are a uniform random subset of the full batches; the
epoch is estimated as the mean seconds per batch x the epoch's batch count. Evaluation with
``--eval-batches N`` times a fixed random subset of N batch positions (the same positions
in both arms; bucketed evaluation batches are in length order, so its first N would be the
shortest), scaled the same way. Skipped batches are never collated: the subset is taken
from the loader's batch sampler. Before the timed rounds every (model, arm) runs one
untimed warm-up (``--warmup-batches``), so the first-run penalty (see the report in
docs/benchmarks.md#speed-table-cpu) is not charged to whichever arm runs first.

Clock. Every timing records wall-clock and the process's CPU time (user + system, all
threads); the table's seconds and ratios use ``--clock`` (default ``cpu``: on a shared,
loaded machine wall-clock moved 2-3x between rounds, CPU time a few per cent).

Results: ``benchmarks/results/speed_table-cpu.json`` and ``.md`` (``--quick``:
``speed_table-quick-cpu``), rewritten after every dataset. ``--models`` keeps a subset of a
dataset's models; ``--merge A.json B.json ...`` combines runs made one dataset per process
(which bounds memory: ASRec at batch 2048 needs several GB) into the one table.
"""

import argparse
import gc
import itertools
import os
import random
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.harness import describe_device, environment, now, write_json, write_text  # noqa: E402

# The issue's shapes (MASAN / LightSANs), and equal shapes for ASRec against our SASRec.
ISSUE_SHAPES = {"hidden_size": 32, "inner_size": 64, "k_interests": 10, "n_layers": 2, "n_heads": 2}
EQUAL_SHAPES = {"hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 2}
PADDED, BUCKETED = "padded", "bucketed"

# label -> (RecBole model name, overrides, arms)
MODELS = {
    "MASAN": ("MASAN", dict(ISSUE_SHAPES, attn_padding_mask=True), (PADDED, BUCKETED)),
    "LightSANs": ("LightSANs", dict(ISSUE_SHAPES), (PADDED, BUCKETED)),
    "SASRec": ("SASRec", dict(EQUAL_SHAPES), (PADDED, BUCKETED)),
    "ASRec": ("ASRec", dict(EQUAL_SHAPES), (PADDED,)),  # its scores depend on the padding: cannot bucket
    "SR-SAN": ("SR-SAN", {}, (PADDED, BUCKETED)),
}
# dataset -> models, settings shared by its models, default batch limits (None: full epoch / pass)
DATASETS = {
    "beauty": {"models": ["MASAN", "LightSANs", "SASRec", "ASRec", "SR-SAN"],
               "shared": {"train_batch_size": 2048, "eval_batch_size": 2048}, "train_batches": 6, "eval_batches": None},
    "lastfm": {"models": ["MASAN", "LightSANs", "SASRec", "ASRec", "SR-SAN"],
               "shared": {"train_batch_size": 2048, "eval_batch_size": 2048}, "train_batches": 6, "eval_batches": None},
    # SR-SAN's own defaults (configs/model/SR-SAN.yaml: batch 100)
    "diginetica": {"models": ["SR-SAN"], "shared": {"eval_batch_size": 2048}, "train_batches": 100, "eval_batches": 4},
}
# same-run ratios the issue sets targets for: (label, numerator, denominator, arm, target)
RATIOS = [
    ("MASAN / LightSANs (padded)", "MASAN", "LightSANs", PADDED, 1.3),
    ("ASRec / SASRec (padded)", "ASRec", "SASRec", PADDED, 2.0),
]
BUCKET_TARGETS = {("beauty", "MASAN"): 0.4, ("diginetica", "SR-SAN"): 0.5}
# mixed_precision stated for RecBole's models too: on CUDA both sides of a pair run bf16
COMMON = {"show_progress": False, "state": "WARNING", "train_neg_sample_args": None, "loss_type": "CE",
          "mixed_precision": "auto",
          "device": "cpu", "metrics": ["Hit", "NDCG", "MRR"], "topk": [10], "valid_metric": "NDCG@10"}


# ---------------------------------------------------------------------------- batch subsets


class BatchSubset:
    """A batch sampler that yields only some of another's batches, never building the others:
    the first ``first`` (training: a random order already), or those at ``positions``."""

    def __init__(self, batch_sampler, first=None, positions=None):
        self.batch_sampler, self.first, self.positions = batch_sampler, first, positions

    def __iter__(self):
        if self.first is not None:
            return itertools.islice(iter(self.batch_sampler), self.first)
        return (b for i, b in enumerate(self.batch_sampler) if i in self.positions)

    def __len__(self):
        return min(self.first, len(self.batch_sampler)) if self.first is not None else len(self.positions)


class limited:
    """Within the ``with``, ``loader`` (a torch DataLoader) yields only a subset of its batches."""

    def __init__(self, loader, first=None, positions=None):
        self.loader, self.first, self.positions = loader, first, positions

    def __enter__(self):
        self.full = self.loader.batch_sampler
        if self.first is not None or self.positions is not None:
            # torch refuses to set batch_sampler after __init__; the iterator reads it each epoch
            object.__setattr__(self.loader, "batch_sampler", BatchSubset(self.full, self.first, self.positions))
        return self.loader

    def __exit__(self, *exc):
        object.__setattr__(self.loader, "batch_sampler", self.full)


def token_share(loader, config, epochs=3):
    """Positions a bucketed epoch computes over those of a padded one (N x L), mean of ``epochs``
    draws of the bucketed order (fresh generator: the loader's own is left untouched)."""
    from masan_recbole.data.bucketing import bucket_batches

    lengths = loader._dataset.inter_feat[config["ITEM_LIST_LENGTH_FIELD"]].numpy()
    L = config["MAX_ITEM_LIST_LENGTH"]
    g = torch.Generator()
    g.manual_seed(0)
    shares = []
    for _ in range(epochs):
        batches = bucket_batches(lengths, loader.batch_size, g, shuffle=loader.shuffle)
        shares.append(sum(len(b) * max(int(lengths[b].max()), 1) for b in batches) / (len(lengths) * L))
    return float(np.mean(shares))


# ---------------------------------------------------------------------------- one dataset


def prepare(dataset, spec, config_file_list=None, extra=None):
    """Both arms' loaders (training and validation) and every model with its trainer."""
    from masan_recbole.build import build_config, build_run

    extra = extra or {}
    loaders, configs, built = {}, {}, {}
    base = MODELS[spec["models"][0]]
    for arm in (PADDED, BUCKETED):
        config = build_config(base[0], dataset, config_file_list,
                              {**COMMON, **base[1], **spec["shared"], **extra, "length_bucketing": arm == BUCKETED})
        start = time.perf_counter()
        data = build_run(config, model=False)
        loaders[arm] = {"data": data, "train": data.train_data, "valid": data.valid_data,
                        "data_seconds": time.perf_counter() - start}
        configs[arm] = config
    for label in spec["models"]:
        name, overrides, arms = MODELS[label]
        config = build_config(name, dataset, config_file_list,
                              {**COMMON, **overrides, **spec["shared"], **extra, "length_bucketing": False})
        for key in ("train_batch_size", "eval_batch_size", "MAX_ITEM_LIST_LENGTH"):
            if config[key] != configs[PADDED][key]:
                raise SystemExit(f"{dataset}: {label} has {key} {config[key]}, the shared loaders "
                                 f"{configs[PADDED][key]}; give it in DATASETS[...]['shared']")
        start = time.perf_counter()
        shared = loaders[PADDED]["data"]
        run = build_run(config, data=(shared.dataset, shared.train_data, shared.valid_data, shared.test_data))
        built[label] = {"config": config, "model": run.model, "trainer": run.trainer, "arms": arms,
                        "build_seconds": time.perf_counter() - start}
    return loaders, configs, built


def time_train(trainer, loader, batches, epoch):
    """(wall seconds, CPU seconds of this process: user + system, all threads) of one epoch or its first batches."""
    with limited(loader, first=batches):
        start, cpu = time.perf_counter(), time.process_time()
        trainer._train_epoch(loader, epoch, show_progress=False)
        return time.perf_counter() - start, time.process_time() - cpu


def time_eval(trainer, loader, positions):
    with limited(loader, positions=positions), torch.no_grad():
        start, cpu = time.perf_counter(), time.process_time()
        trainer.evaluate(loader, load_best_model=False, show_progress=False)
        return time.perf_counter() - start, time.process_time() - cpu


def measure_dataset(dataset, spec, rounds, train_batches, eval_batches, warmup_batches, log,
                    config_file_list=None, extra=None, clock="cpu"):
    loaders, configs, built = prepare(dataset, spec, config_file_list, extra)
    n_train = {arm: len(loaders[arm]["train"]) for arm in loaders}
    n_eval = {arm: len(loaders[arm]["valid"]) for arm in loaders}
    train_batches = None if train_batches is None or train_batches >= min(n_train.values()) else train_batches
    positions = None
    if eval_batches is not None and eval_batches < min(n_eval.values()):
        positions = set(random.Random(0).sample(range(min(n_eval.values())), eval_batches))
    cells = [(label, arm) for label, b in built.items() for arm in b["arms"]]
    train_s = {cell: [] for cell in cells}
    eval_s = {cell: [] for cell in cells}
    train_cpu = {cell: [] for cell in cells}
    eval_cpu = {cell: [] for cell in cells}
    warm = {}
    for label, arm in cells:  # untimed warm-up (recorded): first-run costs out of the A B B A rounds
        warm[(label, arm)] = time_train(built[label]["trainer"], loaders[arm]["train"], warmup_batches, 0)[0]
        log(f"[{dataset}] warm-up {label} {arm}: {warm[(label, arm)]:.1f} s ({warmup_batches} batches)")
    for r in range(rounds):
        for label, arm in cells if r % 2 == 0 else cells[::-1]:
            trainer = built[label]["trainer"]
            t, t_cpu = time_train(trainer, loaders[arm]["train"], train_batches, r + 1)
            e, e_cpu = time_eval(trainer, loaders[arm]["valid"], positions)
            train_s[(label, arm)].append(t)
            eval_s[(label, arm)].append(e)
            train_cpu[(label, arm)].append(t_cpu)
            eval_cpu[(label, arm)].append(e_cpu)
            log(f"[{dataset}] round {r + 1} {label} {arm}: train {t:.2f} s (CPU {t_cpu:.2f} s), "
                f"eval {e:.2f} s (CPU {e_cpu:.2f} s)")

    def scale(seconds, timed, total):
        return float(np.mean(seconds)) * (total / timed if timed else 1.0)

    results = {}
    for label, b in built.items():
        config = b["config"]
        row = {"model": config["model"], "arms": list(b["arms"]),
               "parameters": sum(p.numel() for p in b["model"].parameters()),
               "shapes": {k: config[k] for k in ("hidden_size", "inner_size", "n_layers", "n_heads", "k_interests",
                                                 "MAX_ITEM_LIST_LENGTH", "train_batch_size", "eval_batch_size",
                                                 "attn_padding_mask", "use_padding_mask") if k in config},
               "build_seconds": b["build_seconds"]}
        for arm in b["arms"]:
            timed_train = train_batches or n_train[arm]
            timed_eval = len(positions) if positions else n_eval[arm]
            row[arm] = {
                "train_batches_timed": timed_train, "train_batches_per_epoch": n_train[arm],
                "train_seconds_timed": train_s[(label, arm)],
                "train_wall_seconds_per_epoch": scale(train_s[(label, arm)], timed_train, n_train[arm]),
                "train_cpu_seconds_timed": train_cpu[(label, arm)],
                "train_cpu_seconds_per_epoch": scale(train_cpu[(label, arm)], timed_train, n_train[arm]),
                "eval_batches_timed": timed_eval, "eval_batches_per_pass": n_eval[arm],
                "eval_seconds_timed": eval_s[(label, arm)],
                "eval_wall_seconds": scale(eval_s[(label, arm)], timed_eval, n_eval[arm]),
                "eval_cpu_seconds_timed": eval_cpu[(label, arm)],
                "eval_cpu_seconds": scale(eval_cpu[(label, arm)], timed_eval, n_eval[arm]),
                "warmup_seconds": warm[(label, arm)],
            }
            # the table's figures: CPU seconds (``clock``), which a busy machine inflates far less than wall time
            row[arm]["train_seconds_per_epoch"] = row[arm][f"train_{clock}_seconds_per_epoch"]
            row[arm]["eval_seconds"] = row[arm][f"eval_{clock}_seconds"]
        if BUCKETED in b["arms"]:
            row["bucketed_over_padded"] = {
                "train": row[BUCKETED]["train_seconds_per_epoch"] / row[PADDED]["train_seconds_per_epoch"],
                "eval": row[BUCKETED]["eval_seconds"] / row[PADDED]["eval_seconds"],
            }
        results[label] = row
    ratios = {}
    for name, num, den, arm, target in RATIOS:
        if num in results and den in results:
            value = results[num][arm]["train_seconds_per_epoch"] / results[den][arm]["train_seconds_per_epoch"]
            ratios[name] = {"value": value, "target": target, "met": value <= target,
                            "eval": results[num][arm]["eval_seconds"] / results[den][arm]["eval_seconds"]}
    for (ds, label), target in BUCKET_TARGETS.items():
        if ds == dataset and label in results:
            value = results[label]["bucketed_over_padded"]["train"]
            ratios[f"{label} bucketed / padded"] = {"value": value, "target": target, "met": value <= target}
    return {
        "models": results, "ratios": ratios, "rounds": rounds, "clock": clock,
        "train_batches_timed": train_batches, "eval_batches_timed": len(positions) if positions else None,
        "warmup_batches": warmup_batches,
        "train_samples": len(loaders[PADDED]["train"]._dataset), "valid_rows": len(loaders[PADDED]["valid"]._dataset),
        "bucketed_token_share": {"train": token_share(loaders[BUCKETED]["train"], configs[BUCKETED]),
                                 "eval": token_share(loaders[BUCKETED]["valid"], configs[BUCKETED])},
        "data_seconds": {arm: loaders[arm]["data_seconds"] for arm in loaders},
    }


# ---------------------------------------------------------------------------- report


def fmt(value, spec=".2f"):
    return "–" if value is None else format(value, spec)


def shape_text(shapes):
    keys = [("hidden_size", "d"), ("inner_size", "inner"), ("k_interests", "k"), ("MAX_ITEM_LIST_LENGTH", "L"),
            ("train_batch_size", "batch")]
    return ", ".join(f"{short} {shapes[k]}" for k, short in keys if k in shapes)


def markdown(report):
    lines = [
        f"Speed table, {describe_device(report)}, {report['finished'] or 'running'}; "
        f"{report['rounds']} rounds per cell, alternating order (A B ... B A), after one untimed warm-up each. "
        "Seconds per training epoch (RecBole's trainer, `_train_epoch`) and per full-sort validation pass "
        "(`Trainer.evaluate`), padded vs `length_bucketing: true`. Where 'timed' is less than the epoch's batch "
        "count, the first N batches of each epoch were timed (a uniform random subset: both arms shuffle their "
        "batches) and scaled by batches per epoch / N; evaluation the same, over a fixed random subset of "
        "batch positions shared by both arms. Absolute seconds are those of a loaded 2-core machine; compare ratios.",
        "",
        "Seconds are CPU seconds of the process (user + system) unless the dataset's clock says wall.",
        "",
        "| dataset (clock) | model | shapes | train batches timed / epoch (pad; bucket) | padded s/epoch | bucketed s/epoch "
        "| bucketed × | eval padded s | eval bucketed s | eval × |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for dataset, d in report["datasets"].items():
        for label, r in d["models"].items():
            p, b = r[PADDED], r.get(BUCKETED)
            timed = f"{p['train_batches_timed']}/{p['train_batches_per_epoch']}" + (
                f"; {b['train_batches_timed']}/{b['train_batches_per_epoch']}" if b else "")
            ratio = r.get("bucketed_over_padded", {})
            lines.append(
                f"| {dataset} ({d.get('clock', 'wall')}) | {label} | {shape_text(r['shapes'])} | {timed} | {p['train_seconds_per_epoch']:.1f} | "
                f"{fmt(b and b['train_seconds_per_epoch'], '.1f') if b else 'cannot bucket'} | "
                f"{fmt(ratio.get('train'))} | {p['eval_seconds']:.2f} | {fmt(b and b['eval_seconds'])} | "
                f"{fmt(ratio.get('eval'))} |")
    lines += ["", "Bucketed positions as a share of padded ones (N x L), the upper bound of the saving:", "",
              "| dataset | train samples | valid rows | train | eval | eval batches timed |", "|---|---:|---:|---:|---:|---:|"]
    for dataset, d in report["datasets"].items():
        s = d["bucketed_token_share"]
        lines.append(f"| {dataset} | {d['train_samples']:,} | {d['valid_rows']:,} | {s['train']:.3f} | "
                     f"{s['eval']:.3f} | {d['eval_batches_timed'] or 'all'} |")
    lines += ["", "Issue #15 targets (same process, same rounds):", "",
              "| dataset | ratio | measured | target | met |", "|---|---|---:|---:|---|"]
    for dataset, d in report["datasets"].items():
        for name, r in d["ratios"].items():
            lines.append(f"| {dataset} | {name} | {r['value']:.2f} | ≤ {r['target']} | {'yes' if r['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def merge(paths, stem):
    """One report from several result files, each dataset from the last file that has it; the
    environment record and settings of every file are kept under ``sources``."""
    from benchmarks.harness import read_result

    reports = [read_result(path) for path in paths]
    merged = dict(reports[-1], datasets={}, sources=[])
    for path, report in zip(paths, reports):
        merged["datasets"].update(report["datasets"])
        merged["sources"].append({"file": path, "datasets": list(report["datasets"]),
                                  **{k: report[k] for k in ("started", "finished", "rounds", "settings", "versions")}})
    merged["finished"] = max(r["finished"] or "" for r in reports) or None
    write_json(stem + ".json", merged)
    write_text(stem + ".md", markdown(merged))
    print(markdown(merged))
    return merged


def main(argv=None, extra=None):
    """Run the table; ``extra``: settings for every model, over the shared ones (tests use it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS) + ["synth"])
    parser.add_argument("--quick", action="store_true",
                        help="2 training and 2 evaluation batches per timing, 1 round: checks that it runs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-batches", type=int, default=None, help="timed training batches (default: per dataset)")
    parser.add_argument("--eval-batches", type=int, default=None, help="timed evaluation batches (default: per dataset)")
    parser.add_argument("--full", action="store_true", help="full epochs and passes on every dataset")
    parser.add_argument("--models", nargs="+", choices=list(MODELS),
                        help="only these of each dataset's models (default: all of them)")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="combine the datasets of earlier result files (e.g. one process per dataset, to bound "
                             "memory) into one table; runs nothing")
    parser.add_argument("--warmup-batches", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="the table's seconds and ratios: CPU time of the process (default; a loaded machine "
                             "inflates it far less) or wall-clock; both are in the JSON")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"))
    args, rest = parser.parse_known_args(argv)
    sys.argv = sys.argv[:1] + rest  # --key=value settings for RecBole (every model), e.g. --data_path=...
    torch.set_num_threads(args.threads)
    if args.merge:
        return merge(args.merge, os.path.join(args.out, "speed_table-cpu"))
    stem = os.path.join(args.out, "speed_table-" + ("quick-" if args.quick else "") + "cpu")
    report = {"benchmark": "speed_table", **environment("cpu", args.threads), "started": now(), "finished": None,
              "rounds": 1 if args.quick else args.rounds, "quick": args.quick, "settings": rest, "datasets": {}}
    for dataset in args.datasets:
        spec = DATASETS.get(dataset) or {"models": ["MASAN", "LightSANs", "SASRec", "ASRec", "SR-SAN"],
                                         "shared": {"train_batch_size": 64, "eval_batch_size": 64},
                                         "train_batches": None, "eval_batches": None}
        if args.models:
            spec = dict(spec, models=[m for m in spec["models"] if m in args.models])
        if args.quick:
            train_batches, eval_batches = 2, 2
        elif args.full:
            train_batches = eval_batches = None
        else:
            train_batches = args.train_batches or spec["train_batches"]
            eval_batches = args.eval_batches or spec["eval_batches"]
        report["datasets"][dataset] = measure_dataset(
            dataset, spec, report["rounds"], train_batches, eval_batches, 1 if args.quick else args.warmup_batches,
            lambda text: print(text, flush=True), extra=extra, clock=args.clock)
        write_json(stem + ".json", report)
        write_text(stem + ".md", markdown(report))
        gc.collect()  # the dataset's loaders and models sit in reference cycles: free them before the next
    report["finished"] = now()
    write_json(stem + ".json", report)
    write_text(stem + ".md", markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
