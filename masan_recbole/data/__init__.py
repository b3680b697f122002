"""Data converters: public benchmark files -> RecBole atomic files under ``<to>/<name>/``.

``CONVERTERS`` maps a data set name to its converter, a function
``converter(source_dir, out_dir, name, valid_fraction=0.1) -> dict`` that writes
``<out_dir>/<name>.*`` and returns counts to print; the first line of its
docstring describes it in ``python -m masan_recbole.data list``. Add a data set
by adding an entry.
"""

import difflib
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


def closest_converter(name):
    """The converter called ``name``, or the one whose name is closest (``yelp`` -> ``yelp-s3rec``), or None."""
    if name in CONVERTERS:
        return name
    prefixed = [n for n in sorted(CONVERTERS) if n.startswith(name) or name.startswith(n)]
    close = prefixed or difflib.get_close_matches(name, sorted(CONVERTERS), n=1, cutoff=0.6)
    return close[0] if close else None


def convert_command(name, to="dataset"):
    """The command that writes data set ``name`` (see :func:`closest_converter`), or None."""
    found = closest_converter(name)
    if found is None:
        return None
    target = "" if os.path.normpath(to) == "dataset" else f" --to {to}"
    # where the downloaded files sit is the user's to say; docs/datasets.md names each download
    return f"python -m masan_recbole.data convert {found} --from <folder with the {found} files>{target}"


def convert(name, source, to="dataset", valid_fraction=0.1):
    """Convert the files in ``source`` (a folder; a file for the sequential converters) into
    ``<to>/<name>/``; return the converter's counts."""
    if name not in CONVERTERS:
        close = closest_converter(name)
        hint = f"did you mean '{close}'? " if close else ""
        raise ValueError(f"no converter for '{name}'; {hint}known: {', '.join(sorted(CONVERTERS))}")
    if not os.path.exists(source):
        raise FileNotFoundError(f"source not found: {source}")
    return CONVERTERS[name](source, os.path.join(to, name), name, valid_fraction=valid_fraction)


__all__ = ["CONVERTERS", "closest_converter", "convert", "convert_command", "sequential", "sessions"]
