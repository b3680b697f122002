"""Converged runs: each (model, dataset, seed) trained to early stopping on real data, one result
file per run, resumable across sessions.

    python -m benchmarks.converged --model MASAN --dataset lastfm --seed 2020 [--set key=value ...]
    python -m benchmarks.converged --all [--datasets lastfm ...]   # every pending run of the matrix, in order
    python -m benchmarks.converged --list                                          # the matrix and its state
    python -m benchmarks.converged --rescore [--datasets lastfm ...] [--models ...]  # add the paper-protocol fields

The matrix (datasets, models, seeds, settings) is benchmarks/converged.yaml; an entry named otherwise
than its model (``MASAN-bucketed: {model: MASAN, settings: ...}``) is a variant with its own files; an
entry with ``tuned: true`` takes the settings of configs/model/<Model>/<dataset>.yaml (written by
``benchmarks.searches --write-configs``) and waits until that file exists; its result, once the file
holds other settings than it was trained with, is "stale": left out of the report and not trained
again until its result file is deleted. A run writes
``<out>/<dataset>-<model>-seed<seed>.json`` when it ends; until then its state lives in
``<out>/.state/<run>/`` (not committed): ``best.pth`` (RecBole's best-validation checkpoint),
``latest.pth`` (the whole training state after each validated epoch) and ``progress.json`` (curve
and epoch times). Started again, a run resumes from ``latest.pth`` with the project's exact resume,
so it ends with the numbers an uninterrupted run would have had. The state stays on the machine that trains the run (git-ignored, never committed); a run whose state
is gone starts again. One thread per process by default: on a 2-core machine start ``--all`` twice; a
process takes the first pending run that no living process holds (``.state/<run>/lock``).

The result file holds ``model``, ``dataset``, ``seed``, ``best_epoch``, ``epochs_run``,
``stopping_step``, ``test_result`` (the metrics of the best-validation model), ``valid_curve``,
``per_user_ndcg@10`` (test users in id order, for paired tests; packed as benchmarks.per_user writes it), the full config, seconds per epoch
(the mean, and each epoch's in ``train_seconds`` / ``valid_seconds``), device, versions and commit.

Two protocols. ``test_result`` is RecBole's: full ranking of every item but padding, the user's
earlier items included. ``test_result_history_excluded`` (same metrics and cut-offs) and
``per_user_ndcg@10_history_excluded`` follow BSARec's code (and the S3-Rec line it comes from):
before ranking, the scores of every item the user had before the test target (their whole history
in the dataset, not only the last L the model reads) are set to 0. Both come from one pass over
the test users; the metrics of the first are recomputed from the same ranks and must equal RecBole's
evaluator's, which is what makes the second trustworthy. ``--rescore`` adds the two history-excluded
fields to finished result files from their best-validation checkpoint, leaving every other field as
it is.

A matrix entry with ``refit: true`` (SR-SAN on the session splits) is done only once :func:`refit`
has trained it again, from the same seed, on the training and validation rows together for
``best_epoch + 1`` epochs and tested that model's last epoch: ``test_result_refit`` and ``refit``
in its result file. SR-GNN's and SR-SAN's code trains on every training session; our validation
split holds the most recent tenth of them out, and the refit gives them back without choosing
anything on test. Its state is ``.state/<run>/refit/``, resumable like the run's.
"""

import argparse
import json
import math
import os
import sys
from typing import NamedTuple

import yaml

from benchmarks.harness import BENCHMARKS, clock, environment, portable_config, read_result, write_json
from benchmarks.per_user import pack, unpack
from benchmarks.run_lock import claim, holder, release

MATRIX = os.path.join(BENCHMARKS, "converged.yaml")
OUT = os.path.join(BENCHMARKS, "results", "converged")
CONFIGS = os.path.join(os.path.dirname(BENCHMARKS), "configs", "model")


def run_name(model, dataset, seed):
    return f"{dataset}-{model}-seed{seed}"


def has_resume_point(out, name):
    """Whether this machine holds a saved state of the run."""
    return os.path.isfile(os.path.join(out, ".state", name, "latest.pth"))


class Run(NamedTuple):
    dataset: str
    label: str  # the run's name in the matrix and its files: the model, or a variant of it ("MASAN-bucketed")
    model: str  # the model RecBole builds
    seed: int
    settings: dict
    refit: bool = False  # after early stopping, train again on training + validation rows (refit())
    waits_for: str = None  # a tuned entry's settings file, until benchmarks.searches --write-configs writes it
    tuned_keys: tuple = ()  # the settings a tuned entry took from that file


