"""How many CPU threads a run trains with: one for a small model, torch's default for a large one.

Torch's OpenMP workers spin while they wait for work. On a machine that other jobs keep busy they then compete
with those jobs for the cores, and a small model (whose steps are a few milliseconds of small matrix products) pays
3-50x for threads it barely uses on a quiet machine (bench/results/threads-cpu.md). The rule below is a property of
the model and the batch, not of the machine's load at the moment, so the same command makes the same choice, and
(as the results depend on the thread count) the same numbers, on a quiet or a busy machine.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

#: at or above this many multiply-adds per training step (forward + backward) a run uses torch's default threads
LARGE_STEP_MACS = 100e6
BACKWARD_FACTOR = 3  # a training step costs about three forward passes (forward, input and weight gradients)

_ours: list[int] = []  # the counts this module set, innermost last: a count that is ours was not the user's
_torch_default = torch.get_num_threads()  # before any run: what the user's process had


def step_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-adds of one training step on ``example`` (a batch): the Linear and Conv layers' forward, times 3."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * output.numel()
        elif isinstance(module, nn.modules.conv._ConvNd):
            total += module.weight[0].numel() * output.numel()  # per output value: in/groups x kernel

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(example[:1])
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return total * len(example) * BACKWARD_FACTOR


def _set_by_user() -> str | None:
    """Who set the thread count, if not torch's default: the environment or ``torch.set_num_threads``."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(name, "").strip():
            return name
    now = torch.get_num_threads()
    if now != _torch_default and not (_ours and _ours[-1] == now):
        return "torch.set_num_threads"
    return None


def choose_threads(requested: int, device: torch.device, measure) -> dict:
    """The training's thread count and why: ``requested`` (``run.threads``; 0 = auto), else the user's own setting
    (``OMP_NUM_THREADS``, ``torch.set_num_threads``), else the rule: 1 below :data:`LARGE_STEP_MACS` multiply-adds
    per step (``measure()`` counts them), torch's default above. Sets torch's count; returns the record."""
    default = _torch_default
    record: dict = {"rule": f"1 thread below {LARGE_STEP_MACS / 1e6:g} M multiply-adds per training step, torch's "
                            "default above, unless run.threads, OMP_NUM_THREADS or torch.set_num_threads says "
                            "otherwise"}
    if requested > 0:
        count, why = requested, "run.threads"
    elif device.type != "cpu":
        count, why = torch.get_num_threads(), f"device {device.type}: torch's count for the host's work"
    elif _set_by_user():
        count, why = torch.get_num_threads(), f"set by {_set_by_user()}"
    else:
        try:
            macs = measure()
        except Exception as exc:  # a model that cannot run a one-image batch here: keep torch's default
            count, why = default, f"auto: the step's cost could not be measured ({type(exc).__name__}); torch's default"
        else:
            record["step_macs"] = macs
            small = macs < LARGE_STEP_MACS
            count = 1 if small else default
            why = (f"auto: {macs / 1e6:.3g} M multiply-adds per step is {'below' if small else 'at least'} "
                   f"{LARGE_STEP_MACS / 1e6:g} M")
    torch.set_num_threads(count)
    if _ours:
        _ours[-1] = count
    return {"count": count, "why": why, **record}


@contextmanager
def thread_scope() -> Iterator[None]:
    """Restore torch's thread count afterwards: a run may change it (:func:`choose_threads`) for itself only."""
    before = torch.get_num_threads()
    _ours.append(before)
    try:
        yield
    finally:
        _ours.pop()
        torch.set_num_threads(before)


def describe(record: dict) -> str:
    """One line for the run's start: the count and why, and how to choose another."""
    n = record["count"]
    return f"threads: {n} ({record['why']}; --set run.threads=N to choose)"
