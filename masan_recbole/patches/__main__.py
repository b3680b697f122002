"""``python -m masan_recbole.patches``: print the patch inventory (after applying it)."""

import masan_recbole  # noqa: F401  (applies the patches)
from masan_recbole.patches import inventory_table

print(inventory_table())
