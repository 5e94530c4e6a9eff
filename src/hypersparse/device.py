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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device {name} was asked for but this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                        "use cuda:0 or auto")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise UserError("device mps was asked for but Apple's Metal (MPS) is not available here; use --set "
                        "run.device=cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"the device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return device


def autocast(device: torch.device):
    """bf16 autocast on GPUs; full precision elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
