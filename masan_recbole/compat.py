"""RecBole 1.2.1 on today's stack: every runtime fix the plugin applies, in one place.

RecBole 1.2.1 was released for numpy 1.x, pandas 1/2 and torch < 2.6. Importing
``masan_recbole`` calls :func:`apply_all`, which applies the fixes below to the
installed RecBole in memory (nothing in site-packages is edited). Each fix is a
function of its own, is idempotent, and has a test in ``tests/test_compat.py``
that fails without it. Numbers refer to ``shared/design/PLATFORM.md`` §2.

Fixes done by the install recipe, not by code:

* #1 ``setuptools>=77.0.3,<81`` is a dependency: ray 2.6.3 (imported by
  ``recbole.quick_start``) and hyperopt import ``pkg_resources``, which
  setuptools 81 removed.
* #6 ``pandas>=2,<3`` (see ``pandas_below_3`` below).

Fixes done in code (``apply_all`` order):

* ``numpy_aliases`` (#2, #3, #4): numpy 2 removed ``np.float_``, ``np.bool8`` ...,
  and RecBole uses ``np.float``/``np.bool``/``np.long`` everywhere, relying on
  ``Config.__init__`` to create them; an unpickled or rebuilt config never runs it.
* ``ray_optional`` (#11): ``recbole.quick_start`` imports ray at import time only
  for ``tune.report``; without ray a no-op stand-in is installed.
* ``pandas_below_3`` (#6): under pandas 3, RecBole 1.2.1 corrupts data without
  an error: copy-on-write makes ``df[col].fillna(..., inplace=True)`` a no-op
  (missing values stay NaN), and ``Series.agg(len)`` now returns the column length
  instead of each row's (token_seq remapping breaks; a benchmark file's
  ``item_length`` becomes the row count). pandas is pinned below 3 and importing
  the plugin under pandas 3 stops with the reason.
* ``hyperopt_exhaustive_rng`` (#10): hyperopt >= 0.2.7 expects a
  ``numpy.random.Generator``; RecBole's exhaustive search hands it a ``RandomState``.
* ``no_anomaly_detection``: importing RecBole's sequential models (its SINE
  module) turns on autograd anomaly detection process-wide, slowing every
  backward pass; it is switched back off.
* ``device_selection`` (PLATFORM.md "Device handling", §4): RecBole overwrites
  ``device`` (so ``--device=cpu`` is ignored on a CUDA machine) and hard-codes
  NCCL for multi-process runs; CPU runs use gloo.
* ``ddp_without_device_ids``: DDP on CPU must not be given ``device_ids``.
* ``race_free_dirs``: RecBole creates ``log/`` and ``saved/`` with a check-then-create
  that two ranks starting together race on (``FileExistsError``).
* ``safe_checkpoints`` (#5): torch >= 2.6 loads with ``weights_only=True`` and
  refuses RecBole's pickled ``Config``. Checkpoints now hold plain data only
  (see :mod:`masan_recbole.checkpoint`), are written atomically, and the trainer
  reloads them with ``weights_only=True``; ``load_data_and_model`` is replaced.
  Resuming (``checkpoint_file`` key, or ``trainer.resume_checkpoint``) restores
  model, optimiser, scheduler, epoch, best score and every random state, so a
  resumed run ends exactly where an uninterrupted one does.
* ``quiet_known_warnings``: hides the harmless warnings (#7-#9) RecBole and ray
  raise on this stack, and only those.
* ``clear_errors``: a NaN loss, a missing dataset (RecBole would try to download
  it) and malformed atomic files stop with a message that names the problem.

The model registry (#12: unknown names, plugin names) lives in
:mod:`masan_recbole.registry`.
"""

import functools
import logging
import os
import sys
import types

import numpy as np

_applied = set()


def _once(fn):
    @functools.wraps(fn)
    def wrapper():
        if fn.__name__ not in _applied:
            fn()
            _applied.add(fn.__name__)

    return wrapper


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


@_once
def numpy_aliases():
    _set_numpy_aliases()
    # Config.__init__ runs its own alias code, which fails on numpy 2.
    from recbole.config import Config

    Config.compatibility_settings = lambda self: _set_numpy_aliases()


