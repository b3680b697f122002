"""``mixed_precision``: the autocast dtype a config asks for, for the plugin's models (their
``calculate_loss``) and, where a user sets the key, for RecBole's models too, so that a speed or
accuracy pair compares the same arithmetic."""

import functools

import torch

PRECISIONS = ("auto", "bf16", "off")


def autocast_dtype(config):
    """bfloat16 or None (fp32) for the config's ``mixed_precision``: auto is bf16 on a CUDA device
    that supports it, fp32 elsewhere."""
    choice = config["mixed_precision"]
    if choice not in PRECISIONS:
        raise ValueError(f"mixed_precision '{choice}' is not one of {list(PRECISIONS)}")
    if choice == "auto":
        device = torch.device(config["device"])
        bf16_ok = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16_ok else None
    return torch.bfloat16 if choice == "bf16" else None


def recbole_models_autocast(original, trainer, config, model, *args, **kwargs):
    """RecBole's ``Trainer.__init__``; a model of RecBole's own (the plugin's set ``autocast_dtype``
    themselves) trains under the autocast of ``mixed_precision`` when the user set that key. RecBole's
    models get no default: unset, they train as RecBole trains them."""
    original(trainer, config, model, *args, **kwargs)
    if hasattr(model, "autocast_dtype") or config["mixed_precision"] is None:
        return
    dtype = autocast_dtype(config)
    if dtype is None or getattr(model.calculate_loss, "autocast_dtype", None) == dtype:
        return
    calculate_loss = model.calculate_loss

    @functools.wraps(calculate_loss)
    def calculate_loss_autocast(interaction):
        with torch.autocast(device_type=torch.device(config["device"]).type, dtype=dtype):
            return calculate_loss(interaction)

    calculate_loss_autocast.autocast_dtype = dtype
    model.calculate_loss = calculate_loss_autocast
