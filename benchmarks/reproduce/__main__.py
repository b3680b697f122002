"""python -m benchmarks.reproduce: see benchmarks/reproduce/cli.py."""

import sys

from benchmarks.reproduce.cli import main

if __name__ == "__main__":  # not when a spawned child process imports this module as __mp_main__
    sys.exit(main())
