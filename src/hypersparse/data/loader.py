"""Batches from uint8 tensors that live on the training device, with batched augmentation."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.nn import functional as F


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop with ``pad``-pixel zero padding and random horizontal flip, for a whole batch.

    One crop offset per image, drawn from ``generator`` (on the CPU, so runs
    are identical on every device); implemented as one gather, no Python loop.
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (n, h)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (n, w)
    if flip:
        flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    idx_r = rows[:, None, :, None].expand(n, c, h, w + 2 * pad)
    out = padded.gather(2, idx_r)
    idx_c = cols[:, None, None, :].expand(n, c, h, w)
    return out.gather(3, idx_c)


class DeviceLoader:
    """Iterates shuffled, normalised (and optionally augmented) batches of a uint8 image tensor.

    The whole split sits on ``device`` as uint8; each epoch's order and
    augmentation come from a generator seeded with ``(seed, epoch)``, so any
    epoch can be replayed exactly, e.g. after a resume.
    """

    def __init__(self, x, y, batch_size, mean, std, device, augment=False, shuffle=True, seed=0, channels_last=False):
        self.x = x.to(device)
        self.y = y.to(device)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=device).view(shape) * 255
        self.std = torch.tensor(std, device=device).view(shape) * 255
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.channels_last = channels_last

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def batches(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.x), generator=g).to(self.device) if self.shuffle else None
        for start in range(0, len(self.x), self.batch_size):
            if order is None:
                xb, yb = self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            else:
                idx = order[start : start + self.batch_size]
                xb, yb = self.x[idx], self.y[idx]
            xb = xb.float()
            if self.augment:
                xb = augment(xb, g)
            xb = (xb - self.mean) / self.std
            if self.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb

    __iter__ = batches
