"""The ``hypersparse`` console command: Ctrl-C while torch is still loading is one line too, not a traceback."""
from __future__ import annotations

import sys


def main() -> int:
    try:
        from hypersparse.cli import main as run  # imports torch: seconds in which Ctrl-C may land

        return run()
    except KeyboardInterrupt:  # before the command's own boundary was in place: nothing was written yet
        print("hypersparse: interrupted while starting; nothing was written", file=sys.stderr)
        return 130
