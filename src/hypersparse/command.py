"""The ``hypersparse`` console command: Ctrl-C or SIGTERM while torch is still loading is one line too, not a
traceback or a silent death."""
from __future__ import annotations

import signal
import sys
import threading

from hypersparse.errors import Terminated


def _terminate(signum, frame):
    raise Terminated()


def main() -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # from the first moment, so that SIGTERM stops like Ctrl-C
    try:
        from hypersparse.cli import main as run  # imports torch: seconds in which a signal may land
    except KeyboardInterrupt as exc:  # before the command's own boundary was in place: nothing was written yet
        what, code = ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        print(f"hypersparse: {what} while starting; nothing was written", file=sys.stderr)
        return code
    return run()
