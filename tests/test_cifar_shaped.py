"""The CIFAR code path (32x32 colour, augmentation, ResNet, bf16-free CPU) on a tiny generated dataset."""
import math
import os

import numpy as np
import torch

from hypersparse.config import TrainConfig
from hypersparse.data import Splits, _split, register_dataset
from hypersparse.data.loader import DeviceLoader, augment
from hypersparse.engine import train


def tiny_cifar(data_dir, seed, download=False) -> Splits:
    g = np.random.default_rng(0)
    y = g.integers(0, 10, 300)
    x = (g.integers(0, 30, (300, 3, 32, 32)) + 22 * y[:, None, None, None]).astype(np.uint8)  # brightness = class
    return _split("tiny-cifar", x[:250], y[:250], x[250:], y[250:], 50, seed, 10, augment=True)


def test_augment_is_a_crop_and_flip_of_the_padded_image():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    out = augment(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        found = any(
            torch.equal(out[i], cand)
            for dy in range(9) for dx in range(9)
            for cand in (padded[i, :, dy:dy + 32, dx:dx + 32], padded[i, :, dy:dy + 32, dx:dx + 32].flip(-1))
        )
        assert found


def test_tiny_cifar_resnet_run_exact_sparsity(tmp_path):
    register_dataset("tiny-cifar", tiny_cifar, "test data")
    cfg = TrainConfig.from_dict(dict(dataset="tiny-cifar", model="resnet8", sparsity=0.9, epochs_scale=0.05,
                                     finetune_epochs=40, max_reg_epochs=200, lambda_init=1e-3, batch_size=50,
                                     pruned_eval_size=100, hs_compile="off", seed=0))
    summary = train(cfg, tmp_path / "run", progress=False, out=open(os.devnull, "w"))
    s = summary["sparse"]
    assert s["kept"] == s["numel"] - math.floor(0.9 * s["numel"])
    assert s["numel"] == (32 * 3 * 9 + 32 * 32 * 9 * 2 + (32 * 64 * 9 + 64 * 64 * 9 + 32 * 64)
                          + (64 * 128 * 9 + 128 * 128 * 9 + 64 * 128) + 128 * 10)
    loader = DeviceLoader(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4), 2, (0.5,) * 3, (0.25,) * 3,
                          "cpu", augment=True, channels_last=True)
    xb, _ = next(iter(loader))
    assert xb.is_contiguous(memory_format=torch.channels_last)
