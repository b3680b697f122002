"""Installs the plugin's features into RecBole: each function here only puts a function that
lives elsewhere (registry, config, trainer, data, quick_start) in front of RecBole's."""

from recbole.config import Config
from recbole.data.dataset import dataset as dataset_module
from recbole.trainer import trainer as trainer_module
from recbole.trainer.trainer import Trainer

from masan_recbole import atomic, config, console, download, precision, protocol, registry, trainer
from masan_recbole.data import all_positions, bucketing, checks
from masan_recbole.patches.tools import replace, wrap


def model_registry():
    import recbole.utils
    from recbole.config import configurator
    from recbole.quick_start import quick_start
    from recbole.utils import utils as utils_module

    for module in (recbole.utils, utils_module, configurator, quick_start):
        if hasattr(module, "get_model"):
            replace("model_registry", module, "get_model", registry.get_model)
        if hasattr(module, "get_trainer"):
            replace("model_registry", module, "get_trainer", registry.get_trainer)


def config_files():
    wrap("config_files", Config, "_load_config_files", config.load_config_files)


def config_layers():
    wrap("config_layers", Config, "_load_internal_config_dict", config.load_internal_config)


def config_defaults():
    wrap("config_defaults", Config, "_set_default_parameters", config.set_default_parameters)


def config_checks():
    import recbole.data
    from recbole.data import utils as data_utils
    from recbole.quick_start import quick_start

    for module in (recbole.data, data_utils, quick_start):
        wrap("config_checks", module, "create_dataset", config.create_dataset_checked)


def device_selection():
    replace("device_selection", Config, "_init_device", config.init_device)


def _ddp(original, module, device_ids=None, **kwargs):
    """DDP on CPU must not be given ``device_ids``; RecBole always passes its local rank."""
    if next(module.parameters()).device.type == "cpu":
        device_ids = None
    return original(module, device_ids=device_ids, **kwargs)


def ddp_on_cpu():
    wrap("ddp_on_cpu", trainer_module, "DistributedDataParallel", _ddp)


def dataset_checks():
    import recbole.data
    from recbole.data import utils as data_utils
    from recbole.quick_start import quick_start

    for module in (recbole.data, data_utils, quick_start):
        wrap("dataset_checks", module, "data_preparation", checks.prepare_checked)


def quiet_console():
    import recbole.utils
    from recbole.quick_start import quick_start
    from recbole.utils import logger

    for module in (recbole.utils, logger, quick_start):
        wrap("quiet_console", module, "init_logger", console.quiet_console_handlers)


def spawning_run():
    import recbole.quick_start
    from recbole.quick_start import quick_start

    from masan_recbole.quick_start import run

    for module in (recbole.quick_start, quick_start):
        replace("spawning_run", module, "run", run)


def safe_checkpoints():
    import recbole.quick_start
    from recbole.quick_start import quick_start

    from masan_recbole.quick_start import load_data_and_model

    wrap("safe_checkpoints", Trainer, "__init__", trainer.name_run_file)
    replace("safe_checkpoints", Trainer, "_save_checkpoint", trainer.save_checkpoint)
    wrap("safe_checkpoints", Trainer, "evaluate", trainer.evaluate_from_checkpoint)
    wrap("safe_checkpoints", Trainer, "_valid_epoch", trainer.remember_valid_result)
    for module in (recbole.quick_start, quick_start):
        replace("safe_checkpoints", module, "load_data_and_model", load_data_and_model)
    replace("safe_checkpoints", trainer_module.PretrainTrainer, "save_pretrained_model", trainer.save_pretrained_model)


def exact_resume():
    replace("exact_resume", Trainer, "resume_checkpoint", trainer.resume_checkpoint)
    wrap("exact_resume", Trainer, "fit", trainer.fit_resuming)


def clear_nan_loss():
    replace("clear_nan_loss", Trainer, "_check_nan", trainer.check_nan)


def dataset_download():
    replace("dataset_download", dataset_module.Dataset, "_download", download.download_missing)
    wrap("dataset_download", dataset_module.Dataset, "_load_data", download.load_data_downloading)


def atomic_file_checks():
    wrap("atomic_file_checks", dataset_module.Dataset, "_load_feat", atomic.load_checked)


def all_position_batches():
    import recbole.data
    from recbole.data import utils as data_utils
    from recbole.quick_start import quick_start

    for module in (recbole.data, data_utils, quick_start):
        wrap("all_position_batches", module, "data_preparation", all_positions.data_preparation)


def history_excluded_eval():
    import recbole.data
    from recbole.data import utils as data_utils
    from recbole.quick_start import quick_start

    for module in (recbole.data, data_utils, quick_start):
        wrap("history_excluded_eval", module, "data_preparation", protocol.attach_histories)
    wrap("history_excluded_eval", Trainer, "evaluate", protocol.evaluate)
    wrap("history_excluded_eval", Trainer, "_full_sort_batch_eval", protocol.full_sort_batch_eval)


def recbole_models_precision():
    wrap("recbole_models_precision", Trainer, "__init__", precision.recbole_models_autocast)


def length_bucketing():
    import recbole.data
    from recbole.data import utils as data_utils
    from recbole.trainer.trainer import AbstractTrainer

    for module in (recbole.data, data_utils):
        wrap("length_bucketing", module, "get_dataloader", bucketing.get_dataloader)
    wrap("length_bucketing", AbstractTrainer, "__init__", bucketing.refuse_padding_dependent_models)


def fused_optimizer():
    wrap("fused_optimizer", Trainer, "_build_optimizer", trainer.fused_optimizer)