def tuned_settings(model, dataset, configs):
    """A ``tuned: true`` entry's settings: configs/model/<Model>/<dataset>.yaml (the searches' winner),
    or None while that file is not written."""
    path = os.path.join(configs, model, f"{dataset}.yaml")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return yaml.safe_load(f)


def load_matrix(path=MATRIX, configs=None):
    """The matrix's runs in the file's order, each with the shared, dataset and entry settings merged;
    a tuned entry's settings file comes between the dataset's and the entry's own settings."""
    configs = configs or CONFIGS
    with open(path) as f:
        spec = yaml.safe_load(f)
    runs = []
    for dataset, entry in spec["datasets"].items():
        for label, model_entry in entry["models"].items():
            model = model_entry.get("model", label)
            tuned = tuned_settings(model, dataset, configs) if model_entry.get("tuned") else {}
            waits_for = os.path.join(configs, model, f"{dataset}.yaml") if tuned is None else None
            for seed in model_entry["seeds"]:
                settings = {**spec.get("shared", {}), **entry.get("settings", {}), **(tuned or {}),
                            **model_entry.get("settings", {})}
                runs.append(Run(dataset, label, model, seed, settings, bool(model_entry.get("refit", False)), waits_for,
                                tuple(tuned or ())))
    return runs


# ---------------------------------------------------------------------------- the paper's protocol

# The papers' rule (the user's earlier items scored 0 before ranking) is the product's
# (masan_recbole.protocol, config key eval_exclude_history); here it is applied to each test target
# once more, to keep per-user ranks for paired tests. Every rank is 1 + the items scoring strictly
# above the target, so a repeated target tying at 0 with earlier items wins the tie (BSARec's
# argsort leaves such ties to numpy).

ONE_TARGET_METRICS = ("hit", "recall", "precision", "mrr", "map", "ndcg")


def one_target_values(name, ranks, k):
    """Each target's value of metric ``name`` at cut-off ``k`` from its rank (1 = first), as RecBole's
    evaluator computes it for one relevant item per user (so recall is hit, and MAP is MRR).
    ranks: [P] -> [P] doubles."""
    import torch

    hit = (ranks <= k).double()
    if name in ("hit", "recall"):
        return hit
    if name == "precision":
        return hit / k
    if name in ("mrr", "map"):
        return hit / ranks.double()
    if name == "ndcg":
        return hit / torch.log2(ranks.double() + 1)
    raise ValueError(f"{name} is not a per-target ranking metric; known: {', '.join(ONE_TARGET_METRICS)}")


def target_ranks(scores, positive_u, positive_i):
    """Rank of each target among its row's scores: 1 + the items scoring strictly above it. [P]"""
    target = scores[positive_u, positive_i]  # [P]
    return (scores[positive_u] > target[:, None]).sum(1) + 1


class ScoredTargets(NamedTuple):
    users: list  # test user of each target, in test_data's order
    ranks: "torch.Tensor"  # [P] under RecBole's protocol
    ranks_history_excluded: "torch.Tensor"  # [P] under the paper's; None without histories


def score_test_users(trainer, test_data, histories=None):
    """One pass over test_data: each target's rank under RecBole's full-sort scores (padding masked,
    history ranked) and, given ``histories``, under the paper's rule (earlier items scored 0)."""
    import torch

    from masan_recbole import protocol

    uid_field = trainer.config["USER_ID_FIELD"]
    users, ranks, excluded_ranks = [], [], []
    trainer.model.eval()
    with torch.no_grad():
        for batch in test_data:
            interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batch)  # scores [B, items]
            batch_users = interaction[uid_field][positive_u]  # [P]
            users += batch_users.tolist()
            ranks.append(target_ranks(scores, positive_u, positive_i).cpu())
            if histories is not None:
                rows, items = protocol.earlier_items(histories, batch_users.cpu(), positive_i.cpu())
                # rows index the targets; scores' rows are the batch's users
                excluded = protocol.exclude_history(scores[positive_u], rows, items)
                excluded_ranks.append(target_ranks(excluded, torch.arange(len(positive_u), device=scores.device),
                                                   positive_i).cpu())
    return ScoredTargets(users, torch.cat(ranks), torch.cat(excluded_ranks) if histories is not None else None)


