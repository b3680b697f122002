"""masan_recbole: MASAN, SASRec, SR-SAN and ASRec for RecBole 1.2.1.

``import masan_recbole`` applies the patch layer (:mod:`masan_recbole.patches`: RecBole 1.2.1
on today's numpy/pandas/scipy/torch, and the plugin's features installed in RecBole's entry
points) and registers the plugin's models (:mod:`masan_recbole.model`). It changes nothing else
a RecBole program sees; :func:`opt_in` switches on what the plugin's own entry points use.
"""

import sys

try:
    import recbole  # noqa: F401
except ImportError:
    # From Python 3.12 RecBole 1.2.1 installs only without its ray pin (README, Set-up).
    _NO_DEPS = "--no-deps " if sys.version_info >= (3, 12) else ""
    raise ImportError(f"masan_recbole needs RecBole 1.2.1, which is not installed: pip install {_NO_DEPS}recbole==1.2.1"
                      ) from None

from masan_recbole import patches  # noqa: E402

patches.apply()

from masan_recbole import model  # noqa: E402,F401  (registers the models)
from masan_recbole.quick_start import load_data_and_model, run  # noqa: E402
from masan_recbole.registry import get_model, plugin_models, register_model  # noqa: E402
from masan_recbole.runtime import opt_in, opt_in_from_environment  # noqa: E402

opt_in_from_environment()

__version__ = "0.1.0"
__all__ = ["get_model", "load_data_and_model", "opt_in", "plugin_models", "register_model", "run"]

