"""ART (Adaptive Regularized Training) as a framework-agnostic schedule.

The training loop asks the schedule for the phase and the regularization
strength of each epoch, and reports each epoch's end with
:meth:`ART.end_epoch`. The schedule decides when regularization has done its
work, restores the chosen model, and hands back its mask.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn

from hypersparse.masks import Masks, magnitude_masks, pruned_mass
from hypersparse.params import check_sparsity
from hypersparse.regularizers import HyperSparse, Regularizer

WARMUP, REGULARIZE, FINETUNE = "warmup", "regularize", "finetune"
WINDOW = 4  # epochs over which the gap's slope is measured
ETA_MAX = 1.5  # with reg_epochs_target, lambda never grows by more than x1.5 per epoch
DEADLINE_PROGRESS = 0.5  # the deadline fixes the mask only once the pruned copy has come this far to the dense accuracy


def _slope(ys: list[float]) -> float:
    """Least-squares slope of ys over 0, 1, 2, ..."""
    n = len(ys)
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


class ARTDidNotConverge(RuntimeError):
    """Regularization ran its maximum number of epochs without meeting the stop criterion."""


class ART:
    """Warm-up, then regularization with ``lambda_e = lambda_init * eta**e``, then fine-tuning.

    After each regularization epoch a pruned version of the model (global
    magnitude pruning at ``sparsity``) is scored by the caller's ``pruned_acc``
    callable; the last ``2 * buffer_k + 1`` scores form a buffer. Once the buffer
    is full and its mean reaches the dense accuracy the caller reports, the
    buffer's middle model is restored into ``model``, pruned, and its mask is
    kept in :attr:`masks`; the phase becomes ``"finetune"`` for good.
    :attr:`stop_reason` says why regularization ended: ``"rule"`` (the stop
    rule held) or ``"deadline"`` (``reg_epochs_target`` was reached first).

    Args:
        regularizer: the :class:`~hypersparse.Regularizer` the loop applies.
        sparsity: target fraction of zero weights (defaults to the HyperSparse regularizer's).
        warmup_epochs: dense epochs before regularization (0 for a pretrained model).
        lambda_init, eta: initial strength and its growth per regularization epoch.
        buffer_k: buffer of ``2k+1`` epochs; the middle one is chosen.
        max_reg_epochs: raise :class:`ARTDidNotConverge` after this many regularization epochs.
        finetune_epochs: after this many fine-tuning epochs :attr:`done` is True (None: never).
        reg_epochs_target: adapt eta to end regularization in about this many epochs (None: fixed eta). Once
            half of them are spent, after each regularization epoch the gap between the dense accuracy and the
            buffer mean is compared with the pace it needs (gap / epochs left). The gap's slope over the last
            ``WINDOW`` epochs gives its pace; the log-growth per epoch is scaled by needed / measured pace, between
            ``eta`` and ``ETA_MAX`` (or ``eta`` itself if larger). A gap that does not close multiplies the growth
            by ``eta``. Because the growth is recomputed each epoch rather than accumulated, it comes back down
            once the gap closes fast enough. Early epochs are left alone: the pruned copy's accuracy often stays
            flat for a while before it climbs, and accelerating then overshoots lambda. The target is also a
            deadline: if the stop rule still does not hold after ``reg_epochs_target`` epochs, the buffer's middle
            model is chosen anyway (:attr:`stop_reason` ``"deadline"``) and fine-tuning closes what is left of
            the gap, provided the buffer mean has come at least ``DEADLINE_PROGRESS`` of the way from its first
            value to the dense accuracy. Before that the pruned copy has hardly begun to sparsify (lambda_0 far
            too small) and its mask would leave a network fine-tuning cannot revive, so regularization goes on
            until it has (each such epoch's record has ``"past_deadline": progress``). It must be at least the buffer
            size ``2 * buffer_k + 1``.
    """

    def __init__(
        self,
        regularizer: Regularizer,
        sparsity: float | None = None,
        warmup_epochs: int = 60,
        lambda_init: float = 5e-6,
        eta: float = 1.05,
        buffer_k: int = 1,
        max_reg_epochs: int = 300,
        finetune_epochs: int | None = 160,
        reg_epochs_target: int | None = None,
    ):
        if sparsity is None:
            if not isinstance(regularizer, HyperSparse):
                raise ValueError("ART needs sparsity= when the regularizer is not HyperSparse")
            sparsity = regularizer.sparsity
        self.sparsity = check_sparsity(sparsity)
        if isinstance(regularizer, HyperSparse) and regularizer.sparsity != self.sparsity:
            raise ValueError(
                f"the HyperSparse regularizer targets sparsity {regularizer.sparsity}, ART {self.sparsity}: use one value"
            )
        for name, value in (("warmup_epochs", warmup_epochs), ("buffer_k", buffer_k)):
            if int(value) < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not (lambda_init > 0 and math.isfinite(lambda_init)) or not (eta > 0 and math.isfinite(eta)):
            raise ValueError(f"lambda_init and eta must be positive numbers, got {lambda_init!r} and {eta!r}")
        if reg_epochs_target is not None and int(reg_epochs_target) < 2 * int(buffer_k) + 1:
            raise ValueError(
                f"reg_epochs_target ({reg_epochs_target!r}) must be at least the buffer size {2 * int(buffer_k) + 1} "
                "(or None for the authors' fixed eta)"
            )
        if int(max_reg_epochs) < 2 * int(buffer_k) + 1:
            raise ValueError(f"max_reg_epochs ({max_reg_epochs}) must be at least the buffer size {2 * buffer_k + 1}")
        self.regularizer = regularizer
        self.warmup_epochs = int(warmup_epochs)
        self.lambda_init = float(lambda_init)
        self.eta = float(eta)
        self.buffer_k = int(buffer_k)
        self.max_reg_epochs = int(max_reg_epochs)
        self.finetune_epochs = finetune_epochs
        self.reg_epochs_target = None if reg_epochs_target is None else int(reg_epochs_target)
        self.eta_now = self.eta  # the growth per epoch; rises only with reg_epochs_target
        self.growth = 1.0  # lambda / lambda_init, the product of the growths so far (reg_epochs_target only)
        self.epoch = 0  # epochs completed
        self.reg_epochs = 0
        self.finetune_done = 0
        self.phase = WARMUP if self.warmup_epochs > 0 else REGULARIZE
        self.buffer: list[dict] = []
        self.history: list[dict] = []
        self.masks: Masks | None = None
        self.chosen_epoch: int | None = None
        self.stop_reason: str | None = None
        self.lambda_override: float | None = None

    @property
    def lam(self) -> float:
        """The regularization strength for the current epoch (0 outside regularization)."""
        if self.phase != REGULARIZE:
            return 0.0
        base = self.lambda_override if self.lambda_override is not None else self.lambda_init
        if self.reg_epochs_target is None:
            return base * self.eta**self.reg_epochs  # the authors' schedule, to the bit
        return base * self.growth

    @property
    def warmup_ends(self) -> bool:
        """True during the last warm-up epoch (before its end_epoch)."""
        return self.phase == WARMUP and self.epoch + 1 >= self.warmup_epochs

    @property
    def done(self) -> bool:
        """True once the fine-tuning epochs are complete."""
        return (
            self.phase == FINETUNE and self.finetune_epochs is not None and self.finetune_done >= self.finetune_epochs
        )

    def end_epoch(
        self,
        model: nn.Module,
        dense_acc: float,
        pruned_acc: Callable[[nn.Module], float] | None = None,
    ) -> str:
        """Report the end of an epoch; returns what happened.

        ``dense_acc`` is the dense model's accuracy this epoch (the authors use
        the running training accuracy). ``pruned_acc(model)`` is called during
        regularization with ``model`` temporarily pruned at the target sparsity
        (the weights are restored afterwards). Returns ``"warmup"``,
        ``"regularize"``, ``"stop"`` (regularization ended: ``model`` now holds
        the chosen pruned weights and :attr:`masks` its mask) or ``"finetune"``.
        """
        record = {"epoch": self.epoch, "phase": self.phase, "lambda": self.lam, "dense_acc": float(dense_acc)}
        self.epoch += 1
        event = self.phase
        if self.phase == WARMUP:
            if self.epoch >= self.warmup_epochs:
                self.phase = REGULARIZE
        elif self.phase == REGULARIZE:
            if pruned_acc is None:
                raise ValueError("during regularization end_epoch needs pruned_acc, a callable scoring the pruned model")
            masks = magnitude_masks(self.regularizer.params, self.sparsity)
            record["pruned_mass"] = pruned_mass(self.regularizer.params, masks)  # before scoring, which prunes in place
            acc = float(self._score_pruned(model, masks, pruned_acc))
            record["pruned_acc"] = acc
            self.reg_epochs += 1
            self.buffer.append(
                {
                    "epoch": record["epoch"],
                    "pruned_acc": acc,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "masks": masks,
                }
            )
            size = 2 * self.buffer_k + 1
            del self.buffer[:-size]
            mean = sum(b["pruned_acc"] for b in self.buffer) / len(self.buffer)
            record["buffer_mean"] = mean
            reason = None
            if len(self.buffer) == size and mean >= dense_acc:  # ">=": a dense model at 100 % could never be beaten
                reason = "rule"
            elif self.reg_epochs_target is not None and self.reg_epochs >= self.reg_epochs_target:  # target >= size: full
                first = next(h["buffer_mean"] for h in self.history + [record] if "buffer_mean" in h)
                progress = (mean - first) / (dense_acc - first) if dense_acc > first else 1.0
                if progress >= DEADLINE_PROGRESS:
                    reason = "deadline"
                else:
                    record["past_deadline"] = progress
            if reason is not None:
                self._choose(model, self.buffer[self.buffer_k])
                self.stop_reason = record["stop_reason"] = reason
                record["chosen_epoch"] = self.chosen_epoch
                event = "stop"
            elif self.reg_epochs >= self.max_reg_epochs:
                self.history.append(record)
                raise ARTDidNotConverge(
                    f"ART regularized for {self.reg_epochs} epochs without the pruned model's accuracy "
                    f"(buffer mean {mean:.4f}) beating the dense accuracy ({float(dense_acc):.4f}); "
                    "raise lambda_init or eta, or allow more epochs with max_reg_epochs"
                    + (", or set a deadline with reg_epochs_target" if self.reg_epochs_target is None else "")
                )
            if event != "stop" and self.reg_epochs_target is not None:
                self._adapt_eta(float(dense_acc) - mean)
                record["eta"] = self.eta_now
        else:
            self.finetune_done += 1
        self.history.append(record)
        return event

    def _adapt_eta(self, gap: float) -> None:
        # the earlier gaps are in the history (dense accuracy minus buffer mean of each regularization epoch)
        gaps = [h["dense_acc"] - h["buffer_mean"] for h in self.history if "buffer_mean" in h][1 - WINDOW:] + [gap]
        left = self.reg_epochs_target - self.reg_epochs
        cap = max(ETA_MAX, self.eta)
        if len(gaps) >= WINDOW and self.reg_epochs >= self.reg_epochs_target // 2:
            closing = -_slope(gaps)  # per epoch
            if left <= 0 or closing <= 0:
                self.eta_now = min(self.eta_now * self.eta, cap)
            else:
                # the gap closes about in proportion to log(lambda): scale the log-growth by needed / observed.
                # A gap that barely closes makes the ratio huge: compare logs first, as eta_now ** ratio overflows
                ratio = gap / left / closing
                if math.log(self.eta_now) * ratio >= math.log(cap):
                    self.eta_now = cap
                else:
                    self.eta_now = max(self.eta_now**ratio, self.eta)
        self.growth *= self.eta_now

    def _score_pruned(self, model: nn.Module, masks: Masks, pruned_acc: Callable[[nn.Module], float]) -> float:
        params = self.regularizer.params
        saved = [p.detach().clone() for p in params]
        was_training = model.training
        try:
            with torch.no_grad():
                for p, m in zip(params, masks.values()):
                    p.masked_fill_(~m, 0.0)
            return pruned_acc(model)
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
            model.train(was_training)

    def _choose(self, model: nn.Module, entry: dict) -> None:
        model.load_state_dict(entry["state"])
        with torch.no_grad():
            for p, m in zip(self.regularizer.params, entry["masks"].values()):
                p.masked_fill_(~m, 0.0)
        self.masks = dict(zip(self.regularizer.names, entry["masks"].values()))
        self.chosen_epoch = entry["epoch"]
        self.phase = FINETUNE
        self.buffer = []

    def state_dict(self) -> dict:
        """Everything needed to resume mid-phase (the buffer's model states included)."""
        keys = ("epoch", "reg_epochs", "finetune_done", "phase", "history", "masks", "chosen_epoch", "lambda_override",
                "eta_now", "growth", "stop_reason")
        state = {k: copy.deepcopy(getattr(self, k)) for k in keys}
        state["buffer"] = [dict(b) for b in self.buffer]
        state["regularizer"] = self.regularizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        for k in ("epoch", "reg_epochs", "finetune_done", "phase", "history", "masks", "chosen_epoch"):
            setattr(self, k, copy.deepcopy(state[k]))
        self.lambda_override = state.get("lambda_override")
        self.eta_now, self.growth = state.get("eta_now", self.eta), state.get("growth", 1.0)
        # checkpoints from before the deadline existed: any stop there was the rule's
        self.stop_reason = state.get("stop_reason", "rule" if state["chosen_epoch"] is not None else None)
        self.buffer = [dict(b) for b in state["buffer"]]
        self.regularizer.load_state_dict(state.get("regularizer", {}))
