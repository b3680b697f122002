"""Analyses of trained checkpoints (``python -m masan_recbole.analysis.<name> --help``)."""

PLOT_EXTRA = 'pip install -e ".[plot]"  (or: pip install matplotlib)'


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or an error that says how to get it:
    the main install leaves matplotlib out."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"the analysis plots need matplotlib, which is not installed: {PLOT_EXTRA}") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt
