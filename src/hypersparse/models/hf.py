"""``--model hf:<config.json or saved folder>``: a Hugging Face image classifier, built without a download.

The folder (or ``config.json``) is what ``save_pretrained`` writes; weights beside the config are loaded (the head is
re-made for the dataset's classes), a config alone gives a fresh model. The model is wrapped so that it takes pixels
and returns logits, as the training loop and the exports expect.
"""
from __future__ import annotations

import os
import pickle
import warnings
from itertools import chain
from pathlib import Path

import torch
from torch import nn

from hypersparse.errors import UserError, first_line

MAX_HF_LAYERS = 1000  # the deepest published image classifiers have a few hundred; a config's number is not trusted

class PixelsToLogits(nn.Module):
    """A transformers image classifier called as ``model(pixels) -> logits``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def _memory_bytes() -> int | None:
    """The memory this process may use: the machine's, or less under an address-space limit (``ulimit -v``)."""
    try:
        limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no bound from here
        return None
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    return min(limits)


def _check_size(spec: str, config, auto) -> None:
    """UserError when ``config`` asks for more layers than any real model has, or for more bytes of weights than
    this process may allocate: counted on the meta device, so nothing is allocated to find out."""
    for key, value in config.to_dict().items():
        depth = sum(value) if isinstance(value, list) and all(type(v) is int for v in value) else value
        if (key.endswith("layers") or key.rstrip("s").endswith("depth")) and type(depth) is int \
                and depth > MAX_HF_LAYERS:
            raise UserError(f"--model hf:{spec}: its config asks for {key} {depth}, more than the {MAX_HF_LAYERS} "
                            "layers hypersparse builds; check its config.json")
    try:
        with torch.device("meta"):
            shell = auto.from_config(config, trust_remote_code=False)
    except (RuntimeError, NotImplementedError):  # a model that cannot be built on meta: the real build decides
        return
    need = sum(t.numel() * t.element_size() for t in chain(shell.parameters(), shell.buffers()))
    memory = _memory_bytes()
    if memory is not None and need > memory:
        raise UserError(f"--model hf:{spec}: its config asks for {need / 2**30:,.1f} GiB of weights, more than the "
                        f"{memory / 2**30:,.1f} GiB of memory this process may use; check its config.json "
                        "(hidden_size, num_hidden_layers)")


def hf_model(spec: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The model ``hf:<spec>`` names, shaped for the dataset (classes, channels, image size)."""
    try:
        import transformers
    except ImportError:
        raise UserError(f'--model hf:{spec} needs transformers: pip install "hypersparse[transformers]"') from None
    path = Path(spec)
    if not path.exists():
        raise UserError(f"--model hf:{spec}: no such file or folder; give a config.json or a folder written by "
                        "save_pretrained (nothing is downloaded)")
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=False)
        config.num_labels = num_classes
        for key, value in (("num_channels", in_channels), ("image_size", image_size)):
            if hasattr(config, key):
                setattr(config, key, value)
        auto = transformers.AutoModelForImageClassification
        _check_size(spec, config, auto)
        weights = path.is_dir() and any((path / f).exists() for f in ("model.safetensors", "pytorch_model.bin"))
        with warnings.catch_warnings():  # torch's note on a file's pickle protocol: the refusal below says enough
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            model = auto.from_pretrained(str(path), config=config, ignore_mismatched_sizes=True,
                                           trust_remote_code=False) if weights \
                else auto.from_config(config, trust_remote_code=False)
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, MemoryError) or "alloc" in str(exc).lower():
            raise UserError(f"--model hf:{spec}: not enough memory to build the model its config asks for; check its "
                            "config.json (hidden_size, num_hidden_layers)") from None
        first = first_line(exc)
        raise UserError(f"--model hf:{spec}: torch cannot build the model its config.json describes ({first}); "
                        "check its sizes") from None
    except ImportError as exc:  # a setting that needs a package (attn_implementation flash_attention_2, say)
        first = first_line(exc)
        raise UserError(f"--model hf:{spec}: its config.json asks for a package that is not installed ({first}); "
                        "install it or change the setting") from None
    except pickle.UnpicklingError:  # torch's weights-only load refused the file (its text is advice to unpickle)
        raise UserError(f"--model hf:{spec}: its pytorch_model.bin cannot be read as plain weights (a pickle that "
                        "names code, or a damaged file; nothing in it ran); give the weights as model.safetensors") \
            from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = first_line(exc, None)
        if "custom code" in first:  # auto_map: Python files shipped beside the config, which transformers would import
            raise UserError(f"--model hf:{spec}: its config.json names Python code of its own (auto_map), and "
                            "hypersparse runs no code a file names; use a model type transformers has built in, or "
                            "build the model in Python and pass it to the API") from None
        raise UserError(f"--model hf:{spec}: transformers cannot build an image classifier from it ({first})") from None
    return PixelsToLogits(model)
