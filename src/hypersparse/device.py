"""Which device a run uses, and the precision it computes in there."""
from __future__ import annotations

from contextlib import nullcontext

import torch

from hypersparse.errors import UserError


def pick_device(name: str) -> torch.device:
    """``auto`` takes cuda, then mps, then cpu; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"the device must be auto, cpu, cuda or mps, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is available; use --set run.device=cpu")
    return device


def autocast(device: torch.device):
    """bf16 autocast on GPUs; full precision elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
