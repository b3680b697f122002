"""Every change the plugin makes to RecBole's, torch's or pandas' behaviour, in one inventory.

``import masan_recbole`` calls :func:`apply`, which applies each :class:`Patch` of
:data:`INVENTORY` once, in order; :func:`applied` lists what is applied, and
``python -m masan_recbole.patches`` prints the inventory (name, target, why, the test that
covers it, when it can go). A patch wraps what it changes, or replaces it where the original
cannot be called; either way the original stays reachable as ``__wrapped__``
(:mod:`masan_recbole.patches.tools`). Patches change behaviour in memory only; nothing in
site-packages is edited. The stack fixes live in :mod:`~masan_recbole.patches.platform`,
the installation of the plugin's features in :mod:`~masan_recbole.patches.plugin`; the
features themselves live in the registry, config, trainer, atomic and data modules.

Two fixes are made by the install recipe, not by code: ``setuptools>=77.0.3,<81`` (ray
2.6.3 and hyperopt import ``pkg_resources``, which setuptools 81 removed) and
``pandas>=2,<3`` (guarded by ``pandas_below_3``).
"""

from dataclasses import dataclass
from typing import Callable

import recbole

from masan_recbole.patches import platform, plugin

SUPPORTED_RECBOLE = ("1.2.1",)
RECBOLE_GONE = "a RecBole release after 1.2.1 that fixes it"


@dataclass(frozen=True)
class Patch:
    name: str
    target: str  # what it changes
    why: str
    test: str  # tests/<file>.py::<test> that fails without it
    remove_when: str
    install: Callable[[], None]
    # fix: RecBole broken on today's stack, or unsafe; feature: the plugin's models and options,
    # each off until a config asks for it; opt-in: changes the process, RecBole's console or other
    # models' numerics, applied only by apply_opt_in() (the plugin's entry points, or masan_recbole.opt_in())
    kind: str = "fix"


