"""ART (Adaptive Regularized Training) as a framework-agnostic schedule: :class:`ARTSchedule` (also ``hs.ART``).

The training loop asks the schedule for the phase and the regularization
strength of each epoch, and reports each epoch's end with
:meth:`ARTSchedule.end_epoch`. The schedule decides when regularization has done
its work, restores the chosen model, and hands back its mask.
"""
from __future__ import annotations

import copy
import math
import numbers
import warnings
from typing import Callable

import torch
from torch import nn

from hypersparse.errors import UserError
from hypersparse.masks import Masks, check_ceiling, magnitude_masks, pruned_mass, zero_pruned_
from hypersparse.method import EpochResult
from hypersparse.params import check_sparsity, num_pruned
from hypersparse.regularizers import HyperSparse, Regularizer, cut_magnitude

WARMUP, REGULARIZE, FINETUNE = "warmup", "regularize", "finetune"
WINDOW = 4  # epochs over which the gap's slope is measured
ETA_MAX = 1.5  # with reg_epochs_target, lambda never grows by more than x1.5 per epoch
DEADLINE_PROGRESS = 0.5  # the deadline fixes the mask only once the pruned copy has come this far to the dense accuracy
LAMBDA_INIT = 5e-6  # lambda's start, the authors' (the default of ARTSchedule, ARTDriver and --lambda-init)
DEFAULT_PUSH = 0.03  # lambda_init "auto": the weight at the pruning cut loses this share of itself per epoch


def _slope(ys: list[float]) -> float:
    """Least-squares slope of ys over 0, 1, 2, ..."""
    n = len(ys)
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


class ARTDidNotConverge(RuntimeError):
    """Regularization ran its maximum number of epochs without meeting the stop criterion."""



def parse_auto(lambda_init: float | str) -> float | None:
    """The push P of ``"auto"`` / ``"auto:P"`` (None for a number)."""
    if isinstance(lambda_init, str):
        if lambda_init == "auto":
            return DEFAULT_PUSH
        if lambda_init.startswith("auto:"):
            try:
                push = float(lambda_init[5:])
            except ValueError:
                push = -1.0
            if 0 < push < 1:
                return push
        raise ValueError("lambda_init must be a positive number, 'auto' or 'auto:P' with P in (0, 1), "
                         f"got {lambda_init!r}")
    return None


@torch.no_grad()
def lambda_for_push(regularizer: Regularizer, sparsity: float, push: float, lr: float, momentum: float,
                    steps_per_epoch: int) -> float:
    """lambda_init at which the regularizer alone shrinks a weight at the pruning cut by ``push`` of itself per epoch.

    The cut is the k-th smallest magnitude, k = floor(sparsity N): the weight
    global magnitude pruning at ``sparsity`` removes last. Per SGD step the
    regularizer moves it by ``lr * lambda * |g|``, and momentum ``m`` scales a
    steady push by ``1 / (1 - m)``, so over an epoch of ``S`` steps
    ``push = lambda * S * lr * |g| / ((1 - m) |w|)``. It reads only the
    weights, so it does not fall when warm-up has fitted the training set.
    """
    mags = torch.cat([p.detach().abs().flatten().double().cpu() for p in regularizer.params])
    grads = torch.cat([g.detach().abs().flatten().double().cpu() for g in regularizer.gradient()])
    k = max(num_pruned(sparsity, mags.numel()), 1)
    cut = cut_magnitude(mags, k)[0]  # the same cut as HyperSparse's, also on a model that is sparse already
    index = torch.argmin((mags - cut).abs())
    ratio = float(grads[index]) / float(cut) if 0 < float(cut) < math.inf else 0.0
    if not (ratio > 0 and math.isfinite(ratio)):
        raise UserError(
            "cannot set lambda_init by push: every prunable weight is zero, so no weight sits at the "
            f"{sparsity:g} pruning cut; pass a number to --lambda-init"
            if not float(mags.max()) > 0 else
            f"cannot set lambda_init by push: the weight at the {sparsity:g} pruning cut is {float(cut):g} and its "
            "regularizer gradient is 0; pass a number to --lambda-init"
        )
    return push * (1.0 - momentum) / (lr * steps_per_epoch * ratio)


