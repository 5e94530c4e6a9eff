"""The standard pruning baselines, behind the same interface as ART.

* **oneshot**: train dense, prune once by global magnitude at the target
  sparsity, fine-tune with the mask fixed (Han et al., 2015, one round).
* **gmp**: gradual magnitude pruning (Zhu & Gupta, 2017, "To prune, or not to
  prune"): after a dense warm-up the global sparsity follows
  ``s_t = s_f + (s_i - s_f)(1 - (t - t_0)/(n dt))^3`` from 0 to the target over
  the pruning phase, updated every ``dt`` steps; then fine-tuning.
* **snip**: single-shot network pruning at initialization (Lee et al., 2019):
  connection sensitivity ``|g_j w_j| / sum_k |g_k w_k|`` on one batch at
  initialization; the top ``1 - kappa`` connections are kept and the sparse
  network is trained from scratch.

All three use the same epoch budget and learning-rate schedule as ART: a
constant-LR phase, then ``finetune`` epochs with the LR steps.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hypersparse.masks import Masks, global_keep
from hypersparse.method import Method
from hypersparse.params import ModuleFilter, prunable_parameters


class OneShot(Method):
    """Dense training, one global magnitude pruning, fine-tuning."""

    def __init__(self, sparsity: float, dense_epochs: int, finetune_epochs: int, **selection):
        super().__init__(sparsity, dense_epochs, 0, finetune_epochs, **selection)

    def update_mask(self, model: nn.Module) -> None:
        return None  # no phase between: the cut comes when the dense epochs end (final_mask)


def gmp_sparsity(step: int, start: int, steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's cubic schedule: the sparsity at ``step`` when pruning runs from ``start`` for ``steps`` steps."""
    if step < start:
        return initial
    progress = min(1.0, (step - start) / max(1, steps))
    return final + (initial - final) * (1.0 - progress) ** 3


class GMP(Method):
    """Gradual magnitude pruning: cubic sparsity schedule over ``prune_epochs``, updated every ``frequency`` steps.

    Phases: ``warmup`` (dense) -> ``prune`` (the schedule) -> ``finetune`` (mask fixed at the target).
    """

    def __init__(self, sparsity, dense_epochs, prune_epochs, finetune_epochs, steps_per_epoch, frequency=100,
                 **selection):
        super().__init__(sparsity, dense_epochs, prune_epochs, finetune_epochs, steps_per_epoch, **selection)
        self.frequency = max(1, int(frequency))
        self.current = 0.0

    def target_at(self, step: int) -> float:
        """The scheduled sparsity after ``step`` optimizer steps."""
        return gmp_sparsity(step, self.sparse_start, self.sparse_steps, self.sparsity)

    def update_mask(self, model: nn.Module) -> Masks | None:
        """Every ``frequency`` steps of the pruning phase, a new mask at the scheduled sparsity."""
        since = self.sparse_step
        if since % self.frequency == 0 or since >= self.sparse_steps or self.masks is None:
            self.current = self.target_at(self.step)
            return self.magnitude_masks(model, self.current)
        return None

    def record(self, event: str) -> dict:
        if self.phase == "warmup" or event == "finetune":
            return {}
        return {"target_sparsity": self.sparsity if event == "stop" else self.current}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.current = self.target_at(self.step)


@torch.no_grad()
def _grad_times_weight(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       filter: ModuleFilter | None) -> list[torch.Tensor]:
    with torch.enable_grad():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    return [(p.grad * p).abs() for _, p in prunable_parameters(model, filter)]


def snip_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                filter: ModuleFilter | None = None) -> dict[str, torch.Tensor]:
    """Connection sensitivity ``|dL/dw_j * w_j| / sum_k |dL/dw_k * w_k|`` on the batch (x, y); all zero where every
    product is (an all-zero model: no connection is more sensitive than another, and 0/0 would be NaN)."""
    raw = _grad_times_weight(model, x, y, filter)
    total = sum(r.sum() for r in raw)
    model.zero_grad(set_to_none=True)
    total = total if total != 0 else 1.0
    return {name: r / total for (name, _), r in zip(prunable_parameters(model, filter), raw)}


def snip_masks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sparsity: float,
               filter: ModuleFilter | None = None, max_layer_sparsity: float | None = None) -> Masks:
    """Keep the ``1 - sparsity`` most sensitive connections globally (exactly floor(kappa N) pruned)."""
    scores = snip_scores(model, x, y, filter)
    return dict(zip(scores, global_keep(list(scores.values()), sparsity, max_layer_sparsity)))


class SNIP(Method):
    """Prune at initialization by connection sensitivity, then train the sparse network.

    Phases: ``train`` (sparse, constant LR, as long as the others' warm-up plus pruning) -> ``finetune``.
    """

    sparse_phase = "train"
    mask_moves = False

    def __init__(self, sparsity, train_epochs, finetune_epochs, first_batch, **selection):
        super().__init__(sparsity, 0, train_epochs, finetune_epochs, **selection)
        self.first_batch = first_batch  # () -> (inputs, labels): the batch the sensitivity is measured on

    def init_mask(self, model: nn.Module) -> Masks:
        xb, yb = self.first_batch()
        was = model.training
        model.train()
        masks = snip_masks(model, xb, yb, self.sparsity, self.filter, self.max_layer_sparsity)
        model.train(was)
        return masks

    def update_mask(self, model: nn.Module) -> None:
        return None  # the mask chosen at initialization holds
