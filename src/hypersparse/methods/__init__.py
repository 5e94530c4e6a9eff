"""Sparsification methods behind one interface, selected by name (``--method``).

A method tells the engine, epoch by epoch, the phase and the regularization
strength, is told the end of each epoch, and owns the final mask. ``art`` is
the paper's method; the others are the standard baselines it is compared with.
"""
from __future__ import annotations

from torch import nn

from hypersparse.config import TrainConfig
from hypersparse.methods.art import ARTMethod


def make_method(cfg: TrainConfig, model: nn.Module, loader, device):
    """Build the method ``cfg.method`` for ``model``."""
    if cfg.method == "art":
        return ARTMethod.from_config(cfg, model)
    from hypersparse.methods.baselines import BASELINES

    return BASELINES[cfg.method].from_config(cfg, model, loader, device)