class ARTSchedule:
    """ART's phases: dense warm-up, regularization with ``lambda_e = lambda_init * eta**e``, then fine-tuning.

    After each regularization epoch a copy pruned at ``sparsity`` is scored by the caller's ``pruned_acc``. Once the
    mean of the last ``2 * buffer_k + 1`` scores reaches the dense accuracy, the buffer's middle model is restored
    into the model, pruned, and its mask kept in :attr:`masks`; :attr:`stop_reason` is ``"rule"`` (or ``"deadline"``
    with ``reg_epochs_target``). The rule, ``auto`` and the deadline: docs/methods.md, "ART's schedule".

    Args: ``regularizer`` (:class:`~hypersparse.Regularizer`); ``sparsity`` (default: the HyperSparse
    regularizer's); ``warmup_epochs`` (0 for a pretrained model); ``lambda_init``: a number, or ``"auto"`` /
    ``"auto:P"`` (set by :meth:`begin_epoch` so the regularizer alone shrinks the weight at the cut by P per epoch;
    P defaults to 0.03); ``eta``: lambda's growth per epoch; ``buffer_k``; ``max_reg_epochs`` (then
    :class:`ARTDidNotConverge`); ``finetune_epochs`` (None: never :attr:`done`); ``reg_epochs_target``: adapt eta to
    end regularization in about this many epochs, then a deadline (None: fixed eta); ``max_layer_sparsity``: one
    tensor's ceiling in the masks (default ``1 - (1 - sparsity) / 10``; 1 = none).
    """

    def __init__(self, regularizer: Regularizer, sparsity: float | None = None, warmup_epochs: int = 60,
                 lambda_init: float | str = LAMBDA_INIT, eta: float = 1.05, buffer_k: int = 1,
                 max_reg_epochs: int = 300, finetune_epochs: int | None = 160, reg_epochs_target: int | None = None,
                 max_layer_sparsity: float | None = None):
        if not isinstance(regularizer, Regularizer):
            raise TypeError(f"ART needs a regularizer (hs.HyperSparse, hs.L1 or hs.L2 over your model), got "
                            f"{type(regularizer).__name__}")
        if sparsity is None:
            if not isinstance(regularizer, HyperSparse):
                raise ValueError("ART needs sparsity= when the regularizer is not HyperSparse")
            sparsity = regularizer.sparsity
        self.sparsity = check_sparsity(sparsity)
        if isinstance(regularizer, HyperSparse) and regularizer.sparsity != self.sparsity:
            raise ValueError(
                f"the HyperSparse regularizer targets sparsity {regularizer.sparsity}, ART {self.sparsity}: "
                "use one value"
            )
        self.max_layer_sparsity = None if max_layer_sparsity is None else check_ceiling(max_layer_sparsity,
                                                                                         self.sparsity)
        self.lambda_auto = parse_auto(lambda_init)  # the push P, or None for a number
        _check_settings(lambda_init if self.lambda_auto is None else 1.0, eta, warmup_epochs, buffer_k,
                        max_reg_epochs, reg_epochs_target, finetune_epochs)
        self.regularizer = regularizer
        self.warmup_epochs = int(warmup_epochs)
        self.lambda_init: float | None = None if self.lambda_auto is not None else float(lambda_init)  # auto: later
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
        # hold(dense_acc, history) -> why the mask must not be fixed now, or None; set by a caller that knows
        # better than the stop rule (the trainer callbacks: a dense model near chance, or fallen; integrations.budget)
        self.hold: Callable[[float, list[dict]], str | None] | None = None

    @property
    def lam(self) -> float:
        """The regularization strength for the current epoch (0 outside regularization)."""
        if self.phase != REGULARIZE:
            return 0.0
        if self.lambda_init is None:
            raise RuntimeError("lambda_init is 'auto': call begin_epoch(lr, momentum, steps_per_epoch) before training "
                               "the first regularization epoch")
        if self.reg_epochs_target is None:
            return self.lambda_init * self.eta**self.reg_epochs  # the authors' schedule, to the bit
        return self.lambda_init * self.growth

    @property
    def lambda_0(self) -> float | None:
        """Deprecated name of :attr:`lambda_init`."""
        warnings.warn("ARTSchedule.lambda_0 is now lambda_init", DeprecationWarning, stacklevel=2)
        return self.lambda_init

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

    @property
    def mask_fixed(self) -> bool:
        """True from the stop on: :attr:`masks` holds for the rest of training."""
        return self.phase == FINETUNE and self.masks is not None

    @property
    def fine_tuning(self) -> bool:
        return self.phase == FINETUNE

    @property
    def needs_scores(self) -> bool:
        """True in regularization epochs, whose end compares the pruned copy with the dense model."""
        return self.phase == REGULARIZE

    def start(self, model: nn.Module) -> None:
        """Nothing to prepare: ART's decisions come at epoch ends."""

    def after_step(self, model: nn.Module) -> None:
        """Nothing per step: the loop applies the regularizer with :attr:`lam`."""

    def begin_epoch(self, lr: float, momentum: float, steps_per_epoch: int) -> str | None:
        """Before an epoch's training: sets an ``auto`` lambda_init at the first regularization epoch; returns a
        note."""
        if self.phase != REGULARIZE or self.lambda_init is not None:
            return None
        self.lambda_init = lambda_for_push(self.regularizer, self.sparsity, self.lambda_auto, lr, momentum,
                                           steps_per_epoch)
        return (f"lambda_init auto: {self.lambda_init:.3g} (the regularizer shrinks the weight at the cut by "
                f"{self.lambda_auto:g} per epoch of {steps_per_epoch} steps)")

    def end_epoch(self, model: nn.Module, dense_acc: float | None = None,
                  pruned_acc: Callable[[nn.Module], float] | None = None) -> EpochResult:
        """Report the end of an epoch; returns what happened, with the epoch's record (also in :attr:`history`).

        ``dense_acc`` is the dense model's accuracy this epoch (needed in
        regularization epochs; the authors use the running training accuracy).
        ``pruned_acc(model)`` is called during regularization with ``model``
        temporarily pruned at the target sparsity (the weights are restored
        afterwards). Returns ``"warmup"``, ``"regularize"``, ``"stop"``
        (regularization ended: ``model`` now holds the chosen pruned weights and
        :attr:`masks` its mask) or ``"finetune"``.
        """
        if dense_acc is not None:  # checked in every phase: a wrong value is wrong at the call that passed it
            dense_acc = _accuracy(dense_acc, "dense_acc")
        if pruned_acc is not None and not callable(pruned_acc):
            raise TypeError(f"pruned_acc must be a callable scoring the pruned model, got {type(pruned_acc).__name__}")
        record = {"epoch": self.epoch, "phase": self.phase, "lambda": self.lam}
        self.epoch += 1
        event = self.phase
        if self.phase == WARMUP:
            if self.epoch >= self.warmup_epochs:
                self.phase = REGULARIZE
        elif self.phase == REGULARIZE:
            if pruned_acc is None or dense_acc is None or not callable(pruned_acc):
                raise ValueError("during regularization end_epoch needs dense_acc and pruned_acc, a callable scoring "
                                 "the pruned model")
            record.update(lambda_init=self.lambda_init, dense_acc=_accuracy(dense_acc, "dense_acc"))
            event = self._end_regularize(model, record["dense_acc"], pruned_acc, record)
        else:
            self.finetune_done += 1
        self.history.append(record)
        return EpochResult(event, {k: v for k, v in record.items() if k not in ("epoch", "phase")})

    def _end_regularize(self, model: nn.Module, dense_acc: float, pruned_acc: Callable[[nn.Module], float],
                        record: dict) -> str:
        masks = magnitude_masks(self.regularizer.params, self.sparsity, max_layer_sparsity=self.max_layer_sparsity)
        record["pruned_mass"] = pruned_mass(self.regularizer.params, masks)  # before scoring, which prunes in place
        acc = _accuracy(self._score_pruned(model, masks, pruned_acc), "pruned_acc(model)")
        record["pruned_acc"] = acc
        self.reg_epochs += 1
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.buffer.append({"epoch": record["epoch"], "pruned_acc": acc, "state": state, "masks": masks})
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
        if reason is not None and self.hold is not None:
            held = self.hold(dense_acc, self.history)
            if held:
                record["held"] = held
                reason = None
        if reason is not None:
            self._choose(model, self.buffer[self.buffer_k])
            self.stop_reason = record["stop_reason"] = reason
            record["chosen_epoch"] = self.chosen_epoch
            return "stop"
        if self.reg_epochs >= self.max_reg_epochs:
            self.history.append(record)
            raise ARTDidNotConverge(
                f"ART regularized for {self.reg_epochs} epochs without the pruned model's accuracy "
                f"(buffer mean {mean:.4f}) beating the dense accuracy ({dense_acc:.4f}); "
                "raise lambda_init or eta, or allow more epochs with max_reg_epochs"
                + (", or set a deadline with reg_epochs_target" if self.reg_epochs_target is None else "")
            )
        if self.reg_epochs_target is not None:
            self._adapt_eta(dense_acc - mean)
            record["eta"] = self.eta_now
        return REGULARIZE

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
            zero_pruned_(params, masks.values())
            return pruned_acc(model)
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
            model.train(was_training)

    def _choose(self, model: nn.Module, entry: dict) -> None:
        model.load_state_dict(entry["state"])
        zero_pruned_(self.regularizer.params, entry["masks"].values())
        self.masks = dict(zip(self.regularizer.names, entry["masks"].values()))
        self.chosen_epoch = entry["epoch"]
        self.phase = FINETUNE
        self.buffer = []

    def state_dict(self) -> dict:
        """Everything needed to resume mid-phase (the buffer's model states included)."""
        state = {k: copy.deepcopy(getattr(self, k)) for k in _STATE}
        state["lambda_0"] = state.pop("lambda_init")  # the checkpoint key stays as it was (layout unchanged)
        state["buffer"] = [dict(b) for b in self.buffer]
        state["regularizer"] = self.regularizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved; ValueError naming what is missing from anything else."""
        if not isinstance(state, dict):
            raise TypeError(f"ARTSchedule.load_state_dict takes the dict state_dict() gave, got {type(state).__name__}")
        missing = [k for k in (*_STATE, "buffer", "regularizer") if ("lambda_0" if k == "lambda_init" else k)
                   not in state]
        if missing:
            raise ValueError(f"not an ARTSchedule state: it lacks {', '.join(missing)}; pass what state_dict() gave")
        reg = state["reg_epochs"]
        if isinstance(reg, bool) or not isinstance(reg, int) or not 0 <= reg <= self.max_reg_epochs:
            raise ValueError(f"its reg_epochs is {reg!r}, outside 0..max_reg_epochs ({self.max_reg_epochs})")
        shapes = [tuple(p.shape) for p in self.regularizer.params]  # masks are used in this order, by position
        for where, masks in [("masks", state["masks"]), *((f"buffer[{i}].masks", b.get("masks"))
                                                          for i, b in enumerate(state["buffer"]))]:
            if masks is None:
                continue
            if not isinstance(masks, dict) or [tuple(getattr(m, "shape", ())) for m in masks.values()] != shapes \
                    or not all(isinstance(m, torch.Tensor) and m.dtype == torch.bool for m in masks.values()):
                raise ValueError(f"its {where} are not bool masks of this model's prunable weights ("
                                 f"{', '.join(self.regularizer.names)})")
        for k in _STATE:
            setattr(self, k, copy.deepcopy(state["lambda_0" if k == "lambda_init" else k]))
        self.buffer = [dict(b) for b in state["buffer"]]
        self.regularizer.load_state_dict(state["regularizer"])


ART = ARTSchedule  # the name the README and the first releases use
_STATE = ("epoch", "reg_epochs", "finetune_done", "phase", "history", "masks", "chosen_epoch", "lambda_init", "eta_now",
          "growth", "stop_reason")


def _accuracy(value, name: str) -> float:
    """``value`` as a float, or ValueError/TypeError: a NaN accuracy would never reach the dense one (or always)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number (an accuracy), got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number (an accuracy), got {value!r}; is the model diverging?")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be an accuracy between 0 and 1, got {value!r} (a percentage? divide by 100)")
    return float(value)


def _check_settings(lambda_init, eta, warmup_epochs, buffer_k, max_reg_epochs, reg_epochs_target,
                    finetune_epochs=None) -> None:
    for name, value in (("warmup_epochs", warmup_epochs), ("buffer_k", buffer_k), ("max_reg_epochs", max_reg_epochs),
                        ("reg_epochs_target", reg_epochs_target), ("finetune_epochs", finetune_epochs)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0):
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    for name, value in (("lambda_init", lambda_init), ("eta", eta)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not lambda_init > 0:
        raise ValueError(f"lambda_init must be a positive number (or 'auto'), got {lambda_init!r}")
    if not eta >= 1:
        raise ValueError(f"eta must be at least 1 (lambda grows by it each epoch: lambda_e = lambda_init * eta**e), "
                         f"got {eta!r}")
    size = 2 * int(buffer_k) + 1
    if reg_epochs_target is not None and int(reg_epochs_target) < size:
        raise ValueError(f"reg_epochs_target ({reg_epochs_target!r}) must be at least the buffer size {size} "
                         "(or None for the authors' fixed eta)")
    if int(max_reg_epochs) < size:
        raise ValueError(f"max_reg_epochs ({max_reg_epochs}) must be at least the buffer size {size}")
