"""Fixes for RecBole 1.2.1 on today's numpy, pandas, torch, ray and hyperopt.

Nothing here adds a feature; each function undoes one incompatibility (docs/platform.md
explains each). These run before anything imports ``recbole.quick_start``, which imports
ray, which needs numpy's removed names.
"""

import ctypes
import os
import sys
import types
import urllib.parse
import warnings

import numpy as np
import torch

from masan_recbole.patches.tools import replace, wrap

# numpy names RecBole and ray 2.6.3 still use; set only where numpy lacks them.
NUMPY_ALIASES = {
    "bool8": np.bool_,
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
}


def _set_numpy_aliases():
    for name, value in NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def numpy_aliases():
    _set_numpy_aliases()
    from recbole.config import Config

    def compatibility_settings(self):
        """RecBole's version assigns np.float etc. in a way numpy 2 rejects; a config that is
        unpickled or rebuilt never runs ``__init__`` at all, so the names are set here too."""
        _set_numpy_aliases()

    replace("numpy_aliases", Config, "compatibility_settings", compatibility_settings)


def pandas_below_3():
    import pandas as pd

    if int(pd.__version__.split(".")[0]) >= 3:
        raise ImportError(
            f"masan_recbole: pandas {pd.__version__} is installed, but RecBole 1.2.1 silently "
            "corrupts data under pandas 3: missing values are never filled (copy-on-write makes "
            "`df[col].fillna(inplace=True)` a no-op) and `Series.agg(len)` returns the column "
            "length instead of each sequence's, so token_seq fields and session lengths are wrong. "
            'Install a supported pandas: pip install "pandas>=2,<3"'
        )


def ray_optional():
    try:
        import ray.tune  # noqa: F401
    except ImportError:
        tune = types.ModuleType("ray.tune")
        tune.report = lambda **metrics: None
        ray = types.ModuleType("ray")
        ray.tune = tune
        sys.modules["ray"], sys.modules["ray.tune"] = ray, tune


def quiet_known_warnings():
    # pandas 2.x deprecations RecBole triggers, its CUDA-only GradScaler call, and ray's
    # pkg_resources notice. Only warnings raised from these modules are hidden.
    for category, module in [
        (FutureWarning, r"recbole\."),
        (DeprecationWarning, r"recbole\."),
        (UserWarning, r"recbole\.data\."),
        (UserWarning, r"ray\."),
        (DeprecationWarning, r"thop\."),
    ]:
        warnings.filterwarnings("ignore", category=category, module=module)
    # RecBole's Interaction.sort hands a tensor to np.argsort; numpy warns about torch's
    # __array_wrap__ signature (raised from numpy's module, so matched by message).
    warnings.filterwarnings("ignore", message="__array_wrap__ must accept context", category=DeprecationWarning)


def _in_ray_session():
    try:
        from ray.air._internal.session import _get_session
    except ImportError:  # no ray, or one without sessions
        return False
    return _get_session(warn=False) is not None


class _TuneReportingInSessionsOnly:
    """ray.tune whose ``report`` does nothing outside a Ray Tune trial: RecBole's
    objective_function reports every hyperopt trial, and ray then warns with a stack trace."""

    def __init__(self, tune):
        self._tune = tune

    def __getattr__(self, name):
        return getattr(self._tune, name)

    def report(self, **metrics):
        if _in_ray_session():
            return self._tune.report(**metrics)
        return None


def ray_report_in_sessions_only():
    from recbole.quick_start import quick_start

    replace("ray_report_in_sessions_only", quick_start, "tune", _TuneReportingInSessionsOnly(quick_start.tune))


class _RandomWithGenerator:
    """numpy.random, except that ``RandomState(seed)`` returns a ``Generator``."""

    def __getattr__(self, name):
        return getattr(np.random, name)

    @staticmethod
    def RandomState(seed=None):
        return np.random.default_rng(seed)


class _NumpyWithGenerator:
    random = _RandomWithGenerator()

    def __getattr__(self, name):
        return getattr(np, name)


def hyperopt_exhaustive_rng():
    import hyperopt
    from recbole.trainer import hyper_tuning

    version = tuple(int(p) for p in hyperopt.__version__.split(".")[:3] if p.isdigit())
    if version >= (0, 2, 7):  # hyperopt expects a Generator; RecBole's exhaustive search hands it a RandomState
        replace("hyperopt_exhaustive_rng", hyper_tuning, "np", _NumpyWithGenerator())


def no_anomaly_detection():
    # recbole/model/sequential_recommender/sine.py switches autograd's anomaly detection
    # on for the whole process when it is imported, which happens as soon as any sequential
    # model is looked up: every backward pass then scans every gradient for NaN (about a
    # third of a SASRec training step on CPU). Import it now, once, and switch it back off.
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(False)


def _ensure_dir(dir_path):
    """RecBole's ensure_dir checks, then creates: two DDP ranks starting together both see
    no ./log and one dies with FileExistsError."""
    os.makedirs(dir_path, exist_ok=True)


ENSURE_DIR_MODULES = ("recbole.utils.utils", "recbole.utils", "recbole.utils.logger", "recbole.data.utils",
                      "recbole.data.dataset.dataset", "recbole.trainer.trainer")


def race_free_dirs():
    import importlib

    for name in ENSURE_DIR_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            replace("race_free_dirs", module, "ensure_dir", _ensure_dir)


def _is_directory(original, uri):
    """ray's ``is_directory``, whose local case needs no pyarrow: for a local path pyarrow
    reports a missing one as "not a file", hence a directory, and so does this."""
    parsed = urllib.parse.urlparse(os.fspath(uri))
    if parsed.scheme not in ("", "file"):
        return original(uri)  # cloud storage: pyarrow's job (ray names it when it is missing)
    return not os.path.isfile(parsed.path if parsed.scheme else os.fspath(uri))


