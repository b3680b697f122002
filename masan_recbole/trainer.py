"""The plugin's trainer, and the checkpointing every RecBole trainer gets.

:class:`Trainer` is RecBole's ``Trainer`` plus a learning-rate schedule.

Config keys (defaults in ``configs/overall.yaml``):
``lr_scheduler`` (``~`` for none, or ``step``), ``lr_step_size`` (epochs between
decays), ``lr_gamma`` (factor per decay). The schedule steps once per training
epoch, is saved in checkpoints and restored on resume; the epoch log shows the rate.
"""

import inspect
import os
from collections import OrderedDict

import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import set_color

from masan_recbole import checkpoint

SCHEDULERS = {
    "step": lambda optimizer, config: torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config["lr_step_size"], gamma=config["lr_gamma"]
    ),
}


class Trainer(RecBoleTrainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        name = config["lr_scheduler"]
        if name is not None and name not in SCHEDULERS:
            raise ValueError(f"lr_scheduler '{name}' is not one of {sorted(SCHEDULERS)} (or ~ for none)")
        self.scheduler = SCHEDULERS[name](self.optimizer, config) if name else None

    def _build_optimizer(self, **kwargs):
        # the plugin's models get fused Adam whether or not the process opted in for every model
        build = getattr(RecBoleTrainer._build_optimizer, "__wrapped__", RecBoleTrainer._build_optimizer)
        return fused_optimizer(build, self, **kwargs)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.epoch_lr = self.optimizer.param_groups[0]["lr"]
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        if self.scheduler is not None:
            self.scheduler.step()
        return loss

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        output = super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        return output[:-1] + ", " + set_color("lr", "blue") + f": {self.epoch_lr:.3g}]"


# ---------------------------------------------------------------------------
# Safe checkpoints and exact resume, for every RecBole trainer. The patches
# ``safe_checkpoints`` and ``exact_resume`` install these on RecBole's Trainer,
# so RecBole's own models (LightSANs, RecBoleSASRec, ...) get them too.


def name_run_file(original_init, trainer, config, model):
    """RecBole's ``__init__``; the checkpoint file name gets a random run tag (:func:`checkpoint.run_file`)."""
    original_init(trainer, config, model)
    trainer.saved_model_file = checkpoint.run_file(trainer.saved_model_file, distributed=not config["single_spec"])


def save_checkpoint(trainer, epoch, verbose=True, **kwargs):
    """Everything resuming needs, as tensors and plain data, written atomically (rank 0 only)."""
    config = trainer.config
    if not config["single_spec"] and config["local_rank"] != 0:
        return
    path = kwargs.pop("saved_model_file", trainer.saved_model_file)
    # RecBole saves a new best before it stores its result: take it from the validation just run.
    best_result = trainer.best_valid_result
    latest = getattr(trainer, "latest_valid", None)
    if latest is not None and latest[0] == trainer.best_valid_score:
        best_result = latest[1]
    state = {
        "config": checkpoint.encode_config(config),
        "epoch": epoch,
        "cur_step": trainer.cur_step,
        "best_valid_score": float(trainer.best_valid_score),
        "best_valid_result": checkpoint.plain_metrics(best_result),
        "state_dict": trainer.model.state_dict(),
        "other_parameter": trainer.model.other_parameter(),
        "optimizer": trainer.optimizer.state_dict(),
    }
    scheduler = getattr(trainer, "scheduler", None)
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    state["rng"] = checkpoint.rng_state(getattr(trainer, "train_generator", None))
    state["data"] = getattr(trainer, "data_record", None)
    state["finished"] = False
    checkpoint.save_checkpoint(state, path)
    if verbose:
        trainer.logger.info(set_color("Saving current", "blue") + f": {path}")


def save_pretrained_model(trainer, epoch, saved_model_file):
    """RecBole's ``PretrainTrainer.save_pretrained_model`` (S3Rec's pretraining), as plain data:
    RecBole pickled its Config, which ``torch.load`` refuses by default since torch 2.6, so the
    finetune stage could not read what the pretraining stage wrote."""
    state = {
        "config": checkpoint.encode_config(trainer.config),
        "epoch": epoch,
        "state_dict": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "other_parameter": trainer.model.other_parameter(),
    }
    checkpoint.save_checkpoint(state, saved_model_file)
    trainer.saved_model_file = saved_model_file


def resume_checkpoint(trainer, resume_file):
    """Restore model, optimiser, scheduler, epoch, best score and (at ``fit``) every random state."""
    resume_file = str(resume_file)
    state = checkpoint.load_checkpoint(resume_file, map_location=trainer.device)
    saved = state["config"]
    if saved.get("model") != trainer.config["model"]:
        raise checkpoint.CheckpointError(
            f"cannot resume {trainer.config['model']} from {resume_file}: it was written "
            f"by model {saved.get('model')}. Resume with --model={saved.get('model')}."
        )
    if saved.get("dataset") != trainer.config["dataset"]:
        raise checkpoint.CheckpointError(
            f"cannot resume on dataset {trainer.config['dataset']} from {resume_file}: it was trained on "
            f"{saved.get('dataset')}. Resume with --dataset={saved.get('dataset')}."
        )
    ours = trainer.model.state_dict()
    changed = [f"{k} {tuple(v.shape)} (now {tuple(ours[k].shape)})" for k, v in state["state_dict"].items()
               if k in ours and ours[k].shape != v.shape]
    if changed:
        keys = [k for k in saved if k in trainer.config.final_config_dict and saved[k] != trainer.config[k]
                and not isinstance(saved[k], dict) and k not in ("checkpoint_file", "device", "gpu_id")]
        raise checkpoint.CheckpointError(
            f"cannot resume from {resume_file}: the model's shapes differ from the checkpoint's "
            f"({'; '.join(changed[:3])}). Settings that differ: {', '.join(keys[:6]) or 'none'}; "
            "resume with the settings it was trained with."
        )
    warn_changed_settings(trainer, saved, resume_file)
    trainer.saved_model_file = resume_file
    trainer.start_epoch = state["epoch"] + 1
    trainer.cur_step = state["cur_step"]
    trainer.best_valid_score = state["best_valid_score"]
    trainer.best_valid_result = state.get("best_valid_result")
    trainer.model.load_state_dict(state["state_dict"])
    trainer.model.load_other_parameter(state.get("other_parameter"))
    keep_optimizer_kernel(trainer.optimizer, state["optimizer"])
    scheduler = getattr(trainer, "scheduler", None)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    trainer.resumed_from = resume_file
    trainer.resumed_finished = state.get("finished") or None
    trainer.resumed_rng = state.get("rng")  # applied when fit() has the dataloader
    trainer.logger.info(f"Checkpoint loaded. Resume training from epoch {trainer.start_epoch}")


# Settings a resumed run may change without changing what it computes.
RESUME_MAY_CHANGE = {"checkpoint_file", "checkpoint_dir", "device", "gpu_id", "use_gpu", "epochs", "stopping_step",
                     "show_progress", "state", "data_path", "local_rank", "nproc", "world_size", "ip", "port", "offset",
                     "single_spec", "eval_step", "saved", "log_wandb", "wandb_project", "config_files", "params_file",
                     "eval_batch_size", "worker", "fused_optimizer"}


def warn_changed_settings(trainer, saved, resume_file):
    """A run resumed under other settings (a changed default, a setting added since the checkpoint,
    another command line) goes on with them; say which, so that a different computation is never
    silent. Plain values only: the checkpoint's lists and dicts are encoded and would compare
    unequal for no reason. A setting the checkpoint lacks counts as None there."""
    now = trainer.config.final_config_dict
    plain = (bool, int, float, str, type(None))
    changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in sorted(now)
               if k not in RESUME_MAY_CHANGE and isinstance(saved.get(k), plain)
               and isinstance(now[k], plain) and saved.get(k) != now[k]]
    if changed:
        trainer.logger.warning(f"resuming {resume_file} with settings that differ from the ones it was trained "
                               f"with ({'; '.join(changed)}); the run goes on with the new ones")


