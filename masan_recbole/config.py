"""The plugin's side of RecBole's ``Config``: YAML defaults, checks, dataset lookup, device.

The patches ``config_layers``, ``config_defaults`` and ``device_selection``
(:mod:`masan_recbole.patches`) route RecBole's ``Config`` through the functions here:

* :func:`load_internal_config` layers ``configs/overall.yaml``, ``configs/model/<Name>.yaml``,
  ``configs/dataset/<dataset>.yaml`` and ``configs/model/<Name>/<dataset>.yaml`` into
  RecBole's *internal* defaults, so the user's files, dicts and command line still win;
* :func:`set_default_parameters` checks the types of numeric and boolean keys, defaults
  negative sampling to what the loss needs, looks datasets up in ``<data_path>/<name>/``
  and then in the recbole wheel's example data (ml-100k), and loads the time column that
  time-ordered splits sort by;
* :func:`init_device` honours ``device`` and runs multi-process training on CPU (gloo);
* :func:`decode_config` rebuilds a ``Config`` from a checkpoint's plain data.
"""

import difflib
import functools
import logging
import os
import warnings

import recbole
import torch
import yaml
from recbole.config import Config
from recbole.utils import ModelType

from masan_recbole import protocol
from masan_recbole.checkpoint import decode_value, enum_types
from masan_recbole.data.all_positions import TRAIN_MODES, window_stride
from masan_recbole.registry import builtin_name, canonical_name, get_model, is_plugin_model, plugin_models


def _find_configs():
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "configs"), os.path.join(os.path.dirname(here), "configs")):
        if os.path.isdir(os.path.join(candidate, "model")):
            return candidate
    raise RuntimeError(f"masan_recbole: configs/ not found next to {here}; reinstall the package")


CONFIG_DIR = _find_configs()
WHEEL_DATASETS = os.path.join(os.path.dirname(recbole.__file__), "dataset_example")


def model_yaml(name):
    """The plugin's default file for model ``name``, or None."""
    path = os.path.join(CONFIG_DIR, "model", f"{canonical_name(name)}.yaml")
    return path if os.path.isfile(path) else None


def resolve_data_path(root, dataset):
    """Folder of ``dataset``: ``<root>/<dataset>`` if present, else the wheel's copy (ml-100k)."""
    local = os.path.join(root, dataset)
    if os.path.isdir(local):
        return local
    wheel = os.path.join(WHEEL_DATASETS, dataset)
    return wheel if os.path.isdir(wheel) else local


# Set by masan_recbole.opt_in() (the plugin's entry points): the dataset files apply to RecBole's
# built-in models too, as a benchmark comparing them needs. A plain import leaves RecBole's own defaults.
DATASET_CONFIGS_FOR_ALL_MODELS = False


def yaml_layers(model, dataset, model_dataset_config=True):
    """Default files, lowest priority first; all of them for plugin models, and for RecBole's
    models the dataset file only after :func:`masan_recbole.opt_in`. ``model_dataset_config``
    False leaves out the model's settings for this dataset (a model's defaults on tuned data)."""
    dataset_yaml = os.path.join(CONFIG_DIR, "dataset", f"{dataset}.yaml")
    if not is_plugin_model(model):
        return [dataset_yaml] if DATASET_CONFIGS_FOR_ALL_MODELS else []
    name = canonical_name(model)
    layers = [os.path.join(CONFIG_DIR, "overall.yaml"), os.path.join(CONFIG_DIR, "model", f"{name}.yaml"), dataset_yaml]
    return layers + ([os.path.join(CONFIG_DIR, "model", name, f"{dataset}.yaml")] if model_dataset_config else [])


def load_config_files(original, config, file_list):
    """RecBole's reading of the user's YAML files, one file at a time, so an error names the file."""
    merged = {}
    for path in file_list or []:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.load(f.read(), Loader=config.yaml_loader)
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            line = f", line {where.line + 1}" if where is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ValueError(f"config file {path}{line} is not valid YAML: {problem}") from None
        if data is None:
            continue  # an empty file sets nothing
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold `key: value` lines, not a {type(data).__name__}")
        merged.update(original(config, [path]))
    return merged


