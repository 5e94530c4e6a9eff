"""Hyperparameters of a run, in one place: defaults and help text live here, the CLI flags are generated."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from hypersparse.errors import UserError
from hypersparse.params import check_sparsity


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """A training run: data, model, sparsification method and the authors' schedule (their defaults)."""

    dataset: str = _f("digits", "dataset name (digits needs no files)")
    data_dir: str | None = _f(None, "folder that holds the dataset's official files")
    download: bool = _f(False, "download missing files (checksums are verified)")
    model: str = _f("mlp", "model name")
    method: str = _f("art", "sparsification method: art, oneshot, gmp, snip")
    reg: str = _f("hs", "regularizer under ART: hs (HyperSparse), l1, l2")
    sparsity: float = _f(0.9, "target fraction of prunable weights that are exactly zero, in [0, 1)")
    criterion: str = _f("matched", "ART stop rule: matched (dense and pruned copy both scored in eval mode on the same "
                        "training subset) or paper (the authors': dense running train acc vs pruned eval acc)")
    lambda_init: float | str = _f(
        5e-6, "initial regularization strength lambda_0, or 'auto': chosen at the first regularization epoch so that "
        "the regularizer alone would shrink the weight at the pruning cut by --lambda-auto-push of itself per epoch "
        "(or, with --lambda-auto-push 0, from the task gradient's norm: --lambda-auto-fraction)",
        parse="lambda",
    )
    lambda_auto_push: float = _f(
        0.03, "with --lambda-init auto: the fraction of itself the weight at the pruning cut loses per epoch to the "
        "regularizer alone (at the run's learning rate, momentum and steps per epoch); read from the weights only, "
        "so it does not fall as warm-up fits the training set. 0 = calibrate on the task gradient instead"
    )
    lambda_auto_fraction: float = _f(0.1, "with --lambda-init auto and --lambda-auto-push 0: target ratio of "
                                     "regularizer to task gradient norm")
    lambda_auto_batches: int = _f(4, "with --lambda-init auto and --lambda-auto-push 0: training batches (fixed by "
                                  "the seed, at most one epoch's) the task gradient norm is averaged over; more give "
                                  "a steadier lambda_0")
    lambda_auto_per: str = _f(
        "step", "with --lambda-init auto and --lambda-auto-push 0: step (the ratio holds for one step) or epoch "
        "(divided by sqrt(steps per epoch / 25): over an epoch the regularizer's pushes add up while SGD's noise adds "
        "in quadrature, so long epochs get a gentler start; the two agree at 25 steps per epoch)"
    )
    eta: float = _f(1.05, "growth of lambda per regularization epoch")
    reg_epochs_target: int = _f(0, "end ART's regularization within this many epochs: from half of them on, lambda's "
                                "growth per epoch follows the pace the pruned copy's gap to the stop rule needs "
                                "(between eta and x1.5 per epoch), and if the rule still does not hold at the last "
                                "one the buffer's middle model is kept anyway (stop_reason 'deadline' in "
                                "metrics.jsonl), once the pruned copy has come half-way to the dense accuracy "
                                "(until then regularization goes on); 0 = the authors' fixed eta and no deadline")
    buffer_k: int = _f(1, "ART buffer of 2k+1 epochs; the middle one is kept")
    max_reg_epochs: int = _f(300, "give up if ART has not stopped after this many regularization epochs")
    warmup_epochs: int = _f(60, "dense epochs before regularization (skipped with --pretrained)")
    finetune_epochs: int = _f(160, "epochs of fine-tuning with the mask fixed")
    prune_epochs: int = _f(
        20, "baselines: epochs between warm-up and fine-tuning (gmp prunes gradually over them; oneshot and snip "
        "train through them), to match ART's regularization phase in the epoch budget"
    )
    lr: float = _f(0.1, "SGD learning rate")
    lr_steps: str = _f("80,120", "fine-tuning epochs at which the learning rate is multiplied by --lr-decay")
    lr_decay: float = _f(0.1, "learning-rate factor at each step")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(1e-4, "SGD weight decay")
    batch_size: int = _f(64, "training batch size")
    epochs_scale: float = _f(1.0, "shorten every phase by this factor for quick runs (eta becomes eta**(1/F))")
    epoch_fraction: float = _f(1.0, "train on this fraction of the training set per epoch (a fresh random part each "
                               "epoch), in (0, 1]; shortens every epoch for quick runs")
    pruned_eval_size: int = _f(5000, "training images (fixed by the seed) that score the pruned copy each ART epoch; 0 = all")
    hs_refresh_every: int = _f(32, "recompute the HyperSparse threshold every K steps (sooner if it drifts); 1 = exact")
    hs_compile: str = _f("auto", "fuse the HyperSparse pass with torch.compile: auto (200,000+ weights), on, off")
    no_stats: bool = _f(False, "do not log per-epoch weight statistics (stats.jsonl, used by hypersparse report)")
    seed: int = _f(0, "random seed (data split, init, order, augmentation)")
    device: str = _f("auto", "cuda, mps, cpu or auto")
    pretrained: str | None = _f(None, "start from this dense checkpoint (state_dict or run checkpoint); skips warm-up")
    run_dir: str | None = _f(None, "where logs and checkpoints go (default: runs/<time>-<dataset>-<model>-...)")

    # -- derived -------------------------------------------------------------
    def scaled(self, epochs: int) -> int:
        return max(1, round(epochs * self.epochs_scale)) if epochs > 0 else 0

    @property
    def warmup(self) -> int:
        return 0 if self.pretrained else self.scaled(self.warmup_epochs)

    @property
    def finetune(self) -> int:
        return self.scaled(self.finetune_epochs)

    @property
    def milestones(self) -> list[int]:
        return [self.scaled(int(s)) for s in self.lr_steps.split(",") if s.strip()]

    @property
    def eta_scaled(self) -> float:
        return self.eta ** (1.0 / self.epochs_scale)

    @property
    def reg_target(self) -> int | None:
        return max(2 * self.buffer_k + 1, self.scaled(self.reg_epochs_target)) if self.reg_epochs_target else None

    @property
    def max_reg(self) -> int:
        return max(2 * self.buffer_k + 1, math.ceil(self.max_reg_epochs * self.epochs_scale))

    def validate(self) -> "TrainConfig":
        """Raise UserError with the flag's name and the fix for any bad value."""
        try:
            check_sparsity(self.sparsity, "--sparsity")
        except ValueError as exc:
            raise UserError(str(exc)) from None
        choices = {"method": ("art", "oneshot", "gmp", "snip"), "reg": ("hs", "l1", "l2"),
                   "criterion": ("paper", "matched"), "hs_compile": ("auto", "on", "off"),
                   "lambda_auto_per": ("step", "epoch")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not (isinstance(self.lambda_auto_push, (int, float)) and 0 <= self.lambda_auto_push < 1):
            raise UserError("--lambda-auto-push must be in [0, 1) (a fraction per epoch; 0 = calibrate on the task "
                            f"gradient), got {self.lambda_auto_push!r}")
        positive = ("eta", "lr", "batch_size", "epochs_scale", "hs_refresh_every", "max_reg_epochs", "lambda_auto_fraction",
                    "lambda_auto_batches")
        if self.lambda_init != "auto":
            positive = ("lambda_init",) + positive
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UserError(f"--{name.replace('_', '-')} must be a positive number, got {value!r}")
        if not (isinstance(self.epoch_fraction, (int, float)) and 0 < self.epoch_fraction <= 1):
            raise UserError(f"--epoch-fraction must be in (0, 1], got {self.epoch_fraction!r}")
        for name in ("warmup_epochs", "finetune_epochs", "prune_epochs", "buffer_k", "pruned_eval_size",
                     "reg_epochs_target"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)!r}")
        if 0 < self.reg_epochs_target < 2 * self.buffer_k + 1:
            raise UserError(f"--reg-epochs-target must be 0 (off) or at least the ART buffer's {2 * self.buffer_k + 1} "
                            f"epochs (2 x --buffer-k + 1), got {self.reg_epochs_target!r}")
        try:
            self.milestones
        except ValueError:
            raise UserError(f"--lr-steps must be comma-separated integers such as 80,120, got {self.lr_steps!r}") from None
        return self


def parse_lambda(text: str) -> float | str:
    """A positive number or 'auto'."""
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}") from None


def config_fields():
    """(name, type, default, help) of each TrainConfig field, for the CLI."""
    return [(f.name, parse_lambda if f.metadata.get("parse") == "lambda" else f.type, f.default, f.metadata["help"])
            for f in fields(TrainConfig)]