def remember_valid_result(original_valid_epoch, trainer, valid_data, *args, **kwargs):
    """RecBole's ``_valid_epoch``; its (score, result) is kept for :func:`save_checkpoint`."""
    score, result = original_valid_epoch(trainer, valid_data, *args, **kwargs)
    trainer.latest_valid = (score, result)
    return score, result


def fit_resuming(original_fit, trainer, train_data, valid_data=None, verbose=True, saved=True, *args, **kwargs):
    """RecBole's ``fit``, resuming first when ``checkpoint_file`` is set (any entry point).

    The checkpoint of a run that ends is marked finished, with the reason. A run that early
    stopping ended is not trained again, nor one whose epochs are all done (RecBole would
    overwrite its checkpoint with epoch -1, and the next resume would silently start from
    scratch); one resumed with more ``epochs`` than it ran goes on."""
    resume_from = trainer.config["checkpoint_file"]
    if resume_from and getattr(trainer, "resumed_from", None) is None:
        trainer.resume_checkpoint(resume_from)
    finished = getattr(trainer, "resumed_finished", None)
    resumed = getattr(trainer, "resumed_from", None) is not None
    if resumed and not finished and trainer.start_epoch >= trainer.epochs:
        # RecBole would save epoch -1 over it, and the next resume would train epoch 0 again
        trainer.logger.warning(
            f"{trainer.resumed_from} has run {trainer.start_epoch} epoch(s) and epochs={trainer.epochs} asks for no "
            f"more: nothing is trained and the file is left as it was. Set epochs above {trainer.start_epoch} "
            "to go on training it.")
        return trainer.best_valid_score, trainer.best_valid_result
    if finished == "early_stopping" or (finished and trainer.start_epoch >= trainer.epochs):
        trainer.logger.info(
            f"{trainer.resumed_from} is a finished run ({finished.replace('_', ' ')}; best validation score "
            f"{trainer.best_valid_score:.4f}); nothing to train. Start a new run without checkpoint_file to "
            "train again." + (" Set a larger epochs to train it longer." if finished == "last_epoch" else "")
        )
        return trainer.best_valid_score, trainer.best_valid_result
    trainer.train_generator = getattr(train_data, "generator", None)
    trainer.data_record = checkpoint.data_record(train_data._dataset)
    if getattr(trainer, "resumed_rng", None):
        # Training goes on exactly as if it had never stopped.
        checkpoint.set_rng_state(trainer.resumed_rng, trainer.train_generator)
    result = original_fit(trainer, train_data, valid_data, verbose, saved, *args, **kwargs)
    if saved and (trainer.config["single_spec"] or trainer.config["local_rank"] == 0):
        # RecBole's early stopping ends a run once cur_step exceeds stopping_step.
        mark_finished(trainer.saved_model_file,
                      "early_stopping" if trainer.cur_step > trainer.stopping_step else "last_epoch")
    return result


