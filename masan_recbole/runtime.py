"""What the plugin's entry points switch on for their process, and a user's program can too.

What :func:`opt_in` switched on is kept in the environment variable ``MASAN_RECBOLE_OPT_IN``, so
that the processes this one starts (multi-process training, Ray's workers) do the same when they
import the package.
"""

import os

from masan_recbole import config, patches

ENV = "MASAN_RECBOLE_OPT_IN"
PARTS = ("speed", "console", "dataset_configs")


def opt_in(speed=True, console=True, dataset_configs=True):
    """Switch on, for this process, what run_recbole.py, run_hyper.py and the benchmarks use:

    * ``speed``: glibc malloc keeps freed memory, CPU dropout draws its masks from uniform draws,
      Adam/AdamW use torch's fused kernel, for every model (RecBole's too: other dropout masks
      for the same seed, the same update up to rounding). The plugin's own models get fused Adam
      without this;
    * ``console``: the plugin's short console (RecBole's config and dataset dumps go to the log file);
    * ``dataset_configs``: ``configs/dataset/<dataset>.yaml`` applies to every model, RecBole's
      built-in ones too (otherwise only to the plugin's models).
    """
    if speed or console:
        patches.apply_opt_in(speed=speed, console=console)
    if dataset_configs:
        config.DATASET_CONFIGS_FOR_ALL_MODELS = True
    on = set(filter(None, os.environ.get(ENV, "").split(",")))
    on |= {name for name, wanted in zip(PARTS, (speed, console, dataset_configs)) if wanted}
    os.environ[ENV] = ",".join(p for p in PARTS if p in on)


def opt_in_from_environment():
    """At import: what a parent process opted in for (``MASAN_RECBOLE_OPT_IN``)."""
    on = set(filter(None, os.environ.get(ENV, "").split(",")))
    unknown = on - set(PARTS)
    if unknown:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: {', '.join(sorted(unknown))} not among {', '.join(PARTS)}")
    if on:
        opt_in(**{name: name in on for name in PARTS})
