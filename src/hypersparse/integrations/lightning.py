"""ART as a Lightning callback: ``Trainer(callbacks=[hypersparse.integrations.lightning.ART(sparsity=0.98)])``.

Needs ``pip install "hypersparse[lightning]"``. The LightningModule's forward
must return logits, training batches must be ``(inputs, labels)``, and the
module must log its running training accuracy (the authors' stop rule) with
``self.log("train_acc", acc, on_step=False, on_epoch=True)``, or pass
``criterion="matched"`` to measure the dense model like the pruned copy.
"""
from __future__ import annotations

from itertools import islice

import torch

try:
    from lightning.pytorch import Callback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('hypersparse.integrations.lightning needs Lightning: pip install "hypersparse[lightning]"') from exc

from hypersparse.errors import UserError
from hypersparse.integrations.driver import ARTDriver, batch_accuracy


class ART(Callback):
    """Warm-up, HyperSparse (or L1/L2) regularization with growing lambda, ART's stop, mask kept through fine-tuning.

    Args:
        sparsity: target fraction of zero Conv/Linear weights.
        criterion: ``"paper"`` (the logged ``train_acc_key`` against the pruned copy) or ``"matched"``.
        train_acc_key: the name under which the module logs its training accuracy.
        **kwargs: :class:`~hypersparse.integrations.driver.ARTDriver` options (``reg``, ``warmup_epochs``,
            ``lambda_init``, ``eta``, ``finetune_epochs``, ``score_batches``, ...).
    """

    def __init__(self, sparsity: float, criterion: str = "paper", train_acc_key: str = "train_acc", **kwargs):
        if criterion not in ("paper", "matched"):
            raise ValueError(f"criterion must be 'paper' or 'matched', got {criterion!r}")
        self.driver = ARTDriver(sparsity, **kwargs)
        self.criterion, self.train_acc_key = criterion, train_acc_key

    @property
    def art(self):
        """The :class:`~hypersparse.ART` schedule (phase, lam, masks, history)."""
        return self.driver.art

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.driver.attach(pl_module)

    def on_train_start(self, trainer, pl_module) -> None:
        self.driver.keep_mask(pl_module, trainer.optimizers[0] if trainer.optimizers else None)  # after a resume

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.driver.before_step()  # gradients are accumulated and, under DDP, averaged by now

    def _score(self, trainer, pl_module):
        if self.driver.scoring is None:
            batches = islice(iter(trainer.train_dataloader), self.driver.score_batches)
            self.driver.scoring = [pl_module.transfer_batch_to_device(b, pl_module.device, 0) for b in batches]

        def reduce(correct, total):
            t = trainer.strategy.reduce(torch.tensor([correct, total], dtype=torch.float64, device=pl_module.device),
                                        reduce_op="sum")
            return float(t[0]), float(t[1])

        return lambda model: batch_accuracy(model, self.driver.scoring, lambda m, b: (m(b[0]), b[1]), reduce)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        art = self.driver.art
        dense_acc = None
        if art.phase == "regularize" and self.criterion == "paper":
            value = trainer.callback_metrics.get(self.train_acc_key)
            if value is None:
                raise UserError(
                    f"ART's paper criterion needs the training accuracy, logged as {self.train_acc_key!r}: add "
                    f"self.log({self.train_acc_key!r}, acc, on_step=False, on_epoch=True) to training_step, "
                    "or use ART(..., criterion='matched')")
            dense_acc = float(value)
        score = self._score(trainer, pl_module) if art.phase == "regularize" else None
        self.driver.end_epoch(pl_module, dense_acc, score, trainer.optimizers[0] if trainer.optimizers else None)
        pl_module.log("art_lambda", self.driver.lam, on_epoch=True, sync_dist=False)
        if self.driver.done:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return self.driver.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.driver.load_state_dict(state_dict)