@_once
def ray_optional():
    try:
        import ray.tune  # noqa: F401
    except ImportError:
        tune = types.ModuleType("ray.tune")
        tune.report = lambda **metrics: None
        ray = types.ModuleType("ray")
        ray.tune = tune
        sys.modules["ray"], sys.modules["ray.tune"] = ray, tune


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


@_once
def hyperopt_exhaustive_rng():
    import hyperopt
    from recbole.trainer import hyper_tuning

    version = tuple(int(p) for p in hyperopt.__version__.split(".")[:3] if p.isdigit())
    if version < (0, 2, 7):
        return

    class _RandomWithGenerator:
        def __getattr__(self, name):
            return getattr(np.random, name)

        @staticmethod
        def RandomState(seed=None):
            return np.random.default_rng(seed)

    class _NumpyWithGenerator:
        random = _RandomWithGenerator()

        def __getattr__(self, name):
            return getattr(np, name)

    hyper_tuning.np = _NumpyWithGenerator()


@_once
def no_anomaly_detection():
    import torch

    # recbole/model/sequential_recommender/sine.py switches autograd's anomaly
    # detection on for the whole process when it is imported, which happens as
    # soon as any sequential model is looked up: every backward pass then scans
    # every gradient for NaN (about a third of a SASRec training step on CPU).
    import recbole.model.sequential_recommender  # noqa: F401  (runs that import now, once)

    torch.autograd.set_detect_anomaly(False)


