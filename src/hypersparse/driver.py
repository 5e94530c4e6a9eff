"""One driver for every training loop: the CLI engine, the Lightning callback and the Hugging Face callback.

A loop calls, per epoch, :meth:`Driver.begin_epoch`, then for each optimizer
step :meth:`Driver.before_step` (after backward) and :meth:`Driver.after_step`,
then :meth:`Driver.end_epoch` with a callable that scores a model. The driver
holds the one stop-rule choice (which dense accuracy the pruned copy must
reach: ``criterion``) and the one "fix the mask" step (fresh optimizer state,
the mask installed so pruned weights stay exactly zero).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from hypersparse.compact_training import CompactTraining
from hypersparse.masks import MaskHandle, apply_masks_
from hypersparse.method import EpochResult, Method, Score
from hypersparse.params import Exclude, ModuleFilter
from hypersparse.regularizers import make_regularizer, native_sgd_step_
from hypersparse.schedule import LAMBDA_INIT, ARTSchedule

CRITERIA = ("matched", "paper")


def _inner(optimizer):
    """The torch optimizer inside a framework's wrapper (accelerate and Lightning wrap it)."""
    return getattr(optimizer, "optimizer", optimizer)


class Driver:
    """Drives a :class:`~hypersparse.method.Method` through a training loop it does not own.

    Args:
        method: the method, or a callable building it from the model (called by :meth:`attach`).
        criterion: ``"matched"`` (default: the dense model is scored like the pruned copy, in eval mode on the same
            images) or ``"paper"`` (the authors': the dense model's running training accuracy, passed to
            :meth:`end_epoch` as ``train_acc``).
        reset_optimizer: clear the optimizer's state (momentum) when the mask is fixed, as the authors do.
    """

    def __init__(self, method: Method | Callable[[nn.Module], Method], criterion: str = "matched",
                 reset_optimizer: bool = True):
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be 'matched' or 'paper', got {criterion!r}")
        self.method: Method | None = None if callable(method) and not hasattr(method, "end_epoch") else method
        self._build = method if self.method is None else None
        self.criterion = criterion
        self.reset_optimizer = reset_optimizer
        self.handle: MaskHandle | None = None  # the method's masks, enforced at every optimizer step
        self._installed: dict | None = None  # the masks dict the handle holds
        self.optimizer = None
        self._pending_state: dict | None = None
        self._built_for: set[int] | None = None  # the ids of the parameters of the model the method was built on

    # -- set-up ------------------------------------------------------------------
    def attach(self, model: nn.Module) -> Method:
        """Build the method on ``model`` (once; later calls keep it) and restore a pending state."""
        if self.method is None:
            self.method = self._build(model)
            self._built_for = {id(p) for p in model.parameters()}
        elif self._built_for is not None and not self._built_for & {id(p) for p in model.parameters()}:
            # a wrapper (DDP) shares its parameters; another model shares none
            raise ValueError(f"{type(self).__name__} was started on another model; use one driver per model")
        if self._pending_state is not None:
            self.method.load_state_dict(self._pending_state)
            self._pending_state = None
        return self.method

    def start(self, model: nn.Module, optimizer) -> None:
        """Before the first epoch (and after a resume): the method's set-up, and its masks if it has any."""
        self.optimizer = optimizer
        self.attach(model).start(model)
        self.sync_masks(model, optimizer)

    def sync_masks(self, model: nn.Module, optimizer=None) -> None:
        """Enforce the method's current masks: installed once on ``model`` and the optimizer, then updated in place
        whenever the method holds a new masks dict (GMP's schedule), so no hook is ever added twice."""
        masks = self.method.masks if self.method is not None else None
        if masks is None or masks is self._installed:
            return
        if self.handle is None:
            self.handle = apply_masks_(model, masks, _inner(optimizer if optimizer is not None else self.optimizer))
        else:
            self.handle.update_(masks)
        self._installed = masks

    def compacted(self, model: nn.Module, optimizer) -> CompactTraining | None:
        """Once the mask is fixed: a compacted copy of ``model`` to fine-tune, exactly as the full one would train
        (see :mod:`hypersparse.compact_training`): train ``.model`` with ``.optimizer``, call ``.sync_settings()``
        after changing the learning rate and ``.write_back()`` before using ``model``. None before the mask is fixed,
        or for a model it does not handle."""
        if self.method is None or not self.method.mask_fixed:
            return None
        return CompactTraining.build(model, self.method.masks, _inner(optimizer))

    # -- the loop ------------------------------------------------------------------
    @property
    def lam(self) -> float:
        return self.method.lam if self.method is not None else 0.0

    @property
    def done(self) -> bool:
        return self.method is not None and self.method.done

    def _started(self) -> Method:
        """The method, once :meth:`start` (or :meth:`attach`) gave it its model: the loop's hooks need it."""
        if self.method is None:
            raise RuntimeError(f"{type(self).__name__}: call start(model, optimizer) before the training loop's "
                               "hooks (begin_epoch, before_step, after_step, end_epoch)")
        return self.method

    def begin_epoch(self, optimizer, steps_per_epoch: int) -> str | None:
        """Before an epoch's training: the method may set itself up from the optimizer (ART's ``auto`` lambda_init)."""
        group = _inner(optimizer).param_groups[0]
        return self._started().begin_epoch(group["lr"], group.get("momentum", 0.0), steps_per_epoch)

    def before_step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """After backward and any gradient reduction: the method reads the dense gradients (RigL, on its update
        steps), then ``lam * grad(regularizer)`` is added to them.

        A loop that owns a plain ``torch.optim.SGD`` passes it: HyperSparse then takes that optimizer's step for the
        prunable weights in the same pass (:meth:`~hypersparse.HyperSparse.step_sgd_`), and the other parameters'
        step in C too; without a regularizer at work (warm-up, dense epochs) the whole step is taken in C
        (:func:`~hypersparse.regularizers.native_sgd_step_`). Each ``.grad`` stepped is left None, so the
        ``optimizer.step()`` the loop calls next moves only what is left."""
        method = self._started()
        hook = getattr(method, "before_step", None)
        if hook is not None:
            hook()
        lam = self.lam
        regularizer = method.regularizer
        if lam and regularizer is not None:
            fused = getattr(regularizer, "step_sgd_", None)
            if optimizer is None or fused is None or not fused(optimizer, lam):
                regularizer.add_grad_(lam)
        elif optimizer is not None:
            native_sgd_step_(optimizer)

    def after_step(self, model: nn.Module) -> None:
        self._started().after_step(model)
        self.sync_masks(model)

    def end_epoch(self, model: nn.Module, score: Score | None, optimizer=None,
                  train_acc: float | None = None) -> EpochResult:
        """The method's decision at an epoch's end; on ``"stop"`` the mask is fixed.

        ``score(model)`` gives an accuracy (called in epochs that compare the
        pruned copy with the dense model); ``train_acc`` is the epoch's running
        training accuracy, which the ``paper`` criterion compares with.
        """
        dense_acc = None
        if self._started().needs_scores:
            if self.criterion == "paper":
                if train_acc is None:
                    raise ValueError("the paper criterion needs the epoch's running training accuracy (train_acc=)")
                dense_acc = float(train_acc)
            else:
                dense_acc = score(model)
        result = self.method.end_epoch(model, dense_acc, score)
        if result == "stop":
            if self.reset_optimizer and optimizer is not None:
                _inner(optimizer).state.clear()
        self.sync_masks(model, optimizer)
        return result

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"method": self.method.state_dict() if self.method is not None else self._pending_state}

    def load_state_dict(self, state: dict) -> None:
        if self.method is not None and state.get("method") is not None:
            self.method.load_state_dict(state["method"])
        else:
            self._pending_state = state.get("method")