def rank_metrics(ranks, metrics, topk, decimals=None):
    """The mean of each metric at each cut-off over the targets, keyed as RecBole keys its results
    ("hit@10"), metric by metric in the config's order; rounded as RecBole rounds when ``decimals``."""
    result = {}
    for metric in metrics:
        for k in topk:
            value = float(one_target_values(metric.lower(), ranks, k).mean())
            result[f"{metric.lower()}@{k}"] = value if decimals is None else round(value, decimals)
    return result


def check_matches_recbole(ours, recbole, decimals):
    """Our metrics from ranks against RecBole's evaluator's (rounded to ``decimals``): the same keys,
    each within half a unit of the last decimal. Raises on any difference: a mismatch means the
    ranks, and so the history-excluded figures computed from them, are not to be trusted."""
    tolerance = 0.5 * 10.0 ** -decimals + 1e-9
    differ = {k: (ours.get(k), v) for k, v in recbole.items() if k not in ours or abs(ours[k] - v) > tolerance}
    if differ or ours.keys() != recbole.keys():
        raise ValueError(f"metrics from ranks differ from RecBole's evaluator (ours, RecBole's): {differ}, "
                         f"keys {sorted(ours)} vs {sorted(recbole)}")


def per_user_gains(users, ranks, k=10):
    """(users in id order, their NDCG@k rounded to 6 decimals) for paired tests."""
    gains = one_target_values("ndcg", ranks, k).tolist()
    order = sorted(range(len(users)), key=users.__getitem__)
    return [users[i] for i in order], [round(gains[i], 6) for i in order]


def protocol_fields(config, scored, test_result):
    """The result file's fields from one scoring pass: RecBole's per-user NDCG@10 (checked against
    its evaluator's test_result), and the test metrics and per-user NDCG@10 with history excluded."""
    metrics, topk, decimals = config["metrics"], config["topk"], config["metric_decimal_place"]
    check_matches_recbole(rank_metrics(scored.ranks, metrics, topk), test_result, decimals)
    users, ndcg = per_user_gains(scored.users, scored.ranks)
    fields = {"per_user_ndcg@10": {**pack(users, ndcg), "mean": sum(ndcg) / len(ndcg),
                                   "recbole_ndcg@10": float(test_result.get("ndcg@10", math.nan))}}
    if scored.ranks_history_excluded is None:  # no histories (session files): the fields say so with None
        return {**fields, **{key: None for key in HISTORY_FIELDS}}
    excluded_users, excluded_ndcg = per_user_gains(scored.users, scored.ranks_history_excluded)
    return {
        **fields,
        "test_result_history_excluded": rank_metrics(scored.ranks_history_excluded, metrics, topk, decimals),
        "per_user_ndcg@10_history_excluded": {**pack(excluded_users, excluded_ndcg),
                                              "mean": sum(excluded_ndcg) / len(excluded_ndcg)},
    }


def best_point(curve, bigger=True):
    """The validation point whose model RecBole keeps: the best score, and of equal scores the last
    (its early_stopping takes a score equal to the best as a new best: ``value >= best``)."""
    scores = [p["score"] for p in curve]
    target = max(scores) if bigger else min(scores)
    return [p for p in curve if p["score"] == target][-1]


def goes_on(record, settings):
    """A finished run goes on where early stopping did not end it and ``settings`` now allow more epochs
    (its result file is then written again, without the refit fields: a later best epoch changes the refit)."""
    if record.get("stopped_early", True) or "epochs_run" not in record:
        return False
    return settings.get("epochs", record.get("config", {}).get("epochs", 0)) > record["epochs_run"]


class Prepared(NamedTuple):
    histories: object  # masan_recbole.protocol.Histories of the whole dataset, before any change to it
    train_data: object
    valid_data: object
    test_data: object
    model: object
    trainer: object


def prepare(config, adapt_dataset=None):
    """Data, model and trainer of one run from its ``config`` (the package's one build), so that
    train(), rescore() and refit() rebuild the same run. ``adapt_dataset`` changes the dataset
    before it is split (refit)."""
    from masan_recbole import protocol
    from masan_recbole.build import build_run

    histories = []

    def before_split(dataset):
        histories.append(protocol.user_histories(dataset))  # before data_preparation turns it into augmented rows
        return adapt_dataset(dataset) if adapt_dataset is not None else dataset

    built = build_run(config, before_split=before_split)
    return Prepared(histories[0], built.train_data, built.valid_data, built.test_data, built.model, built.trainer)


