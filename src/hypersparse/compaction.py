"""Channel compaction of sparse CNNs: a smaller dense model with the same outputs (inference only).

Pruning at 98-99.5 % leaves whole channels without a kept weight. Such a channel either produces a constant plane
(its bias, after BatchNorm is folded in) or is read by no kept weight of the next layer; in both cases it can go:

* BatchNorm (running statistics) is folded into the convolution before it, so every conv carries a bias;
* an output channel nothing reads is removed from its producer and its consumer;
* an output channel no kept weight produces is a constant ``c``; after ReLU and pooling it is ``relu(c)``. Zero: it
  is removed. Not zero: removed when its effect on the next layer is the same at every position (a Linear after
  flattening, or a convolution without padding), which is then added to that layer's bias; kept otherwise.

Handled: ``nn.Sequential`` pipelines of Conv2d / BatchNorm2d / ReLU / pooling / Flatten / Linear (LeNet-5, the MLPs),
the CIFAR VGGs, and the CIFAR ResNets (inside each residual block; the residual stream keeps its width). Any other
model comes back as it is. The result is an ordinary dense model: it runs anywhere, ONNX included.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from hypersparse.keep_pruned import has_masks, strip_masks_
from hypersparse.models.resnet_cifar import BasicBlock, CifarResNet
from hypersparse.models.vgg_cifar import CifarVGG
from hypersparse.sparse_conv import SparseConv2d

ALIGN = 8  # widths kept a multiple of this (see compact_channels), chosen by bench/inference.py's onnxruntime table
PASSTHROUGH = (nn.ReLU, nn.MaxPool2d, nn.Dropout, nn.Identity)  # act on each channel alone; keep constants constant


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution with ``bn`` (its running statistics) folded into its weights and bias. A BatchNorm without
    affine parameters (``affine=False``) scales by 1 and shifts by 0."""
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(bn.running_mean)
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    folded = copy.deepcopy(conv)
    folded.weight = nn.Parameter(conv.weight.detach() * scale.view(-1, 1, 1, 1))
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    folded.bias = nn.Parameter(beta + (bias - bn.running_mean) * scale)
    return folded


def foldable(bn: nn.Module) -> bool:
    """A BatchNorm2d that keeps running statistics: in eval mode it is a fixed affine map per channel. One without
    (``track_running_stats=False``) normalises by each batch's own statistics, which no weight can hold."""
    return isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None and bn.running_var is not None


def _fold_all(layers: list[nn.Module]) -> list[nn.Module]:
    out: list[nn.Module] = []
    for m in layers:
        if foldable(m) and out and isinstance(out[-1], nn.Conv2d):
            out[-1] = fold_batchnorm(out[-1], m)
        else:
            out.append(m)
    return out


def _with_bias(m: nn.Module) -> nn.Module:
    if m.bias is None:
        m.bias = nn.Parameter(torch.zeros(m.weight.shape[0], dtype=m.weight.dtype, device=m.weight.device))
    return m


def _input_blocks(consumer: nn.Module, channels: int) -> int:
    """How many of the consumer's inputs each producer channel feeds (>1 for a Linear after Flatten)."""
    n_in = consumer.weight.shape[1]
    if n_in % channels:
        raise ValueError(f"a layer reads {n_in} inputs from {channels} channels")
    return n_in // channels


def _column_weights(consumer: nn.Module, channels: int) -> torch.Tensor:
    """The consumer's weights grouped by producer channel: ``[out, channels, rest]``."""
    w = consumer.weight.detach()
    return w.reshape(w.shape[0], channels, -1) if isinstance(consumer, nn.Linear) else w.flatten(2)


