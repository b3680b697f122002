"""What every benchmark script records, implemented once: the environment record, timing, peak
memory, config hashing and the writing (and reading) of result files.

Used by benchmarks.fast_training, benchmarks.reproduce, benchmarks.speed_table and
benchmarks.converged. torch and RecBole are imported inside the functions that need them, so
that ``python -m benchmarks.reproduce --help`` and the checks of its input stay quick.

Result files and their schema versions
--------------------------------------
Every result JSON carries a top-level integer ``"schema_version"`` (:func:`write_json` sets it).
A file without the key is version 1; readers go through :func:`read_result` /
:func:`schema_version`, which accept versions 1 to :data:`SCHEMA_VERSION` and refuse newer ones.

Version 1 (no ``schema_version`` key): the files written before this module.
  fast_training: ``versions`` held python and torch only; ``device`` was a description, the GPU's
  name or "cpu (<processor>, <N> threads)"; no ``device_name`` or ``threads``.
  reproduce: already had the full record below.

Version 2: ``schema_version: 2``; every script writes the same environment record
(:func:`environment`):
  ``device``       "cpu" or "cuda" (fast_training: now this, no longer a description);
  ``device_name``  the CPU model (/proc/cpuinfo) or the GPU's name;
  ``threads``      torch's CPU threads;
  ``versions``     python, torch, recbole, masan_recbole, numpy, pandas and git (short commit,
                   "+uncommitted" when tracked files differ from it; null outside a checkout).
  reproduce adds ``settings``: the preset's layers as the jobs received them (``shared``, per
  ``datasets``, per-model ``overrides``), with ``--epochs`` applied; ``preset_config`` stays the
  preset as written. Every other key means what it meant in version 1.
"""

import datetime
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time

SCHEMA_VERSION = 2
BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCHMARKS)


# ---------------------------------------------------------------------------- environment


def git_commit():
    """Short commit of the checkout, with "+uncommitted" when tracked files differ; None without git."""
    git = ["git", "-C", REPO]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+uncommitted" if dirty else "")


def versions():
    import numpy
    import pandas
    import recbole
    import torch

    import masan_recbole

    return {"python": platform.python_version(), "torch": torch.__version__, "recbole": recbole.__version__,
            "masan_recbole": masan_recbole.__version__, "numpy": numpy.__version__, "pandas": pandas.__version__,
            "git": git_commit()}


