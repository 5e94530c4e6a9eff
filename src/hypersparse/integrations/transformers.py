"""ART as a Hugging Face ``Trainer`` callback: ``Trainer(..., callbacks=[ARTTransformersCallback(sparsity=0.9)])``
(also named ``ARTCallback``).

Needs ``pip install "hypersparse[transformers]"``. ``Trainer`` computes no training accuracy, so the stop rule is the
``matched`` one: the dense model and the pruned copy are both scored on the first ``score_batches`` training batches;
the model's output must carry ``logits`` and its batches ``labels``. ART's decisions come at the end of each round
(a ``Trainer`` epoch, or ``period`` optimizer steps). The callback is meant for a trained model being made sparse;
from scratch, see docs/methods.md, "ART in other training loops". Its values (``art/lambda``, ``art/pruned_acc``,
``art/dense_acc``, ``art/sparsity``) go through ``Trainer.log``, so to every logger the Trainer reports to.
"""
from __future__ import annotations

import math
from itertools import islice

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('hypersparse.integrations.transformers needs transformers: '
                      'pip install "hypersparse[transformers]"') from exc

from hypersparse.distributed import all_sum
from hypersparse.driver import ARTDriver, batch_accuracy
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
from hypersparse.params import head_layers, transformer_ceiling

ROUNDS = 20  # ART rounds in a budget of too few epochs (period="auto"); fewer than MIN_EPOCHS epochs counts as too few
MIN_EPOCHS = 10


ADVICE = {
    "chance": "ARTTransformersCallback is meant for trained models: train the dense model first and make it sparse in "
              "a second Trainer run, or give the callback warm-up rounds and the epochs to match (warmup_epochs=N)",
    "drop": "If lambda grew too strong, lower lambda_init (e.g. lambda_init='auto:0.01' instead of 'auto') or eta; if "
            "the dense model is unstable without it, lower the learning rate",
}


def _call(model, batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs), batch["labels"]


