"""What bench/beyond_mnist.py runs: its two experiments' settings, the methods compared, the suspected causes, and
how a cell of the results is read (the runs of one experiment, sparsity and method; where an ART variant trails)."""
from __future__ import annotations

import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
EXPERIMENTS = {
    "lenet5-mnist": {"title": "LeNet-5 on MNIST, a quarter of the authors' schedule", "augment": "none",
                     "config": {"dataset": "mnist", "data_dir": str(DATA / "mnist"), "model": "lenet5", "lr": 0.01}},
    "mlp-cifar10jpeg75": {"title": "LeNet-300-100's MLP on CIFAR-10-JPEG75 (a lossy JPEG-75 copy of CIFAR-10), a "
                                   "quarter of the authors' schedule",
                          "augment": "random crops (4-pixel padding) and horizontal flips, the dataset's default",
                          "config": {"dataset": "cifar10-jpeg75", "data_dir": str(DATA), "model": "lenet300",
                                     "lr": 0.01}},
}
SCHEDULE = {"epochs_scale": 0.25}
#: how each experiment's learning rate was set (the CIFAR check was not kept as JSON: its line is its record;
#: LeNet-5's later check is in docs/runs/lr-check, made by bench/lr_check.py)
LR_CHECK = {"lenet5-mnist": "lr 0.03, the issue's suggestion, diverged (NaN loss in warm-up epoch 8 of seed 0, at "
                            "3a407f2) and 0.1 diverges too (README), so the sweep took 0.01, the rate of the "
                            "shortened-schedule sweep (where lr 0.03 had closed ART's gap to GMP at 98 %, above); the "
                            "check, made after the sweep, has 0.01 ahead of 0.003 and 0.02",
            "mlp-cifar10jpeg75": "a short check on validation (dense, seed 0, 6 epochs): lr 0.1 17.2 %, 0.03 33.1 %, "
                                 "0.01 45.9 %, 0.003 47.2 %; 0.003 led by 1.3 points, yet the sweep kept 0.01; 0.003 "
                                 "was run later in ART and in GMP as a suspect of ART's gap (seed 0, below); this "
                                 "check was not kept as JSON (this line is its record)"}
#: suspects of ART's gap that were not run, per experiment (the page names them where no tested change closes it)
UNTESTED = {"mlp-cifar10jpeg75": "the learning rate (0.003, which the short dense check on validation preferred, run "
                                 "in ART and GMP alike)"}
#: the learning rate a short check on validation preferred where the experiment kept another: run as a suspect of
#: ART's gap in ART and in GMP alike (seed 0, GMP at that ART run's budget), since it moves both methods
LR_SUSPECT = {"mlp-cifar10jpeg75": 0.003}
#: runs whose change acts from the first epoch, so they warm up unlike the rest of their seed by design
FROM_START = ("art-hs-lr", "gmp-lr")
#: suffix of the defaults and the causes run again together (one session's host, so that they train alike until a
#: change acts: the page checks it), where a cause run made in another session drifted from the defaults' run before
#: its change could act: compared among themselves only
AGAIN = "-again"
#: suffix of a baseline run again at λ_0 auto's own budget where λ_0 auto trails it: the table gives baselines the
#: defaults' budget, which λ_0 auto's earlier stop leaves unequal
AUTO_BUDGET = "-auto-budget"
LABELS = {"art-hs": "ART + HyperSparse (defaults)", "art-hs-auto": "ART + HyperSparse, λ_0 auto",
          "gmp": "GMP (Zhu & Gupta)", "rigl": "RigL (Evci et al.)", "oneshot": "one-shot magnitude"}
VARIANTS = {"art-hs": {"method": "art", "reg": "hs"},
            "art-hs-auto": {"method": "art", "reg": "hs", "lambda_init": "auto"},
            "gmp": {"method": "gmp"}, "rigl": {"method": "rigl"}, "oneshot": {"method": "oneshot"}}
