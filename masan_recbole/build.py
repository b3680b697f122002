"""One way to build a run: config -> dataset -> dataloaders -> model -> trainer.

Every entry point (``run_recbole.py``, hyper-parameter trials, checkpoint loading, ``recommend``)
and every benchmark builds its run here, seeded as RecBole's ``run_recbole`` seeds it (once before
the data, again before the model), so that two callers given the same settings train the same run.
"""

import logging
import sys
from typing import NamedTuple

import recbole.data
import recbole.utils
from recbole.config import Config
from recbole.data.transform import construct_transform
from recbole.utils import get_flops, init_seed, set_color

from masan_recbole.registry import get_model, get_trainer


class Run(NamedTuple):
    config: Config
    dataset: object  # create_dataset's output (after data_preparation it holds the split's rows)
    train_data: object
    valid_data: object
    test_data: object
    model: object
    trainer: object  # None when built with trainer=False


def build_config(model, dataset, config_file_list=None, config_dict=None):
    """RecBole's Config (plugin models and their defaults included)."""
    return Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)


def build_run(config, *, log=False, data=None, before_split=None, model=True, trainer=True):
    """The run of ``config``: its dataset, the three dataloaders, the model and its trainer.

    log: set up RecBole's logger and log what run_recbole logs (command line, config, dataset, model
        and its FLOPs: counting them runs the model once, which the seeds after it depend on).
    data: ``(dataset, train_data, valid_data, test_data)`` built before (for another model of the same
        data settings) to reuse instead of loading again.
    before_split: called with the dataset before data_preparation splits it (which changes it);
        what it returns is split.
    model, trainer: False builds no model (data only) or no trainer (a model to load weights into).
    """
    init_seed(config["seed"], config["reproducibility"])
    logger = logging.getLogger()
    if log:
        recbole.utils.init_logger(config)  # looked up when called: the console patch wraps it
        logger.info(sys.argv)
        logger.info(config)
    if data is None:
        # looked up when called: the patch layer wraps RecBole's functions
        dataset = recbole.data.create_dataset(config)
        if log:
            logger.info(dataset)
        if before_split is not None:
            dataset = before_split(dataset)
        train_data, valid_data, test_data = recbole.data.data_preparation(config, dataset)
    else:
        dataset, train_data, valid_data, test_data = data
    if not model:
        return Run(config, dataset, train_data, valid_data, test_data, None, None)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    built = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    if log:
        logger.info(built)
        flops = get_flops(built, dataset, config["device"], logger, construct_transform(config))
        logger.info(set_color("FLOPs", "blue") + f": {flops}")
    run_trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, built) if trainer else None
    return Run(config, dataset, train_data, valid_data, test_data, built, run_trainer)
