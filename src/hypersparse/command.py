"""The ``hypersparse`` console command: Ctrl-C while torch is still loading is one line too, not a traceback."""
from __future__ import annotations

import os
import sys


def main() -> int:
    # Torch's OpenMP workers spin while they wait; beside other busy processes that costs a multi-threaded run
    # several times its speed (bench/results/threads-cpu.md). Read when torch loads, so set before the import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from hypersparse.cli import main as run  # imports torch: seconds in which Ctrl-C may land

        return run()
    except KeyboardInterrupt:  # before the command's own boundary was in place: nothing was written yet
        print("hypersparse: interrupted while starting; nothing was written", file=sys.stderr)
        return 130