def device_name(device):
    """The GPU's name for a CUDA device ("cuda", "cuda:0", a torch.device), else the CPU model."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device, threads=None):
    """The record every result file carries: device, its name, CPU threads, versions and how CPU dropout
    draws its masks (patch fast_cpu_dropout: the same distribution as torch's, other masks for a seed)."""
    import torch

    from masan_recbole.patches.platform import cpu_dropout

    return {"device": str(device), "device_name": device_name(device),
            "threads": threads or torch.get_num_threads(), "versions": versions(),
            "cpu_dropout": cpu_dropout()}


def describe_device(record):
    """One phrase for a table header: "cpu (<model>, 2 threads)" or "cuda (<GPU name>)"."""
    if record["device"].startswith("cuda"):
        return f"{record['device']} ({record['device_name']})"
    return f"{record['device']} ({record['device_name']}, {record['threads']} threads)"


def now():
    """Local time with its offset, to the second (when a run started or finished)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- timing and memory


def clock(on_cuda=False):
    """time.perf_counter(), after the queued CUDA kernels have finished when ``on_cuda`` (they run
    asynchronously: without the wait a timing would stop before the work does)."""
    if on_cuda:
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


def current_rss_mb():
    """Resident memory of this process now (Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb():
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def reset_peak_cuda_memory(on_cuda):
    if on_cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_cuda_memory_mb(on_cuda):
    """torch.cuda.max_memory_allocated since the last reset, in MiB; None off CUDA."""
    if not on_cuda:
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


# ---------------------------------------------------------------------------- configs

# Machine-specific keys: left out of the config snapshot and its hash, so the same settings
# hash alike on a laptop and on a GPU server.
MACHINE_KEYS = {"device", "gpu_id", "use_gpu", "data_path", "checkpoint_dir", "local_rank", "single_spec", "nproc",
                "world_size", "offset", "ip", "port", "state", "show_progress", "log_wandb", "wandb_project"}


def portable_config(config):
    """RecBole's final settings as JSON-safe values, without the machine-specific keys."""
    def plain(value):
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)

    return {k: plain(v) for k, v in sorted(config.final_config_dict.items()) if k not in MACHINE_KEYS}


def config_hash(settings):
    """Short sha256 (16 hex digits) of JSON-safe settings, stable across key order."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- one timed training run


def run_model(model_name, dataset_name, config_dict, epochs=None, config_file_list=None):
    """Train ``model_name`` on ``dataset_name`` (RecBole's fit with early stopping), then test the
    best-validation checkpoint. Times every training epoch and every validation (full-sort)
    evaluation with :func:`clock`, and keeps the validation score of each epoch."""
    from masan_recbole.build import build_config, build_run

    config_dict = dict(config_dict) if epochs is None else dict(config_dict, epochs=epochs)
    # stated for every model, RecBole's too: a pair on CUDA then compares the same arithmetic
    config_dict.setdefault("mixed_precision", "auto")
    config = build_config(model_name, dataset_name, config_file_list, config_dict)
    on_cuda = config["device"].type == "cuda"
    reset_peak_cuda_memory(on_cuda)
    rss_start = current_rss_mb()
    start = time.perf_counter()
    built = build_run(config)
    train_data, valid_data, test_data = built.train_data, built.valid_data, built.test_data
    model, trainer = built.model, built.trainer
    data_seconds = time.perf_counter() - start  # loading, splitting and the model's construction

    epoch_seconds, valid_curve = [], []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train_epoch(*args, **kwargs):
        start = clock(on_cuda)
        loss = train_epoch(*args, **kwargs)
        epoch_seconds.append(clock(on_cuda) - start)
        return loss

    def timed_valid_epoch(*args, **kwargs):
        start = clock(on_cuda)
        score, result = valid_epoch(*args, **kwargs)
        # RecBole's epoch number (from 0), as converged.py and RecBole's log number them
        valid_curve.append({"epoch": len(epoch_seconds) - 1, "seconds": clock(on_cuda) - start, "score": float(score),
                            "metrics": {k: float(v) for k, v in result.items()}})
        return score, result

    trainer._train_epoch, trainer._valid_epoch = timed_train_epoch, timed_valid_epoch
    best_valid, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    start = clock(on_cuda)
    test = trainer.evaluate(test_data, load_best_model=True)
    test_seconds = clock(on_cuda) - start
    eval_seconds = [point["seconds"] for point in valid_curve]
    settings = portable_config(config)
    return {
        "train_seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "train_seconds": epoch_seconds,
        "eval_seconds": sum(eval_seconds) / len(eval_seconds) if eval_seconds else None,
        "test_eval_seconds": test_seconds,
        "data_seconds": data_seconds,
        "epochs": len(epoch_seconds),
        "valid_metric": config["valid_metric"],
        "valid_curve": valid_curve,
        "best_valid_score": float(best_valid),
        "best_valid": {k: float(v) for k, v in (best_valid_result or {}).items()},
        "test": {k: float(v) for k, v in test.items()},
        "train_rows": len(train_data._dataset),
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_cuda_memory_mb": peak_cuda_memory_mb(on_cuda),
        "peak_rss_mb": peak_rss_mb(),
        "rss_start_mb": rss_start,
        "device": str(config["device"]),
        "config_hash": config_hash(settings),
        "config": settings,
    }


# ---------------------------------------------------------------------------- result files


def mean_half_range(values):
    """Seeds' values as "mean ± half their range" (the noise; "0.0631" for one value)."""
    mean = sum(values) / len(values)
    return f"{mean:.4f}" + (f" ± {(max(values) - min(values)) / 2:.4f}" if len(values) > 1 else "")


def write_json(path, data, indent=2):
    """Write a result file atomically, ``schema_version`` first (this module's version). ``indent="top"``
    puts each top-level field on a line of its own: per-user lists of tens of thousands of values stay
    one line each instead of one line per value (a Diginetica run's file: 1.6 MB indented, under 1 MB so)."""
    record = {"schema_version": SCHEMA_VERSION, **{k: v for k, v in data.items() if k != "schema_version"}}
    if indent == "top":
        text = "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in record.items()) + "\n}"
    else:
        text = json.dumps(record, indent=indent)
    write_text(path, text)


def write_text(path, text):
    """Write ``text`` atomically (masan_recbole.files): a reader sees the old file or the new one."""
    from masan_recbole.files import write_text_atomic

    write_text_atomic(path, text)


def write_figure(path, figure, dpi=110):
    """Save a matplotlib figure as PNG, atomically."""
    from masan_recbole.files import write_atomic

    with write_atomic(path, "wb") as f:
        figure.savefig(f, format="png", dpi=dpi)


def schema_version(data, path="result file"):
    """The schema version of a loaded result file: 1 without the key; newer than this module's is refused."""
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version!r}, but this checkout reads versions 1 to "
                         f"{SCHEMA_VERSION} (see benchmarks/harness.py); update the checkout to read it")
    return version


def read_result(path):
    """Load a result JSON of any version this module knows (see :func:`schema_version`)."""
    with open(path) as f:
        data = json.load(f)
    schema_version(data, path)
    return data
