"""Checkpoints that load with ``torch.load(weights_only=True)``.

RecBole 1.2.1 pickles its whole ``Config`` (classes, enums, ``torch.device``)
into every checkpoint, which torch >= 2.6 refuses to load by default, and which
could run arbitrary code if loaded with ``weights_only=False``. Here the config is
stored as plain data (str/int/float/bool/None, lists, dicts), with two tagged
forms for ``torch.device`` and RecBole's enums, so the whole file is tensors and
plain data. Files are written atomically: a kill during a save leaves the previous
file intact, and each training run gets its own file name (:func:`run_file`).
"""

import hashlib
import os
import pickle
import random
import secrets
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
    takes rank 0's whole name (not only its tag: the time in ``path`` is each process's
    own clock, and two ranks may straddle a second), since all of them load the best
    model for the test."""
    stem, ext = os.path.splitext(path)
    name = [f"{stem}-{secrets.token_hex(3)}{ext}"]
    if distributed:
        torch.distributed.broadcast_object_list(name, src=0)
    return name[0]


def content_checksum(state):
    """sha256 over every tensor's bytes and every plain value of ``state`` (its ``checksum``
    entry left out), in key order: flipped bits anywhere in the content change it."""
    digest = hashlib.sha256()

    def feed(value):
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(f"K{key!s}".encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                feed(item)
        else:
            digest.update(f"V{type(value).__name__}:{value!r}".encode())

    feed({k: v for k, v in state.items() if k != "checksum"})
    return digest.hexdigest()


def save_checkpoint(state, path):
    """Write ``state`` (a dict of tensors and plain data) to ``path`` atomically, with the
    checksum of its content."""
    state = {"format": FORMAT, **state}
    _check_plain(state, "checkpoint")
    state["checksum"] = content_checksum(state)
    with write_atomic(path, "wb") as f:
        torch.save(state, f)


def _looks_like_a_torch_file(path):
    """torch.save writes a zip archive (even a truncated one starts with its first entry's
    signature); the legacy format starts with a pickle protocol byte."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint with ``weights_only=True``; refuse anything else clearly."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not _looks_like_a_torch_file(path):
        raise CheckpointError(
            f"{path} is not a torch checkpoint (neither a zip archive nor a pickle): wrong file, "
            "or a copy cut short? Point to a .pth file written by run_recbole.py."
        )
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
    except Exception as e:  # noqa: BLE001  torch's loader fails on corrupt bytes with anything (IndexError, KeyError, ...)
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (truncated or corrupt: {e}); "
            "use another copy, or retrain"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a masan_recbole checkpoint (expected format {FORMAT!r}, "
            f"found {found}). Train it with `import masan_recbole` or run_recbole.py."
        )
    # Files from before checksums were written have none; every file written now has one.
    if "checksum" in state and state["checksum"] != content_checksum(state):
        raise CheckpointError(
            f"{path} is corrupt: its content does not match the checksum written with it "
            "(bytes changed on disk or in a copy); use another copy, or retrain"
        )
    return state


def data_record(dataset):
    """What a checkpoint keeps of its training data: the user and item tokens in id order
    (index = RecBole's internal id; plain strings), and a fingerprint of each atomic file
    the dataset was read from, so a changed or missing file is detected at load."""
    config = dataset.config
    folder = config["data_path"]
    files = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.startswith(f"{dataset.dataset_name}.") and not name.endswith((".tmp", ".pth")):
            files[name] = file_fingerprint(os.path.join(folder, name))
    return {
        "user_field": dataset.uid_field,
        "item_field": dataset.iid_field,
        "user_tokens": [str(t) for t in dataset.field2id_token[dataset.uid_field]] if dataset.uid_field else [],
        "item_tokens": [str(t) for t in dataset.field2id_token[dataset.iid_field]],
        "files": files,
    }


def file_fingerprint(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def check_data(record, data_path, checkpoint_path):
    """Refuse to rebuild a checkpoint's dataset from files that are not the ones it was trained
    on: ids are assigned by file order, so a changed file silently changes what each id means."""
    if not record:
        return  # written before checkpoints kept their data record
    for name, saved in record["files"].items():
        path = os.path.join(data_path, name)
        if not os.path.isfile(path):
            raise CheckpointError(
                f"{checkpoint_path} was trained on {path}, which is gone; put that file back "
                f"(or set data_path to the folder that holds it)"
            )
        now = file_fingerprint(path)
        if now != saved:
            raise CheckpointError(
                f"{path} has changed since {checkpoint_path} was trained ({saved['bytes']} bytes, sha256 "
                f"{saved['sha256'][:12]}... then; {now['bytes']} bytes, {now['sha256'][:12]}... now): ids follow "
                "the file's order, so the model's ids would mean other users and items. Use the file it "
                "was trained on, or retrain."
            )
