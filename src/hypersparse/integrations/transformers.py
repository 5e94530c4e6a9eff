"""ART as a Hugging Face ``Trainer`` callback: ``Trainer(..., callbacks=[ARTCallback(sparsity=0.9)])``.

Needs ``pip install "hypersparse[transformers]"``. ``Trainer`` does not
compute a training accuracy, so the stop rule is the ``matched`` one: the
dense model and the pruned copy are both scored on the first
``score_batches`` training batches; the model's output must carry ``logits``
and its batches ``labels``. Epochs are ``Trainer`` epochs; with
``finetune_epochs`` set, training stops after them.
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


def _call(model, batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs), batch["labels"]


class ARTCallback(TrainerCallback):
    """ART inside ``transformers.Trainer``: regularize before each optimizer step, decide at each epoch's end.

    Args:
        sparsity: target fraction of zero Linear/Conv weights (embeddings and norms stay dense).
        score_batches: how many training batches score the models (kept from the first regularization epoch on).
        **kwargs: :class:`~hypersparse.driver.ARTDriver` options (``reg``, ``warmup_epochs``, ``lambda_init``
            (a number or ``"auto"``), ``eta``, ``finetune_epochs``, ...). Phase lengths not given come from the
            Trainer's budget (``num_train_epochs`` or ``max_steps``): no warm-up (the model is a trained one being
            made sparse), 40 % fine-tuning, the rest as the regularization deadline. A budget they cannot fit in is
            warned about at the start; a run that ends before the mask is fixed or fine-tuning is done, at the end
            (and :attr:`finished` is False).
    """

    def __init__(self, sparsity: float, score_batches: int = 20, **kwargs):
        if kwargs.get("criterion", "matched") != "matched":
            raise ValueError("Trainer computes no training accuracy: ARTCallback uses the matched criterion only")
        self.driver = ARTDriver(sparsity, **kwargs)
        self.given = set(kwargs)  # phase lengths not given here come from the Trainer's budget
        self.score_batches = int(score_batches)
        self.scoring: list | None = None
        self.finished: bool | None = None  # after training: whether ART fixed its mask and finished fine-tuning

    @property
    def art(self):
        """The :class:`~hypersparse.ART` schedule (phase, lam, masks, history)."""
        return self.driver.art

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        if self.driver.method is None:
            steps = max(1, len(train_dataloader) // max(1, args.gradient_accumulation_steps)) if train_dataloader \
                else None
            budget = math.ceil(state.max_steps / steps) if steps and state.max_steps and state.max_steps > 0 else None
            problem = fit_phases(self.driver.options, self.given, budget, warmup_share=0.0)  # fine-tunes a trained model
            if problem:
                warn(problem)
        self.driver.start(model, optimizer)

    def on_train_end(self, args, state, control, **kwargs):
        problem = end_problem(self.driver.method)
        self.finished = problem is None
        if problem:
            warn(problem)

    def on_epoch_begin(self, args, state, control, optimizer=None, train_dataloader=None, **kwargs):
        steps = max(1, len(train_dataloader) // max(1, args.gradient_accumulation_steps)) if train_dataloader else 1
        self.driver.begin_epoch(optimizer, steps)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.driver.before_step()  # after accumulation, clipping and any DDP reduction of the task gradients

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.driver.after_step(model)

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
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
        return control
