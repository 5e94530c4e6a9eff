"""One rule for every trainer callback: ART's phases from the trainer's own epoch budget, and loud warnings.

A trainer (Lightning's ``max_epochs``, Hugging Face's ``num_train_epochs`` / ``max_steps``) decides how long training
runs; ART's phases must fit inside it or the model ends dense (still in warm-up) or half fine-tuned. Phase lengths the
user did not give are derived from the budget; lengths that cannot fit are warned about at the start, and a run that
ended before the mask was fixed or before fine-tuning finished is warned about at the end.
"""
from __future__ import annotations

import math
import warnings

FINETUNE_SHARE = 0.4  # of the budget, when not given: the authors' 160 of about 380 epochs


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
        return (f"ART needs {warmup} warm-up + at least {buffer} regularization + {finetune} fine-tuning epochs, but "
                f"the trainer runs {budget}: the model would end {'dense' if warmup + buffer > budget else 'half fine-tuned'}"
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
