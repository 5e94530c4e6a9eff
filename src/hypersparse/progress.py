"""How far a run is: the epochs it expects in all, an ETA, and one progress line on a terminal.

ART's regularization ends when the pruned copy catches up with the dense model, so its length is not known in
advance: while the gap closes the remaining epochs are estimated from its pace (``~``); before that only a lower bound
is known (``>=``). The baselines' budgets are exact.
"""
from __future__ import annotations

import math
import shutil
import sys
import time

from hypersparse.method import method_entry

WINDOW = 4  # regularization epochs over which the gap's closing pace is measured
MARK = {"exact": "", "estimate": "~", "at least": ">="}


def expected_epochs(cfg, rows: list[dict], phase: str) -> tuple[int, str]:
    """The run's expected number of epochs and how sure that is (``exact``, ``estimate`` or ``at least``).

    ``cfg`` is the run's TrainConfig, ``rows`` its metrics rows so far, ``phase`` the method's current phase.
    """
    if cfg.sparsity.method != "art":
        return cfg.warmup + cfg.scaled(cfg.baseline.prune_epochs) + cfg.finetune, "exact"
    reg_done = sum(1 for r in rows if r["phase"] == "regularize")
    if phase == "finetune":
        return cfg.warmup + reg_done + cfg.finetune, "exact"
    buffer = 2 * cfg.art.buffer_k + 1
    low = max(reg_done + 1, buffer)  # at least one more epoch, and a full buffer
    left, how = _regularization_left(rows, reg_done, cfg.reg_target)
    reg = min(max(low, reg_done + left), max(cfg.max_reg, low)) if left is not None else low
    return cfg.warmup + reg + cfg.finetune, how if left is not None else "at least"


def _regularization_left(rows: list[dict], done: int, target: int | None) -> tuple[int | None, str]:
    """Regularization epochs still to come: from the deadline, or from the pace at which the gap closes."""
    gaps = [r["dense_acc"] - r["buffer_mean"] for r in rows if r.get("buffer_mean") is not None]
    if target is not None:
        return max(target - done, 1), "estimate"
    if len(gaps) < WINDOW:
        return None, "at least"
    recent = gaps[-WINDOW:]
    closing = (recent[0] - recent[-1]) / (WINDOW - 1)  # per epoch
    if recent[-1] <= 0:
        return 1, "estimate"
    if closing <= 1e-4:
        return None, "at least"
    return math.ceil(recent[-1] / closing), "estimate"


def clock(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


def where(done: int, total: int, how: str, recent: list[float]) -> str:
    """``62/~226, ETA ~25s``: epochs done of the expected total, and the time left at the pace of ``recent`` epochs
    (their seconds)."""
    mark = MARK[how]
    eta = max(0, total - done) * sum(recent) / len(recent) if recent else None
    return f"{done}/{mark}{total}, ETA {mark}{clock(eta)}"


class ProgressLine:
    """One line on a terminal (stderr), rewritten in place; other lines are printed above it (:meth:`above`)."""

    def __init__(self, stream=None, every: float = 0.2):
        self.stream = stream or sys.stderr
        self.every = every
        self.text = ""
        self._last = 0.0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self.text = text[:width]
        self.stream.write("\r" + self.text + "\033[K")
        self.stream.flush()

    def clear(self) -> None:
        if self.text:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def above(self, line: str, out) -> None:
        """Print ``line`` to ``out`` with the progress line out of its way, then draw it again below."""
        self.clear()
        print(line, file=out, flush=True)
        if self.text:
            self.stream.write(self.text)
            self.stream.flush()

    def close(self) -> None:
        self.clear()
        self.text = ""


def plan_text(cfg) -> str:
    """One line for the run's start: its phases and how long each is, as far as known."""
    if cfg.sparsity.method == "art":
        buffer = 2 * cfg.art.buffer_k + 1
        reg = (f"regularization until the pruned copy catches up with the dense model (about {cfg.reg_target} epochs, "
               "--reg-epochs-target)" if cfg.reg_target else
               f"regularization until the pruned copy catches up with the dense model ({buffer} to {cfg.max_reg} "
               "epochs)")
        phases = ([_epochs(cfg.warmup, "dense warm-up")] if cfg.warmup else []) + [reg]
    else:
        entry = method_entry(cfg.sparsity.method)
        middle = entry.plan if entry is not None else "pruning epochs"
        phases = ([_epochs(cfg.warmup, "dense warm-up")] if cfg.warmup else []) + \
            [f"{cfg.scaled(cfg.baseline.prune_epochs)} {middle}"]
    return "plan: " + ", then ".join(phases + [_epochs(cfg.finetune, "fine-tuning") + " with the mask fixed"])


def _epochs(n: int, what: str) -> str:
    return f"{n} {what} epoch{'s' if n != 1 else ''}"
