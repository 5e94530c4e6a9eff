"""ART as a Lightning callback: ``Trainer(callbacks=[ARTLightningCallback(sparsity=0.98)])`` (also named ``ART``).

Needs ``pip install "hypersparse[lightning]"``. The LightningModule's forward
must return logits and training batches must be ``(inputs, labels)``. The
stop rule is :class:`~hypersparse.driver.Driver`'s: by default (``matched``)
the dense model and the pruned copy are scored alike on the first
``score_batches`` training batches; ``criterion="paper"`` compares with the
training accuracy the module logs as ``train_acc_key``.

While the dense model scores near chance, or has fallen since regularization began, the mask is not fixed even if
the pruned copy has caught up (:class:`~hypersparse.integrations.budget.Guard`, with a warning that says what to
change). Each epoch's ``art/lambda``, ``art/pruned_acc``, ``art/dense_acc`` and ``art/sparsity`` go through
``LightningModule.log``, so to the Trainer's logger.
"""
from __future__ import annotations

import math
from itertools import islice

import torch

try:
    from lightning.pytorch import Callback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('hypersparse.integrations.lightning needs Lightning: '
                      'pip install "hypersparse[lightning]"') from exc

from hypersparse.driver import ARTDriver, batch_accuracy
from hypersparse.errors import UserError
from hypersparse.integrations.budget import (
    ACCURACY_MARGIN,
    MAX_DENSE_DROP,
    Guard,
    chance_level,
    early_end,
    end_problem,
    fit_phases,
    result_problem,
    warn,
)

WARMUP_SHARE = 0.15  # of max_epochs when warmup_epochs is not given (the authors: 60 of about 380)
ADVICE = {
    "chance": "Give the dense model a longer warm-up before ART regularizes (warmup_epochs=N; by default 15 % of "
              "max_epochs) and max_epochs to match",
    "drop": "If lambda grew too strong, lower lambda_init (e.g. lambda_init='auto:0.01' instead of 'auto') or eta; if "
            "the dense model is unstable without it, lower the learning rate",
}


