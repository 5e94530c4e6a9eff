"""Reading the official file layouts, with size and checksum checks."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import urllib.request
from pathlib import Path

import numpy as np

from hypersparse.errors import DataError


def digest(path: Path, algo: str = "md5") -> str:
    """Hex digest of a file (``md5`` or ``sha256``), read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified(path: Path, size: int | None, expected: str | None, algo: str = "md5", url: str | None = None) -> Path:
    """Return ``path`` once its size and checksum match; download it first if missing and ``url`` is given."""
    if not path.exists() and url is not None:
        download(url, path)
    if not path.exists():
        raise DataError(f"data file {path} is missing; put the official file there or pick another --data-dir")
    if size is not None and path.stat().st_size != size:
        raise DataError(
            f"data file {path} is corrupt or truncated ({path.stat().st_size} bytes, expected {size}); "
            "replace it with the official file"
        )
    if expected is not None:
        got = digest(path, algo)
        if got != expected:
            raise DataError(
                f"data file {path} is corrupt ({algo} {got}, expected {expected}); replace it with the official file"
            )
    return path


def download(url: str, path: Path) -> None:
    """Fetch ``url`` to ``path`` atomically (the checksum is checked by the caller)."""
    from hypersparse.checkpoint import temporary_name

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download {url} ({exc}); copy the file to {path} by hand") from exc


def extract_archive(archive: Path, into: Path, folder: str) -> None:
    """Unpack the members of a verified ``.tar.gz`` that lie under ``folder/`` into ``into`` (plain files only).

    Members that are links, devices, absolute paths or that climb out with ``..`` are refused: an archive must not
    write outside ``into``. The folder appears whole or not at all (unpacked beside it, then renamed).
    """
    import shutil
    import tarfile

    from hypersparse.checkpoint import temporary_name

    staging = temporary_name(into / folder)  # this process's own name: the clean-up below removes only what it made
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
                    raise DataError(f"archive {archive} holds {m.name!r}, which would land outside {into}; "
                                    "delete the archive and download it again")
                if parts and parts[0] == folder:
                    members.append(m)
            tar.extractall(staging, members=members, filter="data")
        os.replace(staging / folder, into / folder)
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise DataError(f"archive {archive} cannot be unpacked ({exc}); delete it and download it again") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped), as used by MNIST and Fashion-MNIST."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
        magic = int.from_bytes(data[:4], "big")
        ndim = magic & 0xFF
        if magic >> 8 != 0x08 or ndim not in (1, 3):
            raise ValueError(f"bad magic number {magic:#010x}")
        shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"data file {path} is not a valid gzipped IDX file ({exc}); replace it") from exc


# what an official CIFAR batch may name: numpy's array reconstruction, nothing that can run code
_DATA_GLOBALS = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
                 for n in ("_reconstruct", "scalar")}
_DATA_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # encode: bytes in protocol 2


class _DataUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, bytes, numbers and numpy arrays only: a planted data file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) in _DATA_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}; a data file may hold only numbers, strings, lists, "
                                     "dicts and arrays")


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One official CIFAR python batch: (N, 3, 32, 32) uint8 images and labels.

    These files are pickles: they are read with a restricted unpickler that
    builds plain data and numpy arrays only (and their checksums are verified
    before this is called).
    """
    try:
        with open(path, "rb") as f:
            entry = _DataUnpickler(f, encoding="latin1").load()
        x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return x, np.asarray(entry[label_key], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError, AttributeError) as exc:
        raise DataError(f"data file {path} is not a valid CIFAR python batch ({exc}); replace it") from exc


def decode_jpegs(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Decode concatenated JPEG files to (N, 3, H, W) uint8 (needs Pillow)."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise DataError("decoding cifar10-jpeg75 needs Pillow: pip install pillow") from exc
    images = []
    for i in range(len(offsets) - 1):
        b = blob[offsets[i] : offsets[i + 1]].tobytes()
        images.append(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")))
    return np.stack(images).transpose(0, 3, 1, 2).copy()