class ResumeError(RuntimeError):
    """A run's saved state is not one epoch's files (a copy mixed from two epochs, or cut short)."""


def resume_progress(saved, done, state_dir, bigger=None):
    """The first ``done`` epochs of a saved progress.json, ``done`` being latest.pth's count:
    progress.json is written first, so it may be ahead, never behind. With ``bigger`` (a validated
    run), best.pth must hold the best point of that curve, as RecBole's early stopping chose it, or
    an epoch after latest.pth (saved just before it; that epoch is trained again, the same way, and
    saves its model again if it is still the best)."""
    from masan_recbole.checkpoint import load_checkpoint

    progress = {"train_seconds": saved["train_seconds"][:done]}
    if "valid_curve" in saved:  # one point per validation (eval_step epochs apart)
        progress["valid_curve"] = [p for p in saved["valid_curve"] if p["epoch"] < done]
        progress["valid_seconds"] = saved["valid_seconds"][:len(progress["valid_curve"])]
    fix = f"not one epoch's files: delete {state_dir} to start the run over"
    if len(progress["train_seconds"]) < done:
        raise ResumeError(f"{state_dir}: progress.json has {len(progress['train_seconds'])} epochs, "
                          f"latest.pth {done}; {fix}")
    if bigger is not None and progress["valid_curve"]:
        best = best_point(progress["valid_curve"], bigger)["epoch"]
        saved_best = load_checkpoint(os.path.join(state_dir, "best.pth"))["epoch"]
        if saved_best != best and saved_best < done:
            raise ResumeError(f"{state_dir}: best.pth is epoch {saved_best}, the curve's best is {best}; {fix}")
    return progress


