"""Entry points: RecBole's quick-start functions with the plugin's safe checkpoints,
and the two command-line tools (``run_recbole.py``, ``run_hyper.py``)."""

import argparse
import ast
import logging
import os
import sys

import recbole.data
import torch
from recbole.data import create_dataset
from recbole.quick_start import objective_function, run_recbole, run_recboles
from recbole.utils import init_logger, init_seed

from masan_recbole import tuning
from masan_recbole.checkpoint import CheckpointError, check_data, load_checkpoint
from masan_recbole.config import ConfigTypeError, decode_config
from masan_recbole.console import results_table
from masan_recbole.files import write_atomic
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

    get_model(model)  # an unknown model: one line here, not a traceback from every child
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
    record = state.get("data")
    check_data(record, config["data_path"], model_file)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = logging.getLogger()
    logger.info(config)
    dataset = create_dataset(config)
    logger.info(dataset)
    if record and [str(t) for t in dataset.field2id_token[dataset.iid_field]] != record["item_tokens"]:
        raise CheckpointError(f"the items of {config['dataset']} no longer match the ids {model_file} was trained "
                              "with (a filter or config setting changed?); load it with the settings it was trained with")
    # looked up now: the patch layer wraps RecBole's data_preparation
    train_data, valid_data, test_data = recbole.data.data_preparation(config, dataset)
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


# What a user's input can raise: one line and exit 2, the traceback only with --debug.
# (A TypeError or KeyError is a bug, and keeps its traceback.)
USER_ERRORS = (ValueError, ConfigTypeError, OSError, CheckpointError)


def _user_errors_in_one_line(main):
    def wrapper(argv=None):
        argv = list(sys.argv[1:] if argv is None else argv)
        debug = "--debug" in argv
        argv = [a for a in argv if a != "--debug"]
        try:
            return main(argv)
        except USER_ERRORS as e:
            if debug:
                raise
            message = str(e).strip() or type(e).__name__
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(2) from None

    wrapper.__doc__ = main.__doc__
    return wrapper


@_user_errors_in_one_line
def main_run(argv):
    """``run_recbole.py``: train and test one model."""
    parser = argparse.ArgumentParser(description="Train and test a model with RecBole (plugin models included). "
                                     "Any RecBole or plugin setting as --key=value; --debug shows tracebacks.")
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL)
    parser.add_argument("--dataset", "-d", default=DEFAULT_DATASET)
    parser.add_argument("--config_files", default=None, help='space-separated yaml files, e.g. "a.yaml b.yaml"')
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (DDP)")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines")
    parser.add_argument("--ip", default="localhost", help="address of the rank-0 machine")
    parser.add_argument("--port", default="5678")
    parser.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    sys.argv = [sys.argv[0], *argv]
    args = _hand_rest_to_recbole(parser)
    result = run(args.model, args.dataset, config_file_list=_split_files(args.config_files),
                 nproc=args.nproc, world_size=args.world_size, ip=args.ip, port=args.port,
                 group_offset=args.group_offset)
    if result:
        print(results_table(result))
    return result


SEARCH_KINDS = {"choice": None, "uniform": 2, "loguniform": 2, "quniform": 3}


