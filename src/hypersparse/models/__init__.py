"""Models by name: ``create_model("resnet32", num_classes=10)``, and :func:`check_fit`, which proves a model takes
the data before a run writes anything."""
from __future__ import annotations

import inspect
import re
from typing import Callable

import torch
from torch import nn

from hypersparse.errors import UserError, did_you_mean, first_line, refuse_builtin_override
from hypersparse.models.lenet import MLP, LeNet5, LeNet300
from hypersparse.models.resnet_cifar import CifarResNet
from hypersparse.models.vgg_cifar import CifarVGG
from hypersparse.plugins import note_registrar, user_code

#: name -> (constructor(num_classes, in_channels, image_size), one-line description)
#: what this registry holds, in messages and in the error boundary's record of who registered what
KIND = "model"
MODELS: dict[str, tuple[Callable[[int, int, int], nn.Module], str]] = {
    "mlp": (lambda c, ch, s: MLP(ch * s * s, c), "small MLP (2 hidden layers of 256), the embedded default"),
    "lenet300": (lambda c, ch, s: LeNet300(ch * s * s, c), "LeNet-300-100, for 28x28 inputs"),
    "lenet5": (lambda c, ch, s: LeNet5(ch, s, c), "LeNet-5, Caffe variant (20-50-500), for 28x28 inputs"),
    "resnet20": (lambda c, ch, s: CifarResNet(20, c, ch), "CIFAR ResNet-20, widths 32/64/128"),
    "resnet32": (lambda c, ch, s: CifarResNet(32, c, ch),
                 "CIFAR ResNet-32, widths 32/64/128 (the authors'), ~1.86M weights"),
    "resnet56": (lambda c, ch, s: CifarResNet(56, c, ch), "CIFAR ResNet-56, widths 32/64/128"),
    "vgg11": (lambda c, ch, s: CifarVGG(11, c, ch), "VGG-11 with batch norm, for 32x32 inputs"),
    "vgg13": (lambda c, ch, s: CifarVGG(13, c, ch), "VGG-13 with batch norm, for 32x32 inputs"),
    "vgg16": (lambda c, ch, s: CifarVGG(16, c, ch), "VGG-16 with batch norm, for 32x32 inputs"),
    "vgg19": (lambda c, ch, s: CifarVGG(19, c, ch), "VGG-19 with batch norm, for 32x32 inputs, ~20.0M weights"),
}


BUILTIN = frozenset(MODELS)
MAX_RESNET_DEPTH = 1202  # He et al.'s deepest CIFAR ResNet; deeper names are refused before anything is built


def register_model(name: str, build: Callable[[int, int, int], nn.Module], description: str = "") -> None:
    """Make ``build(num_classes, in_channels, image_size) -> nn.Module`` available as ``--model name``."""
    refuse_builtin_override(KIND, name, MODELS[name][0] if name in MODELS else None, build)
    note_registrar(KIND, name)
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
    with user_code(f"your model {spec}"):
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


def user_model(name: str) -> bool:
    """Whether ``name`` is the user's code: a ``module.path:callable`` or a name a plugin registered."""
    library, sep, _ = name.partition(":")
    if sep:
        return library not in ("torchvision", "timm", "hf")
    return name not in BUILTIN and not re.fullmatch(r"resnet\d+", name)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """A model by name: a registered one, ``resnet<6n+2>``, ``torchvision:<name>``, ``timm:<name>``,
    ``hf:<config.json or saved folder>`` or ``module.path:callable``; raises UserError naming the choices for an unknown
    name, and UserCodeError (with their frames) when the user's own constructor raises."""
    library, sep, rest = name.partition(":")
    if sep and library == "hf":
        from hypersparse.models.hf import hf_model

        return hf_model(rest, num_classes, in_channels, image_size)
    if sep and library in ("torchvision", "timm"):
        return _from_library(library, rest, num_classes, in_channels)
    if sep:
        return _from_import_path(name, num_classes, in_channels, image_size)
    match = re.fullmatch(r"resnet(\d+)", name)
    if name not in MODELS and match:  # any CIFAR ResNet of depth 6n+2, e.g. resnet8 or resnet110, up to a bound
        if len(match.group(1)) > 5 or int(match.group(1)) > MAX_RESNET_DEPTH:
            raise UserError(f"model {name[:40]}: CIFAR ResNet depth must be 6n+2 and at most {MAX_RESNET_DEPTH}")
        return CifarResNet(int(match.group(1)), num_classes, in_channels)
    if name not in MODELS:
        from hypersparse.plugins import load_entry_points

        if not (load_entry_points() and name in MODELS):
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise UserError(f"unknown model {shown!r}{did_you_mean(name, MODELS)}; choose one of: {', '.join(MODELS)}, "
                            "torchvision:<name>, timm:<name>, hf:<path>, "
                            "or module.path:callable (a function returning an nn.Module)")
    if name not in BUILTIN:
        with user_code(f"your model {name}"):
            model = MODELS[name][0](num_classes, in_channels, image_size)
        if not isinstance(model, nn.Module):
            raise UserError(f"model {name} (registered by a plugin) returned a {type(model).__name__}, not an "
                            "nn.Module")
        return model
    try:
        return MODELS[name][0](num_classes, in_channels, image_size)
    except (RuntimeError, ValueError) as exc:  # e.g. a layer of negative width for images too small
        raise UserError(f"model {name} ({MODELS[name][1]}) cannot be built for {in_channels}x{image_size}x{image_size} "
                        f"images ({first_line(exc)})") from None


def check_fit(model: nn.Module, name: str, images: torch.Tensor, num_classes: int, user: bool | None = None) -> None:
    """Forward ``images`` (a small normalised batch of the data) through ``model`` in eval mode: UserError naming the
    model's expected input and the data's shape if it cannot take them or does not return ``num_classes`` logits;
    UserCodeError with their frames if the user's own model raises (``user``: whether it is theirs; default: by its
    name, :func:`user_model`)."""
    shape = "x".join(str(n) for n in images.shape[1:])
    expects = f" ({MODELS[name][1]})" if name in MODELS else ""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            if user_model(name) if user is None else user:
                with user_code(f"your model {name}, given a batch of the data's {shape} images,"):
                    out = model(images)
            else:
                try:
                    out = model(images)
                except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                    first = first_line(exc, 200)
                    raise UserError(f"model {name}{expects} cannot take the data's {shape} images ({first}); choose a "
                                    "model made for them (mlp takes any size) or other data") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(images), num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model {name}{expects} returns {got} for {len(images)} images of {shape}; it must return "
                        f"logits of shape (N, {num_classes}) for the data's {num_classes} classes")
