"""Datasets by name, as uint8 tensors with a seeded validation split.

``load_dataset(name, data_dir, seed)`` returns a :class:`Splits`: train,
validation and test images (N, C, H, W) uint8 and int64 labels. The
validation split is carved from the official training set by the seed; model
selection uses it, and the test set is only reported.
"""
from __future__ import annotations

import gzip
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hypersparse.checkpoint import atomic_write
from hypersparse.data.files import decode_jpegs, digest, extract_archive, read_cifar_batch, read_idx, verified
from hypersparse.errors import DataError, UserError, did_you_mean, first_line, refuse_builtin_override
from hypersparse.plugins import note_registrar, user_code
from hypersparse.schema import MAX_CHANNELS, MAX_CLASSES, MAX_IMAGE_SIZE, regular_file


@dataclass
class Splits:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # random crop (4-pixel padding) and horizontal flip
    classes: tuple[str, ...] | None = None  # class names, where the data has them

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]


def _split(name, x, y, test_x, test_y, val_size, seed, num_classes, augment) -> Splits:
    x, y = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y)).long()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = perm[:val_size], perm[val_size:]
    xf = x[train].float() / 255
    mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
    std = tuple(xf.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return Splits(
        name, x[train], y[train], x[val], y[val],
        torch.tensor(np.asarray(test_x)), torch.tensor(np.asarray(test_y)).long(),
        num_classes, mean, std, augment,
    )


MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {  # name: (bytes, md5)
    "train-images-idx3-ubyte.gz": (9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte.gz": (28881, "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": (1648877, "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": (4542, "ec29112dd5afa0611ce80d1b7f02629c"),
}
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": (None, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train-labels-idx1-ubyte.gz": (None, "25c81989df183df01b3e8a0aad5dffbe"),
    "t10k-images-idx3-ubyte.gz": (None, "bef4ecab320f06d8554ea6380940ec79"),
    "t10k-labels-idx1-ubyte.gz": (None, "bb300cfdad3c16e7a12a480ee83cd310"),
}


def _idx_dataset(name, files, url, data_dir, seed, val_size, download):
    paths = {f: verified(data_dir / f, size, md5, url=(url + f) if download else None)
             for f, (size, md5) in files.items()}
    x = read_idx(paths["train-images-idx3-ubyte.gz"])[:, None]
    y = read_idx(paths["train-labels-idx1-ubyte.gz"]).astype(np.int64)
    tx = read_idx(paths["t10k-images-idx3-ubyte.gz"])[:, None]
    ty = read_idx(paths["t10k-labels-idx1-ubyte.gz"]).astype(np.int64)
    if len(x) != len(y) or len(tx) != len(ty):
        raise DataError(f"images and labels in {data_dir} disagree in count; replace the files")
    return _split(name, x, y, tx, ty, val_size, seed, 10, augment=False)


def mnist(data_dir: Path, seed: int, download: bool = False) -> Splits:
    return _idx_dataset("mnist", MNIST_FILES, MNIST_URL, data_dir, seed, 5000, download)


def fashion_mnist(data_dir: Path, seed: int, download: bool = False) -> Splits:
    return _idx_dataset("fashion-mnist", FASHION_FILES, FASHION_URL, data_dir, seed, 5000, download)


CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR100_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}


CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
CIFAR_ARCHIVES = {  # folder inside: (archive, bytes, md5), as published on the CIFAR page
    "cifar-10-batches-py": ("cifar-10-python.tar.gz", 170498071, "c58f30108f718f92721af3b95e74349a"),
    "cifar-100-python": ("cifar-100-python.tar.gz", 169001437, "eb9058c3a382ffc7106e4002c42a8d85"),
}


def _find(data_dir: Path, sub: str, first: str, download: bool = False) -> Path:
    """Accept either the extracted folder itself or its parent; with ``download``, fetch and unpack the archive."""
    for d in (data_dir, data_dir / sub):
        if (d / first).exists():
            return d
    if download:
        name, size, md5 = CIFAR_ARCHIVES[sub]
        extract_archive(verified(data_dir / name, size, md5, url=CIFAR_URL + name), data_dir, sub)
        return data_dir / sub
    raise DataError(f"{first} not found in {data_dir} or {data_dir / sub}; extract the official archive there "
                    "(or add --download)")


