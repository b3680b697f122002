"""Plugin models as first-class RecBole models.

RecBole 1.2.1 has no model registry: ``get_model`` imports
``recbole.model.<kind>.<name.lower()>`` and reads defaults only from its own
``properties/`` folder. The plugin therefore

* keeps its own registry (name -> class, optional trainer) and puts it in front
  of RecBole's ``get_model``/``get_trainer`` everywhere RecBole imported them;
* lets a plugin model shadow a built-in of the same name (our ``SASRec``), the
  built-in staying reachable as ``RecBole`` + its name (``RecBoleSASRec``);
* layers ``configs/model/<Name>.yaml``, ``configs/dataset/<dataset>.yaml`` and
  ``configs/model/<Name>/<dataset>.yaml`` into RecBole's *internal* defaults, so
  the user's files, dicts and command line still win;
* looks datasets up in ``<data_path>/<name>/`` first, then the recbole wheel's
  example data (ml-100k), and checks the types of numeric and boolean keys.
"""

import difflib
import importlib
import logging
import os
from dataclasses import dataclass

import recbole

logger = logging.getLogger("masan_recbole")

BUILTIN_PREFIX = "RecBole"
RECBOLE_MODEL_KINDS = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


def _find_configs():
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "configs"), os.path.join(os.path.dirname(here), "configs")):
        if os.path.isdir(os.path.join(candidate, "model")):
            return candidate
    raise RuntimeError(f"masan_recbole: configs/ not found next to {here}; reinstall the package")


CONFIG_DIR = _find_configs()
WHEEL_DATASETS = os.path.join(os.path.dirname(recbole.__file__), "dataset_example")


@dataclass
class Entry:
    cls: type
    trainer: type = None


_MODELS = {}  # registered name or alias -> Entry
_NAMES = {}  # alias -> registered name
_shadow_checked = set()


def register_model(cls, name=None, aliases=(), trainer=None):
    """Make ``cls`` resolvable by ``name`` (default: its class name) in every RecBole entry point.

    ``trainer``: the trainer class for this model; default :class:`masan_recbole.trainer.Trainer`.
    """
    name = name or cls.__name__
    for key in (name, *aliases):
        _MODELS[key] = Entry(cls, trainer)
        _NAMES[key] = name
    return cls


def plugin_models():
    """Registered names of the plugin's models (aliases excluded)."""
    return sorted(set(_NAMES.values()))


def canonical_name(name):
    return _NAMES.get(name, name)


def model_yaml(name):
    path = os.path.join(CONFIG_DIR, "model", f"{canonical_name(name)}.yaml")
    return path if os.path.isfile(path) else None


def _builtin_model(name):
    """RecBole's own model class called ``name``, or None."""
    module_name = name.lower()
    for kind in RECBOLE_MODEL_KINDS:
        path = f"recbole.model.{kind}.{module_name}"
        try:
            if importlib.util.find_spec(path) is None:
                continue
            module = importlib.import_module(path)
        except ImportError:
            continue  # exlib_recommender needs lightgbm/xgboost
        return getattr(module, name, None)
    return None


def _builtin_names():
    names = []
    for kind in RECBOLE_MODEL_KINDS[:4]:
        module = importlib.import_module(f"recbole.model.{kind}")
        names += [n for n, v in vars(module).items() if isinstance(v, type) and hasattr(v, "type")]
    return sorted(set(names))


def get_model(name):
    """The model class for ``name``: plugin models first, then RecBole's built-ins."""
    if not isinstance(name, str):
        raise TypeError(f"model must be a name (str), got {type(name).__name__}")
    if name in _MODELS:
        cls = _MODELS[name].cls
        if name not in _shadow_checked:
            _shadow_checked.add(name)
            if _builtin_model(cls.__name__) is not None:
                logger.info(
                    f"masan_recbole: model '{name}' is the plugin's implementation; "
                    f"RecBole's built-in one is available as '{BUILTIN_PREFIX}{name}'"
                )
        return cls
    builtin = name[len(BUILTIN_PREFIX):] if name.startswith(BUILTIN_PREFIX) else None
    if builtin and builtin in _MODELS:
        cls = _builtin_model(builtin)
        if cls is not None:
            return cls
    cls = _builtin_model(name)
    if cls is not None:
        return cls
    available = plugin_models() + _builtin_names()
    shadows = [f"{BUILTIN_PREFIX}{n}" for n in plugin_models() if _builtin_model(n) is not None]
    close = difflib.get_close_matches(name, available + shadows, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown model '{name}'.{hint} Plugin models: {', '.join(plugin_models())}"
        f" (RecBole's own: {', '.join(shadows)}); RecBole built-ins: {', '.join(available[len(plugin_models()):])}."
    )


