"""The contract between a training loop and a sparsification method.

Every front end (the CLI engine, the Lightning and Hugging Face callbacks)
drives a method through :class:`~hypersparse.driver.Driver`, which calls these
members and nothing else; what is special to one method (ART's lambda, its
pruned copy's score, its stop reason) reaches the loop only as the epoch's
``record``, which the loop merges into its metrics row without reading it.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from hypersparse.regularizers import Regularizer

Score = Callable[[nn.Module], float]


class EpochResult(str):
    """What an epoch ended with: the event (equal to ``"warmup"``, ``"regularize"``, ``"stop"``, ...) and its record.

    The event is the phase the epoch trained in, or ``"stop"`` when the mask
    was fixed at its end. ``record`` holds the method's own fields for the
    metrics row.
    """

    record: dict

    def __new__(cls, event: str, record: dict | None = None) -> "EpochResult":
        out = super().__new__(cls, event)
        out.record = dict(record or {})
        return out

    @property
    def event(self) -> str:
        return str(self)


class Method(Protocol):
    """A sparsification method as the loop sees it (ART and the baselines implement it)."""

    phase: str  # the name of the current phase, for logs only
    epoch: int  # epochs completed
    finetune_done: int  # fine-tuning epochs completed (the LR schedule counts them)
    masks: dict[str, torch.Tensor] | None
    chosen_epoch: int | None
    regularizer: Regularizer | None

    @property
    def lam(self) -> float: ...  # regularization strength this epoch (0: none)

    @property
    def done(self) -> bool: ...

    @property
    def mask_fixed(self) -> bool: ...  # masks hold for good: the loop keeps pruned weights at zero

    @property
    def fine_tuning(self) -> bool: ...  # the LR schedule's steps apply

    @property
    def needs_scores(self) -> bool: ...  # this epoch's end_epoch compares accuracies

    @property
    def warmup_ends(self) -> bool: ...  # this is the last dense epoch: the dense baseline is measured now

    def start(self, model: nn.Module) -> None: ...

    def begin_epoch(self, lr: float, momentum: float, steps_per_epoch: int) -> str | None: ...

    def after_step(self, model: nn.Module) -> None: ...

    def end_epoch(self, model: nn.Module, dense_acc: float | None, pruned_acc: Score | None) -> EpochResult: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