class ARTDriver(Driver):
    """A :class:`Driver` for ART with a regularizer on a model it is given later (:meth:`attach`), for callbacks.

    Args:
        sparsity: target fraction of zero weights among the Conv/Linear weights.
        reg: ``"hs"`` (HyperSparse), ``"l1"`` or ``"l2"``.
        criterion, reset_optimizer: as in :class:`Driver`.
        warmup_epochs, lambda_init, eta, buffer_k, max_reg_epochs, reg_epochs_target, finetune_epochs,
            max_layer_sparsity: as in :class:`~hypersparse.ARTSchedule` (``lambda_init="auto"`` works here too);
            ``finetune_epochs`` None leaves the end to the framework.
        exclude: layers to keep dense: glob patterns over their dotted names (:class:`~hypersparse.Exclude`), or a
            filter ``(name, module) -> bool`` that selects the prunable modules; None prunes every Linear/Conv.
        **reg_kwargs: passed to the regularizer (e.g. ``refresh_every`` for HyperSparse).
    """

    def __init__(self, sparsity: float, reg: str = "hs", criterion: str = "matched", reset_optimizer: bool = True,
                 warmup_epochs: int = 60, lambda_init: float | str = LAMBDA_INIT, eta: float = 1.05, buffer_k: int = 1,
                 max_reg_epochs: int = 300, finetune_epochs: int | None = None, reg_epochs_target: int | None = None,
                 exclude: Sequence[str] | ModuleFilter | None = None, max_layer_sparsity: float | None = None,
                 **reg_kwargs):
        # ART's settings; a callback may fill its phases from the trainer's budget before the model is attached
        self.options = dict(sparsity=sparsity, warmup_epochs=warmup_epochs, lambda_init=lambda_init, eta=eta,
                            buffer_k=buffer_k, max_reg_epochs=max_reg_epochs, finetune_epochs=finetune_epochs,
                            reg_epochs_target=reg_epochs_target, max_layer_sparsity=max_layer_sparsity)
        self.exclude = exclude  # a callback may set it from the model before it is attached

        def build(model: nn.Module) -> ARTSchedule:
            filter = self.filter_for(model)
            return ARTSchedule(make_regularizer(reg, model, sparsity, filter=filter, **reg_kwargs), **self.options)

        super().__init__(build, criterion, reset_optimizer)

    @property
    def art(self) -> ARTSchedule | None:
        """The :class:`~hypersparse.ARTSchedule` (phase, lam, masks, history), once attached."""
        return self.method

    def filter_for(self, model: nn.Module) -> ModuleFilter | None:
        """The prunable-module filter ``exclude`` stands for, checked against ``model`` (a pattern must name a
        layer)."""
        if self.exclude is None or callable(self.exclude):
            return self.exclude
        filter = Exclude(self.exclude)
        filter.check(model)
        return filter if filter.patterns else None


def batch_accuracy(model: nn.Module, batches, call: Callable, reduce: Callable) -> float:
    """Accuracy in eval mode over ``batches``; ``call(model, batch)`` gives (logits, labels); ``reduce`` sums over
    ranks."""
    was = model.training
    model.eval()
    correct, total = 0.0, 0.0
    try:
        with torch.no_grad():
            for batch in batches:
                logits, labels = call(model, batch)
                correct += float((logits_of(logits).argmax(-1) == labels).sum())
                total += labels.numel()
    finally:
        model.train(was)
    correct, total = reduce(correct, total)
    return correct / max(total, 1.0)


def logits_of(output) -> torch.Tensor:
    """The logits in a model's output: a tensor, or an object/dict with ``logits``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    raise TypeError("cannot find logits in the model's output; "
                    "the model must return a tensor or an object with .logits")
