"""Analyses of trained checkpoints (``python -m masan_recbole.analysis.<name> --help``)."""