def load_internal_config(original, config, model, model_class, dataset):
    """RecBole's internal defaults, then the plugin's YAML layers on top (see module doc)."""
    # A shadowed built-in keeps RecBole's own defaults (properties/model/<name>.yaml).
    original(config, builtin_name(model) or model, model_class, dataset)
    # the user's settings are merged before the defaults load: theirs decide which layers apply
    wanted = config.external_config_dict.get("model_dataset_config", True)
    if not isinstance(wanted, bool):
        raise ValueError(f"model_dataset_config must be true or false, got {wanted!r}")
    for path in yaml_layers(model, dataset, wanted):
        if os.path.isfile(path):
            config._update_internal_config_dict(path)


# Keys RecBole reads that no properties file lists: device, multi-process runs, resuming.
RUNTIME_KEYS = {"nproc", "world_size", "ip", "port", "offset", "checkpoint_file", "config_files", "params_file",
                "device", "local_rank", "single_spec"}


@functools.lru_cache(maxsize=1)
def known_keys():
    """Every key a RecBole or plugin YAML file sets (all models, all datasets)."""
    keys = set(RUNTIME_KEYS)
    folders = [os.path.join(os.path.dirname(recbole.__file__), "properties"), CONFIG_DIR]
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                if name.endswith(".yaml"):
                    with open(os.path.join(root, name)) as f:
                        data = yaml.safe_load(f) or {}
                    keys |= set(data) if isinstance(data, dict) else set()
    return keys


def warn_unknown_keys(config):
    """A misspelt key is silently ignored by RecBole (its default is used): name each one once."""
    known = known_keys() | set(config.internal_config_dict) | {k for v in config.parameters.values() for k in v}
    for key in config.external_config_dict:
        if key in known or key in _warned:
            continue
        _warned.add(key)
        close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(close)}?" if close else "; no model or dataset reads it"
        message = f"config key '{key}' is not a RecBole or masan_recbole setting and is ignored{hint}"
        # RecBole's logger too (console and log file): PYTHONWARNINGS=ignore would hide a warning only
        logging.getLogger().warning(message)
        warnings.warn(message, UserWarning, stacklevel=2)


_warned = set()


class ConfigTypeError(TypeError):
    """A config value of the wrong type (a user's error, not a bug)."""


def check_types(config):
    """Numeric and boolean keys set by the user must keep their default's type."""
    for key, value in config.external_config_dict.items():
        default = config.internal_config_dict.get(key)
        if default is None or value is None or key in SEVERAL_TYPES:
            continue
        if isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, int) and key not in FRACTION_KEYS:
            ok, expected = isinstance(value, int) and not isinstance(value, bool), "a whole number"
        elif isinstance(default, (int, float)):
            ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        else:
            continue
        if not ok:
            raise ConfigTypeError(
                f"config key '{key}' must be {expected} (default {default!r}), "
                f"got {value!r} ({type(value).__name__}). Fix it in your config file, "
                f"config_dict or command line (e.g. --{key}={default!r})."
            )


# Keys whose values are of more than one type (false | true | both), checked where they are read.
SEVERAL_TYPES = {"eval_exclude_history"}

# Integer defaults whose key may still take a fraction (a rate or a weight).
FRACTION_KEYS = {"learning_rate", "weight_decay", "reg_weight", "A", "lr_gamma", "alpha_eps", "alpha_fixed",
                 "initializer_range", "layer_norm_eps", "hidden_dropout_prob", "attn_dropout_prob", "dropout_prob",
                 "threshold", "ahff_quantile", "ahff_dropout", "lambda", "temperature", "tau",
                 "global_ratio"}  # FEARec's share of frequencies: a fraction though its default is 1


def check_settings(config):
    """What RecBole would only find out after an epoch of training, or never."""
    cfg = config.final_config_dict
    length = cfg.get("MAX_ITEM_LIST_LENGTH")
    if config.model_class.type == ModelType.SEQUENTIAL and isinstance(length, int) and length < 1:
        raise ValueError(f"MAX_ITEM_LIST_LENGTH must be at least 1 (the items a sequence keeps), got {length}")
    epochs = cfg.get("epochs")
    if isinstance(epochs, int) and epochs < 0:
        raise ValueError(f"epochs must be 0 or more, got {epochs}")
    metric = str(cfg.get("valid_metric") or "")
    if metric.endswith(protocol.SUFFIX) and cfg.get("eval_exclude_history") == "both":
        metric = metric[:-len(protocol.SUFFIX)]  # the same metric under the papers' protocol
    name, _, k = metric.partition("@")
    computed = [str(m).lower() for m in cfg.get("metrics") or []]
    topk = cfg.get("topk") or []
    topk = topk if isinstance(topk, list) else [topk]
    if name.lower() not in computed or (k and (not k.isdigit() or int(k) not in topk)):
        raise ValueError(
            f"valid_metric '{metric}' is not one of the metrics RecBole computes here (metrics {cfg.get('metrics')}, "
            f"topk {topk}); use e.g. --valid_metric={cfg['metrics'][0]}@{topk[0] if topk else 10}"
            if cfg.get("metrics") else f"valid_metric '{metric}' needs metrics to compute it"
        )
    folder = cfg.get("checkpoint_dir")
    if folder:
        existing = folder
        while existing and not os.path.isdir(existing):
            existing = os.path.dirname(os.path.abspath(existing)) if existing != os.path.dirname(existing) else ""
        if existing and not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"checkpoint_dir '{folder}' is not writable ({existing} is read-only); "
                                  "set checkpoint_dir to a folder you can write to")


def check_train_mode(config):
    """Refuse what all-position training can't do, with the fix."""
    mode = config["train_mode"] or "prefix"  # None: a model outside the plugin's config layers
    if mode not in TRAIN_MODES:
        raise ValueError(f"train_mode '{mode}' is not one of {list(TRAIN_MODES)}")
    if mode == "prefix":
        return
    name = config["model"]
    if name not in plugin_models() or not getattr(get_model(name), "causal", False):
        causal = sorted(m for m in plugin_models() if getattr(get_model(m), "causal", False))
        raise ValueError(
            f"train_mode all_positions needs a causal model (its output at position t may depend only "
            f"on items up to t); {name} is not. Causal models: {', '.join(causal)}. "
            f"Use train_mode: prefix for {name}."
        )
    if config["benchmark_filename"]:
        raise ValueError(
            "train_mode all_positions rebuilds sequences from RecBole's own augmentation; with "
            "benchmark_filename the rows are given as prefixes already. Use train_mode: prefix."
        )
    if config["train_neg_sample_args"] is not None and config["train_neg_sample_args"].get("distribution") != "none":
        raise ValueError(
            "train_mode all_positions draws its negatives in the model (BPR: one uniform item per "
            "position; SSM: ssm_sampler); set train_neg_sample_args: ~"
        )
    window_stride(config)