def _aligned(go: torch.Tensor, align: int) -> torch.Tensor:
    """``go`` with as few channels kept back as make the kept count a multiple of ``align`` (or all of them)."""
    kept = int((~go).sum())
    spare = min(go.numel(), -(-kept // align) * align) - kept
    if spare > 0:
        go = go.clone()
        go[torch.nonzero(go).flatten()[:spare]] = False  # keeping a removable channel changes no output
    return go


def _removable(producer: nn.Module, consumer: nn.Module, between: list[nn.Module],
               align: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Which producer channels go, and what they add to the consumer's bias (a constant per consumer output)."""
    w = producer.weight.detach()
    dead = w.flatten(1).abs().sum(1) == 0
    bias = producer.bias.detach() if producer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    value = torch.where(dead, bias, torch.zeros_like(bias))
    if any(isinstance(m, nn.ReLU) for m in between):
        value = value.clamp_min(0)
    cols = _column_weights(consumer, w.shape[0])
    unread = cols.abs().sum((0, 2)) == 0
    constant_effect = isinstance(consumer, nn.Linear) or all(p == 0 for p in consumer.padding)
    go = _aligned(unread | (dead & ((value == 0) | constant_effect)), align)
    add = (cols.sum(2) * torch.where(go & ~unread, value, torch.zeros_like(value))).sum(1)
    return go, add


def _cut(producer: nn.Module, consumer: nn.Module, go: torch.Tensor, add: torch.Tensor) -> None:
    keep = ~go
    producer.weight = nn.Parameter(producer.weight.detach()[keep])
    if producer.bias is not None:
        producer.bias = nn.Parameter(producer.bias.detach()[keep])
    if isinstance(producer, nn.Conv2d):
        producer.out_channels = int(keep.sum())
    else:
        producer.out_features = int(keep.sum())
    blocks = _input_blocks(consumer, go.numel())
    w = consumer.weight.detach()
    if isinstance(consumer, nn.Linear):
        consumer.weight = nn.Parameter(w.reshape(w.shape[0], go.numel(), blocks)[:, keep].reshape(w.shape[0], -1))
        consumer.in_features = consumer.weight.shape[1]
    else:
        consumer.weight = nn.Parameter(w[:, keep])
        consumer.in_channels = consumer.weight.shape[1]
    if bool((add != 0).any()):
        _with_bias(consumer).bias = nn.Parameter(consumer.bias.detach() + add)


def _pairs(layers: list[nn.Module]) -> list[tuple[int, int]]:
    """(producer, consumer) positions joined only by per-channel layers (and at most one Flatten before a Linear)."""
    pairs = []
    for i, m in enumerate(layers):
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or getattr(m, "groups", 1) != 1:
            continue  # a grouped convolution's channels belong to their group: none is removed around it
        for j in range(i + 1, len(layers)):
            n = layers[j]
            if isinstance(n, (nn.Conv2d, nn.Linear)):
                if getattr(n, "groups", 1) != 1:
                    break
                flat = any(isinstance(x, nn.Flatten) for x in layers[i + 1 : j])
                linear_to_conv = isinstance(m, nn.Linear) and isinstance(n, nn.Conv2d)
                if not (flat and isinstance(n, nn.Conv2d)) and not linear_to_conv:
                    pairs.append((i, j))
                break
            if not isinstance(n, PASSTHROUGH + (nn.Flatten,)):
                break
    return pairs


def compact_sequence(layers: list[nn.Module], align: int = 1) -> tuple[list[nn.Module], int]:
    """Fold BatchNorm and remove channels along a pipeline, keeping each width a multiple of ``align`` (or whole);
    returns the new layers and how many channels went."""
    layers = [copy.deepcopy(m) for m in _fold_all(list(layers))]
    removed, changed = 0, True
    while changed:  # a consumer that loses outputs may stop reading some of its inputs
        changed = False
        for i, j in _pairs(layers):
            go, add = _removable(layers[i], layers[j], layers[i + 1 : j], align)
            if go.any() and not go.all():
                _cut(layers[i], layers[j], go, add)
                removed += int(go.sum())
                changed = True
    return layers, removed


class CompactBlock(nn.Module):
    """A residual block after compaction: folded convolutions, the inner width cut to what is used.

    :func:`hypersparse.sparse_inference` may make ``conv1`` apply the ReLU itself (``act1`` becomes Identity) and
    swap ``conv2`` for a :class:`~hypersparse.sparse_conv.SparseConv2d` that adds the shortcut and applies the
    final ReLU in the same pass over its output.
    """

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, shortcut: nn.Module):
        super().__init__()
        self.conv1, self.act1, self.conv2, self.shortcut = conv1, nn.ReLU(), conv2, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.conv1(x))
        if isinstance(self.conv2, SparseConv2d) and self.conv2.relu:
            return self.conv2(h, residual=self.shortcut(x))
        return torch.relu(self.conv2(h) + self.shortcut(x))


class CompactResNet(nn.Module):
    """A CIFAR ResNet after compaction: BatchNorm folded into the stem and the blocks."""

    def __init__(self, stem: nn.Conv2d, blocks: list[nn.Module], fc: nn.Linear):
        super().__init__()
        self.stem, self.act, self.blocks, self.fc = stem, nn.ReLU(), nn.Sequential(*blocks), fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.act(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def _compact_block(block: BasicBlock, align: int) -> tuple[CompactBlock, int]:
    (conv1, _, conv2), removed = compact_sequence([block.conv1, block.bn1, nn.ReLU(), block.conv2, block.bn2], align)
    shortcut = block.shortcut
    if len(shortcut):
        shortcut = fold_batchnorm(shortcut[0], shortcut[1])
    return CompactBlock(conv1, conv2, copy.deepcopy(shortcut)), removed


def _compact_resnet(model: CifarResNet, align: int) -> tuple[nn.Module, int]:
    pairs = [_compact_block(b, align) for b in model.blocks]
    return CompactResNet(fold_batchnorm(model.conv1, model.bn1), [b for b, _ in pairs], copy.deepcopy(model.fc)), \
        sum(r for _, r in pairs)


def _compact_vgg(model: CifarVGG, align: int) -> tuple[nn.Module, int]:
    layers, removed = compact_sequence([*model.features, nn.Flatten(), model.classifier], align)
    return nn.Sequential(*layers), removed


def compact_channels(model: nn.Module, align: int = ALIGN) -> tuple[nn.Module, int]:
    """A smaller dense model with ``model``'s outputs, and how many channels (and units) it lost.

    ``model`` must be in eval mode (BatchNorm's running statistics are folded in). Each layer keeps a multiple of
    ``align`` channels (or all it has): dense convolution kernels (oneDNN, onnxruntime) run widths of 21 or 31
    slower than 24 or 32, so a few removable channels stay. A model of a kind not handled, or with nothing to
    remove, comes back as it is (the same object) with 0.
    """
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()):
        raise ValueError("compaction folds BatchNorm's running statistics, which holds for inference only: call "
                         "model.eval() first")
    # installed masks are full-size buffers and hooks; the compacted layers have other shapes and hold their zeros
    source = strip_masks_(copy.deepcopy(model)) if has_masks(model) else model
    with torch.no_grad():
        if isinstance(source, CifarResNet):
            new, removed = _compact_resnet(source, align)
        elif isinstance(source, CifarVGG):
            new, removed = _compact_vgg(source, align)
        elif isinstance(source, nn.Sequential):
            layers, removed = compact_sequence(list(source), align)
            new = nn.Sequential(*layers)
        else:
            return model, 0
    if removed == 0:
        return model, 0
    return new.eval(), removed