def cifar10(data_dir: Path, seed: int, download: bool = False) -> Splits:
    d = _find(data_dir, "cifar-10-batches-py", "data_batch_1", download)
    parts = [read_cifar_batch(verified(d / f, None, CIFAR10_MD5[f]), "labels") for f in CIFAR10_MD5]
    x = np.concatenate([p[0] for p in parts[:5]])
    y = np.concatenate([p[1] for p in parts[:5]])
    return _split("cifar10", x, y, parts[5][0], parts[5][1], 5000, seed, 10, augment=True)


def cifar100(data_dir: Path, seed: int, download: bool = False) -> Splits:
    d = _find(data_dir, "cifar-100-python", "train", download)
    x, y = read_cifar_batch(verified(d / "train", None, CIFAR100_MD5["train"]), "fine_labels")
    tx, ty = read_cifar_batch(verified(d / "test", None, CIFAR100_MD5["test"]), "fine_labels")
    return _split("cifar100", x, y, tx, ty, 5000, seed, 100, augment=True)


JPEG75_FILE = ("cifar10_jpeg75.npz", 55792477, "81dadbeec2773aaa2e4690f9db0a38822f051b138dd35257e876fabdd581ae77")


def cifar10_jpeg75(data_dir: Path, seed: int, download: bool = False) -> Splits:
    """CIFAR-10 as a lossy JPEG (quality 75) copy: report results as 'CIFAR-10-JPEG75'.

    Decoding 60,000 JPEGs takes a while, so the decoded arrays are cached next
    to the file (or in ~/.cache/hypersparse if that folder is read-only).
    """
    name, size, sha = JPEG75_FILE
    path = data_dir / name
    if not path.exists() and (data_dir / "cifar10-jpeg75" / name).exists():
        path = data_dir / "cifar10-jpeg75" / name
    verified(path, size, None)
    cache_name = f"cifar10_jpeg75.decoded.{sha[:12]}.npz"
    candidates = [path.parent / cache_name, Path.home() / ".cache" / "hypersparse" / cache_name]
    for cache in candidates:
        if cache.exists():
            x, y, tx, ty = _read_cache(cache)
            return _split("cifar10-jpeg75", x, y, tx, ty, 5000, seed, 10, augment=True)
    if digest(path, "sha256") != sha:
        raise DataError(f"data file {path} is corrupt (sha256 mismatch); copy cifar10_jpeg75.npz again")
    with np.load(path) as z:
        x = decode_jpegs(z["train_jpeg"], z["train_offsets"])
        tx = decode_jpegs(z["test_jpeg"], z["test_offsets"])
        y, ty = z["train_labels"].astype(np.int64), z["test_labels"].astype(np.int64)
    for cache in candidates:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, lambda f: np.savez(f, x=x, y=y, tx=tx, ty=ty))
            break
        except OSError:
            continue
    return _split("cifar10-jpeg75", x, y, tx, ty, 5000, seed, 10, augment=True)