INVENTORY = (
    # The stack fixes come first: recbole.quick_start imports ray, which needs numpy's old names
    # (and warns on import).
    Patch("quiet_known_warnings", "warnings filters for recbole.*, ray.*, thop.*",
          "harmless deprecation warnings RecBole and ray raise on this stack bury the log",
          "tests/test_patches.py::test_known_warnings_are_hidden_and_others_shown",
          RECBOLE_GONE, platform.quiet_known_warnings),
    Patch("pandas_below_3", "pandas (version guard)",
          "RecBole 1.2.1 silently corrupts data under pandas 3 (fillna(inplace) no-op, Series.agg(len))",
          "tests/test_patches.py::test_pandas_3_is_refused_with_the_reason",
          "RecBole supports pandas 3", platform.pandas_below_3),
    Patch("numpy_aliases", "numpy.float_/bool8/float/bool/long/...; Config.compatibility_settings",
          "numpy 2 removed names RecBole and ray 2.6.3 use; rebuilt configs never set them",
          "tests/test_patches.py::test_numpy_aliases_let_config_and_metrics_run",
          RECBOLE_GONE, platform.numpy_aliases),
    Patch("ray_optional", "sys.modules['ray'] when ray is missing",
          "recbole.quick_start imports ray at import time only for tune.report",
          "tests/test_patches.py::test_recbole_quick_start_imports_without_ray",
          "RecBole imports ray lazily", platform.ray_optional),
    Patch("ray_report_in_sessions_only", "recbole.quick_start.quick_start.tune",
          "objective_function calls tune.report on every hyperopt trial; ray warns with a stack trace each time",
          "tests/test_bad_input.py::test_run_hyper_honours_max_evals_and_keeps_each_trial",
          "RecBole reports to Ray only inside Ray Tune (its issue #1741)", platform.ray_report_in_sessions_only),
    Patch("ray_local_results_without_pyarrow", "ray.tune.analysis.experiment_analysis.is_directory",
          "ray 2.6.3's tune.run reads its local experiment folder back through pyarrow, which the plain ray "
          "RecBole requires does not bring: every Ray search failed after its trials had run",
          "tests/test_ray_tune.py::test_local_experiment_folders_need_no_pyarrow",
          "pyarrow is installed with ray (ray[tune]), or a ray that reads local folders itself",
          platform.ray_local_results_without_pyarrow),
    Patch("ray_trial_oom_fails_the_trial", "ray.air.execution._internal.actor_manager.RayActorManager._actor_task_failed",
          "ray 2.6.3 ends a whole Tune search with 'Caught unexpected exception' when its memory monitor kills "
          "one trial's worker; that trial should fail and the others go on",
          "tests/test_ray_tune.py::test_a_trial_killed_for_memory_fails_alone",
          "a ray whose actor manager handles OutOfMemoryError", platform.ray_trial_oom_fails_the_trial),
    Patch("keep_freed_memory", "glibc malloc (mallopt: no mmap, no trimming, top pad)",
          "glibc hands large freed buffers back to the kernel, so every training step faults and zeroes its "
          "activations' pages again: ~40 % of a CPU epoch in the kernel, most of all in a process's first epoch",
          "tests/test_patches.py::test_freed_training_buffers_are_reused_not_faulted_again",
          "never on glibc; set MASAN_MALLOC_TUNING=0 to leave malloc as it is", platform.keep_freed_memory, kind="opt-in"),
    Patch("fast_cpu_dropout", "torch.nn.functional.dropout (CPU, training)",
          "torch draws CPU dropout masks with bernoulli_, four times the cost of uniform draws: a sixth "
          "of a LightSANs or ASRec training step",
          "tests/test_patches.py::test_cpu_dropout_masks_come_from_uniform_draws",
          "torch's CPU bernoulli_ is as fast as rand (pytorch/pytorch#138199); set MASAN_FAST_DROPOUT=0 "
          "to use torch's", platform.fast_cpu_dropout, kind="opt-in"),
    Patch("scipy_dok_update", "scipy.sparse.dok_matrix._update (where scipy lacks it)",
          "scipy 1.15 removed dok_matrix._update, with which RecBole's LightGCN, NGCF, NCL, GCMC, SpectralCF, "
          "KGIN and MCCLK build their adjacency matrix: they failed before training",
          "tests/test_patches.py::test_recboles_graph_models_build_their_adjacency_on_current_scipy",
          RECBOLE_GONE, platform.scipy_dok_update),
    Patch("hyperopt_exhaustive_rng", "recbole.trainer.hyper_tuning.np",
          "hyperopt >= 0.2.7 expects a numpy Generator; RecBole's exhaustive search passes a RandomState",
          "tests/test_patches.py::test_exhaustive_hyper_search_runs_on_current_hyperopt",
          RECBOLE_GONE, platform.hyperopt_exhaustive_rng),
    Patch("no_anomaly_detection", "torch.autograd anomaly mode",
          "importing RecBole's SINE turns anomaly detection on process-wide (a third of a SASRec step)",
          "tests/test_patches.py::test_anomaly_detection_stays_off_after_model_lookup",
          RECBOLE_GONE, platform.no_anomaly_detection),
    Patch("race_free_dirs", "recbole.*.ensure_dir",
          "check-then-create races when DDP ranks start together (FileExistsError)",
          "tests/test_patches.py::test_directories_are_created_without_a_race",
          RECBOLE_GONE, platform.race_free_dirs),
    # RecBole's own faults.
    Patch("device_selection", "recbole.config.Config._init_device",
          "RecBole ignores --device and hard-codes NCCL, so CPU multi-process training cannot run",
          "tests/test_patches.py::test_device_cpu_is_respected_when_cuda_exists",
          RECBOLE_GONE, plugin.device_selection),
    Patch("ddp_on_cpu", "recbole.trainer.trainer.DistributedDataParallel",
          "RecBole passes device_ids, which DDP refuses for a CPU module",
          "tests/test_entry_points.py::test_run_recbole_cli_two_processes_on_cpu",
          RECBOLE_GONE, plugin.ddp_on_cpu),
    Patch("clear_nan_loss", "recbole.trainer.Trainer._check_nan",
          "RecBole's 'Training loss is nan' names no cause and no fix",
          "tests/test_patches.py::test_nan_loss_names_the_problem_and_the_fix",
          "never (a message, not a fix)", plugin.clear_nan_loss),
    Patch("dataset_download", "recbole.data.dataset.Dataset._download/_load_data",
          "RecBole's download asks with input() above 1 GB (hangs without a terminal), writes the zip in place, "
          "checks no size, cannot resume, extracts unchecked members and fails offline with a traceback",
          "tests/test_download.py::test_a_killed_download_resumes_on_the_next_run",
          "RecBole downloads with these checks", plugin.dataset_download),
    Patch("atomic_file_checks", "recbole.data.dataset.Dataset._load_feat",
          "malformed atomic files fail cryptically or load wrong data",
          "tests/test_patches.py::test_malformed_atomic_files_are_rejected_clearly",
          "never (input checks)", plugin.atomic_file_checks),
    # The plugin's features, installed into RecBole's entry points.
    Patch("model_registry", "get_model/get_trainer in recbole.utils, recbole.config, recbole.quick_start",
          "RecBole has no registry: plugin models must resolve in every entry point",
          "tests/test_registry.py::test_plugin_sasrec_shadows_recbole_and_recbole_stays_reachable",
          "RecBole gains a model registry", plugin.model_registry, kind="feature"),
    Patch("config_files", "recbole.config.Config._load_config_files",
          "a YAML syntax error or a missing config file surfaced without the file's name",
          "tests/test_bad_input.py::test_config_file_errors_name_the_file",
          "RecBole names the file", plugin.config_files),
    Patch("config_layers", "recbole.config.Config._load_internal_config_dict",
          "the plugin's YAML defaults must sit under the user's settings",
          "tests/test_registry.py::test_defaults_layer_under_the_user",
          "RecBole gains a registry for model defaults", plugin.config_layers, kind="feature"),
    Patch("config_defaults", "recbole.config.Config._set_default_parameters",
          "negatives per loss, the wheel's ml-100k, the time column for ordered splits",
          "tests/test_registry.py::test_bpr_gets_negatives_unless_the_user_says_otherwise",
          "never (the plugin's defaults)", plugin.config_defaults),
    Patch("config_checks", "create_dataset in recbole.data, recbole.data.utils, recbole.quick_start",
          "a misspelt key, a value of the wrong type or a valid_metric RecBole does not compute is found only "
          "after training, or never; checked before the data loads, not when a Config is built",
          "tests/test_bad_input.py::test_a_config_builds_as_recboles_does_and_is_checked_before_loading",
          "never (input checks)", plugin.config_checks),
    Patch("all_position_batches", "data_preparation in recbole.data, recbole.quick_start",
          "train_mode: all_positions replaces the training loader with one window per sequence",
          "tests/test_patches.py::test_all_positions_reaches_recboles_data_preparation",
          "never (a feature)", plugin.all_position_batches, kind="feature"),
    Patch("history_excluded_eval", "data_preparation in recbole.data, recbole.quick_start; "
          "recbole.trainer.Trainer.evaluate/_full_sort_batch_eval",
          "eval_exclude_history: true|both scores the user's earlier items 0 before ranking, as the papers "
          "comparing with S3-Rec, FMLP-Rec, FEARec and BSARec do; RecBole has no such option",
          "tests/test_protocol.py::test_run_recbole_reports_the_papers_protocol_beside_recboles",
          "RecBole gains the option", plugin.history_excluded_eval, kind="feature"),
    Patch("recbole_models_precision", "recbole.trainer.Trainer.__init__",
          "mixed_precision set by the user reached the plugin's models only, so a bf16 pair on CUDA compared "
          "bf16 with RecBole's fp32; unset, RecBole's models train as before",
          "tests/test_patches.py::test_mixed_precision_reaches_recboles_models_only_when_set",
          "never (a feature)", plugin.recbole_models_precision, kind="feature"),
    Patch("length_bucketing",
          "get_dataloader in recbole.data, recbole.data.utils; recbole.trainer.AbstractTrainer.__init__",
          "length_bucketing: true batches sequences of similar length cut to their longest (training and "
          "full-sort evaluation); a model whose scores depend on padding is refused when its trainer is built",
          "tests/test_bucketing.py::test_length_bucketing_reaches_recboles_data_preparation",
          "never (a feature)", plugin.length_bucketing, kind="feature"),
    Patch("dataset_checks", "data_preparation in recbole.data, recbole.quick_start",
          "an empty split or a topk above the item count crashed inside torch (num_samples=0, topk out of range)",
          "tests/test_bad_input.py::test_dataset_problems_are_named_before_training",
          "never (input checks)", plugin.dataset_checks),
    Patch("quiet_console", "init_logger in recbole.utils, recbole.quick_start",
          "RecBole prints ~170 lines of config, dataset and model dumps before the first epoch line",
          "tests/test_entry_points.py::test_run_recbole_cli_trains_and_tests",
          "never (the plugin's console)", plugin.quiet_console, kind="opt-in"),
    Patch("spawning_run", "recbole.quick_start.run",
          "RecBole's multi-process children import only recbole, so plugin models would not resolve",
          "tests/test_entry_points.py::test_run_recbole_cli_two_processes_on_cpu",
          "RecBole spawns through an importable entry point", plugin.spawning_run, kind="feature"),
    Patch("safe_checkpoints", "Trainer.__init__/_save_checkpoint/_valid_epoch/evaluate, "
          "PretrainTrainer.save_pretrained_model, recbole.quick_start.load_data_and_model",
          "torch >= 2.6 refuses RecBole's pickled Config; checkpoints become plain data with a checksum, "
          "id maps and the data's fingerprint, written atomically, holding the best epoch's own result",
          "tests/test_checkpoint.py::test_trainer_checkpoints_load_with_weights_only",
          "RecBole saves plain-data checkpoints", plugin.safe_checkpoints),
    Patch("fused_optimizer", "recbole.trainer.Trainer._build_optimizer",
          "torch's Adam on CPU makes about ten passes over every parameter per step; over a large item "
          "table that was a fifth of an SR-SAN batch on Diginetica. The fused kernel makes one",
          "tests/test_patches.py::test_adam_is_fused_and_steps_like_recboles",
          "RecBole builds its optimizers with fused=True", plugin.fused_optimizer, kind="opt-in"),
    Patch("exact_resume", "recbole.trainer.Trainer.resume_checkpoint/fit",
          "RecBole's resume loses the random states and the scheduler, and overwrites a finished run with "
          "epoch -1; checkpoint_file resumes any entry point",
          "tests/test_resume.py::test_sigkill_after_an_epoch_then_resume_matches_uninterrupted",
          "never (a feature)", plugin.exact_resume, kind="feature"),
)

