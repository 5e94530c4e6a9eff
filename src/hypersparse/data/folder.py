"""An image folder as a dataset: one sub-folder of images per class, decoded with Pillow.

Layouts: ``root/train/<class>/*`` with optional ``root/val/<class>/*`` and ``root/test/<class>/*``; or
``root/<class>/*`` directly. What is not given is carved from each class alike: the test split (a fixed 20 % of each
class, at least one image, the same for every seed), then the validation split (10 % of the rest, at least one, by
the seed). Class indices follow the sorted folder names. Only regular files are read, each of at most
:data:`MAX_PIXELS` pixels (checked before it is decoded), and every split's images must have one size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hypersparse.errors import DataError, first_line
from hypersparse.schema import MAX_IMAGE_SIZE

MAX_PIXELS = MAX_IMAGE_SIZE * MAX_IMAGE_SIZE
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def _images(split: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for index, name in enumerate(classes):
        found = sorted(p for p in (split / name).iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()) \
            if (split / name).is_dir() else []
        paths += found
        labels += [index] * len(found)
    return paths, labels


def _decode(paths: list[Path], mode: str, first: tuple | None = None) -> np.ndarray:
    """The images at ``paths`` as (N, C, H, W) uint8, all of one size (``first``: the path and shape to match)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    arrays = []
    for p in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # a second stderr line otherwise
                with Image.open(p) as img:
                    if img.size[0] * img.size[1] > MAX_PIXELS:
                        raise DataError(f"image {p} is {img.size[0]}x{img.size[1]} pixels, more than the "
                                        f"{MAX_PIXELS:,} hypersparse reads; resize it")
                    a = _eight_bits(img, mode, p)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning,
                ValueError) as exc:
            raise DataError(f"image {p} cannot be read ({first_line(exc)}); remove or replace it") \
                from None
        if first is None:
            first = (p, a.shape)
        elif a.shape != first[1]:
            raise DataError(f"images differ in size: {first[0]} is {first[1][1]}x{first[1][0]}, {p} is "
                            f"{a.shape[1]}x{a.shape[0]}; resize them to one size first")
        arrays.append(a)
    x = np.stack(arrays)
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2).copy()


def _eight_bits(img, mode: str, path: Path) -> np.ndarray:
    """The image's pixels as 8-bit ``mode`` (L or RGB). Pillow's convert clips 16-bit pixels to 255 instead of
    scaling them, and float or 32-bit pixels have no range it could know: 16-bit grey is scaled (/257), and the
    others are refused, not read as blank images."""
    if img.mode.startswith("I;16"):
        return (np.asarray(img, dtype=np.float64) / 257).round().astype(np.uint8)
    if img.mode in ("I", "F"):
        raise DataError(f"image {path} has {'32-bit integer' if img.mode == 'I' else 'floating-point'} pixels, whose "
                        "range hypersparse cannot know; convert the images to 8 bits (grey or RGB) first")
    return np.asarray(img.convert(mode))


def _mode(paths: list[Path]) -> str:
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a huge or broken first image is refused by _decode, with its name
            with Image.open(paths[0]) as img:
                return "L" if img.mode in ("L", "1", "I;16", "I") else "RGB"
    except Exception:  # noqa: BLE001 - any failure to open is reported by _decode
        return "RGB"


def read_folder(root: Path) -> dict:
    """``{"classes", "train": (x, y), "val": (x, y) or None, "test": (x, y) or None}`` from an image folder."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError("image folders are decoded with Pillow: pip install pillow") from None
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; give a folder of class sub-folders (or train/, test/)")
    base = root / "train" if (root / "train").is_dir() else root
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if base == root:
        classes = [c for c in classes if c not in ("val", "test")]
    train = _images(base, classes)
    if len(classes) < 2 or not train[0]:
        raise DataError(f"{base} needs at least two class sub-folders holding images ({', '.join(sorted(SUFFIXES))})")
    mode = _mode(train[0])
    x = _decode(train[0], mode)
    if x.shape[2] != x.shape[3]:  # the models, and the records runs and exports keep, take one image size
        raise DataError(f"the images in {base} are {x.shape[3]}x{x.shape[2]} pixels (width x height); hypersparse "
                        "trains on square images: crop or pad them to square first")
    out = {"classes": classes, "train": (x, np.array(train[1]))}
    first = (train[0][0], (x.shape[2], x.shape[3]) + ((x.shape[1],) if x.shape[1] > 1 else ()))
    for split in ("val", "test"):
        paths, labels = _images(root / split, classes) if base != root else ([], [])
        if base != root and (root / split).is_dir():  # a split given is used, never silently carved from train/
            others = sorted(p.name for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith(".")
                            and p.name not in classes)
            if others:
                raise DataError(f"{root / split} holds {others[0]}/, which is not a class folder of {base} (its "
                                f"classes: {', '.join(classes[:5])}{' ...' if len(classes) > 5 else ''}); rename or "
                                "move it")
            if not paths:
                raise DataError(f"{root / split} holds no images in its class folders; put the {split} images "
                                f"there, or remove {split}/ to have the split carved from {base}")
        out[split] = (_decode(paths, mode, first), np.array(labels)) if paths else None
    return out