BASELINES = ("gmp", "rigl", "oneshot")
ARTS = ("art-hs", "art-hs-auto")
SHORT = {"gmp": "GMP", "rigl": "RigL", "oneshot": "one-shot"}
# suspected causes of ART's loss, each changed alone from the defaults (seed 0 only; read on validation)
CAUSES = {"art-hs-keep-momentum": ("the optimizer reset at the stop", {"reset_optimizer": False}),
          "art-hs-slow-lambda": ("lambda's growth: η = 1.05² per epoch instead of 1.05⁴", {"eta": 1.05 ** 0.5}),
          "art-hs-paper-rule": ("the stop rule's reference: the authors' (the dense model's running training "
                                "accuracy) instead of matched", {"criterion": "paper"})}
#: from when each cause can change training: its run trains exactly like the defaults' run until then ("stop": the
#: earlier of the two stops, where the reset happens or the other reference decides; "first": through the first
#: regularization epoch, which both run at lambda_0)
ACTS_FROM = {"art-hs-keep-momentum": "stop", "art-hs-slow-lambda": "first", "art-hs-paper-rule": "stop"}
MAX_REG = 75  # ART's limit at this schedule (300 x 0.25): a run that never met its criterion spent this many


def name(exp: str, sparsity: float, variant: str, seed: int) -> str:
    return f"{exp}-{sparsity:g}-{variant}-s{seed}"


def reg_epochs(result: dict) -> int:
    return result["epochs"].get("regularize", 0) if result.get("epochs") else MAX_REG


def budget(epochs: int) -> int:
    """``prune_epochs`` for a baseline that should train ``epochs`` epochs between warm-up and fine-tuning: the
    engine scales every phase by ``epochs_scale``, so the setting is the unscaled count (exact: 0.25 x 4n = n)."""
    return round(epochs / SCHEDULE["epochs_scale"])


def finished(runs: list[dict], exp: str, sparsity: float, method: str, seed: int | None = None) -> list[dict]:
    """The runs of one cell (and seed) that finished with a result."""
    return [r for r in runs if r["experiment"] == exp and r["sparsity"] == sparsity and r["method"] == method
            and r["test_error"] is not None and (seed is None or r["seed"] == seed)]


def cell(runs: list[dict], exp: str, sparsity: float, method: str) -> list[float]:
    return [r["test_error"] for r in finished(runs, exp, sparsity, method)]


def behind_cells(runs: list[dict], exp: str, sparsities: list[float],
                 variants: tuple[str, ...] = ("art-hs", "art-hs-auto")) -> list[tuple[float, str, str, bool]]:
    """(sparsity, ART variant, baseline, provisional) where an ART variant trails: by more than one std with two
    seeds or more, or at all with one seed (provisional)."""
    found = []
    for k in sparsities:
        for v in variants:
            ours = cell(runs, exp, k, v)
            for m in BASELINES:
                theirs = cell(runs, exp, k, m)
                if not ours or not theirs:
                    continue
                if len(ours) > 1 and len(theirs) > 1:
                    spread = max(statistics.stdev(ours), statistics.stdev(theirs))
                    if statistics.mean(theirs) + spread < statistics.mean(ours):
                        found.append((k, v, m, False))
                elif statistics.mean(theirs) < statistics.mean(ours):
                    found.append((k, v, m, True))
    return found


def defaults_behind(runs: list[dict], exp: str, k: float) -> bool:
    """Whether the table shows ART's defaults behind a baseline at sparsity ``k`` (by more than one std)."""
    return any(not provisional for *_, provisional in behind_cells(runs, exp, [k], ("art-hs",)))


def auto_behind(runs: list[dict], exp: str, k: float) -> list[str]:
    """The baselines the table shows λ_0 auto behind at sparsity ``k`` (by more than one std): they had the defaults'
    budget, unequal to auto's own."""
    return [m for _, _, m, provisional in behind_cells(runs, exp, [k], ("art-hs-auto",)) if not provisional]
