"""Data converters: public benchmark files -> RecBole atomic files under ``<to>/<name>/``.

``CONVERTERS`` maps a data set name to its converter, a function
``converter(source_dir, out_dir, name, valid_fraction=0.1) -> dict`` that writes
``<out_dir>/<name>.*`` and returns counts to print; the first line of its
docstring describes it in ``python -m masan_recbole.data list``. Add a data set
by adding an entry.
"""

import os

from masan_recbole.data import sequential, sessions

CONVERTERS = {
    "diginetica": sessions.convert_diginetica,
    "yoochoose1_64": sessions.convert_yoochoose1_64,
    "yoochoose1_4": sessions.convert_yoochoose1_4,
    "tmall": sessions.convert_srgnn,
    "nowplaying": sessions.convert_srgnn,
    **sequential.CONVERTERS,  # one sequence per user, leave-one-out by RecBole
}


def convert(name, source, to="dataset", valid_fraction=0.1):
    """Convert the files in ``source`` (a folder; a file for the sequential converters) into
    ``<to>/<name>/``; return the converter's counts."""
    if name not in CONVERTERS:
        raise ValueError(f"no converter for '{name}'; known: {', '.join(sorted(CONVERTERS))}")
    if not os.path.exists(source):
        raise FileNotFoundError(f"source not found: {source}")
    return CONVERTERS[name](source, os.path.join(to, name), name, valid_fraction=valid_fraction)


__all__ = ["CONVERTERS", "convert", "sequential", "sessions"]
