"""Atomic writes and safe reads: a crash leaves the old file or the new one, and no file runs code when read."""
from __future__ import annotations

import io
import json
import os
import pickle
import secrets
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from hypersparse.errors import UserError

VERSION = 2  # of a run checkpoint's layout; a checkpoint of another version is refused with a clear line


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    # named before it exists, so a Ctrl-C or SIGTERM at any moment after its creation still finds it to remove
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        # 0o666: the user's umask decides its mode, as for any file they write
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if not isinstance(exc, FileExistsError):  # that name is someone else's file
            tmp.unlink(missing_ok=True)
        raise


def output_file(path: str | Path, flag: str) -> Path:
    """``path`` if a file can be written there (its folder exists and it is not a folder), else UserError."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name inside it")
    if not path.parent.is_dir():
        raise UserError(f"{flag} {path}: folder {path.parent} does not exist (or is not a folder); create it first")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{flag} {path}: folder {path.parent} is not writable; choose another")
    return path


def output_folder(path: str | Path, flag: str) -> Path:
    """Create folder ``path`` if needed and return it, or raise UserError saying why it cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder")
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


def load_checkpoint(path: str | Path, what: str = "model file") -> Any:
    """Tensors and plain containers from a ``.pt`` file, never code (``weights_only``); UserError if unreadable."""
    try:
        with warnings.catch_warnings():
            # a damaged file is refused below; torch's guess about its pickle protocol would be a second message
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{what} {path} holds more than tensors and plain values, and loading it could run code; "
                        f"refused ({str(exc).splitlines()[0][:120]}). If you trust its source, load it yourself and "
                        "re-save only its state_dict with torch.save") from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle stream fails inside the unpickler in any way
        # (IndexError from an empty stack, KeyError from the memo, EOFError, ...): each means the file is unreadable
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read {what} {path} ({first}); is it complete?") from None


def load_run_checkpoint(path: str | Path) -> dict:
    """A run's ``checkpoint.pt``, checked to be of this version's layout."""
    ckpt = load_checkpoint(path, "checkpoint")
    version = ckpt.get("version") if isinstance(ckpt, dict) else None
    if version != VERSION:
        raise UserError(f"checkpoint {path} has layout version {version!r}; this hypersparse reads version {VERSION}: "
                        "start the run again (or resume it with the hypersparse that wrote it)")
    return ckpt


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2), mode="w")
