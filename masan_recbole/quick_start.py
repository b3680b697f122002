"""Entry points: RecBole's quick-start functions with the plugin's safe checkpoints,
and the two command-line tools (``run_recbole.py``, ``run_hyper.py``)."""

import argparse
import logging
import sys

import torch
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import objective_function, run_recbole, run_recboles
from recbole.utils import init_logger, init_seed

from masan_recbole.checkpoint import load_checkpoint
from masan_recbole.config import decode_config
from masan_recbole.registry import get_model

DEFAULT_MODEL = "MASAN"
DEFAULT_DATASET = "ml-100k"


def run(model, dataset, config_file_list=None, config_dict=None, saved=True, nproc=1,
        world_size=-1, ip="localhost", port="5678", group_offset=0):
    """RecBole's ``run``; multi-process runs spawn children that import the plugin."""
    if nproc == 1 and world_size <= 0:
        return run_recbole(model=model, dataset=dataset, config_file_list=config_file_list,
                           config_dict=config_dict, saved=saved)
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update(world_size=world_size if world_size > 0 else nproc, ip=ip, port=port,
                       nproc=nproc, offset=group_offset)
    kwargs = {"config_dict": config_dict, "queue": queue, "saved": saved}
    mp.spawn(_run_in_child, args=(model, dataset, config_file_list, kwargs), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def _run_in_child(rank, *args):
    # Unpickling this function imported masan_recbole in the child: models resolve.
    run_recboles(rank, *args)


def load_data_and_model(model_file):
    """RecBole's ``load_data_and_model`` for checkpoints that load with ``weights_only=True``.

    Returns ``(config, model, dataset, train_data, valid_data, test_data)``.
    """
    state = load_checkpoint(model_file, map_location="cpu")
    config = decode_config(state["config"])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = logging.getLogger()
    logger.info(config)
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(state["state_dict"])
    model.load_other_parameter(state.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data


def _split_files(value):
    return value.split() if value else None


def _hand_rest_to_recbole(parser):
    """Parse our options; leave ``--key=value`` overrides in sys.argv for RecBole's Config."""
    args, rest = parser.parse_known_args()
    bad = [a for a in rest if not (a.startswith("--") and "=" in a)]
    if bad:
        parser.error(f"unrecognised arguments {bad}; RecBole options take the form --key=value")
    sys.argv = [sys.argv[0], *rest]
    return args


def main_run(argv=None):
    parser = argparse.ArgumentParser(description="Train and test a model with RecBole (plugin models included).")
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL)
    parser.add_argument("--dataset", "-d", default=DEFAULT_DATASET)
    parser.add_argument("--config_files", default=None, help='space-separated yaml files, e.g. "a.yaml b.yaml"')
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (DDP)")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines")
    parser.add_argument("--ip", default="localhost", help="address of the rank-0 machine")
    parser.add_argument("--port", default="5678")
    parser.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args = _hand_rest_to_recbole(parser)
    return run(args.model, args.dataset, config_file_list=_split_files(args.config_files),
               nproc=args.nproc, world_size=args.world_size, ip=args.ip, port=args.port,
               group_offset=args.group_offset)


def main_hyper(argv=None):
    from recbole.trainer import HyperTuning

    parser = argparse.ArgumentParser(description="Hyper-parameter search with hyperopt (RecBole's HyperTuning).")
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL)
    parser.add_argument("--dataset", "-d", default=DEFAULT_DATASET)
    parser.add_argument("--params_file", required=True, help="hyper.test file: `name choice [..]` / loguniform / uniform / quniform")
    parser.add_argument("--config_files", default=None)
    parser.add_argument("--output_file", default="hyper_result.txt")
    parser.add_argument("--algo", choices=["exhaustive", "random", "bayes"], default="exhaustive")
    parser.add_argument("--max_evals", type=int, default=100, help="trials for random/bayes")
    parser.add_argument("--early_stop", type=int, default=10, help="stop after this many trials without progress")
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args = _hand_rest_to_recbole(parser)
    fixed = {"model": args.model, "dataset": args.dataset}

    def objective(config_dict, config_file_list):
        return objective_function({**fixed, **config_dict}, config_file_list)

    tuner = HyperTuning(objective, algo=args.algo, max_evals=args.max_evals, early_stop=args.early_stop,
                        params_file=args.params_file, fixed_config_file_list=_split_files(args.config_files))
    tuner.run()
    tuner.export_result(output_file=args.output_file)
    print("best params:", tuner.best_params)
    print("best result:", tuner.params2result[tuner.params2str(tuner.best_params)])
    return tuner
