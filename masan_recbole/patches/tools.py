"""How a patch changes an attribute: wrapped (the original still runs) or replaced, and
in both cases the original stays reachable as ``__wrapped__`` and the patch's name is
recorded on the new attribute, so applying a patch twice changes nothing."""

import functools
import types


def patched_by(owner, attr):
    """Name of the patch that set ``owner.attr``, or None."""
    return getattr(getattr(owner, attr, None), "__masan_patch__", None)


def wrap(patch, owner, attr, wrapper):
    """``owner.attr`` becomes ``wrapper(original, *args, **kwargs)``."""
    if patched_by(owner, attr) == patch:
        return
    original = getattr(owner, attr)

    @functools.wraps(original)
    def patched(*args, **kwargs):
        return wrapper(original, *args, **kwargs)

    _mark(patched, original, patch)
    setattr(owner, attr, patched)


def replace(patch, owner, attr, new):
    """``owner.attr`` becomes ``new``, which does not call the original (the docstring of
    ``new`` says why the original cannot be wrapped). ``new`` may be a function or an object."""
    if patched_by(owner, attr) == patch:
        return
    original = getattr(owner, attr, None)
    if isinstance(new, types.FunctionType):

        @functools.wraps(new)
        def patched(*args, **kwargs):
            return new(*args, **kwargs)

    else:
        patched = new
    _mark(patched, original, patch)
    setattr(owner, attr, patched)


def _mark(patched, original, patch):
    patched.__wrapped__ = original
    patched.__masan_patch__ = patch
