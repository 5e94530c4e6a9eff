"""ART as a Hugging Face ``Trainer`` callback: ``Trainer(..., callbacks=[ARTCallback(sparsity=0.9)])``.

Needs ``pip install "hypersparse[transformers]"``. ``Trainer`` does not
compute a training accuracy, so the stop rule is the ``matched`` one: the
dense model and the pruned copy are both scored on the first
``score_batches`` training batches; the model's output must carry ``logits``
and its batches ``labels``. ART's decisions come at the end of each
``Trainer`` epoch or, for the usual short fine-tuning budgets (a few epochs),
every ``period`` optimizer steps: ART's "epochs" are then those periods.
With ``finetune_epochs`` set, training stops after them.
"""
from __future__ import annotations

import math
from itertools import islice

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('hypersparse.integrations.transformers needs transformers: pip install "hypersparse[transformers]"') \
        from exc

from hypersparse.distributed import all_sum
from hypersparse.driver import ARTDriver, batch_accuracy
from hypersparse.integrations.budget import end_problem, fit_phases, warn
from hypersparse.params import head_layers, transformer_ceiling

ROUNDS = 20  # ART rounds in a budget of too few epochs (period="auto"); fewer than MIN_EPOCHS epochs counts as too few
MIN_EPOCHS = 10


def _call(model, batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs), batch["labels"]


class ARTCallback(TrainerCallback):
    """ART inside ``transformers.Trainer``: regularize before each optimizer step, decide at each round's end.

    Args:
        sparsity: target fraction of zero Linear/Conv weights (embeddings and norms stay dense).
        score_batches: how many training batches score the models (kept from the first regularization round on).
        period: what one ART round ("epoch" in :class:`~hypersparse.ART`'s terms) is: ``"epoch"`` (a Trainer
            epoch), a number of optimizer steps, or ``"auto"``: epochs when the Trainer runs at least 10 of them,
            else a twentieth of its ``max_steps`` (a 3-epoch fine-tuning then still has 20 rounds to decide in).
        exclude: layers to keep dense (glob patterns over dotted names, or a filter). By default the model's
            output layers (:func:`~hypersparse.params.head_layers`: the task head and the output embeddings).
        max_layer_sparsity: ceiling on one tensor's share of zeros. By default ``1 - (1 - sparsity) / 10``, so that
            global pruning cannot empty a layer (in a small BERT it would remove every weight of Q and K).
        **kwargs: :class:`~hypersparse.driver.ARTDriver` options (``reg``, ``warmup_epochs``, ``lambda_init``
            (a number or ``"auto"``), ``eta``, ``finetune_epochs``, ...), counted in rounds. Phase lengths not given
            come from the Trainer's budget (``num_train_epochs`` or ``max_steps``): no warm-up (the model is a trained
            one being made sparse), 40 % fine-tuning, the rest as the regularization deadline. A budget they cannot
            fit in is warned about at the start; a run that ends before the mask is fixed or fine-tuning is done, at
            the end (and :attr:`finished` is False).
    """

    def __init__(self, sparsity: float, score_batches: int = 20, period: str | int = "auto", **kwargs):
        if kwargs.get("criterion", "matched") != "matched":
            raise ValueError("Trainer computes no training accuracy: ARTCallback uses the matched criterion only")
        if not (period in ("auto", "epoch") or isinstance(period, int) and not isinstance(period, bool) and period > 0):
            raise ValueError(f"period must be 'auto', 'epoch' or a positive number of steps, got {period!r}")
        self.given = set(kwargs)  # phase lengths not given here come from the Trainer's budget
        kwargs.setdefault("max_layer_sparsity", transformer_ceiling(sparsity))
        self.driver = ARTDriver(sparsity, **kwargs)
        self.period = period
        self.steps: int | None = None  # optimizer steps per round, once known (None: rounds are Trainer epochs)
        self.score_batches = int(score_batches)
        self.scoring: list | None = None
        self.finished: bool | None = None  # after training: whether ART fixed its mask and finished fine-tuning

    @property
    def art(self):
        """The :class:`~hypersparse.ART` schedule (phase, lam, masks, history)."""
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
            problem = fit_phases(self.driver.options, self.given, rounds, warmup_share=0.0)  # fine-tunes a trained model
            if problem:
                warn(problem.replace("epochs", "rounds") if self.steps else problem)
        self.driver.start(model, optimizer)
        if self.steps:
            self.driver.begin_epoch(optimizer, self.steps)

    def on_train_end(self, args, state, control, **kwargs):
        problem = end_problem(self.driver.method)
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
            self._end_round(control, model, optimizer, train_dataloader)
            if not self.driver.done:
                self.driver.begin_epoch(optimizer, self.steps)
        return control

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        if not self.steps:
            self._end_round(control, model, optimizer, train_dataloader)
        return control

    def _end_round(self, control, model, optimizer, train_dataloader) -> None:
        score = None
        if self.driver.method.needs_scores:
            if self.scoring is None:
                device = next(model.parameters()).device
                self.scoring = [{k: v.to(device) for k, v in b.items()}
                                for b in islice(iter(train_dataloader), self.score_batches)]
            # counts summed over the ranks when Trainer runs under torchrun
            score = lambda m: batch_accuracy(m, self.scoring, _call, all_sum)  # noqa: E731
        self.driver.end_epoch(model, score, optimizer)
        if self.driver.done:
            control.should_training_stop = True