def default_negatives(config):
    """RecBole 1.2.1 insists on negatives being off for CE and leaves them to the user for BPR;
    default both where the user is silent. SSM and all-position training draw theirs in the model."""
    cfg, user = config.final_config_dict, config.external_config_dict
    if config.model_class.type != ModelType.SEQUENTIAL or "train_neg_sample_args" in user:
        return
    if cfg.get("loss_type") in ("CE", "SSM") or cfg.get("train_mode") == "all_positions":
        cfg["train_neg_sample_args"] = None
    elif cfg.get("loss_type") == "BPR" and cfg.get("train_neg_sample_args") is None:
        cfg["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 1}


def load_time_field_for_ordering(config):
    """Time-ordered splits need the time column: RecBole's generic default
    ``load_col`` (user and item only) fails later with "[timestamp] is not exist"."""
    cfg = config.final_config_dict
    load_col, time_field = cfg.get("load_col"), cfg.get("TIME_FIELD")
    if cfg["eval_args"].get("order") != "TO" or not time_field or not load_col or "inter" not in load_col:
        return
    if time_field in load_col["inter"] or cfg.get("benchmark_filename"):
        return
    if "load_col" in config.external_config_dict:
        raise ValueError(
            f"eval_args order 'TO' sorts by {time_field!r}, but load_col['inter'] = {load_col['inter']} "
            f"does not load it: add {time_field!r} to load_col['inter'], or set TIME_FIELD."
        )
    cfg["load_col"] = {**load_col, "inter": [*load_col["inter"], time_field]}


def set_default_parameters(original, config):
    """RecBole's derived defaults, with the plugin's defaults around them: a ``Config`` builds
    whatever RecBole's builds (a program may still adjust it); :func:`create_dataset_checked`
    checks it before any data is loaded."""
    root = config.final_config_dict["data_path"]
    default_negatives(config)
    original(config)
    config.final_config_dict["data_path"] = resolve_data_path(root, config.dataset)
    load_time_field_for_ordering(config)


def check_config(config):
    """The checks of a user's settings: types, misspelt keys, values RecBole would trip on later."""
    check_types(config)
    warn_unknown_keys(config)
    check_settings(config)
    check_train_mode(config)
    protocol.check_config(config)


def create_dataset_checked(original, config):
    """RecBole's ``create_dataset`` after :func:`check_config`: the first step of every run."""
    check_config(config)
    return original(config)


def init_device(config):
    """RecBole's ``_init_device`` without its two faults: it ignored ``device`` (so
    ``--device=cpu`` trained on CUDA anyway) and hard-coded NCCL, so multi-process
    training could not run on CPU. Here CPU processes use gloo."""
    cfg = config.final_config_dict
    gpu_id = cfg["gpu_id"]
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
    cfg["gpu_id"] = gpu_id
    if gpu_id:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    requested = config.external_config_dict.get("device")
    if requested is not None:
        try:
            device = torch.device(str(requested))
        except RuntimeError as e:
            raise ValueError(
                f"config key 'device' = {requested!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'"
            ) from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={requested!r} was requested but CUDA is not available "
                "on this machine; use --device=cpu or leave 'device' unset"
            )
    else:
        device = torch.device("cuda" if gpu_id and torch.cuda.is_available() else "cpu")

    if "local_rank" not in cfg:
        cfg.update(single_spec=True, local_rank=0, device=device)
        return

    # Multi-process (RecBole's DDP path): NCCL needs CUDA, gloo runs on CPU.
    rank = cfg["local_rank"]
    use_cuda = device.type == "cuda"
    if use_cuda and len(gpu_id.split(",")) < cfg["nproc"]:
        raise ValueError(f"nproc={cfg['nproc']} processes need as many GPUs in gpu_id, got {gpu_id!r}")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=rank + cfg["offset"],
            world_size=cfg["world_size"],
            init_method=f"tcp://{cfg['ip']}:{cfg['port']}",
        )
    if use_cuda:
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    cfg.update(device=device, single_spec=False)
    if rank != 0:
        cfg.update(state="error", show_progress=False, verbose=False)


def decode_config(data):
    """A RecBole ``Config`` rebuilt from a checkpoint's plain-data config.

    The config is not re-parsed (no command line, no yaml): it is exactly the
    trained one, except that the device falls back to CPU where CUDA is missing
    and the data path is looked up again when the saved one is gone.
    """
    enums = enum_types()
    final = {k: decode_value(v, enums) for k, v in data.items()}
    config = Config.__new__(Config)
    config._init_parameters_category()
    config.yaml_loader = config._build_yaml_loader()
    config.file_config_dict = config.variable_config_dict = config.cmd_config_dict = {}
    config.external_config_dict = config.internal_config_dict = {}
    config.model, config.dataset = final["model"], final["dataset"]
    config.model_class = get_model(config.model)
    # A checkpoint is loaded into one process, whatever wrote it.
    final.update(single_spec=True, local_rank=0)
    if not os.path.isdir(final["data_path"]):
        root = os.path.dirname(os.path.normpath(final["data_path"]))
        final["data_path"] = resolve_data_path(root, config.dataset)
    config.final_config_dict = final
    return config
