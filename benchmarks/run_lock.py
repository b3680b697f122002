"""Which process trains which run: a lock file ``<out>/.state/<run>/lock`` holding the pid of its
holder. Two processes started with ``converged --all`` each take the first pending run that no
living process holds; a lock whose process is gone is taken over."""

import os


def holder(out, name):
    """The pid of the living process that holds the run's lock, else None."""
    try:
        with open(os.path.join(out, ".state", name, "lock")) as f:
            pid = int(f.read().strip() or 0)
        os.kill(pid, 0)
    except (OSError, ValueError):  # no lock, an unreadable one, or its process is gone
        return None
    return pid


def claim(out, name):
    """Take the run for this process (a lock file with its pid); False if a living process holds it."""
    folder = os.path.join(out, ".state", name)
    os.makedirs(folder, exist_ok=True)
    lock = os.path.join(folder, "lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if holder(out, name) is not None:
                return False
            os.remove(lock)  # its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def release(out, name):
    lock = os.path.join(out, ".state", name, "lock")
    if os.path.isfile(lock) and open(lock).read().strip() == str(os.getpid()):
        os.remove(lock)
