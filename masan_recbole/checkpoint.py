"""Checkpoints that load with ``torch.load(weights_only=True)``.

RecBole 1.2.1 pickles its whole ``Config`` (classes, enums, ``torch.device``)
into every checkpoint, which torch >= 2.6 refuses to load by default, and which
could run arbitrary code if loaded with ``weights_only=False``. Here the config is
stored as plain data (str/int/float/bool/None, lists, dicts), with two tagged
forms for ``torch.device`` and RecBole's enums, so the whole file is tensors and
plain data. Files are written atomically: a kill during a save leaves the previous
file intact, and each training run gets its own file name (:func:`run_file`).
"""

import os
import pickle
import random
import secrets
import zipfile
from enum import Enum

import numpy as np
import torch
from recbole.utils import enum_type

from masan_recbole.files import write_atomic

FORMAT = "masan_recbole.checkpoint.v1"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read safely."""


def enum_types():
    """RecBole's enum classes by name (for decoding configs)."""
    return {
        cls.__name__: cls
        for cls in vars(enum_type).values()
        if isinstance(cls, type) and issubclass(cls, Enum) and cls is not Enum
    }


def _encode(value, where):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, Enum):
        return {"__enum__": type(value).__name__, "name": value.name}
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CheckpointError(
        f"config value {where} = {value!r} ({type(value).__name__}) cannot be stored "
        "as plain data in a checkpoint; use a number, string, list or dict"
    )


def decode_value(value, enums):
    """The inverse of :func:`_encode` for one config value."""
    if isinstance(value, dict):
        if set(value) == {"__device__"}:
            device = torch.device(value["__device__"])
            if device.type == "cuda" and not torch.cuda.is_available():
                device = torch.device("cpu")
            return device
        if set(value) == {"__enum__", "name"}:
            if value["__enum__"] not in enums:
                raise CheckpointError(f"unknown enum {value['__enum__']} in checkpoint config")
            return enums[value["__enum__"]][value["name"]]
        return {k: decode_value(v, enums) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_value(v, enums) for v in value]
    return value


def encode_config(config):
    """A RecBole ``Config`` (or dict) as plain data."""
    items = config.final_config_dict if hasattr(config, "final_config_dict") else config
    return {key: _encode(value, key) for key, value in items.items()}


def plain_metrics(result):
    """An evaluation result (OrderedDict of numpy floats) as a plain dict."""
    if result is None:
        return None
    return {str(k): float(v) for k, v in result.items()}


def rng_state(generator=None):
    """Every random state training draws from, as tensors and plain data: Python's,
    numpy's (RecBole's negative sampler), torch's (dropout, init) and the train
    dataloader's own shuffling ``generator``."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["dataloader"] = generator.get_state()
    return state


def set_rng_state(state, generator=None):
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generator is not None and "dataloader" in state:
        generator.set_state(state["dataloader"].cpu())


def _check_plain(value, where):
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(v, f"{where}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"checkpoint entry {where} is a {type(value).__name__}; only tensors and plain "
        "data (numbers, strings, lists, dicts) can be saved safely"
    )


def run_file(path, distributed=False):
    """RecBole's ``<model>-<local time, to the second>.pth`` with a random tag before the suffix.

    Two runs started in the same second in one checkpoint_dir would otherwise share the
    file, and each would test whatever the other saved last. In a DDP run every rank
    takes rank 0's tag, since all of them load the best model for the test."""
    tag = [secrets.token_hex(3)]
    if distributed:
        torch.distributed.broadcast_object_list(tag, src=0)
    stem, ext = os.path.splitext(path)
    return f"{stem}-{tag[0]}{ext}"


def save_checkpoint(state, path):
    """Write ``state`` (a dict of tensors and plain data) to ``path`` atomically."""
    state = {"format": FORMAT, **state}
    _check_plain(state, "checkpoint")
    with write_atomic(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint with ``weights_only=True``; refuse anything else clearly."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).strip().splitlines()
        reason = next((line for line in detail if "Unsupported" in line), detail[0] if detail else "")
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled Python objects, not only tensors "
            f"and plain data ({reason.strip()}). Loading it could run arbitrary code. "
            "Checkpoints written with masan_recbole imported are safe; a checkpoint from "
            "plain RecBole must be re-trained with `import masan_recbole` first."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (truncated or corrupt?): {e}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a masan_recbole checkpoint (expected format {FORMAT!r}, "
            f"found {found}). Train it with `import masan_recbole` or run_recbole.py."
        )
    return state
