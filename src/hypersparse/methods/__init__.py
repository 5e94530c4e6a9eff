"""The built-in sparsification methods, registered by name as any plugin's are (:func:`register_method`).

``art`` is the paper's method; ``oneshot``, ``gmp`` and ``snip`` are the standard baselines it is compared with, and
``rigl`` (:mod:`hypersparse.methods.rigl`) the dynamic sparse-training one, written only through the public registry
as a worked example. :func:`make_method` builds the run's method from its config.
"""
from __future__ import annotations

from torch import nn

from hypersparse.config import ARTConfig, BaselineConfig, HyperSparseConfig, TrainConfig
from hypersparse.method import Method, Setup, method_entry, register_method, register_section
from hypersparse.methods.art import art_from_config
from hypersparse.methods.baselines import GMP, SNIP, OneShot
from hypersparse.plugins import user_code
from hypersparse.schema import METHOD_STATE

__all__ = ["make_method", "register_method", "register_section", "Method", "Setup"]


def _art_rules(cfg, key: str) -> str | None:
    if key.startswith("hs.") and cfg.art.reg != "hs":
        return f"applies to --reg hs only (this run regularizes with {cfg.art.reg})"
    return None


register_method("art", ARTConfig, lambda s: art_from_config(s.cfg, s.model), uses=("hs",), compare=False, tune=True,
                help="art (the paper's: HyperSparse regularization with adaptive growth, then fine-tuning)",
                label=lambda config: f"art-{config.get('art', {}).get('reg', 'hs')}", rules=_art_rules,
                state=METHOD_STATE["art"], plan="regularization epochs")
register_section("hs", HyperSparseConfig)
register_section("baseline", BaselineConfig)
register_method("oneshot", None, lambda s: OneShot(s.sparsity, s.dense_epochs + s.sparse_epochs, s.finetune_epochs,
                                                   filter=s.filter, max_layer_sparsity=s.max_layer_sparsity),
                help="oneshot (dense, one magnitude pruning, fine-tuning)", state=METHOD_STATE["oneshot"],
                plan="more dense epochs, then one pruning")
register_method("gmp", None, lambda s: GMP(s.sparsity, s.dense_epochs, s.sparse_epochs, s.finetune_epochs,
                                           s.steps_per_epoch, filter=s.filter, max_layer_sparsity=s.max_layer_sparsity),
                help="gmp (gradual magnitude pruning)", state=METHOD_STATE["gmp"], plan="gradual pruning epochs")
register_method("snip", None, lambda s: SNIP(s.sparsity, s.dense_epochs + s.sparse_epochs, s.finetune_epochs,
                                             s.first_batch, filter=s.filter, max_layer_sparsity=s.max_layer_sparsity),
                help="snip (pruned at initialization by connection sensitivity)", state=METHOD_STATE["snip"],
                plan="sparse training epochs (pruned at initialization)")

from hypersparse.methods import rigl  # noqa: E402,F401 - registers itself through the public API, as a plugin would

BUILTIN = frozenset(("art", "oneshot", "gmp", "snip", "rigl"))


def make_method(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int, first_batch):
    """Build the method ``cfg.sparsity.method`` for ``model``; ``first_batch()`` gives one training batch."""
    entry = method_entry(cfg.sparsity.method)
    setup = Setup(cfg, model, getattr(cfg, entry.name) if entry.settings is not None else None,
                  cfg.sparsity.sparsity, cfg.warmup, cfg.scaled(cfg.baseline.prune_epochs), cfg.finetune,
                  steps_per_epoch, first_batch, **cfg.selection)
    if entry.name in BUILTIN:
        return entry.build(setup)
    with user_code(f"your method {entry.name}"):
        return entry.build(setup)