def get_trainer(model_type, model_name):
    """The plugin trainer registered for ``model_name``, else RecBole's choice."""
    entry = _MODELS.get(model_name)
    if entry is None:
        return _recbole_get_trainer(model_type, model_name)
    if entry.trainer is not None:
        return entry.trainer
    from masan_recbole.trainer import Trainer

    return Trainer


def resolve_data_path(root, dataset):
    """Folder of ``dataset``: ``<root>/<dataset>`` if present, else the wheel's copy (ml-100k)."""
    local = os.path.join(root, dataset)
    if os.path.isdir(local):
        return local
    wheel = os.path.join(WHEEL_DATASETS, dataset)
    return wheel if os.path.isdir(wheel) else local


def _yaml_layers(model, dataset):
    """Default files, lowest priority first; plugin-wide and model files only for plugin models."""
    dataset_yaml = os.path.join(CONFIG_DIR, "dataset", f"{dataset}.yaml")
    if model not in _MODELS:
        return [dataset_yaml]
    name = canonical_name(model)
    return [
        os.path.join(CONFIG_DIR, "overall.yaml"),
        os.path.join(CONFIG_DIR, "model", f"{name}.yaml"),
        dataset_yaml,
        os.path.join(CONFIG_DIR, "model", name, f"{dataset}.yaml"),
    ]


def _check_types(config):
    """Numeric and boolean keys set by the user must keep their default's type."""
    for key, value in config.external_config_dict.items():
        default = config.internal_config_dict.get(key)
        if default is None or value is None:
            continue
        if isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, (int, float)):
            ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        else:
            continue
        if not ok:
            raise TypeError(
                f"config key '{key}' must be {expected} (default {default!r}), "
                f"got {value!r} ({type(value).__name__}). Fix it in your config file, "
                f"config_dict or command line (e.g. --{key}={default!r})."
            )


def _load_time_field_for_ordering(config):
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


def _patch_config():
    from recbole.config import Config
    from recbole.utils import ModelType

    original_load_internal = Config._load_internal_config_dict
    original_set_defaults = Config._set_default_parameters

    def _load_internal_config_dict(self, model, model_class, dataset):
        # A shadowed built-in keeps RecBole's own defaults (properties/model/<name>.yaml).
        builtin = model[len(BUILTIN_PREFIX):] if model.startswith(BUILTIN_PREFIX) else None
        recbole_name = builtin if builtin and builtin in _MODELS else model
        original_load_internal(self, recbole_name, model_class, dataset)
        for path in _yaml_layers(model, dataset):
            if os.path.isfile(path):
                self._update_internal_config_dict(path)

    def _set_default_parameters(self):
        cfg, user = self.final_config_dict, self.external_config_dict
        _check_types(self)
        root = cfg["data_path"]
        # RecBole 1.2.1 insists on negatives being switched off for CE and
        # leaves them to the user for BPR; default both where the user is silent.
        # SSM and all-position training draw their negatives in the model.
        if self.model_class.type == ModelType.SEQUENTIAL and "train_neg_sample_args" not in user:
            if cfg.get("loss_type") in ("CE", "SSM") or cfg.get("train_mode") == "all_positions":
                cfg["train_neg_sample_args"] = None
            elif cfg.get("loss_type") == "BPR" and cfg.get("train_neg_sample_args") is None:
                cfg["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 1}
        original_set_defaults(self)
        cfg["data_path"] = resolve_data_path(root, self.dataset)
        _load_time_field_for_ordering(self)

    Config._load_internal_config_dict = _load_internal_config_dict
    Config._set_default_parameters = _set_default_parameters


_recbole_get_trainer = None


def install():
    """Put the registry in front of RecBole's model and trainer lookup (idempotent)."""
    global _recbole_get_trainer
    from recbole import utils
    from recbole.config import configurator
    from recbole.quick_start import quick_start
    from recbole.utils import utils as utils_module

    if _recbole_get_trainer is not None:
        return
    _recbole_get_trainer = utils_module.get_trainer
    for module in (utils, utils_module, configurator, quick_start):
        if hasattr(module, "get_model"):
            module.get_model = get_model
        if hasattr(module, "get_trainer"):
            module.get_trainer = get_trainer
    # RecBole's `run(nproc>1)` spawns children that import only recbole; ours
    # spawns through a function of this package, so children register the models.
    import recbole.quick_start
    from masan_recbole.quick_start import run

    recbole.quick_start.run = quick_start.run = run
    _patch_config()
