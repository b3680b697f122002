"""The reproduction benchmark, ``python -m benchmarks.reproduce --preset quick|full ...`` (usage:
benchmarks/reproduce/cli.py), by concern:

    planning    the presets file, the (dataset, model) jobs of a preset and their layered settings,
                conversion of a dataset missing from --data-path
    running     one job, in this process or in a child process of its own; its peak-memory figure
    reporting   speed ratios, the Markdown tables beside the published anchors, the plots
    cli         the command line: plan, run each job, rewrite the report after each

Environment, timing, memory, config hashes and result files come from benchmarks/harness.py.
"""

from benchmarks.reproduce.cli import main, parse_args
from benchmarks.reproduce.planning import ensure_dataset, load_presets, load_yaml, plan, settings_layers
from benchmarks.reproduce.reporting import markdown, plots, speed_ratios
from benchmarks.reproduce.running import execute, peak_memory, run_job

__all__ = ["ensure_dataset", "execute", "load_presets", "load_yaml", "main", "markdown", "parse_args", "peak_memory",
           "plan", "plots", "run_job", "settings_layers", "speed_ratios"]
