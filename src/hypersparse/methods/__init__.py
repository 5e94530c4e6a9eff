"""Sparsification methods behind one contract (:class:`hypersparse.method.Method`), selected by ``--method``.

``art`` is the paper's method; the others are the standard baselines it is
compared with. Each entry builds the method from a run's config.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from hypersparse.config import TrainConfig
from hypersparse.method import Method
from hypersparse.methods.art import art_from_config
from hypersparse.methods.baselines import GMP, SNIP, OneShot

#: name -> constructor(cfg, model, steps_per_epoch, first_batch)
METHODS: dict[str, Callable[..., Method]] = {
    "art": lambda cfg, model, steps, batch: art_from_config(cfg, model),
    "oneshot": lambda cfg, model, steps, batch: OneShot(cfg.sparsity.sparsity, cfg.warmup + cfg.scaled(
        cfg.baseline.prune_epochs), cfg.finetune, **cfg.selection),
    "gmp": lambda cfg, model, steps, batch: GMP(cfg.sparsity.sparsity, cfg.warmup, cfg.scaled(cfg.baseline.prune_epochs),
                                                cfg.finetune, steps, **cfg.selection),
    "snip": lambda cfg, model, steps, batch: SNIP(cfg.sparsity.sparsity, cfg.warmup + cfg.scaled(
        cfg.baseline.prune_epochs), cfg.finetune, batch, **cfg.selection),
}


def make_method(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int, first_batch) -> Method:
    """Build the method ``cfg.sparsity.method`` for ``model``; ``first_batch()`` gives the batch SNIP scores on."""
    return METHODS[cfg.sparsity.method](cfg, model, steps_per_epoch, first_batch)