def _read_cache(cache: Path) -> tuple[np.ndarray, ...]:
    """The decoded arrays of the cifar10-jpeg75 cache, checked (uint8 3x32x32 images, labels 0..9, 50,000 + 10,000);
    DataError naming the file otherwise (it is never deleted for the user: it may be theirs)."""
    try:
        with np.load(regular_file(cache, "cache"), allow_pickle=False) as z:
            x, y, tx, ty = (z[k] for k in ("x", "y", "tx", "ty"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UserError) as exc:
        raise DataError(f"the decoded cache {cache} is damaged ({first_line(exc, 120)}); delete it and it is "
                        "rebuilt from cifar10_jpeg75.npz") from None
    images = all(a.dtype == np.uint8 and a.shape[1:] == (3, 32, 32) for a in (x, tx))
    labels = all(a.dtype.kind in "iu" and a.ndim == 1 and (a.size == 0 or 0 <= a.min() <= a.max() <= 9)
                 for a in (y, ty))
    ok = images and labels and (len(x), len(tx)) == (len(y), len(ty)) == (50000, 10000)
    if not ok:
        raise DataError(f"the decoded cache {cache} does not hold CIFAR-10's arrays; delete it and it is rebuilt from "
                        "cifar10_jpeg75.npz")
    return x, y.astype(np.int64), tx, ty.astype(np.int64)


def tinyimagenet(data_dir: Path, seed: int, download: bool = False) -> Splits:
    """Tiny ImageNet (200 classes, 64x64): the official ``tiny-imagenet-200`` folder layout.

    Its test labels are not public, so the official validation set serves as
    the test set and the validation split is carved from the training set.
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise DataError("reading tinyimagenet needs Pillow: pip install pillow") from exc
    d = _find(data_dir, "tiny-imagenet-200", "wnids.txt")
    try:
        wnids = (d / "wnids.txt").read_text(encoding="utf-8").split()
    except UnicodeDecodeError:
        raise DataError(f"{d / 'wnids.txt'} is not UTF-8 text; extract the official archive again") from None
    index = {w: i for i, w in enumerate(wnids)}

    def load(paths):
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]).transpose(0, 3, 1, 2).copy()

    train = sorted((p, index[w]) for w in wnids for p in (d / "train" / w / "images").glob("*.JPEG"))
    ann = d / "val" / "val_annotations.txt"
    if not train or not ann.exists():
        raise DataError(f"{d} lacks train/<wnid>/images or val/val_annotations.txt; extract the official archive")
    try:
        val = [line.split("\t")[:2] for line in ann.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        val = [[]]
    bad = next((i for i, v in enumerate(val) if len(v) < 2 or v[1] not in index), None)
    if bad is not None:
        raise DataError(f"{ann} line {bad + 1} is not 'image<TAB>wnid' with a wnid from wnids.txt; extract the "
                        "official archive again")
    try:
        tx = load([d / "val" / "images" / f for f, _ in val])
    except OSError as exc:
        raise DataError(f"a Tiny ImageNet validation image is missing or corrupt ({exc})") from exc
    x = load([p for p, _ in train])
    ty = np.array([index[w] for _, w in val])
    y = np.array([c for _, c in train])
    return _split("tinyimagenet", x, y, tx, ty, min(10000, len(x) // 10), seed, len(wnids), augment=True)


DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"


def digits(data_dir: Path | None, seed: int, download: bool = False) -> Splits:
    """scikit-learn's 8x8 digits (1,797 images), shipped inside the package.

    A fixed 20 % test split (independent of the seed), then 10 % of the rest for validation.
    """
    path = Path(__file__).with_name("digits.csv.gz")
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != DIGITS_SHA256:
        raise DataError(f"the bundled {path} is corrupt; reinstall hypersparse")
    table = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.int64)
    x = np.clip(table[:, :64] * 16, 0, 255).astype(np.uint8).reshape(-1, 1, 8, 8)
    y = table[:, 64]
    perm = np.random.default_rng(0).permutation(len(x))
    test, rest = perm[:360], perm[360:]
    return _split("digits", x[rest], y[rest], x[test], y[test], 144, seed, 10, augment=False)


def synthetic(data_dir: Path | None, seed: int, download: bool = False) -> Splits:
    """A generated 10-class problem (8x8 single-channel 'images' of noisy Gaussian clusters).

    The data is fixed (generator seed 0) whatever the run seed; 20,000 train, 5,000 test.
    """
    g = torch.Generator().manual_seed(0)
    centers = 0.5 + 0.07 * torch.randn(10, 64, generator=g)  # close clusters: the best possible accuracy is ~85 %
    y = torch.randint(0, 10, (25000,), generator=g)
    x = centers[y] + 0.2 * torch.randn(25000, 64, generator=g)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).view(-1, 1, 8, 8)
    return _split("synthetic", x[:20000], y[:20000], x[20000:], y[20000:], 2000, seed, 10, augment=False)


#: what this registry holds, in messages and in the error boundary's record of who registered what
KIND = "dataset"
DATASETS: dict[str, tuple[Callable[..., Splits], str]] = {
    "digits": (digits, "scikit-learn's 8x8 digits, bundled (no files needed)"),
    "synthetic": (synthetic, "a generated 10-class problem of noisy clusters (no files needed)"),
    "mnist": (mnist, "MNIST, the four official IDX .gz files"),
    "fashion-mnist": (fashion_mnist, "Fashion-MNIST, the four official IDX .gz files"),
    "cifar10": (cifar10, "CIFAR-10, official python batches (cifar-10-batches-py)"),
    "cifar100": (cifar100, "CIFAR-100, official python files (cifar-100-python)"),
    "cifar10-jpeg75": (cifar10_jpeg75, "CIFAR-10 as a lossy JPEG-75 copy (cifar10_jpeg75.npz): not CIFAR-10"),
    "tinyimagenet": (tinyimagenet, "Tiny ImageNet, official tiny-imagenet-200 folder"),
}


BUILTIN = frozenset(DATASETS)
_FILE_BASED = {mnist, fashion_mnist, cifar10, cifar100, cifar10_jpeg75, tinyimagenet}


def register_dataset(name: str, loader: Callable[..., Splits], description: str = "") -> None:
    """Make ``loader(data_dir, seed, download)`` available by ``name``: it returns Splits, or ``(train_x, train_y,
    test_x, test_y)`` as uint8 (N, C, H, W) images and integer labels (the validation split is then carved by the
    seed). The command line sees it when the registering module is imported by ``--plugin`` or a
    ``hypersparse.plugins`` entry point."""
    refuse_builtin_override(KIND, name, DATASETS[name][0] if name in DATASETS else None, loader)
    note_registrar(KIND, name)
    DATASETS[name] = (loader, description)


def _carve(y: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``share`` of each class's images (at least one) and of the rest, each in ascending order."""
    take, rest = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = max(1, int(len(idx) * share))
        take.append(idx[:n])
        rest.append(idx[n:])
    return np.sort(np.concatenate(take)), np.sort(np.concatenate(rest))


def image_folder(root: Path, seed: int) -> Splits:
    """An ImageFolder-style tree (see :mod:`hypersparse.data.folder`) as Splits, with its class names."""
    from hypersparse.data.folder import read_folder

    found = read_folder(root)
    x, y = found["train"]
    carved = [s for s in ("test", "val") if found[s] is None]
    counts = np.bincount(y, minlength=len(found["classes"]))
    if carved and counts.min() < 1 + len(carved):
        name = found["classes"][int(counts.argmin())]
        raise DataError(f"folder:{root}: class {name!r} has {int(counts.min())} training image(s); the "
                        f"{' and '.join(carved)} split{'s are' if len(carved) > 1 else ' is'} carved from each class, "
                        f"so each needs at least {1 + len(carved)} (add images, or give {'/, '.join(carved)}/ folders)")
    if found["test"] is None:  # a fixed test split, the same for every seed (as for digits)
        test, rest = _carve(y, 0.2, np.random.default_rng(0))
        found["test"], x, y = (x[test], y[test]), x[rest], y[rest]
    if found["val"] is None:
        val, rest = _carve(y, 0.1, np.random.default_rng(seed))
        found["val"], x, y = (x[val], y[val]), x[rest], y[rest]
    splits = _split(f"folder:{root}", x, y, *found["test"], 0, seed, len(found["classes"]), augment=False)
    splits.val_x, splits.val_y = torch.tensor(found["val"][0]), torch.tensor(found["val"][1]).long()
    splits.classes = tuple(found["classes"])
    return splits


def _from_callable(spec: str, data_dir: str | Path | None, seed: int, download: bool) -> Splits:
    """``module.path:callable(data_dir, seed, download)`` returning Splits or ``(train_x, train_y, test_x, test_y)``
    as uint8 (N, C, H, W) images and integer labels; the validation split is then carved by the seed."""
    from hypersparse.plugins import import_object

    build = import_object(spec, "--dataset")
    with user_code(f"your dataset {spec}"):
        got = build(None if data_dir is None else Path(data_dir), seed, download) if callable(build) else build
    return _as_splits(got, spec, seed)


def _as_splits(got, spec: str, seed: int) -> Splits:
    """What a dataset function returned: Splits, or ``(train_x, train_y, test_x, test_y)`` with the validation split
    then carved by the seed."""
    if isinstance(got, Splits):
        return got
    if not (isinstance(got, (tuple, list)) and len(got) == 4):
        raise UserError(f"--dataset {spec!r} returned a {type(got).__name__}; return Splits or (train_x, train_y, "
                        "test_x, test_y)")
    x, y, tx, ty = (np.asarray(a) for a in got)
    if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y) or tx.shape[1:] != x.shape[1:] or len(tx) != len(ty) \
            or not len(x) or not len(tx) or y.dtype.kind not in "iu" or ty.dtype.kind not in "iu":
        raise UserError(f"--dataset {spec!r}: images must be uint8 arrays (N, C, H, W) of one shape, one integer label "
                        f"each; got train {x.dtype} {x.shape}, test {tx.dtype} {tx.shape}")
    classes = int(max(y.max(), ty.max())) + 1
    if min(y.min(), ty.min()) < 0 or classes > MAX_CLASSES:
        raise UserError(f"--dataset {spec!r}: labels must be in 0..{MAX_CLASSES - 1}, got {min(y.min(), ty.min())}.."
                        f"{classes - 1}")
    return _split(spec, x, y, tx, ty, max(1, len(x) // 10), seed, classes, augment=False)


def load_dataset(name: str, data_dir: str | Path | None, seed: int = 0, download: bool = False) -> Splits:
    """Load a dataset by name from ``data_dir`` (unused for ``digits``); ``folder:<path>`` reads an image folder,
    ``module.path:callable`` calls your function. Every split is checked (:func:`check_splits`)."""
    return check_splits(_load(name, data_dir, seed, download), name)


def check_splits(s: Splits, name: str) -> Splits:
    """``s`` if each split holds uint8 images (N, C, H, W) of one shape, a label in ``0..num_classes - 1`` each, and at
    least one image of every class; else DataError. A split without some class would be scored on the classes it has
    ("test 100 %" on no images at all)."""
    if not isinstance(s, Splits):
        raise DataError(f"dataset {name} returned a {type(s).__name__}, not Splits")
    shown = name if len(name) <= 80 else name[:77] + "..."
    if not (isinstance(s.num_classes, int) and 1 <= s.num_classes <= MAX_CLASSES):
        raise DataError(f"dataset {shown} claims {s.num_classes!r} classes; it needs 1 to {MAX_CLASSES}")
    first = None
    for split in ("train", "val", "test"):
        x, y = getattr(s, f"{split}_x"), getattr(s, f"{split}_y")
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 4
                and y.dim() == 1 and len(x) == len(y) and not y.is_floating_point() and y.dtype != torch.bool):
            raise DataError(f"dataset {shown}: its {split} split must be uint8 images (N, C, H, W) with one integer "
                            f"label each")
        if first is None:
            first = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != first:
            size = "x".join(map(str, x.shape[1:]))
            raise DataError(f"dataset {shown}: its {split} images are {size}, its training images "
                            f"{'x'.join(map(str, first))}; every split needs images of one size")
        if not 1 <= first[0] <= MAX_CHANNELS or not 1 <= min(first[1:]) <= max(first[1:]) <= MAX_IMAGE_SIZE:
            raise DataError(f"dataset {shown}: images of {'x'.join(map(str, first))} (channels x height x width) are "
                            f"outside 1..{MAX_CHANNELS} channels of 1..{MAX_IMAGE_SIZE} pixels a side")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= s.num_classes):
            raise DataError(f"dataset {shown}: a {split} label is outside 0..{s.num_classes - 1} (it claims "
                            f"{s.num_classes} classes)")
        counts = torch.bincount(y.long(), minlength=s.num_classes) if len(y) else torch.zeros(s.num_classes)
        if bool((counts == 0).any()):
            missing = int((counts == 0).nonzero()[0])
            label = s.classes[missing] if s.classes and missing < len(s.classes) else missing
            raise DataError(f"dataset {shown}: its {split} split ({len(y)} images) holds no image of class {label!r}; "
                            f"every split needs at least one image of each of its {s.num_classes} classes (add "
                            "images, or give the split its own folder)")
    return s


