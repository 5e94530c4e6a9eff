"""ART from a run's config: the :class:`~hypersparse.ARTSchedule` with the regularizer the config names."""
from __future__ import annotations

from torch import nn

from hypersparse.config import TrainConfig
from hypersparse.method import Method
from hypersparse.regularizers import make_regularizer
from hypersparse.schedule import ARTSchedule

Method.register(ARTSchedule)  # ART keeps its own schedule and implements the members the driver calls itself


def art_from_config(cfg: TrainConfig, model: nn.Module) -> ARTSchedule:
    """The ART schedule of ``cfg`` (phases scaled by ``epochs_scale``) on ``model``'s prunable weights."""
    kwargs = {}
    if cfg.art.reg == "hs":
        compile = {"auto": None, "on": True, "off": False}[cfg.hs.hs_compile]
        kwargs = {"refresh_every": cfg.hs.hs_refresh_every, "compile": compile}
    selection = cfg.selection
    reg = make_regularizer(cfg.art.reg, model, cfg.sparsity.sparsity, filter=selection["filter"], **kwargs)
    return ARTSchedule(reg, sparsity=cfg.sparsity.sparsity, warmup_epochs=cfg.warmup, lambda_init=cfg.art.lambda_init,
               eta=cfg.eta_scaled, buffer_k=cfg.art.buffer_k, max_reg_epochs=cfg.max_reg,
               finetune_epochs=cfg.finetune, reg_epochs_target=cfg.reg_target,
               max_layer_sparsity=selection["max_layer_sparsity"])