@_once
def device_selection():
    import torch
    from recbole.config import Config

    def _init_device(self):
        cfg = self.final_config_dict
        gpu_id = cfg["gpu_id"]
        gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
        cfg["gpu_id"] = gpu_id
        if gpu_id:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
        requested = self.external_config_dict.get("device")
        if requested is not None:
            try:
                device = torch.device(str(requested))
            except RuntimeError as e:
                raise ValueError(
                    f"config key 'device' = {requested!r} is not a torch device; "
                    "use 'cpu', 'cuda' or 'cuda:N'"
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
            raise ValueError(
                f"nproc={cfg['nproc']} processes need as many GPUs in gpu_id, got {gpu_id!r}"
            )
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

    Config._init_device = _init_device


@_once
def ddp_without_device_ids():
    from torch.nn.parallel import DistributedDataParallel
    from recbole.trainer.trainer import AbstractTrainer

    def __init__(self, config, model):
        self.config = config
        self.model = model
        if not config["single_spec"]:
            import torch

            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            on_cuda = config["device"].type == "cuda"
            self.distributed_model = DistributedDataParallel(
                self.model, device_ids=[config["local_rank"]] if on_cuda else None
            )

    AbstractTrainer.__init__ = __init__


@_once
def race_free_dirs():
    import importlib

    # RecBole's ensure_dir checks then creates: two DDP ranks starting together
    # both see no ./log and one dies with FileExistsError.
    def ensure_dir(dir_path):
        os.makedirs(dir_path, exist_ok=True)

    for name in ("recbole.utils.utils", "recbole.utils", "recbole.utils.logger", "recbole.data.utils",
                 "recbole.data.dataset.dataset",
                 "recbole.trainer.trainer"):
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            module.ensure_dir = ensure_dir


@_once
def safe_checkpoints():
    import torch
    from recbole import quick_start
    from recbole.quick_start import quick_start as quick_start_module
    from recbole.trainer.trainer import Trainer
    from recbole.utils import set_color

    from masan_recbole import checkpoint
    from masan_recbole.quick_start import load_data_and_model

    original_init = Trainer.__init__

    def __init__(self, config, model):
        original_init(self, config, model)
        self.saved_model_file = checkpoint.run_file(self.saved_model_file, distributed=not config["single_spec"])

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": checkpoint.encode_config(self.config),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": checkpoint.plain_metrics(self.best_valid_result),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        state["rng"] = checkpoint.rng_state(getattr(self, "train_generator", None))
        checkpoint.save_checkpoint(state, path)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {path}")

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        state = checkpoint.load_checkpoint(resume_file, map_location=self.device)
        saved_model = state["config"].get("model")
        if saved_model != self.config["model"]:
            raise checkpoint.CheckpointError(
                f"cannot resume {self.config['model']} from {resume_file}: it was written "
                f"by model {saved_model}. Resume with --model={saved_model}."
            )
        self.saved_model_file = resume_file
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state.get("best_valid_result")
        self.model.load_state_dict(state["state_dict"])
        self.model.load_other_parameter(state.get("other_parameter"))
        self.optimizer.load_state_dict(state["optimizer"])
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        self.resumed_from = resume_file
        self.resumed_rng = state.get("rng")  # applied when fit() has the dataloader
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    original_fit = Trainer.fit

    def fit(self, train_data, *args, **kwargs):
        # `checkpoint_file` (config key or --checkpoint_file=...) resumes any entry point.
        resume_from = self.config["checkpoint_file"]
        if resume_from and getattr(self, "resumed_from", None) is None:
            self.resume_checkpoint(resume_from)
        self.train_generator = getattr(train_data, "generator", None)
        if getattr(self, "resumed_rng", None):
            # Training goes on exactly as if it had never stopped.
            checkpoint.set_rng_state(self.resumed_rng, self.train_generator)
        return original_fit(self, train_data, *args, **kwargs)

    original_evaluate = Trainer.evaluate

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            path = model_file or self.saved_model_file
            if not self.config["single_spec"]:
                torch.distributed.barrier()  # rank 0 may still be writing it
            state = checkpoint.load_checkpoint(path, map_location=self.device)
            self.model.load_state_dict(state["state_dict"])
            self.model.load_other_parameter(state.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {path}")
        return original_evaluate(
            self, eval_data, load_best_model=False, show_progress=show_progress
        )

    Trainer.__init__ = __init__
    Trainer._save_checkpoint = _save_checkpoint
    Trainer.resume_checkpoint = resume_checkpoint
    Trainer.fit = fit
    Trainer.evaluate = evaluate
    quick_start.load_data_and_model = load_data_and_model
    quick_start_module.load_data_and_model = load_data_and_model


@_once
def clear_errors():
    import torch
    from recbole.data.dataset import dataset as dataset_module
    from recbole.trainer.trainer import Trainer

    from masan_recbole.atomic import check_atomic_file

    def _check_nan(self, loss):
        if torch.isnan(loss):
            raise ValueError(
                f"Training loss is NaN ({self.config['model']} on {self.config['dataset']}, "
                f"learning_rate={self.config['learning_rate']}). Lower learning_rate, set "
                "clip_grad_norm (e.g. {'max_norm': 5}) or check the input data for NaN values."
            )

    Trainer._check_nan = _check_nan

    def _download(self):
        raise FileNotFoundError(
            f"Dataset '{self.dataset_name}' not found: expected RecBole atomic files in "
            f"{os.path.abspath(self.dataset_path)} (at least {self.dataset_name}.inter). "
            f"Put them there (see dataset/README.md) or set data_path to the folder that "
            f"contains '{self.dataset_name}/'. masan_recbole never downloads data."
        )

    dataset_module.Dataset._download = _download

    original_load_feat = dataset_module.Dataset._load_feat

    def _load_feat(self, filepath, source):
        cfg = self.config
        required = {}
        if str(filepath).endswith(".inter"):
            keys = ["USER_ID_FIELD", "ITEM_ID_FIELD"]
            if (cfg["eval_args"] or {}).get("order") == "TO":
                keys.append("TIME_FIELD")
            required = {cfg[k]: k for k in keys if cfg[k] and _wants_field(cfg, "inter", cfg[k])}
        check_atomic_file(
            filepath,
            field_separator=cfg["field_separator"],
            seq_separator=cfg["seq_separator"],
            encoding=cfg["encoding"],
            required_fields=required,
        )
        return original_load_feat(self, filepath, source)

    dataset_module.Dataset._load_feat = _load_feat


def _wants_field(cfg, suffix, field):
    load_col = cfg["load_col"]
    if not load_col or suffix not in load_col:
        return True
    return field in load_col[suffix]


@_once
def quiet_known_warnings():
    import warnings

    # Harmless under the supported stack (PLATFORM.md #7-#9): pandas 2.x
    # deprecations RecBole triggers, its CUDA-only GradScaler call, and ray's
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


def apply_all():
    pandas_below_3()
    numpy_aliases()
    ray_optional()
    hyperopt_exhaustive_rng()
    no_anomaly_detection()
    device_selection()
    ddp_without_device_ids()
    race_free_dirs()
    safe_checkpoints()
    clear_errors()
    quiet_known_warnings()
    logging.getLogger("masan_recbole").debug("RecBole compatibility fixes applied")
