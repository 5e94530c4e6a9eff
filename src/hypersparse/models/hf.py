"""``--model hf:<config.json or saved folder>``: a Hugging Face image classifier, built without a download.

The folder (or ``config.json``) is what ``save_pretrained`` writes; weights beside the config are loaded (the head is
re-made for the dataset's classes), a config alone gives a fresh model. The model is wrapped so that it takes pixels
and returns logits, as the training loop and the exports expect.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hypersparse.errors import UserError


class PixelsToLogits(nn.Module):
    """A transformers image classifier called as ``model(pixels) -> logits``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


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
        config = transformers.AutoConfig.from_pretrained(str(path))
        config.num_labels = num_classes
        for key, value in (("num_channels", in_channels), ("image_size", image_size)):
            if hasattr(config, key):
                setattr(config, key, value)
        auto = transformers.AutoModelForImageClassification
        weights = path.is_dir() and any((path / f).exists() for f in ("model.safetensors", "pytorch_model.bin"))
        model = auto.from_pretrained(str(path), config=config, ignore_mismatched_sizes=True) if weights \
            else auto.from_config(config)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--model hf:{spec}: transformers cannot build an image classifier from it ({first})") from None
    return PixelsToLogits(model)
