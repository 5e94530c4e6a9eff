"""Models by name: ``create_model("resnet32", num_classes=10)``."""
from __future__ import annotations

import re
from typing import Callable

from torch import nn

from hypersparse.errors import UserError
from hypersparse.models.lenet import LeNet5, LeNet300, MLP
from hypersparse.models.resnet_cifar import CifarResNet
from hypersparse.models.vgg_cifar import CifarVGG

#: name -> (constructor(num_classes, in_channels, image_size), one-line description)
MODELS: dict[str, tuple[Callable[[int, int, int], nn.Module], str]] = {
    "mlp": (lambda c, ch, s: MLP(ch * s * s, c), "small MLP (2 hidden layers of 256), the embedded default"),
    "lenet300": (lambda c, ch, s: LeNet300(ch * s * s, c), "LeNet-300-100, for 28x28 inputs"),
    "lenet5": (lambda c, ch, s: LeNet5(ch, s, c), "LeNet-5, Caffe variant (20-50-500), for 28x28 inputs"),
    "resnet20": (lambda c, ch, s: CifarResNet(20, c, ch), "CIFAR ResNet-20, widths 32/64/128"),
    "resnet32": (lambda c, ch, s: CifarResNet(32, c, ch), "CIFAR ResNet-32, widths 32/64/128 (the authors'), ~1.86M weights"),
    "resnet56": (lambda c, ch, s: CifarResNet(56, c, ch), "CIFAR ResNet-56, widths 32/64/128"),
    "vgg11": (lambda c, ch, s: CifarVGG(11, c, ch), "VGG-11 with batch norm, for 32x32 inputs"),
    "vgg13": (lambda c, ch, s: CifarVGG(13, c, ch), "VGG-13 with batch norm, for 32x32 inputs"),
    "vgg16": (lambda c, ch, s: CifarVGG(16, c, ch), "VGG-16 with batch norm, for 32x32 inputs"),
    "vgg19": (lambda c, ch, s: CifarVGG(19, c, ch), "VGG-19 with batch norm, for 32x32 inputs, ~20.0M weights"),
}


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Build a registered model (or any ``resnet<6n+2>``); raises UserError naming the choices for an unknown name."""
    match = re.fullmatch(r"resnet(\d+)", name)
    if name not in MODELS and match:  # any CIFAR ResNet of depth 6n+2, e.g. resnet8 or resnet110
        return CifarResNet(int(match.group(1)), num_classes, in_channels)
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name][0](num_classes, in_channels, image_size)
