"""The ``hypersparse`` console command: Ctrl-C or SIGTERM while torch is still loading is one line too, not a
traceback, a crash inside torch's import or a silent death."""
from __future__ import annotations

import os
import signal
import sys
import threading

# The least address space (ulimit -v) hypersparse starts under. Measured with torch 2.13 on Linux x86-64 (2 cores): its
# import failed up to about 650 MB, the default training run needed about 800 MB, and between 500 and 640 MB the process
# died in native code (glibc, OpenBLAS, libgomp's threads: more with more cores) where no Python handler runs
TORCH_FLOOR = 1024 * 2**20


def _quit_while_starting(signum, frame):
    # nothing is written yet; raising here could land inside torch's import, so end at once instead
    what, code = ("terminated", 143) if signum == signal.SIGTERM else ("interrupted", 130)
    os.write(2, f"hypersparse: {what} while starting; nothing was written\n".encode())
    os._exit(code)


def _standard_streams() -> None:
    """A closed standard descriptor (``2>&-``) gets /dev/null: else the first file the command opens would take
    descriptor 2 and an error line would be written into it, and with no stream to write to, an error would end the
    command with exit code 1 instead of its own. So does an output descriptor open only for reading (a launcher such
    as pyenv's shim, run with ``2>&-``, leaves its own script there)."""
    import fcntl

    for fd in (0, 1, 2):
        try:
            usable = fd == 0 or fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
        except OSError:  # closed
            usable = False
        if not usable:  # closed, or (a launcher's script left open there) not writable
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if getattr(sys, name) is None:  # Python started with the descriptor closed
            setattr(sys, name, open(fd, "w", errors="backslashreplace", closefd=False))


def main() -> int:
    _standard_streams()
    # Torch's OpenMP workers spin while they wait; beside other busy processes that costs a multi-threaded run
    # several times its speed (bench/results/threads-cpu.md). Read when torch loads, so set before the import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _quit_while_starting)
    limit = _address_space_limit()
    if limit is not None and limit < TORCH_FLOOR:
        # refused before torch loads: near its need it can end the process from native code with no message
        os.write(2, f"hypersparse: error: out of memory: the address-space limit (ulimit -v) is {limit >> 20} MB, "
                    f"below the {TORCH_FLOOR >> 20} MB hypersparse asks for (torch's libraries alone take about 700 "
                    "MB); raise it to a few GB\n".encode())
        return 2
    try:
        from hypersparse.cli import main as run  # imports torch: seconds in which a signal may land
    except (MemoryError, ImportError, SystemError) as exc:  # an address-space limit below what torch's libraries take
        if not _out_of_memory(exc):
            raise
        os.write(2, b"hypersparse: error: out of memory while loading torch; raise the memory limit (ulimit -v) "
                    b"to a few GB\n")
        return 2
    try:
        code = run()
    except (MemoryError, ImportError, SystemError) as exc:
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


def _address_space_limit() -> int | None:
    """The soft address-space limit (``ulimit -v``) in bytes, or None where there is none."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):  # no resource module (Windows)
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the process running out of address space: a MemoryError, an ImportError of the loader
    that could not map a library (not a missing package), or, under an address-space limit, a SystemError from C
    code whose failed allocation set no exception (torch's import does that near the limit)."""
    text = str(exc).lower()
    if isinstance(exc, SystemError):
        return "without exception set" in text and _address_space_limit() is not None
    return isinstance(exc, MemoryError) or isinstance(exc.__cause__, MemoryError) or "failed to map segment" in text \
        or "cannot allocate memory" in text
