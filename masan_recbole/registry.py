"""Model name -> class (and trainer): the plugin's models as first-class RecBole models.

RecBole 1.2.1 has no model registry: its ``get_model`` imports
``recbole.model.<kind>.<name.lower()>``. This registry answers first (the patch
``model_registry`` puts :func:`get_model` and :func:`get_trainer` in front of RecBole's),
and a plugin model may shadow a built-in of the same name (our ``SASRec``), the built-in
staying reachable as ``RecBole`` + its name (``RecBoleSASRec``).
"""

import difflib
import importlib
import logging
import os
from dataclasses import dataclass

import recbole

from recbole.utils.utils import get_trainer as recbole_get_trainer

from masan_recbole.trainer import Trainer


BUILTIN_PREFIX = "RecBole"
RECBOLE_MODEL_KINDS = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


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


def _builtin_model(name):
    """RecBole's own model class called ``name``, or None."""
    module_name = name.lower()
    for kind in RECBOLE_MODEL_KINDS:
        path = f"recbole.model.{kind}.{module_name}"
        source = os.path.join(os.path.dirname(recbole.__file__), "model", kind, f"{module_name}.py")
        if not os.path.isfile(source):
            continue
        try:
            module = importlib.import_module(path)
        except ImportError as e:  # exlib_recommender (XGBoost, LightGBM) imports both libraries
            missing = [lib for lib in ("xgboost", "lightgbm") if importlib.util.find_spec(lib) is None]
            missing = missing if kind == "exlib_recommender" and missing else [e.name or str(e)]
            raise ImportError(f"RecBole's {name} needs {' and '.join(missing)}, not installed "
                              f"(RecBole's {kind} imports them): pip install {' '.join(missing)}") from e
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
        _note_shadowing(name)
        return _MODELS[name].cls
    builtin = builtin_name(name)
    if builtin:
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


def _note_shadowing(name):
    """Once per process and name, in RecBole's log: the plugin's model replaces RecBole's model of
    the same name. Said at the first lookup after RecBole's logger is set up (a run's lookup for
    its Config comes before that, the one that builds the model after)."""
    if name in _shadow_checked or not logging.getLogger().handlers:
        return
    _shadow_checked.add(name)
    if _builtin_model(name) is not None:
        logging.getLogger().info(f"masan_recbole: model '{name}' is the plugin's implementation; "
                                 f"RecBole's built-in one is available as '{BUILTIN_PREFIX}{name}'")


def is_plugin_model(name):
    """True for a registered name or alias (RecBole's built-ins are not)."""
    return name in _MODELS


def builtin_name(name):
    """``SASRec`` for ``RecBoleSASRec`` when the plugin shadows ``SASRec``; else None."""
    builtin = name[len(BUILTIN_PREFIX):] if name.startswith(BUILTIN_PREFIX) else None
    return builtin if builtin in _MODELS else None


def get_trainer(model_type, model_name):
    """The plugin trainer registered for ``model_name``, else RecBole's choice."""
    entry = _MODELS.get(model_name)
    if entry is None:
        return recbole_get_trainer(model_type, model_name)
    return entry.trainer or Trainer
