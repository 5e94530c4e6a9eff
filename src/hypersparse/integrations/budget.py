"""One rule for every trainer callback: ART's phases from the trainer's own epoch budget, and loud warnings.

A trainer (Lightning's ``max_epochs``, Hugging Face's ``num_train_epochs`` / ``max_steps``) decides how long training
runs; ART's phases must fit inside it or the model ends dense (still in warm-up) or half fine-tuned. Phase lengths the
user did not give are derived from the budget; lengths that cannot fit are warned about at the start, and a run that
ended before the mask was fixed or before fine-tuning finished is warned about at the end.

The stop rule compares the pruned copy with the dense model, so it also holds when both are bad: :class:`Guard` keeps
the mask from being fixed while the dense model scores near chance (an untrained model) or has fallen since
regularization began (lambda too strong), and says which setting to change. A run counts as finished only if its
model is sparse, fine-tuned, and within ``accuracy_margin`` of the dense model's best score (:func:`result_problem`).
"""
from __future__ import annotations

import math
import warnings
from typing import Iterable

import torch

FINETUNE_SHARE = 0.4  # of the budget, when not given: the authors' 160 of about 380 epochs
NEAR_CHANCE = 0.1  # a dense score below chance + this share of the way from chance to 1 is "near chance"
MAX_DENSE_DROP = 0.05  # the dense score may fall this far below its best during regularization before a mask waits
ACCURACY_MARGIN = 0.05  # finished: the sparse model scores at most this far below the dense model's best


def fit_phases(options: dict, given: set[str], budget: int | None, warmup_share: float) -> str | None:
    """Fill ``options``' warm-up, fine-tuning and regularization deadline that are not in ``given`` from ``budget``
    epochs; return why the phases cannot fit, or None."""
    if budget is None or budget <= 0:
        return None
    buffer = 2 * options["buffer_k"] + 1
    if "warmup_epochs" not in given:
        options["warmup_epochs"] = int(warmup_share * budget)
    if "finetune_epochs" not in given:
        options["finetune_epochs"] = max(1, math.ceil(FINETUNE_SHARE * budget))
    warmup, finetune = options["warmup_epochs"], options["finetune_epochs"] or 0
    if "reg_epochs_target" not in given:
        options["reg_epochs_target"] = max(buffer, budget - warmup - finetune)
    if warmup + buffer + finetune > budget:
        end = "dense" if warmup + buffer > budget else "half fine-tuned"
        return (f"ART needs {warmup} warm-up + at least {buffer} regularization + {finetune} fine-tuning epochs, but "
                f"the trainer runs {budget}: the model would end {end}"
                "; raise the trainer's epochs or lower warmup_epochs / finetune_epochs")
    return None


def end_problem(method) -> str | None:
    """Why a training run that has ended did not finish ART, or None if it did."""
    if method is None:
        return "training ended before ART started"
    if not method.mask_fixed:
        return (f"training ended in ART's {method.phase} phase, before the mask was fixed: the model is NOT sparse; "
                "give the trainer more epochs (or fewer warm-up epochs)")
    if not method.done and method.finetune_epochs is not None:
        return (f"training ended after {method.finetune_done} of {method.finetune_epochs} fine-tuning epochs: the "
                "model is sparse but not fine-tuned; give the trainer more epochs")
    return None


def warn(message: str) -> None:
    """A warning users see (``UserWarning``, shown once per message by default)."""
    warnings.warn(f"hypersparse ART: {message}", UserWarning, stacklevel=3)


def chance_level(labels: Iterable[torch.Tensor]) -> float | None:
    """The accuracy of always answering the most common label among ``labels`` (entries below 0 are ignored)."""
    labels = [torch.as_tensor(y).flatten().cpu() for y in labels]
    flat = torch.cat(labels) if labels else torch.zeros(0)
    flat = flat[flat >= 0] if not flat.dtype.is_floating_point else flat[:0]  # -100: ignored positions
    if flat.numel() == 0:
        return None
    return float(torch.bincount(flat.long()).max()) / flat.numel()


class Guard:
    """ART's ``hold``: why the mask must not be fixed now, warned about once per cause; None if it may be.

    Args:
        max_dense_drop: how far the dense score may fall below its best of the regularization so far.
        near_chance: the share of the way from chance to 1 below which the dense model counts as untrained.
        advice: what to change for each cause, ``{"chance": ..., "drop": ...}`` (the callbacks' own words).
    """

    def __init__(self, max_dense_drop: float = MAX_DENSE_DROP, near_chance: float = NEAR_CHANCE,
                 advice: dict | None = None):
        self.max_dense_drop, self.near_chance = float(max_dense_drop), float(near_chance)
        self.chance: float | None = None  # set once the scoring batches are known
        self.advice = advice or {}
        self.held: list[str] = []  # the message of each round the mask was held back
        self.warned: set[str] = set()  # causes warned about (once each)

    def __call__(self, dense_acc: float, history: list[dict]) -> str | None:
        best = max([h["dense_acc"] for h in history if h.get("dense_acc") is not None] + [dense_acc])
        if self.chance is not None and dense_acc < self.chance + self.near_chance * (1 - self.chance):
            cause = "chance"
            why = (f"the pruned copy has caught up with the dense model, but the dense model scores {dense_acc:.3f} "
                   f"on the scoring batches, near chance ({self.chance:.3f}): a mask fixed now would keep the weights "
                   "of an untrained network. The mask is not fixed; ART keeps regularizing while the model trains")
        elif best - dense_acc > self.max_dense_drop:
            cause = "drop"
            why = (f"the pruned copy has caught up with the dense model, but the dense score fell from {best:.3f} to "
                   f"{dense_acc:.3f} during regularization (more than max_dense_drop={self.max_dense_drop:g}): a mask "
                   "fixed now would keep a model that has lost accuracy. The mask is not fixed; ART keeps "
                   "regularizing")
        else:
            return None
        message = f"{why}. {self.advice.get(cause, '')}".strip()
        if cause not in self.warned:
            self.warned.add(cause)
            warn(message)
        self.held.append(message)
        return message


def result_problem(dense_best: float | None, sparse: float, margin: float = ACCURACY_MARGIN) -> str | None:
    """Why a sparse model that scores ``sparse`` has not kept the accuracy of the dense model's best score, or None."""
    if dense_best is None or sparse >= dense_best - margin:
        return None
    return (f"the sparse model scores {sparse:.3f} on the scoring batches against the dense model's {dense_best:.3f} "
            f"during regularization: more than accuracy_margin={margin:g} lost. Give the callback more epochs, lower "
            "lambda_init or eta, or a lower sparsity")


def early_end(round_: int, step: int, budget: int | None, unit: str = "step") -> str:
    """What the callback says when fine-tuning is done before the trainer's budget and it ends training."""
    of = f" of {budget}" if budget else ""
    return (f"ART's fine-tuning is done after round {round_}: the callback ends training at {unit} {step}{of}, before "
            "the trainer's budget (finetune_epochs=None lets the trainer run to its end with the mask kept)")
