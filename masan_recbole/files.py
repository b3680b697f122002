"""Writing files so that a reader never sees half of one.

Every file the package or its benchmarks write (checkpoints, converted datasets, result
files) goes through :func:`write_atomic`: the content goes to a hidden temporary file in
the same folder, is flushed to disk, and replaces the target in one rename. A kill at any
moment leaves either the old file or the new one, and never a stray temporary file once
the writer's ``finally`` has run.
"""

import contextlib
import os


@contextlib.contextmanager
def write_atomic(path, mode="w", **open_kwargs):
    """``with write_atomic(path) as f: f.write(...)``: ``path`` holds all of it or none of it.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes); the folder is created if missing.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"write_atomic writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically (see :func:`write_atomic`)."""
    with write_atomic(path) as f:
        f.write(text)