class ARTLightningCallback(Callback):
    """ART in a Lightning ``Trainer``: warm-up, regularization with growing lambda, ART's stop, mask kept after.

    Args:
        sparsity: target fraction of zero Conv/Linear weights.
        criterion: ``"matched"`` (default) or ``"paper"`` (the logged ``train_acc_key`` against the pruned copy).
        train_acc_key: the name under which the module logs its training accuracy (``paper`` only).
        score_batches: how many training batches score the models, or a list of ``(inputs, labels)`` batches.
        max_dense_drop, accuracy_margin: when the mask waits, and how close to dense :attr:`finished` needs.
        **kwargs: :class:`~hypersparse.driver.ARTDriver` options; phase lengths not given come from the Trainer's
            budget. Both: docs/methods.md, "ART in other training loops".

    After fit, :attr:`finished` is True only for a model that is sparse, fine-tuned and within ``accuracy_margin`` of
    the dense score on the scoring batches; :attr:`result` holds the scores it was judged on.
    """

    def __init__(self, sparsity: float, criterion: str = "matched", train_acc_key: str = "train_acc",
                 score_batches: int | list = 20, max_dense_drop: float = MAX_DENSE_DROP,
                 accuracy_margin: float = ACCURACY_MARGIN, **kwargs):
        self.driver = ARTDriver(sparsity, criterion=criterion, **kwargs)
        self.given = set(kwargs)  # phase lengths not given here come from the Trainer's max_epochs
        self.finished: bool | None = None  # after fit: sparse, fine-tuned and within accuracy_margin
        self.result: dict | None = None  # after fit: the scores finished was judged on
        self.guard = Guard(max_dense_drop, advice=ADVICE)
        self.accuracy_margin = float(accuracy_margin)
        self.train_acc_key = train_acc_key
        self.score_batches = score_batches
        self.scoring: list | None = None if isinstance(score_batches, int) else list(score_batches)
        self._stepped = False  # an optimizer step happened since the last batch end

    @property
    def art(self):
        """The :class:`~hypersparse.ARTSchedule` (phase, lam, masks, history)."""
        return self.driver.art

    @staticmethod
    def _budget(trainer) -> int | None:
        """The epochs the Trainer will run: ``max_epochs``, or fewer when ``max_steps`` ends training first."""
        limits = [trainer.max_epochs] if trainer.max_epochs and trainer.max_epochs > 0 else []
        per_epoch = trainer.num_training_batches // max(1, trainer.accumulate_grad_batches) \
            if math.isfinite(trainer.num_training_batches) else 0
        if trainer.max_steps and trainer.max_steps > 0 and per_epoch > 0:
            limits.append(math.ceil(trainer.max_steps / per_epoch))
        return min(limits) if limits else None

    def on_train_end(self, trainer, pl_module) -> None:
        art = self.driver.method
        problem = end_problem(art)
        if problem is None and self.scoring is not None:
            dense = max((h["dense_acc"] for h in art.history if h.get("dense_acc") is not None), default=None)
            sparse = self._score(trainer, pl_module)(pl_module)
            self.result = {"dense_acc": dense, "sparse_acc": sparse, "margin": self.accuracy_margin}
            problem = result_problem(dense, sparse, self.accuracy_margin)
        self.finished = problem is None
        if problem:
            warn(problem)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.driver.method is None:  # the data is loaded now, so a max_steps budget converts to epochs
            problem = fit_phases(self.driver.options, self.given, self._budget(trainer), WARMUP_SHARE)
            if problem:
                warn(problem)
        self.driver.start(pl_module, self._optimizer(trainer))  # installs the mask after a resume
        self.driver.method.hold = self.guard

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        steps = max(1, int(trainer.num_training_batches) // max(1, trainer.accumulate_grad_batches))
        self.driver.begin_epoch(self._optimizer(trainer), steps)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.driver.before_step()  # gradients are accumulated and, under DDP, averaged by now
        self._stepped = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Lightning has no hook after the optimizer step; under gradient accumulation most batches take none
        if self._stepped:
            self._stepped = False
            self.driver.after_step(pl_module)

    @staticmethod
    def _optimizer(trainer):
        return trainer.optimizers[0] if trainer.optimizers else None

    def _score(self, trainer, pl_module):
        if self.scoring is None:
            batches = islice(iter(trainer.train_dataloader), self.score_batches)
            self.scoring = [pl_module.transfer_batch_to_device(b, pl_module.device, 0) for b in batches]
            self.guard.chance = chance_level([b[1] for b in self.scoring])

        def reduce(correct, total):
            t = trainer.strategy.reduce(torch.tensor([correct, total], dtype=torch.float64, device=pl_module.device),
                                        reduce_op="sum")
            return float(t[0]), float(t[1])

        return lambda model: batch_accuracy(model, self.scoring, lambda m, b: (m(b[0]), b[1]), reduce)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        train_acc = None
        if self.driver.method.needs_scores and self.driver.criterion == "paper":
            value = trainer.callback_metrics.get(self.train_acc_key)
            if value is None:
                raise UserError(
                    f"ART's paper criterion needs the training accuracy, logged as {self.train_acc_key!r}: add "
                    f"self.log({self.train_acc_key!r}, acc, on_step=False, on_epoch=True) to training_step, "
                    "or use ARTLightningCallback(..., criterion='matched')")
            train_acc = float(value)
        score = self._score(trainer, pl_module) if self.driver.method.needs_scores else None
        result = self.driver.end_epoch(pl_module, score, self._optimizer(trainer), train_acc)
        params = self.art.regularizer.params
        values = {"art/lambda": result.record.get("lambda", 0.0),
                  "art/sparsity": sum(int((p == 0).sum()) for p in params) / max(1, sum(p.numel() for p in params))}
        values.update({f"art/{k}": result.record[k] for k in ("pruned_acc", "dense_acc")
                       if result.record.get(k) is not None})
        pl_module.log_dict(values, on_epoch=True, sync_dist=False)
        if self.driver.done:
            trainer.should_stop = True
            budget = self._budget(trainer)
            if budget and trainer.current_epoch + 1 < budget:
                warn(early_end(self.art.epoch, trainer.current_epoch + 1, budget, unit="epoch"))

    def state_dict(self) -> dict:
        return self.driver.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.driver.load_state_dict(state_dict)


ART = ARTLightningCallback  # the name the README and the first releases use