def read_search_space(path):
    """A hyper.test file (``name kind values`` per line) as RecBole's ``params_dict``, checked
    line by line; values are parsed as literals, never evaluated as code."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"params_file not found: {path}")
    space = {}
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(None, 2)
            where = f"{path}, line {lineno}"
            if len(parts) < 3:
                raise ValueError(f"{where}: expected `name kind values` (e.g. `learning_rate choice [0.001,0.003]`), "
                                 f"got {line.strip()!r}")
            name, kind, text = parts
            if kind not in SEARCH_KINDS:
                raise ValueError(f"{where}: kind {kind!r} is not one of {', '.join(SEARCH_KINDS)}")
            text = text.strip()
            try:
                value = ast.literal_eval(text if kind == "choice" else f"[{text}]")
            except (ValueError, SyntaxError):
                raise ValueError(f"{where}: {text!r} is not a list of values (e.g. [0.001,0.003] for choice, "
                                 "-8,0 for loguniform)") from None
            if kind == "choice" and (not isinstance(value, list) or not value):
                raise ValueError(f"{where}: choice needs a non-empty list such as [0.001,0.003], got {text!r}")
            if kind != "choice" and (len(value) != SEARCH_KINDS[kind]
                                     or not all(isinstance(v, (int, float)) for v in value)):
                names = "low,high" + (",q" if kind == "quniform" else "")
                raise ValueError(f"{where}: {kind} needs {names} as numbers, got {text!r}")
            space.setdefault(kind, {})[name] = value
    if not space:
        raise ValueError(f"{path} defines no parameter to search (lines `name kind values`)")
    return space


RAY_FLAGS = ("num_samples", "max_concurrent", "cpus_per_trial", "gpus_per_trial", "address", "asha", "storage_path",
             "search_seed", "grace_period", "trials_file", "resume", "grid")
HYPEROPT_FLAGS = ("algo", "max_evals", "early_stop")


@_user_errors_in_one_line
def main_hyper(argv):
    """``run_hyper.py``: hyper-parameter search with hyperopt, or with Ray Tune (``--tool ray``)."""
    parser = argparse.ArgumentParser(description="Hyper-parameter search: hyperopt (RecBole's HyperTuning, one trial "
                                     "at a time) or Ray Tune (--tool ray: trials in parallel, locally or on a cluster). "
                                     "Any RecBole setting as --key=value; --debug shows tracebacks.")
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL)
    parser.add_argument("--dataset", "-d", default=DEFAULT_DATASET)
    parser.add_argument("--params_file", required=True, help="hyper.test file: `name choice [..]` / loguniform / uniform / quniform")
    parser.add_argument("--config_files", default=None)
    parser.add_argument("--output_file", default="hyper_result.txt")
    parser.add_argument("--tool", type=str.lower, choices=["hyperopt", "ray"], default="hyperopt")
    # flags of one tool, default None so that giving one to the other tool is caught
    hyperopt_flags = parser.add_argument_group("--tool hyperopt")
    hyperopt_flags.add_argument("--algo", choices=["exhaustive", "random", "bayes"], default=None, help="default exhaustive")
    hyperopt_flags.add_argument("--max_evals", type=int, default=None,
                                help="trials at most (random/bayes default 100; exhaustive: the first N grid points)")
    hyperopt_flags.add_argument("--early_stop", type=int, default=None,
                                help="stop after this many trials without progress (default 10)")
    ray_flags = parser.add_argument_group("--tool ray")
    ray_flags.add_argument("--num_samples", type=int, default=None, help="trials, sampled at random (default 10)")
    ray_flags.add_argument("--grid", action="store_true", default=None,
                           help="one trial per combination of the choice lines, instead of --num_samples random ones")
    ray_flags.add_argument("--max_concurrent", type=int, default=None, help="trials at once (default: as many as fit)")
    ray_flags.add_argument("--cpus_per_trial", type=float, default=None, help="default 1")
    ray_flags.add_argument("--gpus_per_trial", type=float, default=None, help="default 0 (fractions share a GPU)")
    ray_flags.add_argument("--address", default=None, help="an existing Ray cluster (auto: the one this host joined); "
                           "default: a local Ray")
    ray_flags.add_argument("--asha", action="store_true", default=None,
                           help="stop weak trials early (ASHA on the validation metric, checked every validation)")
    ray_flags.add_argument("--grace_period", type=int, default=None,
                           help="--asha: epochs every trial runs before ASHA may stop it (default 1)")
    ray_flags.add_argument("--storage_path", default=None, help=f"Ray's experiment folders (default {tuning.DEFAULT_STORAGE})")
    ray_flags.add_argument("--search_seed", type=int, default=None,
                           help="seed of the trials' settings: the same seed draws the same trials (default 0)")
    ray_flags.add_argument("--trials_file", default=None,
                           help="JSON lines, one per ended trial: settings, validation curve, epochs, CPU seconds")
    ray_flags.add_argument("--resume", action="store_true", default=None,
                           help="go on with the search recorded in --trials_file: only the trials it lacks run")
    sys.argv = [sys.argv[0], *argv]
    args = _hand_rest_to_recbole(parser)
    other = HYPEROPT_FLAGS if args.tool == "ray" else RAY_FLAGS
    wrong = [f"--{name}" for name in other if getattr(args, name) is not None]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} cannot be used with --tool {args.tool}")
    params = read_search_space(args.params_file)
    if args.tool == "ray":
        given = {name: getattr(args, name) for name in RAY_FLAGS if getattr(args, name) is not None}
        return tuning.search(args.model, args.dataset, params, args.output_file,
                             config_files=_split_files(args.config_files), **given)
    return _search_with_hyperopt(args, params)


def _search_with_hyperopt(args, params):
    from recbole.trainer import HyperTuning

    if args.max_evals is not None and args.max_evals < 1:
        raise ValueError(f"--max_evals must be at least 1, got {args.max_evals}")
    algo = args.algo or "exhaustive"
    fixed = {"model": args.model, "dataset": args.dataset}
    with write_atomic(args.output_file):
        pass  # starts the results file empty; each trial is appended as it finishes

    def objective(config_dict, config_file_list):
        result = objective_function({**fixed, **tuning.flatten_bundles(config_dict)}, config_file_list)
        result.update(best_valid_score=float(result["best_valid_score"]),
                      best_valid_result=tuning.plain(result["best_valid_result"]),
                      test_result=tuning.plain(result["test_result"]))
        with open(args.output_file, "a") as f:  # kept even if the search is interrupted
            f.write(tuning.results_entry(config_dict, result["best_valid_result"], result["test_result"]))
        return result

    tuner = HyperTuning(objective, algo=algo, max_evals=args.max_evals or 100,
                        early_stop=10 if args.early_stop is None else args.early_stop, params_dict=params,
                        fixed_config_file_list=_split_files(args.config_files))
    if args.max_evals is not None and args.max_evals < tuner.max_evals:
        if algo == "exhaustive":
            print(f"exhaustive search: the first {args.max_evals} of {tuner.max_evals} grid points (--max_evals)")
        tuner.max_evals = args.max_evals
    tuner.run()
    tuner.export_result(output_file=args.output_file)
    print("best params:", tuner.best_params)
    print("best result:", tuner.params2result[tuner.params2str(tuner.best_params)])
    return tuner
