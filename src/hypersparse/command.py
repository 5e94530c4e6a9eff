"""The ``hypersparse`` console command: Ctrl-C or SIGTERM while torch is still loading is one line too, not a
traceback, a crash inside torch's import or a silent death."""
from __future__ import annotations

import os
import signal
import threading


def _quit_while_starting(signum, frame):
    # nothing is written yet; raising here could land inside torch's import, so end at once instead
    what, code = ("terminated", 143) if signum == signal.SIGTERM else ("interrupted", 130)
    os.write(2, f"hypersparse: {what} while starting; nothing was written\n".encode())
    os._exit(code)


def main() -> int:
    # Torch's OpenMP workers spin while they wait; beside other busy processes that costs a multi-threaded run
    # several times its speed (bench/results/threads-cpu.md). Read when torch loads, so set before the import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _quit_while_starting)
    try:
        from hypersparse.cli import main as run  # imports torch: seconds in which a signal may land
    except (MemoryError, ImportError) as exc:  # an address-space limit (ulimit -v) below what torch's libraries take
        if not _out_of_memory(exc):
            raise
        os.write(2, b"hypersparse: error: out of memory while loading torch; raise the memory limit (ulimit -v) "
                    b"to a few GB\n")
        return 2
    try:
        code = run()
    except (MemoryError, ImportError) as exc:
        # torch loads parts of itself on first use (torch._dynamo when an optimizer is built): under a tight
        # address-space limit that fails later, as a MemoryError or an ImportError of a library it cannot map
        if not _out_of_memory(exc):
            raise
        os.write(2, b"hypersparse: error: out of memory; raise the memory limit (ulimit -v) to a few GB, or train a "
                    b"smaller model or batch (a stopped run continues with hypersparse train --resume RUN_DIR)\n")
        return 2
    if main_thread:
        # the command has finished and its files are complete: a signal while Python shuts down (which restores the
        # default handlers, so it would kill the process without a word) changes nothing, and is ignored
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the process running out of address space: a MemoryError, or an ImportError of the loader
    that could not map a library (not a missing package)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or isinstance(exc.__cause__, MemoryError) or "failed to map segment" in text \
        or "cannot allocate memory" in text