OPT_IN = tuple(p for p in INVENTORY if p.kind == "opt-in")
_applied = []


def check_recbole_version():
    if recbole.__version__ not in SUPPORTED_RECBOLE:
        raise ImportError(
            f"masan_recbole supports RecBole {', '.join(SUPPORTED_RECBOLE)}, but RecBole "
            f"{recbole.__version__} is installed; its patches (python -m masan_recbole.patches) "
            f'were written against that version. Install it: pip install "recbole=={SUPPORTED_RECBOLE[-1]}"'
        )


def apply():
    """Apply every fix and feature patch of the inventory once, in order (idempotent); the opt-in
    patches wait for :func:`apply_opt_in`."""
    check_recbole_version()
    for patch in INVENTORY:
        if patch.kind != "opt-in" and patch.name not in _applied:
            patch.install()
            _applied.append(patch.name)


CONSOLE = ("quiet_console",)


def apply_opt_in(speed=True, console=True):
    """Apply the opt-in patches (idempotent): they change the process (malloc), RecBole's console,
    or the numerics of every model (dropout masks, fused Adam), so a plain import leaves them off."""
    apply()
    for patch in OPT_IN:
        wanted = console if patch.name in CONSOLE else speed
        if wanted and patch.name not in _applied:
            patch.install()
            _applied.append(patch.name)


def applied():
    """Names of the applied patches, in the order they were applied."""
    return tuple(_applied)


def inventory_table():
    """The inventory as Markdown: one row per patch."""
    rows = ["| patch | kind | applied | changes | why | covered by | remove when |", "|---|---|---|---|---|---|---|"]
    for p in INVENTORY:
        rows.append(f"| {p.name} | {p.kind} | {'yes' if p.name in _applied else 'no'} | {p.target} | {p.why} "
                    f"| {p.test} | {p.remove_when} |")
    return "\n".join(rows)
