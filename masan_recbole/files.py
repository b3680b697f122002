"""Writing files so that a reader never sees half of one.

Every file the package or its benchmarks write (checkpoints, converted datasets, result
files) goes through :func:`write_atomic`: the content goes to a hidden temporary file in
the same folder, is flushed to disk, and replaces the target in one rename. A kill at any
moment leaves either the old file or the new one; a temporary file left by a killed writer
is removed by the next write of the same file.
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
    remove_stale_temporaries(path)
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


def remove_stale_temporaries(path):
    """Temporary files of ``path`` left by writers that were killed (SIGKILL runs no ``finally``):
    those whose process id is no longer running are removed."""
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}."
    for entry in os.listdir(folder):
        pid = entry[len(prefix):-len(".tmp")] if entry.startswith(prefix) and entry.endswith(".tmp") else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, entry))


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically (see :func:`write_atomic`)."""
    with write_atomic(path) as f:
        f.write(text)
