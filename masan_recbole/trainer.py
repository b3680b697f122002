"""The plugin's trainer: RecBole's ``Trainer`` plus a learning-rate schedule.

Config keys (defaults in ``configs/overall.yaml``):
``lr_scheduler`` (``~`` for none, or ``step``), ``lr_step_size`` (epochs between
decays), ``lr_gamma`` (factor per decay). The schedule steps once per training
epoch, is saved in checkpoints and restored on resume; the epoch log shows the rate.
"""

import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import set_color

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

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.epoch_lr = self.optimizer.param_groups[0]["lr"]
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        if self.scheduler is not None:
            self.scheduler.step()
        return loss

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        output = super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        return output[:-1] + ", " + set_color("lr", "blue") + f": {self.epoch_lr:.3g}]"
