"""ART as an engine method: the :class:`~hypersparse.ART` schedule plus a regularizer from the config."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from hypersparse.config import TrainConfig
from hypersparse.errors import UserError
from hypersparse.params import num_pruned
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
            lambda_init=1.0 if cfg.lambda_init == "auto" else cfg.lambda_init,  # 'auto' is set by calibrate_lambda
            eta=cfg.eta_scaled,
            buffer_k=cfg.buffer_k,
            max_reg_epochs=cfg.max_reg,
            finetune_epochs=cfg.finetune,
            reg_epochs_target=cfg.reg_target,
        )

    @property
    def last_pruned_acc(self) -> float | None:
        return self.history[-1].get("pruned_acc") if self.history else None

    @property
    def last_pruned_mass(self) -> float | None:
        return self.history[-1].get("pruned_mass") if self.history else None

    @property
    def last_past_deadline(self) -> float | None:
        return self.history[-1].get("past_deadline") if self.history else None

    def start(self, model: nn.Module) -> None:
        pass

    def after_step(self, model: nn.Module) -> None:
        pass


REFERENCE_STEPS = 25  # steps per epoch at which the per-epoch calibration equals the per-step one


def calibrate_lambda(model: nn.Module, regularizer, batches, fraction: float, steps_per_epoch: int | None = None) -> float:
    """lambda_0 such that ||lambda_0 * grad(reg)|| = fraction * mean ||grad(task)|| over the prunable weights.

    With ``steps_per_epoch`` the fraction is divided by sqrt(steps_per_epoch / 25):
    per epoch, the regularizer's pushes add up (x steps) while the task
    gradient's noise adds in quadrature (x sqrt(steps)), so this keeps their
    ratio over an epoch the same across datasets. Measured on a copy of the
    model in training mode (its BN statistics are left alone), on the given
    batches; deterministic for a fixed model and batches.
    """
    probe = copy.deepcopy(model).train()
    named = dict(probe.named_parameters())
    prunable = [named[n] for n in regularizer.names]
    norms = []
    for xb, yb in batches:
        probe.zero_grad(set_to_none=True)
        F.cross_entropy(probe(xb), yb).backward()
        norms.append(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in prunable if p.grad is not None)))
    task = float(torch.stack(norms).mean())
    reg_norm = float(torch.sqrt(sum((g.float() ** 2).sum() for g in regularizer.gradient())))
    if not (task > 0 and reg_norm > 0):
        raise UserError("cannot calibrate lambda: the task or regularizer gradient is zero; pass a number to --lambda-init")
    if steps_per_epoch is not None:
        fraction = fraction * math.sqrt(REFERENCE_STEPS / steps_per_epoch)
    return fraction * task / reg_norm


@torch.no_grad()
def lambda_for_push(regularizer, sparsity: float, push: float, lr: float, momentum: float, steps_per_epoch: int) -> float:
    """lambda_0 at which the regularizer alone shrinks a weight at the pruning cut by ``push`` of itself per epoch.

    The cut is the k-th smallest magnitude, k = floor(sparsity N): the weight
    global magnitude pruning at ``sparsity`` removes last. Per SGD step the
    regularizer moves it by ``lr * lambda * |g|``, and momentum ``m`` scales a
    steady push by ``1 / (1 - m)``, so over an epoch of ``S`` steps
    ``push = lambda * S * lr * |g| / ((1 - m) |w|)``. Unlike
    :func:`calibrate_lambda` this reads only the weights, not the task
    gradient, so it does not fall when warm-up has fitted the training set.
    """
    mags = torch.cat([p.detach().abs().flatten().double().cpu() for p in regularizer.params])
    grads = torch.cat([g.detach().abs().flatten().double().cpu() for g in regularizer.gradient()])
    k = max(num_pruned(sparsity, mags.numel()), 1)
    cut, index = torch.kthvalue(mags, k)
    ratio = float(grads[index]) / float(cut) if float(cut) > 0 else 0.0
    if not (ratio > 0 and math.isfinite(ratio)):
        raise UserError(
            f"cannot calibrate lambda by push: the weight at the {sparsity:g} pruning cut is {float(cut):g} and its "
            "regularizer gradient is 0 (is the model already that sparse?); pass a number to --lambda-init"
        )
    return push * (1.0 - momentum) / (lr * steps_per_epoch * ratio)
