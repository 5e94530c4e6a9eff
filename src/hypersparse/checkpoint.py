"""Atomic writes and safe reads: a crash leaves the old file or the new one, and no file runs code when read."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import re
import secrets
import shutil
import stat
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from hypersparse.errors import UserError
from hypersparse.schema import regular_file

VERSION = 3  # of a run checkpoint's layout; a checkpoint of another version is refused with a clear line
TMP_PREFIX = ".hypersparse-"  # every temporary this tool makes starts so, then its process id


def temporary_prefix() -> str:
    """The start of every temporary's name this process makes: ``.hypersparse-<pid>-``."""
    return f"{TMP_PREFIX}{os.getpid()}-"


def temporary_name(path: Path) -> Path:
    """A fresh temporary beside ``path``: ``.hypersparse-<pid>-<random>.<name>.tmp``."""
    return path.with_name(f"{temporary_prefix()}{secrets.token_hex(6)}.{path.name}.tmp")


_in_progress: set[Path] = set()  # this process's temporaries that exist now, for a stop that cannot unwind


@contextlib.contextmanager
def temporary(path: Path):
    """Register ``path`` (a temporary file or folder this process is about to create) while the block runs, so that
    :func:`remove_own_temporaries` finds it whatever moment a signal lands."""
    _in_progress.add(Path(path))
    try:
        yield Path(path)
    finally:
        _in_progress.discard(Path(path))


def remove_own_temporaries() -> None:
    """Delete the temporaries this process is writing now (from a signal handler that ends the process at once)."""
    for path in list(_in_progress):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or a number no process has: leave its files alone
    return True


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries that a process of this tool, now dead, left in ``folder``; nothing else (a user's own
    ``.notes.tmp`` stays). Returns what it removed."""
    removed = []
    for tmp in Path(folder).glob(f"{TMP_PREFIX}*.tmp"):
        match = re.fullmatch(rf"{re.escape(TMP_PREFIX)}(\d{{1,10}})-[0-9a-f]{{12}}\..+\.tmp", tmp.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))) and not tmp.is_symlink():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def replaceable(path: Path, flag: str = "output") -> None:
    """UserError unless ``path`` is absent or a regular file: an output never replaces a device, a FIFO, a socket,
    a folder or a symbolic link (renaming over ``/dev/null`` would turn the device into a file)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UserError(f"{flag} {path}: {exc.strerror or exc}; choose another path") from None
    if stat.S_ISREG(st.st_mode):
        return
    kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a symbolic link" if stat.S_ISLNK(st.st_mode)
            else "a device, a FIFO or a socket, not a regular file")
    raise UserError(f"{flag} {path} is {kind}; hypersparse replaces only regular files, give a file name")


def own_folder(path: str | Path, what: str) -> Path:
    """``path`` (``what``: whose folder it is), a folder hypersparse makes inside a run or study folder
    (``compare-gmp``, ``trial-3``, ``tensorboard``), if it is absent or a real folder; else UserError. A symbolic
    link planted there is refused, never followed: a run written through it would land (and replace files) outside
    the folder."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise UserError(f"{path} ({what}): {exc.strerror or exc}; pick another folder") from None
    if stat.S_ISDIR(st.st_mode):
        return path
    kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
    raise UserError(f"{path} ({what}) is {kind}; hypersparse writes there only into a folder it makes itself: remove "
                    "it, or pick another folder")


def file_path(path: str | Path) -> Path:
    """``path`` as a Path, refused if given as a string ending in a slash (a folder: Path would drop the slash and
    write a file of the folder's name)."""
    if isinstance(path, str) and path.endswith(("/", os.sep)):
        raise IsADirectoryError(errno.EISDIR, "names a folder (it ends in a slash); give a file name", path)
    return Path(path)


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, fsync, then rename over it.

    ``path`` must be absent or a regular file (:func:`replaceable`), checked again right before the rename, in a
    folder that exists; a ``path`` given as a string ending in a slash names a folder, not a file."""
    path = file_path(path)
    if not path.parent.is_dir():  # else the error would name the temporary file, not what the caller asked for
        raise FileNotFoundError(errno.ENOENT, "no such folder to write into", str(path.parent))
    replaceable(path)
    # named (and registered) before it exists, so a Ctrl-C or SIGTERM at any moment after its creation still finds it
    tmp = temporary_name(path)
    with temporary(tmp):
        try:
            # 0o666: the user's umask decides its mode, as for any file they write
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            with os.fdopen(fd, mode) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            replaceable(path)
            os.replace(tmp, path)
        except BaseException as exc:
            if not isinstance(exc, FileExistsError):  # that name is someone else's file
                tmp.unlink(missing_ok=True)
            raise


def _not_stdout(path: str | Path, flag: str, what: str = "file") -> None:
    """Refuse ``-``: by Unix habit it means stdout, but a binary file or a folder named "-" would appear instead."""
    if str(path) == "-":
        raise UserError(f"{flag} - is not stdout here; name a {what}")


def output_file(path: str | Path, flag: str) -> Path:
    """``path`` if a file can be written there (its folder exists, and it is absent or a regular file), else
    UserError."""
    _not_stdout(path, flag)
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name inside it")
    replaceable(path, flag)
    if not path.parent.is_dir():
        raise UserError(f"{flag} {path}: folder {path.parent} does not exist (or is not a folder); create it first")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{flag} {path}: folder {path.parent} is not writable; choose another")
    return path


def output_folder(path: str | Path, flag: str) -> Path:
    """Create folder ``path`` if needed and return it, or raise UserError saying why it cannot be written."""
    _not_stdout(path, flag, "folder")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder")
    if path.is_symlink() and not path.exists():
        raise UserError(f"{flag} {path} is a symbolic link to {os.readlink(path)}, which does not exist; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot create the folder ({exc.strerror or exc}); choose another") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path} is not writable; choose another")
    return path


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """``torch.save`` atomically; serialized in memory first, so a full disk is an OSError (ENOSPC), not torch's
    RuntimeError from inside its zip writer."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def _torch_reason(exc: BaseException) -> str:
    """The informative line of a torch.load failure, whole (torch's first lines are the same boilerplate always)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.startswith("WeightsUnpickler error:")]  # what the unpickler refused, if it did
    # the advice around it (re-run with weights_only=False, allowlist the global) is what hypersparse never does
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1) ", "(2) ")
    useful = said or [ln for ln in lines if not ln.startswith(skip)] or lines or [type(exc).__name__]
    return useful[0].removeprefix("WeightsUnpickler error:").split(". Please use")[0].strip() or type(exc).__name__


def load_checkpoint(path: str | Path, what: str = "model file") -> Any:
    """Tensors and plain containers from a ``.pt`` file, never code (``weights_only``); UserError if unreadable."""
    regular_file(path, what)
    try:
        with warnings.catch_warnings():
            # a damaged file is refused below; torch's guess about its pickle protocol would be a second message
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _torch_reason(exc)
        if "GLOBAL" in reason or "global" in reason:
            raise UserError(f"{what} {path} holds more than tensors and plain values, and loading it could run code; "
                            f"refused ({reason[:300]}). If you trust its source, load it yourself and re-save only "
                            "its state_dict with torch.save") from None
        raise UserError(f"cannot read {what} {path} ({reason[:300]}); is it a complete PyTorch file?") from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle stream fails inside the unpickler in any way
        # (IndexError from an empty stack, KeyError from the memo, EOFError, ...): each means the file is unreadable
        raise UserError(f"cannot read {what} {path} ({_torch_reason(exc)[:300]}); is it complete?") from None


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2), mode="w")
