"""masan_recbole: MASAN, SASRec, SR-SAN and ASRec for RecBole 1.2.1.

``import masan_recbole`` applies the patch layer (:mod:`masan_recbole.patches`: RecBole 1.2.1
on today's numpy/pandas/torch, and the plugin's features installed in RecBole's entry points)
and registers the plugin's models (:mod:`masan_recbole.model`).
"""

from masan_recbole import patches

patches.apply()

from masan_recbole import model  # noqa: E402,F401  (registers the models)
from masan_recbole.quick_start import load_data_and_model, run  # noqa: E402
from masan_recbole.registry import get_model, plugin_models, register_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["get_model", "load_data_and_model", "plugin_models", "register_model", "run"]
