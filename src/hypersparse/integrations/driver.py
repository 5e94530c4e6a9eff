"""What every integration does at its hooks: the regularizer before each optimizer step, the ART decision at epoch end.

The callbacks of :mod:`.lightning` and :mod:`.transformers` only translate their
framework's hooks into these calls, so ART behaves the same in every stack.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from hypersparse.masks import MaskHandle, apply_masks_
from hypersparse.regularizers import make_regularizer
from hypersparse.schedule import ART, FINETUNE


class ARTDriver:
    """ART with a regularizer on a model it is given later (:meth:`attach`), for callbacks.

    Args:
        sparsity: target fraction of zero weights among the Conv/Linear weights.
        reg: ``"hs"`` (HyperSparse), ``"l1"`` or ``"l2"``.
        warmup_epochs, lambda_init, eta, buffer_k, max_reg_epochs, reg_epochs_target: as in :class:`~hypersparse.ART`.
        finetune_epochs: stop training after this many fine-tuning epochs (None: the framework's own limit).
        score_batches: the pruned copy (and, with the matched rule, the dense model) is scored in eval mode on the
            first this-many training batches, kept from the first regularization epoch on.
        reset_optimizer: clear the optimizer's state (momentum) when the mask is fixed, as the authors do.
    """

    def __init__(self, sparsity: float, reg: str = "hs", warmup_epochs: int = 60, lambda_init: float = 5e-6,
                 eta: float = 1.05, buffer_k: int = 1, max_reg_epochs: int = 300, finetune_epochs: int | None = None,
                 score_batches: int = 20, reset_optimizer: bool = True, reg_epochs_target: int | None = None,
                 **reg_kwargs):
        self.options = dict(sparsity=sparsity, warmup_epochs=warmup_epochs, lambda_init=lambda_init, eta=eta,
                            buffer_k=buffer_k, max_reg_epochs=max_reg_epochs, finetune_epochs=finetune_epochs,
                            reg_epochs_target=reg_epochs_target)
        self.reg_name, self.reg_kwargs = reg, reg_kwargs
        self.score_batches = int(score_batches)
        self.reset_optimizer = reset_optimizer
        self.art: ART | None = None
        self.handle: MaskHandle | None = None
        self.scoring: list | None = None
        self._pending_state: dict | None = None

    def attach(self, model: nn.Module) -> None:
        """Build the regularizer and the schedule on ``model`` (once; later calls keep them)."""
        if self.art is not None:
            return
        reg = make_regularizer(self.reg_name, model, self.options["sparsity"], **self.reg_kwargs)
        self.art = ART(reg, **self.options)
        if self._pending_state is not None:
            self.art.load_state_dict(self._pending_state)
            self._pending_state = None

    @property
    def lam(self) -> float:
        return self.art.lam if self.art is not None else 0.0

    def before_step(self) -> None:
        """Add ``lam * grad(regularizer)`` to the gradients (after backward and any gradient reduction)."""
        if self.lam:
            self.art.regularizer.add_grad_(self.lam)

    def keep_mask(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Install the fixed mask on ``model`` (after a resume, or when ART stops); idempotent."""
        if self.art is None or self.art.masks is None or self.art.phase != FINETUNE or self.handle is not None:
            return
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate and Lightning wrap the torch optimizer
        self.handle = apply_masks_(model, self.art.masks, optimizer)

    def end_epoch(self, model: nn.Module, dense_acc: float | None, score: Callable[[nn.Module], float],
                  optimizer: torch.optim.Optimizer | None) -> str:
        """The ART decision; ``dense_acc`` None measures the dense model with ``score`` (the matched rule)."""
        if dense_acc is None:  # only regularization epochs compare accuracies
            dense_acc = score(model) if self.art.phase == "regularize" else 0.0
        event = self.art.end_epoch(model, dense_acc, score)
        if event == "stop":
            inner = getattr(optimizer, "optimizer", optimizer)
            if self.reset_optimizer and inner is not None:
                inner.state.clear()
            self.keep_mask(model, optimizer)
        return event

    @property
    def done(self) -> bool:
        return self.art is not None and self.art.done

    def state_dict(self) -> dict:
        return {"art": self.art.state_dict() if self.art is not None else self._pending_state}

    def load_state_dict(self, state: dict) -> None:
        if self.art is not None and state.get("art") is not None:
            self.art.load_state_dict(state["art"])
        else:
            self._pending_state = state.get("art")


def logits_of(output) -> torch.Tensor:
    """The logits in a model's output: a tensor, or an object/dict with ``logits``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    raise TypeError("cannot find logits in the model's output; the model must return a tensor or an object with .logits")


@torch.no_grad()
def batch_accuracy(model: nn.Module, batches: Iterable, call: Callable, reduce: Callable[[float, float], Sequence]) -> float:
    """Accuracy in eval mode over ``batches``; ``call(model, batch)`` gives (logits, labels); ``reduce`` sums over ranks."""
    was = model.training
    model.eval()
    correct, total = 0.0, 0.0
    try:
        for batch in batches:
            logits, labels = call(model, batch)
            correct += float((logits_of(logits).argmax(-1) == labels).sum())
            total += labels.numel()
    finally:
        model.train(was)
    correct, total = reduce(correct, total)
    return correct / max(total, 1.0)