class ARTTransformersCallback(TrainerCallback):
    """ART inside ``transformers.Trainer``: regularize before each optimizer step, decide at each round's end.

    Args:
        sparsity: target fraction of zero Linear/Conv weights (embeddings and norms stay dense).
        score_batches: how many training batches score the models (kept from the first regularization round on).
        period: one ART round: ``"epoch"``, a number of optimizer steps, or ``"auto"`` (Trainer epochs when it runs at
            least 10, else a twentieth of its ``max_steps``).
        exclude: layers to keep dense; by default the output layers (:func:`~hypersparse.params.head_layers`).
        max_layer_sparsity: ceiling on one tensor's share of zeros (default ``1 - (1 - sparsity) / 10``).
        max_dense_drop, accuracy_margin: when the mask waits, and how close to dense :attr:`finished` needs.
        **kwargs: :class:`~hypersparse.driver.ARTDriver` options, counted in rounds; phase lengths not given come
            from the Trainer's budget. All of it: docs/methods.md, "ART in other training loops".

    After training, :attr:`finished` is True only for a model that is sparse, fine-tuned and within
    ``accuracy_margin`` of the dense score; :attr:`result` holds the scores it was judged on.
    """

    def __init__(self, sparsity: float, score_batches: int = 20, period: str | int = "auto",
                 max_dense_drop: float = MAX_DENSE_DROP, accuracy_margin: float = ACCURACY_MARGIN, **kwargs):
        if kwargs.get("criterion", "matched") != "matched":
            raise ValueError("Trainer computes no training accuracy: "
                             "ARTTransformersCallback uses the matched criterion only")
        if not (period in ("auto", "epoch") or isinstance(period, int) and not isinstance(period, bool) and period > 0):
            raise ValueError(f"period must be 'auto', 'epoch' or a positive number of steps, got {period!r}")
        self.given = set(kwargs)  # phase lengths not given here come from the Trainer's budget
        kwargs.setdefault("max_layer_sparsity", transformer_ceiling(sparsity))
        self.driver = ARTDriver(sparsity, **kwargs)
        self.period = period
        self.steps: int | None = None  # optimizer steps per round, once known (None: rounds are Trainer epochs)
        self.score_batches = int(score_batches)
        self.scoring: list | None = None
        self.finished: bool | None = None  # after training: sparse, fine-tuned and within accuracy_margin
        self.result: dict | None = None  # after training: the scores finished was judged on
        self.guard = Guard(max_dense_drop, advice=ADVICE)
        self.accuracy_margin = float(accuracy_margin)
        self._trainer = None  # the Trainer that calls this callback, found on_train_begin (for Trainer.log)

    @property
    def art(self):
        """The :class:`~hypersparse.ARTSchedule` (phase, lam, masks, history)."""
        return self.driver.art

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        per_epoch = max(1, len(train_dataloader) // max(1, args.gradient_accumulation_steps)) if train_dataloader \
            else None
        total = state.max_steps if state.max_steps and state.max_steps > 0 else None
        epochs = math.ceil(total / per_epoch) if total and per_epoch else None
        if self.period == "auto":
            self.steps = max(1, total // ROUNDS) if total and (epochs is None or epochs < MIN_EPOCHS) else None
        else:
            self.steps = None if self.period == "epoch" else self.period
        if self.driver.method is None:
            if "exclude" not in self.given:
                self.driver.exclude = head_layers(model) or None
            rounds = (total // self.steps if total else None) if self.steps else epochs
            # warmup_share 0: the callback fine-tunes a trained model
            problem = fit_phases(self.driver.options, self.given, rounds, warmup_share=0.0)
            if problem:
                warn(problem.replace("epochs", "rounds") if self.steps else problem)
        self.driver.start(model, optimizer)
        self.driver.method.hold = self.guard
        self._trainer = _calling_trainer()
        if self.steps:
            self.driver.begin_epoch(optimizer, self.steps)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        art = self.driver.method
        problem = end_problem(art)
        if problem is None and self.scoring is not None:
            dense = max((h["dense_acc"] for h in art.history if h.get("dense_acc") is not None), default=None)
            sparse = batch_accuracy(model, self.scoring, _call, all_sum)
            self.result = {"dense_acc": dense, "sparse_acc": sparse, "margin": self.accuracy_margin}
            problem = result_problem(dense, sparse, self.accuracy_margin)
        self.finished = problem is None
        if problem:
            warn(problem)

    def on_epoch_begin(self, args, state, control, optimizer=None, train_dataloader=None, **kwargs):
        if not self.steps:
            steps = max(1, len(train_dataloader) // max(1, args.gradient_accumulation_steps)) if train_dataloader else 1
            self.driver.begin_epoch(optimizer, steps)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.driver.before_step()  # after accumulation, clipping and any DDP reduction of the task gradients

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.driver.after_step(model)

    def on_step_end(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        if self.steps and state.global_step % self.steps == 0 and not self.driver.done:
            self._end_round(state, control, model, optimizer, train_dataloader)
            if not self.driver.done:
                self.driver.begin_epoch(optimizer, self.steps)
        return control

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        if not self.steps:
            self._end_round(state, control, model, optimizer, train_dataloader)
        return control

    def _end_round(self, state, control, model, optimizer, train_dataloader) -> None:
        score = None
        if self.driver.method.needs_scores:
            if self.scoring is None:
                device = next(model.parameters()).device
                self.scoring = [{k: v.to(device) for k, v in b.items()}
                                for b in islice(iter(train_dataloader), self.score_batches)]
                self.guard.chance = chance_level([b["labels"] for b in self.scoring])
            # counts summed over the ranks when Trainer runs under torchrun
            score = lambda m: batch_accuracy(m, self.scoring, _call, all_sum)  # noqa: E731
        result = self.driver.end_epoch(model, score, optimizer)
        self._log(result.record)
        if self.driver.done:
            control.should_training_stop = True
            if state.max_steps and state.global_step < state.max_steps:
                warn(early_end(self.driver.method.epoch, state.global_step, state.max_steps))

    def _log(self, record: dict) -> None:
        """This round's values through the Trainer's own logging (every integration it reports to)."""
        art = self.driver.method
        params = art.regularizer.params
        values = {"art/lambda": record.get("lambda", 0.0),
                  "art/sparsity": sum(int((p == 0).sum()) for p in params) / max(1, sum(p.numel() for p in params))}
        values.update({f"art/{k}": record[k] for k in ("pruned_acc", "dense_acc") if record.get(k) is not None})
        if self._trainer is not None:
            self._trainer.log(values)


def _calling_trainer():
    """The ``transformers.Trainer`` whose callback handler called us (a callback is not handed its Trainer, and
    ``Trainer.log`` is the one way into the loggers it reports to); None if not found."""
    import inspect

    from transformers import Trainer

    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, Trainer):
                return owner
            frame = frame.f_back
        return None
    finally:
        del frame


ARTCallback = ARTTransformersCallback  # the name the README and the first releases use
