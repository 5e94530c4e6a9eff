"""Batches from uint8 tensors that live on the training device, with batched augmentation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.nn import functional as F


@dataclass
class Normalizer:
    """uint8 images -> the float inputs a model was trained on: ``(x - 255 mean) / (255 std)`` per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device = torch.device("cpu")
    channels_last: bool = False

    def __post_init__(self):
        self.device = torch.device(self.device)
        shape = (1, -1, 1, 1)
        self._mean = torch.tensor(self.mean, device=self.device).view(shape) * 255
        self._std = torch.tensor(self.std, device=self.device).view(shape) * 255

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.to(self.device).float() - self._mean) / self._std
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True,
            pick: torch.Tensor | None = None, draws: int | None = None) -> torch.Tensor:
    """Random crop with ``pad``-pixel zero padding and random horizontal flip, for a whole batch.

    One crop offset per image, drawn from ``generator`` (on the CPU, so runs
    are identical on every device); implemented as one gather, no Python loop.
    Under data parallelism ``x`` is this rank's share of a batch of ``draws``
    images, at positions ``pick``: the offsets are drawn for the whole batch,
    so the random stream does not depend on the number of ranks.
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    total = n if draws is None else draws
    dy = torch.randint(0, 2 * pad + 1, (total,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (total,), generator=generator)
    flips = torch.rand(total, generator=generator) < 0.5 if flip else None
    if pick is not None:
        pick = pick.cpu()
        dy, dx, flips = dy[pick], dx[pick], flips[pick] if flips is not None else None
    dy, dx = dy.to(x.device), dx.to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (n, h)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (n, w)
    if flips is not None:
        cols = torch.where(flips.to(x.device)[:, None], cols.flip(1), cols)
    idx_r = rows[:, None, :, None].expand(n, c, h, w + 2 * pad)
    out = padded.gather(2, idx_r)
    idx_c = cols[:, None, None, :].expand(n, c, h, w)
    return out.gather(3, idx_c)


class DeviceLoader:
    """Iterates shuffled, normalised (and optionally augmented) batches of a uint8 image tensor.

    The whole split sits on ``device`` as uint8; each epoch's order and
    augmentation come from a generator seeded with ``(seed, epoch)``, so any
    epoch can be replayed exactly, e.g. after a resume. With ``world > 1``
    (torchrun) each batch of ``batch_size`` is split between the ranks and this
    loader yields rank ``rank``'s share; a last batch is cut to a multiple of
    ``world`` so that every rank gets as many images. With ``fraction < 1`` an
    epoch visits only the first ``fraction`` of its shuffled order: a fresh
    random part of the split each epoch, for shortened schedules.
    """

    def __init__(self, x, y, batch_size, mean, std, device, augment=False, shuffle=True, seed=0, channels_last=False,
                 fraction: float = 1.0):
        self.x = x.to(device)
        self.y = y.to(device)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.normalize = Normalizer(tuple(mean), tuple(std), self.device, channels_last)
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.channels_last = channels_last
        self.rank, self.world = 0, 1
        self.size = len(self.x)  # images per epoch
        # Without augmentation a batch is a gather of normalised images: on the CPU, normalise once (bit-identical,
        # the same elementwise arithmetic) rather than convert and normalise every batch again, which costs a fine-
        # tuning epoch of a compacted LeNet-300 about a fifth of its time. Not for augmented data (crops pad uint8
        # zeros before normalising) or above 1 GiB of floats.
        self._normalized = None
        if not augment and not channels_last and self.device.type == "cpu" and 4 * self.x.numel() <= 2**30:
            self._normalized = self.normalize(self.x)
        if fraction < 1:  # whole batches only, so that every shortened epoch has the same number of full steps
            self.size = min(len(self.x), max(1, round(fraction * len(self.x)) // self.batch_size) * self.batch_size)

    def __len__(self) -> int:
        return (self.size + self.batch_size - 1) // self.batch_size

    def batches(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.x), generator=g).to(self.device) if self.shuffle else None
        for start in range(0, self.size, self.batch_size):
            stop = min(start + self.batch_size, self.size)
            idx = order[start:stop] if order is not None else torch.arange(start, stop, device=self.device)
            size, pick = len(idx), None  # augmentation draws for the whole batch
            if self.world > 1:
                pick = torch.arange(self.rank, size - size % self.world, self.world, device=self.device)
                if len(pick) == 0:
                    break
                idx = idx[pick]
            if self._normalized is not None:
                yield self._normalized[idx], self.y[idx]
                continue
            xb, yb = self.x[idx], self.y[idx]
            xb = xb.float()
            if self.augment:
                xb = augment(xb, g, pick=pick, draws=size)
            yield self.normalize(xb), yb

    __iter__ = batches
