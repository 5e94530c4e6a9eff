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

import copy

import torch
from torch import nn
from torch.nn import functional as F

from hypersparse.masks import Masks, check_ceiling, global_keep, magnitude_masks, zero_pruned_
from hypersparse.method import EpochResult
from hypersparse.params import ModuleFilter, check_sparsity, prunable_parameters


class Baseline:
    """Epoch counting and phases shared by the baselines (no regularizer: ``lam`` is 0, nothing is scored)."""

    regularizer = None
    lam = 0.0
    needs_scores = False
    _STATE = ("epoch", "finetune_done", "phase", "masks", "chosen_epoch")
    first_phase = "warmup"

    def __init__(self, sparsity: float, dense_epochs: int, finetune_epochs: int,
                 filter: ModuleFilter | None = None, max_layer_sparsity: float | None = None):
        self.sparsity = check_sparsity(sparsity)
        self.filter = filter  # which weights are prunable (default: every Linear/Conv weight)
        # None: the default ceiling, 1 - (1 - sparsity) / 10 (masks.global_keep)
        self.max_layer_sparsity = None if max_layer_sparsity is None else check_ceiling(max_layer_sparsity,
                                                                                         self.sparsity)
        self.dense_epochs = int(dense_epochs)
        self.finetune_epochs = int(finetune_epochs)
        self.epoch = 0
        self.finetune_done = 0
        self.phase = self.first_phase if self.dense_epochs > 0 else "finetune"
        self.masks: Masks | None = None
        self.chosen_epoch: int | None = None

    @property
    def done(self) -> bool:
        return self.phase == "finetune" and self.finetune_done >= self.finetune_epochs

    @property
    def fine_tuning(self) -> bool:
        return self.phase == "finetune"

    @property
    def mask_fixed(self) -> bool:
        """The mask holds for good (fine-tuning, or SNIP's sparse training); GMP's earlier masks still move."""
        return self.masks is not None and self.phase in ("finetune", "train")

    @property
    def warmup_ends(self) -> bool:
        """True during the last dense epoch (before its end_epoch)."""
        return self.phase == "warmup" and self.epoch + 1 >= self.dense_epochs

    def start(self, model: nn.Module) -> None:
        pass

    def begin_epoch(self, lr: float, momentum: float, steps_per_epoch: int) -> str | None:
        return None

    def after_step(self, model: nn.Module) -> None:
        pass

    def _prune_now(self, model: nn.Module) -> None:
        self.masks = self._magnitude_masks(model, self.sparsity)
        self._zero(model)
        self.chosen_epoch = self.epoch
        self.phase = "finetune"

    def _zero(self, model: nn.Module) -> None:
        """Zero what :attr:`masks` prunes now (the loop's driver keeps it zero from the next step on)."""
        named = dict(prunable_parameters(model, self.filter))
        zero_pruned_([named[n] for n in self.masks], self.masks.values())

    def _magnitude_masks(self, model: nn.Module, sparsity: float) -> Masks:
        return magnitude_masks(model, sparsity, filter=self.filter, max_layer_sparsity=self.max_layer_sparsity)

    def end_epoch(self, model: nn.Module, dense_acc: float | None = None, pruned_acc=None) -> EpochResult:
        event = self.phase
        self.epoch += 1
        if self.phase == "finetune":
            self.finetune_done += 1
        elif self.epoch >= self.dense_epochs:
            event = self._end_dense(model)
        return EpochResult(event)

    def _end_dense(self, model: nn.Module) -> str:
        self._prune_now(model)
        return "stop"

    def state_dict(self) -> dict:
        return {k: copy.deepcopy(getattr(self, k)) for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            setattr(self, k, copy.deepcopy(state[k]))


class OneShot(Baseline):
    """Dense training, one global magnitude pruning, fine-tuning."""


def gmp_sparsity(step: int, start: int, steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's cubic schedule: the sparsity at ``step`` when pruning runs from ``start`` for ``steps`` steps."""
    if step < start:
        return initial
    progress = min(1.0, (step - start) / max(1, steps))
    return final + (initial - final) * (1.0 - progress) ** 3


class GMP(Baseline):
    """Gradual magnitude pruning: cubic sparsity schedule over ``prune_epochs``, updated every ``frequency`` steps.

    Phases: ``warmup`` (dense) -> ``prune`` (the schedule) -> ``finetune`` (mask fixed at the target).
    """

    _STATE = Baseline._STATE + ("step",)

    def __init__(self, sparsity, dense_epochs, prune_epochs, finetune_epochs, steps_per_epoch, frequency=100,
                 **selection):
        super().__init__(sparsity, dense_epochs + prune_epochs, finetune_epochs, **selection)
        self.warmup_epochs = int(dense_epochs)
        self.start_step = dense_epochs * steps_per_epoch
        self.prune_steps = max(1, prune_epochs * steps_per_epoch)
        self.frequency = max(1, int(frequency))
        self.step = 0
        self.current = 0.0
        if self.phase == "warmup" and self.warmup_epochs == 0:
            self.phase = "prune"

    @property
    def warmup_ends(self) -> bool:
        return self.phase == "warmup" and self.epoch + 1 >= self.warmup_epochs

    def target_at(self, step: int) -> float:
        """The scheduled sparsity after ``step`` optimizer steps."""
        return gmp_sparsity(step, self.start_step, self.prune_steps, self.sparsity)

    def after_step(self, model: nn.Module) -> None:
        """Every ``frequency`` steps of the pruning phase, a new mask at the scheduled sparsity (a new dict, which the
        driver installs in place of the old one; between updates the driver keeps the current one)."""
        self.step += 1
        if self.phase != "prune":
            return
        since = self.step - self.start_step
        if since % self.frequency == 0 or since >= self.prune_steps or self.masks is None:
            self.current = self.target_at(self.step)
            self.masks = self._magnitude_masks(model, self.current)
            self._zero(model)

    def end_epoch(self, model: nn.Module, dense_acc: float | None = None, pruned_acc=None) -> EpochResult:
        if self.phase == "warmup" and self.epoch + 1 >= self.warmup_epochs:
            self.epoch += 1
            self.phase = "prune"
            return EpochResult("warmup", {"target_sparsity": self.current})
        result = super().end_epoch(model, dense_acc, pruned_acc)
        if result.event in ("prune", "stop"):
            result.record["target_sparsity"] = self.current if result.event == "prune" else self.sparsity
        return result

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
    """Connection sensitivity ``|dL/dw_j * w_j| / sum_k |dL/dw_k * w_k|`` on the batch (x, y)."""
    raw = _grad_times_weight(model, x, y, filter)
    total = sum(r.sum() for r in raw)
    model.zero_grad(set_to_none=True)
    return {name: r / total for (name, _), r in zip(prunable_parameters(model, filter), raw)}


def snip_masks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sparsity: float,
               filter: ModuleFilter | None = None, max_layer_sparsity: float | None = None) -> Masks:
    """Keep the ``1 - sparsity`` most sensitive connections globally (exactly floor(kappa N) pruned)."""
    scores = snip_scores(model, x, y, filter)
    return dict(zip(scores, global_keep(list(scores.values()), sparsity, max_layer_sparsity)))


class SNIP(Baseline):
    """Prune at initialization by connection sensitivity, then train the sparse network.

    Phases: ``train`` (sparse, constant LR, as long as the others' warm-up plus pruning) -> ``finetune``.
    """

    first_phase = "train"

    def __init__(self, sparsity, train_epochs, finetune_epochs, first_batch, **selection):
        super().__init__(sparsity, train_epochs, finetune_epochs, **selection)
        self.first_batch = first_batch  # () -> (inputs, labels): the batch the sensitivity is measured on

    def start(self, model: nn.Module) -> None:
        if self.masks is not None:
            return  # resumed: the mask was chosen at initialization
        xb, yb = self.first_batch()
        was = model.training
        model.train()
        self.masks = snip_masks(model, xb, yb, self.sparsity, self.filter, self.max_layer_sparsity)
        model.train(was)
        self.chosen_epoch = 0

    def _end_dense(self, model: nn.Module) -> str:
        self.phase = "finetune"
        return "train"