def train(model_name, dataset, seed, settings, out=OUT, threads=1, label=None):
    """Train one run to early stopping (resuming where a previous process stopped); write its result.
    ``label`` names a variant of the model (its files and its ``label`` field); default: the model."""
    import torch

    import masan_recbole  # noqa: F401  (the plugin's models and patches)
    from masan_recbole.build import build_config
    from recbole.utils import init_logger

    torch.set_num_threads(threads)
    label = label or model_name
    name = run_name(label, dataset, seed)
    result_path = os.path.join(out, f"{name}.json")
    if os.path.isfile(result_path):
        record = read_result(result_path)
        if not goes_on(record, settings):
            print(f"{name}: finished already ({result_path})")
            return record
        resumable = has_resume_point(out, name)
        print(f"{name}: ran all its {record['epochs_run']} epochs without stopping early; going on to "
              f"{settings['epochs']} or early stopping" + ("" if resumable else
              f", from epoch 0: its state ({os.path.join(out, '.state', name)}) is not on this machine"))
    state_dir = os.path.join(out, ".state", name)
    latest, progress_path = os.path.join(state_dir, "latest.pth"), os.path.join(state_dir, "progress.json")
    config = build_config(model_name, dataset, config_dict={
        "seed": seed, "checkpoint_dir": state_dir, "show_progress": False, **settings})
    init_logger(config)
    histories, train_data, valid_data, test_data, model, trainer = prepare(config)
    trainer.saved_model_file = os.path.join(state_dir, "best.pth")
    progress = {"valid_curve": [], "train_seconds": [], "valid_seconds": []}
    if os.path.isfile(latest):
        trainer.resume_checkpoint(latest)
        trainer.saved_model_file = os.path.join(state_dir, "best.pth")  # the best model stays where it is
        with open(progress_path) as f:
            saved = json.load(f)
        done = trainer.start_epoch
        progress = resume_progress(saved, done, state_dir, config["valid_metric_bigger"])
        print(f"{name}: resuming after epoch {done - 1}")
    on_cuda = config["device"].type == "cuda"
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train_epoch(*args, **kwargs):
        start = clock(on_cuda)
        loss = train_epoch(*args, **kwargs)
        progress["train_seconds"].append(round(clock(on_cuda) - start, 3))
        return loss

    def timed_valid_epoch(*args, **kwargs):
        start = clock(on_cuda)
        score, result = valid_epoch(*args, **kwargs)
        progress["valid_seconds"].append(round(clock(on_cuda) - start, 3))
        progress["valid_curve"].append({"epoch": len(progress["train_seconds"]) - 1, "score": float(score),
                                        "metrics": {k: float(v) for k, v in result.items()}})
        return score, result

    def after_validation(epoch_idx, valid_score):
        # progress first: if killed between the two writes, resuming trims it to latest.pth's epoch
        write_json(progress_path, progress)
        trainer._save_checkpoint(epoch_idx, verbose=False, saved_model_file=latest)

    trainer._train_epoch, trainer._valid_epoch = timed_train_epoch, timed_valid_epoch
    stopped = trainer.cur_step > trainer.stopping_step or trainer.start_epoch >= trainer.epochs
    if not stopped:  # (a finished fit would save epoch -1 over the best model)
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=after_validation)
    test_result = {k: float(v) for k, v in trainer.evaluate(test_data, load_best_model=True).items()}
    protocols = protocol_fields(config, score_test_users(trainer, test_data, histories), test_result)
    curve = progress["valid_curve"]
    best = best_point(curve, config["valid_metric_bigger"])
    epochs_run = len(progress["train_seconds"])
    record = {
        "model": model_name, "label": label, "dataset": dataset, "seed": seed,
        "best_epoch": best["epoch"], "epochs_run": epochs_run, "stopping_step": config["stopping_step"],
        "stopped_early": epochs_run < config["epochs"],
        "valid_metric": config["valid_metric"], "best_valid_score": best["score"], "best_valid_result": best["metrics"],
        "test_result": test_result,
        "test_result_history_excluded": protocols["test_result_history_excluded"],
        "valid_curve": curve,
        "train_seconds_per_epoch": sum(progress["train_seconds"]) / epochs_run,
        "valid_seconds_per_epoch": sum(progress["valid_seconds"]) / max(1, len(progress["valid_seconds"])),
        # each epoch's wall-clock seconds: a run paused or crowded for a while shows as a few long epochs,
        # which the report's medians leave out
        "train_seconds": progress["train_seconds"], "valid_seconds": progress["valid_seconds"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "per_user_ndcg@10": protocols["per_user_ndcg@10"],
        "per_user_ndcg@10_history_excluded": protocols["per_user_ndcg@10_history_excluded"],
        "settings": settings,
        "config": portable_config(config),
        **environment(config["device"].type, threads),
    }
    write_json(result_path, record, indent="top")
    print(f"{name}: best epoch {record['best_epoch']} of {epochs_run}, test {record['test_result']}")
    return record


# ---------------------------------------------------------------------------- rescoring finished runs

HISTORY_FIELDS = ("test_result_history_excluded", "per_user_ndcg@10_history_excluded")


class RescoreError(RuntimeError):
    """A finished run cannot be rescored: its checkpoint is gone, or the rebuilt run is not the one recorded."""


def config_differences(config, record):
    """Settings of the rebuilt config whose values differ from the result file's (keys that only
    one side holds are code added or removed since, and do not change this run)."""
    rebuilt = portable_config(config)
    return {k: (record["config"][k], rebuilt[k]) for k in rebuilt.keys() & record["config"].keys()
            if rebuilt[k] != record["config"][k]}


def rescore(result_path, out=OUT, threads=1):
    """Add the history-excluded fields to a finished run's result file, from its best-validation
    checkpoint, data and model rebuilt as train() built them. Every other field is kept as it was;
    the rebuilt run must reproduce the recorded test_result and per-user NDCG@10, else nothing is written."""
    import tempfile

    import torch

    import masan_recbole  # noqa: F401  (the plugin's models and patches)
    from masan_recbole.build import build_config

    from masan_recbole.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    record = read_result(result_path)
    name = run_name(record.get("label") or record["model"], record["dataset"], record["seed"])
    best = os.path.join(out, ".state", name, "best.pth")
    if not os.path.isfile(best):
        raise RescoreError(f"{name}: refusing to rescore, its best-validation checkpoint {best} is missing "
                           "(only a retraining can give the history-excluded figures)")
    saved = load_checkpoint(best)["config"]
    for key in ("model", "dataset", "seed"):
        if saved.get(key) != record[key]:
            raise RescoreError(f"{name}: {best} is a checkpoint of {key} {saved.get(key)!r}, the result file's is {record[key]!r}")
    with tempfile.TemporaryDirectory() as scratch:  # RecBole's trainer makes its checkpoint_dir: not .state
        config = build_config(record["model"], record["dataset"], config_dict={
            "seed": record["seed"], "checkpoint_dir": scratch, "show_progress": False, **record["settings"]})
        differ = config_differences(config, record)
        if differ:
            raise RescoreError(f"{name}: the rebuilt config differs from the recorded one (recorded, now): {differ}")
        histories, _, _, test_data, model, trainer = prepare(config)
        if sum(p.numel() for p in model.parameters()) != record["parameters"]:
            raise RescoreError(f"{name}: the rebuilt {record['model']} has a different parameter count from the recorded one")
        # strict load: a key or shape the rebuilt model lacks raises
        test_result = trainer.evaluate(test_data, load_best_model=True, model_file=best)
        if {k: float(v) for k, v in test_result.items()} != record["test_result"]:
            raise RescoreError(f"{name}: the checkpoint gives test {dict(test_result)}, the file records {record['test_result']}")
        fields = protocol_fields(config, score_test_users(trainer, test_data, histories), record["test_result"])
    recorded_users, recorded = unpack(record["per_user_ndcg@10"])
    users, now = unpack(fields["per_user_ndcg@10"])
    if users != recorded_users or max(abs(a - b) for a, b in zip(now, recorded)) > 2e-6:
        raise RescoreError(f"{name}: the rebuilt run's per-user NDCG@10 differs from the recorded one")
    write_json(result_path, {**record, **{k: fields[k] for k in HISTORY_FIELDS}}, indent="top")
    print(f"{name}: test {record['test_result']}; history excluded {fields['test_result_history_excluded']}")
    return fields


# ---------------------------------------------------------------------------- refitting on train + valid

# SR-GNN's and SR-SAN's code trains on every training session (its validation split is optional and
# off) and reports the best epoch on test. Ours picks the epoch on validation, the most recent 10 % of
# the training sessions, which the model then never trains on. A refit keeps the chosen epoch count
# and trains a fresh model on training + validation rows: the papers' training data, with no choice
# made on test.
REFIT_FIELDS = ("test_result_refit", "refit")


def with_validation_in_training(dataset):
    """``dataset``, whose build() now gives the training rows followed by the validation rows as its
    training part (validation and test parts unchanged). Only for data read from train, valid and test
    files (``benchmark_filename``): a leave-one-out split's validation rows are the users' own items."""
    sizes = getattr(dataset, "file_size_list", None) or []
    if dataset.benchmark_filename_list is None or len(sizes) != 3:
        raise ValueError(f"refit needs a dataset read from train, valid and test files (benchmark_filename: "
                         f"[train, valid, test]); {dataset.dataset_name} is split by eval_args instead")
    build = dataset.build

    def build_with_validation_in_training():
        _, valid, test = build()
        return [dataset.copy(dataset.inter_feat[:sizes[0] + sizes[1]]), valid, test]

    dataset.build = build_with_validation_in_training
    return dataset


def refit(result_path, out=OUT, threads=1):
    """Train the finished run's model again, from its seed, on training + validation rows for
    best_epoch + 1 epochs (its learning-rate schedule included), then test the last model; adds
    ``test_result_refit`` and ``refit`` to the result file, every other field kept. Resumable like
    train(): the state is in ``.state/<run>/refit/``."""
    import torch

    import masan_recbole  # noqa: F401  (the plugin's models and patches)
    from masan_recbole.build import build_config
    from recbole.utils import init_logger

    from masan_recbole.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    record = read_result(result_path)
    name = run_name(record.get("label") or record["model"], record["dataset"], record["seed"])
    if all(key in record for key in REFIT_FIELDS):
        print(f"{name}: refitted already")
        return record
    state_dir = os.path.join(out, ".state", name, "refit")
    latest, progress_path = os.path.join(state_dir, "latest.pth"), os.path.join(state_dir, "progress.json")
    epochs = record["best_epoch"] + 1
    config = build_config(record["model"], record["dataset"], config_dict={
        "seed": record["seed"], "checkpoint_dir": state_dir, "show_progress": False, **record["settings"],
        "epochs": epochs})
    differ = {k: v for k, v in config_differences(config, record).items() if k not in ("epochs", "checkpoint_dir")}
    if differ:
        raise RescoreError(f"{name}: the rebuilt config differs from the recorded one (recorded, now): {differ}")
    trained_for = {"model": record["model"], "seed": record["seed"], "settings": record["settings"]}
    if os.path.isfile(latest):
        # A refit of fewer epochs is the start of a longer one (same seed, data and schedule); one of
        # more epochs, or of another run (its model, seed or settings), is not
        saved_run = None
        if os.path.isfile(progress_path):
            with open(progress_path) as f:
                saved_run = json.load(f).get("run")
        saved_epochs = load_checkpoint(latest)["epoch"] + 1
        if saved_run != trained_for or saved_epochs > epochs:
            print(f"{name}: the refit state ({saved_epochs} epochs) is not the start of this refit "
                  f"({epochs} epochs of {trained_for}); starting over")
            os.remove(latest)
    init_logger(config)
    _, train_data, _, test_data, _, trainer = prepare(config, adapt_dataset=with_validation_in_training)
    trainer.saved_model_file = latest  # without validation RecBole saves after every epoch: the resume point
    seconds = []
    if os.path.isfile(latest):
        trainer.resume_checkpoint(latest)
        with open(progress_path) as f:
            seconds = resume_progress(json.load(f), trainer.start_epoch, state_dir)["train_seconds"]
        print(f"{name}: refit resuming after epoch {trainer.start_epoch - 1}")
    on_cuda = config["device"].type == "cuda"
    train_epoch = trainer._train_epoch

    def timed_train_epoch(*args, **kwargs):
        start = clock(on_cuda)
        loss = train_epoch(*args, **kwargs)
        seconds.append(round(clock(on_cuda) - start, 3))
        write_json(progress_path, {"run": trained_for, "train_seconds": seconds})  # before the checkpoint, as train() does
        return loss

    trainer._train_epoch = timed_train_epoch
    if trainer.start_epoch < epochs:
        trainer.fit(train_data, None, saved=True, show_progress=False)
    test_result = {k: float(v) for k, v in trainer.evaluate(test_data, load_best_model=False).items()}
    fields = {"test_result_refit": test_result,
              "refit": {"epochs": epochs, "train_rows": len(train_data._dataset),
                        "train_seconds_per_epoch": sum(seconds) / len(seconds), "train_seconds": seconds}}
    write_json(result_path, {**read_result(result_path), **fields}, indent="top")
    print(f"{name}: refit on training + validation for {epochs} epochs, test {test_result}")
    return {**record, **fields}


def finished_results(out, datasets=None, labels=None):
    """Paths of the result files at the top of ``out``, those of the given datasets and labels only."""
    paths = []
    for file in sorted(os.listdir(out)):
        path = os.path.join(out, file)
        if not (file.endswith(".json") and os.path.isfile(path)):
            continue
        record = read_result(path)
        if (not datasets or record["dataset"] in datasets) and (not labels or (record.get("label") or record["model"]) in labels):
            paths.append(path)
    return paths


def rescore_all(out, datasets=None, labels=None, threads=1):
    """Rescore every selected result file that lacks the history-excluded fields; 1 if any refused."""
    status = 0
    for path in finished_results(out, datasets, labels):
        if all(key in read_result(path) for key in HISTORY_FIELDS):
            print(f"{os.path.basename(path)}: has the history-excluded fields already")
            continue
        try:
            rescore(path, out, threads)
        except RescoreError as e:
            print(e, file=sys.stderr)
            status = 1
    return status


def stale_keys(run, record):
    """The settings a tuned run takes from its configs/model file that its result file was trained
    with otherwise (the file was written again after the run)."""
    trained = record.get("settings", {})
    return [key for key in run.tuned_keys if trained.get(key) != run.settings[key]]


def record_state(run, record):
    """What a run's result file says of it: "done", "refit pending" (trained, not yet refitted),
    "started" (to go on: more epochs than it ran, early stopping not reached) or "stale" (a tuned run
    trained with settings its configs/model file no longer holds: not taken again on its own)."""
    if stale_keys(run, record):
        return "stale"
    if goes_on(record, run.settings):
        return "started"
    return "refit pending" if run.refit and not all(key in record for key in REFIT_FIELDS) else "done"


def run_state(run, out):
    """:func:`record_state` of its result file, else "started" (a saved state on this machine), "pending",
    or "waiting" (a tuned entry whose settings file is not written yet)."""
    name = run_name(run.label, run.dataset, run.seed)
    if run.waits_for:
        return "waiting"
    path = os.path.join(out, f"{name}.json")
    if os.path.isfile(path):
        return record_state(run, read_result(path))
    return "started" if has_resume_point(out, name) else "pending"


def is_done(run, out):
    return run_state(run, out) == "done"


def pending(runs, out):
    """Runs to train: not done, not waiting for a settings file, not stale (its result file stays
    until someone deletes it, see stale_message)."""
    return [r for r in runs if run_state(r, out) not in ("done", "waiting", "stale")]


def stale_message(run, out):
    name = run_name(run.label, run.dataset, run.seed)
    path = os.path.join(out, f"{name}.json")
    keys = ", ".join(stale_keys(run, read_result(path)))
    return (f"{name}: trained with other {keys} than {os.path.relpath(os.path.join(CONFIGS, run.model, run.dataset + '.yaml'))} "
            f"holds now; delete {os.path.relpath(path)} and {os.path.relpath(os.path.join(out, '.state', name))} "
            "to train it with the file's settings")


def parse_set(pairs):
    settings = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        settings[key] = yaml.safe_load(value)
    return settings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model, or a variant's label from the matrix")
    parser.add_argument("--dataset")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="settings over the matrix's")
    parser.add_argument("--all", action="store_true", help="every pending run of the matrix, in order")
    parser.add_argument("--list", action="store_true",
                        help="the matrix, which runs are done and which a living process is training")
    parser.add_argument("--rescore", action="store_true",
                        help="add the history-excluded test fields to finished result files lacking them, "
                             "from their .state/<run>/best.pth")
    parser.add_argument("--datasets", nargs="*", help="with --all/--list/--rescore: only these datasets")
    parser.add_argument("--models", nargs="*", help="with --all/--list/--rescore: only these models or variant labels")
    parser.add_argument("--matrix", default=MATRIX)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.rescore:
        return rescore_all(args.out, args.datasets, args.models, args.threads)
    runs = [r._replace(settings={**r.settings, **parse_set(args.set)}) for r in load_matrix(args.matrix)
            if (not args.datasets or r.dataset in args.datasets) and (not args.models or r.label in args.models)]
    if args.list:
        for run in runs:
            name = run_name(run.label, run.dataset, run.seed)
            pid = holder(args.out, name)
            waits = f" for {os.path.relpath(run.waits_for)}" if run.waits_for else ""
            state = run_state(run, args.out)
            print(f"{name:45} {state}{waits}" + (f" (running, pid {pid})" if pid else "")
                  + (f": {stale_message(run, args.out)}" if state == "stale" else ""))
        return 0
    if args.all:
        for run in runs:
            if run_state(run, args.out) == "stale":
                print(stale_message(run, args.out))
        tried = set()  # a run that is still pending after its turn (it failed to finish) is not taken again
        while True:
            for run in pending(runs, args.out):
                name = run_name(run.label, run.dataset, run.seed)
                if name not in tried and claim(args.out, name):
                    tried.add(name)
                    try:
                        train(run.model, run.dataset, run.seed, run.settings, args.out, args.threads, label=run.label)
                        if run.refit:
                            refit(os.path.join(args.out, f"{name}.json"), args.out, args.threads)
                    finally:
                        release(args.out, name)
                    break
            else:
                return 0  # nothing pending that another process is not already running
    if not (args.model and args.dataset):
        parser.error("give --model and --dataset, or --all, or --list")
    same = [r for r in load_matrix(args.matrix) if r.dataset == args.dataset and r.label == args.model]
    entry = next((r for r in same if r.seed == args.seed), same[0] if same else None)
    if entry and entry.waits_for:
        parser.error(f"{args.model} on {args.dataset} is tuned and {entry.waits_for} is not written yet: "
                     "finish its searches, then python -m benchmarks.searches --write-configs")
    if entry and entry.seed == args.seed and run_state(entry, args.out) == "stale":
        parser.error(stale_message(entry, args.out))
    model, base = (entry.model, entry.settings) if entry else (args.model, {})
    name = run_name(args.model, args.dataset, args.seed)
    if not claim(args.out, name):
        parser.error(f"{name} is being trained by another process ({os.path.join(args.out, '.state', name, 'lock')})")
    try:
        train(model, args.dataset, args.seed, {**base, **parse_set(args.set)}, args.out, args.threads, label=args.model)
        if entry and entry.refit:
            refit(os.path.join(args.out, f"{name}.json"), args.out, args.threads)
    finally:
        release(args.out, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
