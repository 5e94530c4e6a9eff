"""Models by name: ``create_model("resnet32", num_classes=10)``."""
from __future__ import annotations

import inspect
import re
from typing import Callable

from torch import nn

from hypersparse.errors import UserError, did_you_mean
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


def register_model(name: str, build: Callable[[int, int, int], nn.Module], description: str = "") -> None:
    """Make ``build(num_classes, in_channels, image_size) -> nn.Module`` available as ``--model name``."""
    MODELS[name] = (build, description)


_SHAPE = ("num_classes", "in_channels", "image_size")


def _from_import_path(spec: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """``module.path:callable``, called with whichever of num_classes, in_channels, image_size it accepts."""
    from hypersparse.plugins import import_object

    build = import_object(spec, "--model")
    if not callable(build):
        raise UserError(f"--model {spec!r} is a {type(build).__name__}, not a function that returns an nn.Module")
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):
        params = {}
    given = dict(zip(_SHAPE, (num_classes, in_channels, image_size)))
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    model = build(**{k: v for k, v in given.items() if takes_any or k in params})
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {spec!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def _from_library(library: str, name: str, num_classes: int, in_channels: int) -> nn.Module:
    try:
        if library == "torchvision":
            from torchvision.models import get_model

            return get_model(name, num_classes=num_classes)
        import timm

        return timm.create_model(name, num_classes=num_classes, in_chans=in_channels)
    except ImportError:
        raise UserError(f"--model {library}:{name} needs {library}: pip install {library}") from None
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"--model {library}:{name}: {library} cannot build it ({exc})") from None


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """A model by name: a registered one, ``resnet<6n+2>``, ``torchvision:<name>``, ``timm:<name>``,
    ``hf:<config.json or saved folder>`` or ``module.path:callable``; raises UserError naming the choices for an unknown name."""
    library, sep, rest = name.partition(":")
    if sep and library == "hf":
        from hypersparse.models.hf import hf_model

        return hf_model(rest, num_classes, in_channels, image_size)
    if sep and library in ("torchvision", "timm"):
        return _from_library(library, rest, num_classes, in_channels)
    if sep:
        return _from_import_path(name, num_classes, in_channels, image_size)
    match = re.fullmatch(r"resnet(\d+)", name)
    if name not in MODELS and match:  # any CIFAR ResNet of depth 6n+2, e.g. resnet8 or resnet110
        return CifarResNet(int(match.group(1)), num_classes, in_channels)
    if name not in MODELS:
        from hypersparse.plugins import load_entry_points

        if load_entry_points() and name in MODELS:
            return MODELS[name][0](num_classes, in_channels, image_size)
        raise UserError(f"unknown model {name!r}{did_you_mean(name, MODELS)}; choose one of: {', '.join(MODELS)}, "
                        "torchvision:<name>, "
                        "timm:<name>, hf:<path>, or module.path:callable (a function returning an nn.Module)")
    return MODELS[name][0](num_classes, in_channels, image_size)
