"""Atomic writes and safe reads: a crash leaves the old file or the new one, and no file runs code when read."""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from hypersparse.errors import UserError

VERSION = 2  # of a run checkpoint's layout; a checkpoint of another version is refused with a clear line


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(obj: dict, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, what: str = "model file") -> Any:
    """Tensors and plain containers from a ``.pt`` file, never code (``weights_only``); UserError if unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{what} {path} holds more than tensors and plain values, and loading it could run code; "
                        f"refused ({str(exc).splitlines()[0][:120]})") from None
    except (OSError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise UserError(f"cannot read {what} {path} ({str(exc).splitlines()[0][:200]}); is it complete?") from None


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
