"""ART as an engine method: the :class:`~hypersparse.ART` schedule plus a regularizer from the config."""
from __future__ import annotations

from torch import nn

from hypersparse.config import TrainConfig
from hypersparse.regularizers import make_regularizer
from hypersparse.schedule import ART


class ARTMethod(ART):
    """ART with the engine's hooks (no per-step work: the regularizer acts through ``lam``)."""

    @classmethod
    def from_config(cls, cfg: TrainConfig, model: nn.Module) -> "ARTMethod":
        compile = {"auto": None, "on": True, "off": False}[cfg.hs_compile]
        kwargs = {"refresh_every": cfg.hs_refresh_every, "compile": compile} if cfg.reg == "hs" else {}
        reg = make_regularizer(cfg.reg, model, cfg.sparsity, **kwargs)
        return cls(
            reg,
            sparsity=cfg.sparsity,
            warmup_epochs=cfg.warmup,
            lambda_init=cfg.lambda_init,
            eta=cfg.eta_scaled,
            buffer_k=cfg.buffer_k,
            max_reg_epochs=cfg.max_reg,
            finetune_epochs=cfg.finetune,
        )

    @property
    def last_pruned_acc(self) -> float | None:
        return self.history[-1].get("pruned_acc") if self.history else None

    def start(self, model: nn.Module) -> None:
        pass

    def after_step(self, model: nn.Module) -> None:
        pass
