import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hypersparse.config import TrainConfig
from hypersparse.data import load_dataset
from hypersparse.data.files import read_cifar_batch
from hypersparse.engine import train
from hypersparse.errors import DataError, UserError


def test_digits_split_is_fixed_by_seed_and_disjoint():
    a, b, c = load_dataset("digits", None, 0), load_dataset("digits", None, 0), load_dataset("digits", None, 1)
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)
    assert torch.equal(a.test_x, c.test_x)  # the test set never depends on the seed
    assert len(a.train_x) + len(a.val_x) + len(a.test_x) == 1797
    assert a.train_x.dtype == torch.uint8 and a.train_x.shape[1:] == (1, 8, 8)


def test_cifar_python_batch_reader(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (5, 3072), dtype=np.uint8)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({"data": data, "labels": [0, 1, 2, 3, 4]}, f)
    x, y = read_cifar_batch(tmp_path / "data_batch_1", "labels")
    assert x.shape == (5, 3, 32, 32) and np.array_equal(x[2].reshape(-1), data[2]) and list(y) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="corrupt"):  # an unofficial file fails the checksum before it is unpickled
        load_dataset("cifar10", tmp_path)
    (tmp_path / "bad").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a valid CIFAR"):
        read_cifar_batch(tmp_path / "bad", "labels")


def test_tinyimagenet_folder_layout(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)
    for c, w in enumerate(wnids):
        d = root / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(30):  # enough that the validation split carved by the seed holds both classes
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / f"{w}_{i}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i in range(4):
        image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        image.save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnids[i % 2]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    data = load_dataset("tinyimagenet", tmp_path, 0)
    assert data.num_classes == 2 and data.image_size == 64 and data.augment
    assert len(data.train_x) + len(data.val_x) == 60 and len(data.test_x) == 4
    assert data.test_y.tolist() == [0, 1, 0, 1]


def test_dataset_needs_data_dir():
    with pytest.raises(UserError, match="needs --data-dir"):
        load_dataset("mnist", None)


def test_pretrained_skips_warmup_and_is_the_dense_baseline(tmp_path):
    devnull = open(os.devnull, "w")
    first = train(TrainConfig.from_dict(dict(method="oneshot", sparsity=0.0, epochs_scale=0.05)), tmp_path / "dense",
                  False, devnull)
    cfg = TrainConfig.from_dict(dict(pretrained=str(tmp_path / "dense" / "model.pt"), epochs_scale=0.05,
                                     lambda_init=1e-3))
    summary = train(cfg, tmp_path / "sparse", False, devnull)
    assert "warmup" not in summary["epochs"]
    assert summary["dense"]["epoch"] == 0
    assert summary["dense"]["test_acc"] == pytest.approx(first["sparse"]["test_acc"])
    bad = TrainConfig.from_dict(dict(pretrained=str(tmp_path / "nope.pt")))
    with pytest.raises(UserError, match="cannot read --pretrained"):
        train(bad, tmp_path / "bad", False, devnull)