def ray_local_results_without_pyarrow():
    # tune.run ends by reading its experiment folder back (ExperimentAnalysis) through
    # pyarrow.fs even when the folder is local; pyarrow comes with ray[tune], not with the
    # plain ray that RecBole requires, so every search failed after all its trials had run.
    # (With pyarrow installed the local answer is the same, so the patch applies either way.)
    try:
        from ray.tune.analysis import experiment_analysis
    except ImportError:  # no ray: the ray_optional stand-in has no ray.tune.analysis
        return
    if not hasattr(experiment_analysis, "is_directory"):  # current ray reads local folders itself
        return
    wrap("ray_local_results_without_pyarrow", experiment_analysis, "is_directory", _is_directory)


def _trial_oom_fails_the_trial(original, manager, tracked_actor_task, exception):
    """Ray kills a worker when its node runs low on memory and reports an OutOfMemoryError,
    which the actor manager of ray 2.6.3 (and of 2.60) does not expect (it knows actor and task errors) and
    answers by ending the whole search. The worker died: handled as the actor error it is,
    the trial fails with Ray's message and the other trials go on."""
    from ray.exceptions import OutOfMemoryError, RayActorError

    if isinstance(exception, OutOfMemoryError):
        died = RayActorError()
        base = getattr(died, "base_error_msg", None) or "The actor died unexpectedly before finishing this task."
        died.error_msg = f"{base} {exception}"
        exception = died
    return original(manager, tracked_actor_task, exception)


def ray_trial_oom_fails_the_trial():
    try:
        from ray.air.execution._internal.actor_manager import RayActorManager
    except ImportError:  # no ray (the ray_optional stand-in), or a ray without this actor manager
        return
    if not hasattr(RayActorManager, "_actor_task_failed"):
        return
    wrap("ray_trial_oom_fails_the_trial", RayActorManager, "_actor_task_failed", _trial_oom_fails_the_trial)


def keep_freed_memory():
    """Keep freed heap memory in the process (glibc only; ``MASAN_MALLOC_TUNING=0`` opts out).

    By default glibc serves blocks above a (self-adjusting, at most 32 MiB) threshold by mmap
    and trims the heap top above another, so the [B,L,d]-sized activations of every training
    step are unmapped when freed and faulted and zeroed again by the kernel at the next step.
    Serving every block from the heap and never trimming it keeps that memory mapped after the
    first few steps, at the price of a higher resident size (about 0.5 GB at batch 2048, L 50)."""
    if not sys.platform.startswith("linux") or os.environ.get("MASAN_MALLOC_TUNING", "1") == "0":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    # No mmap at all: a block at or above the mmap threshold (at most 32 MiB) is mmapped whenever
    # the heap top lacks room for it, and unmapped when freed, whatever the other settings say.
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)  # never give the heap top back
    libc.mallopt(m_top_pad, 64 << 20)  # grow the heap in large steps


def _dropout_from_uniform_draws(original, input, p=0.5, training=True, inplace=False):
    """torch's CPU dropout draws its mask with ``bernoulli_``, one double-precision draw per element,
    about four times the cost of ``torch.rand_like`` (pytorch/pytorch#138199); that was a sixth of a
    LightSANs or ASRec training step on CPU. The same mask from uniform draws: an element is kept
    where u >= p (probability 1 - p) and scaled by 1 / (1 - p). The draws come from torch's default
    generator, as torch's do, so seeding and the checkpoints' random state cover them. Other
    devices, p of 0 or 1, in-place calls and evaluation go to torch's dropout."""
    if (training and not inplace and 0.0 < p < 1.0 and input.device.type == "cpu" and input.is_floating_point()
            and not torch.overrides.has_torch_function_unary(input)):
        # float32 draws whatever the input's type: bf16 draws would be too coarse near p
        keep = torch.rand_like(input, dtype=torch.float32) >= p
        return input * keep * (1.0 / (1.0 - p))
    return original(input, p, training, inplace)


def fast_cpu_dropout():
    """``torch.nn.functional.dropout`` (and so every ``nn.Dropout``) draws its CPU masks from
    uniform draws; ``MASAN_FAST_DROPOUT=0`` opts out."""
    if os.environ.get("MASAN_FAST_DROPOUT", "1") == "0":
        return
    wrap("fast_cpu_dropout", torch.nn.functional, "dropout", _dropout_from_uniform_draws)
    # TorchScript cannot compile the wrapper: a scripted module calls it as Python (such a module
    # cannot be saved with torch.jit.save; MASAN_FAST_DROPOUT=0 gives torch's scriptable dropout)
    torch.jit.ignore(torch.nn.functional.dropout)


def cpu_dropout():
    """Which dropout CPU training draws its masks with, for result files: "uniform draws"
    (fast_cpu_dropout) or "torch" (bernoulli_)."""
    from masan_recbole.patches.tools import patched_by

    return "uniform draws" if patched_by(torch.nn.functional, "dropout") == "fast_cpu_dropout" else "torch"



def _dok_update(matrix, entries):
    """``dok_matrix._update`` as scipy before 1.15 had it: set many entries at once from a dict of
    ``(row, col) -> value`` (RecBole's graph models build their adjacency matrix with it)."""
    store = matrix._dict
    for (row, col), value in entries.items():
        key = (int(row), int(col))
        if value:
            store[key] = matrix.dtype.type(value)
        else:
            store.pop(key, None)


def scipy_dok_update():
    import scipy.sparse as sp

    for cls in (sp.dok_matrix, getattr(sp, "dok_array", None)):
        if cls is not None and not hasattr(cls, "_update") and hasattr(cls((1, 1)), "_dict"):
            replace("scipy_dok_update", cls, "_update", _dok_update)