def mark_finished(path, reason):
    """Record in the checkpoint of a run that has ended why it ended (content otherwise unchanged)."""
    if not os.path.isfile(path):
        return
    state = checkpoint.load_checkpoint(path)
    state["finished"] = reason
    state.pop("format"), state.pop("checksum", None)
    checkpoint.save_checkpoint(state, path)


def evaluate_from_checkpoint(original_evaluate, trainer, eval_data, load_best_model=True, model_file=None,
                             show_progress=False):
    """RecBole's ``evaluate``; the best model is read with ``weights_only=True``, and the result
    holds plain floats (printed as 0.1234, not np.float64(0.1234))."""
    if load_best_model and eval_data:
        path = model_file or trainer.saved_model_file
        if not trainer.config["single_spec"]:
            torch.distributed.barrier()  # rank 0 may still be writing it
        state = checkpoint.load_checkpoint(path, map_location=trainer.device)
        trainer.model.load_state_dict(state["state_dict"])
        trainer.model.load_other_parameter(state.get("other_parameter"))
        trainer.logger.info(f"Loading model structure and parameters from {path}")
    result = original_evaluate(trainer, eval_data, load_best_model=False, show_progress=show_progress)
    return None if result is None else OrderedDict((k, float(v)) for k, v in result.items())


def fused_optimizer(original_build, trainer, **kwargs):
    """RecBole's ``_build_optimizer``; an Adam or AdamW then gets torch's fused kernel (one pass
    over each parameter instead of about ten separate ones: on CPU the step over a large item table
    was a fifth of an SR-SAN batch). Same update up to float rounding; ``fused_optimizer: false``
    keeps RecBole's optimizer, and so does a parameter on a device or of a type without the kernel
    (torch checks that only at the first step, so it is checked here)."""
    optimizer = original_build(trainer, **kwargs)
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or trainer.config["fused_optimizer"] is False:
        return optimizer
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not all(p.device.type in FUSED_DEVICES and p.dtype in FUSED_DTYPES for p in params):
        return optimizer
    groups = [{**group, "fused": True, "foreach": None} for group in optimizer.param_groups]
    accepted = inspect.signature(type(optimizer)).parameters  # AdamW's defaults hold a key its __init__ refuses
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    return type(optimizer)(groups, **{**defaults, "fused": True, "foreach": None})


FUSED_DEVICES = ("cpu", "cuda")
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def keep_optimizer_kernel(optimizer, saved_state):
    """Load an optimizer's saved state but keep the kernel it was built with: a checkpoint's
    param groups carry their own ``fused``/``foreach`` flags, which would otherwise override the
    current ``fused_optimizer`` setting (a resumed run follows the setting it is resumed with)."""
    built = [(group.get("fused"), group.get("foreach")) for group in optimizer.param_groups]
    optimizer.load_state_dict(saved_state)
    for group, (fused, foreach) in zip(optimizer.param_groups, built):
        group["fused"], group["foreach"] = fused, foreach


def check_nan(trainer, loss):
    """RecBole's NaN check raised a bare "Training loss is nan"; this one names the fix."""
    if torch.isnan(loss):
        config = trainer.config
        raise ValueError(
            f"Training loss is NaN ({config['model']} on {config['dataset']}, "
            f"learning_rate={config['learning_rate']}). Lower learning_rate, set "
            "clip_grad_norm (e.g. {'max_norm': 5}) or check the input data for NaN values."
        )