def test_batches_normalised_once_are_bit_identical_to_batches_normalised_one_by_one():
    """On the CPU without augmentation the loader normalises the split once; every batch of every epoch is the
    batch the per-batch path gives, bit for bit (runs, resumes and published results do not move)."""
    from hypersparse.data.loader import DeviceLoader

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (203, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (203,), generator=g)
    once = DeviceLoader(x, y, 64, (0.1307,), (0.3081,), "cpu", seed=3)
    each = DeviceLoader(x, y, 64, (0.1307,), (0.3081,), "cpu", seed=3)
    each._normalized = None  # the path augmented data and other devices take
    assert once._normalized is not None
    for epoch in (0, 1):
        for (xa, ya), (xb, yb) in zip(once.batches(epoch), each.batches(epoch), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_epoch_fraction_visits_a_fresh_part_in_whole_batches():
    from hypersparse.data.loader import DeviceLoader

    x = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    full = DeviceLoader(x, torch.arange(100), 8, (0.0,), (1 / 255,), "cpu", seed=1)
    part = DeviceLoader(x, torch.arange(100), 8, (0.0,), (1 / 255,), "cpu", seed=1, fraction=0.3)
    assert len(part) == 3  # round(0.3 * 100) = 30 images -> 3 whole batches of 8
    for epoch in (0, 1):
        seen = [yb for _, yb in part.batches(epoch)]
        assert [len(b) for b in seen] == [8, 8, 8]
        # the first 24 of the same epoch's full shuffled order
        assert torch.equal(torch.cat(seen), torch.cat([yb for _, yb in full.batches(epoch)])[:24])
    epoch0, epoch1 = (set(torch.cat([yb for _, yb in part.batches(e)]).tolist()) for e in (0, 1))
    assert epoch0 != epoch1
    with pytest.raises(UserError, match=r"schedule.epoch_fraction must be a number in \(0, 1\]"):
        TrainConfig.from_dict(dict(epoch_fraction=0.0)).validate()


def test_a_cifar_batch_is_read_without_running_code_it_names(tmp_path):
    images = np.arange(2 * 3 * 32 * 32, dtype=np.uint8).reshape(2, 3 * 32 * 32)
    (tmp_path / "good").write_bytes(pickle.dumps({"data": images, "labels": [3, 7]}, protocol=2))
    x, y = read_cifar_batch(tmp_path / "good", "labels")
    assert x.shape == (2, 3, 32, 32) and np.array_equal(x.reshape(2, -1), images) and y.tolist() == [3, 7]

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(DataError, match="not a valid CIFAR python batch .*names .*system"):
        read_cifar_batch(tmp_path / "evil", "labels")
    assert not marker.exists()


def test_download_into_a_missing_folder_creates_it(tmp_path, monkeypatch):
    """--download with a folder that does not exist yet: created, filled through the real code path (the network
    fetch itself stubbed with the official files from ../shared), checksums verified, read."""
    import shutil as _shutil

    from hypersparse.data import files as data_files

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
    if not shared.exists():
        pytest.skip("../shared/data not beside the checkout")
    fetched = []

    def fake_urlopen(url, timeout=60):
        fetched.append(url)
        return open(shared / url.rsplit("/", 1)[-1], "rb")

    monkeypatch.setattr(data_files.urllib.request, "urlopen", fake_urlopen)
    target = tmp_path / "new" / "mnist"
    splits = load_dataset("mnist", target, 0, download=True)
    assert len(fetched) == 4 and sorted(p.name for p in target.iterdir()) == sorted(
        p.name for p in shared.glob("*.gz"))
    assert len(splits.train_x) + len(splits.val_x) == 60000 and len(splits.test_x) == 10000
    _shutil.rmtree(target)


def _cifar_archive(path: Path, members: dict[str, bytes]) -> None:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_cifar_download_fetches_verifies_and_unpacks_the_archive(tmp_path, monkeypatch):
    """--download for cifar10: the archive is fetched (network stubbed), its size and MD5 checked, only the batches
    folder unpacked, the batches read. The published checksums are swapped for those of a small stand-in archive."""
    import hashlib
    import pickle

    import hypersparse.data as data
    from hypersparse.data import files as data_files

    rng = np.random.default_rng(0)
    batches = {}
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        n = 1020 if name != "test_batch" else 50
        batches[name] = pickle.dumps({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                      "labels": rng.integers(0, 10, n).tolist()}, protocol=2)
    archive = tmp_path / "served.tar.gz"
    _cifar_archive(archive, {f"cifar-10-batches-py/{k}": v for k, v in batches.items()} | {"readme.html": b"x"})
    monkeypatch.setitem(data.CIFAR_ARCHIVES, "cifar-10-batches-py", (
        "cifar-10-python.tar.gz", archive.stat().st_size, hashlib.md5(archive.read_bytes()).hexdigest()))
    monkeypatch.setattr(data, "CIFAR10_MD5", {k: hashlib.md5(v).hexdigest() for k, v in batches.items()})
    fetched = []
    monkeypatch.setattr(data_files.urllib.request, "urlopen",
                        lambda url, timeout=60: fetched.append(url) or open(archive, "rb"))
    target = tmp_path / "new" / "cifar10"
    splits = load_dataset("cifar10", target, 0, download=True)
    assert fetched == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert len(splits.train_x) + len(splits.val_x) == 5100 and len(splits.test_x) == 50
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    load_dataset("cifar10", target, 0, download=True)  # present now: nothing fetched again
    assert len(fetched) == 1


def test_cifar_archive_that_climbs_out_is_refused(tmp_path, monkeypatch):
    import hashlib

    import hypersparse.data as data
    from hypersparse.data import files as data_files

    archive = tmp_path / "served.tar.gz"
    _cifar_archive(archive, {"cifar-10-batches-py/../../escaped": b"planted"})
    monkeypatch.setitem(data.CIFAR_ARCHIVES, "cifar-10-batches-py", (
        "cifar-10-python.tar.gz", archive.stat().st_size, hashlib.md5(archive.read_bytes()).hexdigest()))
    monkeypatch.setattr(data_files.urllib.request, "urlopen", lambda url, timeout=60: open(archive, "rb"))
    target = tmp_path / "a" / "b"
    with pytest.raises(DataError, match="would land outside"):
        load_dataset("cifar10", target, 0, download=True)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "a" / "escaped").exists()
    assert not (target / "cifar-10-batches-py").exists()


def test_sixteen_bit_images_are_scaled_and_float_images_refused(tmp_path):
    """Trial 31f I001, I005: 16-bit PNGs were clipped to 255 (every image blank white) and float TIFFs read as black;
    the run trained on blank images without a word."""
    from PIL import Image

    from hypersparse.data.folder import _decode
    from hypersparse.errors import DataError

    ramp = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "a.png")
    x = _decode([tmp_path / "a.png"], "L")
    assert x.shape == (1, 1, 8, 8) and x.max() == round(63000 / 257) and x.min() == 0
    Image.fromarray(ramp.astype(np.float32) / 63000).save(tmp_path / "b.tiff")
    with pytest.raises(DataError, match="floating-point pixels"):
        _decode([tmp_path / "b.tiff"], "L")