def _load(name: str, data_dir: str | Path | None, seed: int, download: bool) -> Splits:
    kind, sep, rest = name.partition(":")
    if sep and kind == "folder":
        return image_folder(Path(rest), seed)
    if sep:
        return _from_callable(name, data_dir, seed, download)
    if name not in DATASETS:
        from hypersparse.plugins import load_entry_points

        if not (load_entry_points() and name in DATASETS):
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise UserError(f"unknown dataset {shown!r}{did_you_mean(name, DATASETS)}; choose one of: "
                            f"{', '.join(DATASETS)}, folder:<path>, or "
                            "module.path:callable")
    if name not in ("digits", "synthetic") and DATASETS[name][0] in _FILE_BASED:
        if data_dir is None:
            raise UserError(f"dataset {name!r} needs --data-dir, the folder that holds its files")
        data_dir = Path(data_dir)
        if download and not data_dir.exists():
            try:
                data_dir.mkdir(parents=True)  # --download fills a new folder
            except OSError as exc:
                raise DataError(f"cannot create data directory {data_dir} ({exc.strerror}); "
                                "choose another --data-dir") from None
        if not data_dir.is_dir():
            raise DataError(f"data directory {data_dir} does not exist; pass the folder that holds the {name} files")
    if name not in BUILTIN:
        with user_code(f"your dataset {name}"):
            got = DATASETS[name][0](data_dir, seed, download)
        return _as_splits(got, name, seed)
    return DATASETS[name][0](data_dir, seed, download)
