"""masan_recbole: MASAN, SASRec, SR-SAN and ASRec for RecBole 1.2.1.

``import masan_recbole`` makes RecBole 1.2.1 work on numpy 2 / pandas 3 /
torch >= 2.6 (see :mod:`masan_recbole.compat`) and registers the plugin's models
with every RecBole entry point (see :mod:`masan_recbole.registry`).
"""

from masan_recbole import compat

# These must precede any import of recbole.quick_start.
compat.quiet_known_warnings()
compat.pandas_below_3()
compat.numpy_aliases()
compat.ray_optional()

from masan_recbole import registry  # noqa: E402

registry.install()
compat.apply_all()

from masan_recbole.data import all_positions  # noqa: E402

all_positions.install()

from masan_recbole import model  # noqa: E402,F401  (registers the models)
from masan_recbole.quick_start import load_data_and_model, run  # noqa: E402
from masan_recbole.registry import get_model, plugin_models, register_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["get_model", "load_data_and_model", "plugin_models", "register_model", "run"]
