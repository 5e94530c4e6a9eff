"""One driver for every front end: the stop rule's two criteria, and the same decision from the CLI engine,
the Lightning callback and a hand-written loop on the same problem."""
import copy

import pytest
import torch
from torch.nn import functional as F

from hypersparse.config import TrainConfig
from hypersparse.data import _split, register_dataset
from hypersparse.driver import ARTDriver, Driver, batch_accuracy
from hypersparse.engine import Trainer
from hypersparse.method import EpochResult
from hypersparse.models import create_model


def blob_images(data_dir, seed, download=False):
    """Four well-separated clusters as 8x8 single-channel uint8 'images'."""
    g = torch.Generator().manual_seed(0)
    centers = 0.5 + 0.25 * torch.randn(4, 64, generator=g)
    y = torch.randint(0, 4, (700,), generator=g)
    x = ((centers[y] + 0.25 * torch.randn(700, 64, generator=g)).clamp(0, 1) * 255).round().to(torch.uint8)
    return _split("blob-images", x.view(-1, 1, 8, 8)[:600], y[:600], x.view(-1, 1, 8, 8)[600:], y[600:], 100, seed, 4,
                  augment=False)


register_dataset("blob-images", blob_images, "test problem")
ART_SETTINGS = dict(warmup_epochs=2, lambda_init=1e-3, eta=2.0, finetune_epochs=1)


class Recorder:
    """A method that needs scores every epoch and records what the driver hands it."""

    regularizer, lam, phase, epoch, finetune_done, masks, chosen_epoch = None, 0.0, "x", 0, 0, None, None
    needs_scores, mask_fixed, fine_tuning, warmup_ends, done = True, False, False, False, False

    def __init__(self):
        self.seen = []

    def end_epoch(self, model, dense_acc, pruned_acc):
        self.seen.append((dense_acc, pruned_acc(model)))
        return EpochResult("x")


def test_matched_scores_the_dense_model_like_the_pruned_copy_and_paper_takes_the_training_accuracy():
    model = torch.nn.Linear(2, 2)
    matched, paper = Recorder(), Recorder()
    Driver(matched).end_epoch(model, score=lambda m: 0.75, train_acc=0.5)
    Driver(paper, criterion="paper").end_epoch(model, score=lambda m: 0.75, train_acc=0.5)
    assert matched.seen == [(0.75, 0.75)] and paper.seen == [(0.5, 0.75)]
    with pytest.raises(ValueError, match="train_acc"):
        Driver(Recorder(), criterion="paper").end_epoch(model, score=lambda m: 0.75)
    with pytest.raises(ValueError, match="criterion"):
        Driver(Recorder(), criterion="best")


def _engine_run(tmp_path):
    cfg = TrainConfig.from_dict(dict(dataset="blob-images", sparsity=0.9, pruned_eval_size=200, **ART_SETTINGS))
    (tmp_path / "cli").mkdir()
    trainer = Trainer(cfg, tmp_path / "cli", progress=False, out=open("/dev/null", "w"))
    init = copy.deepcopy(trainer.model.state_dict())
    batches = [list(trainer.train_loader.batches(e)) for e in range(40)]
    scoring = [(trainer.train_loader.normalize(trainer.subset[0]), trainer.subset[1])]
    trainer.run()
    stop = next(r["epoch"] for r in trainer.metrics if r["event"] == "stop")
    return init, batches, scoring, stop, trainer.method.masks


class Epoch:
    """One epoch's batches as an iterable (Lightning reads a plain list as several loaders)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def _optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def test_the_engine_lightning_and_a_hand_written_loop_stop_at_the_same_epoch_with_the_same_mask(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from hypersparse.integrations.lightning import ARTLightningCallback

    init, batches, scoring, cli_stop, cli_masks = _engine_run(tmp_path)
    assert cli_stop > ART_SETTINGS["warmup_epochs"] + 2  # regularization ran a few epochs before the rule held

    # the driver in a loop written by hand, on the same batches and the same scoring images
    model = create_model("mlp", 4, 1, 8)
    model.load_state_dict(init)
    opt = _optimizer(model)
    driver = ARTDriver(0.9, refresh_every=32, **ART_SETTINGS)
    driver.start(model, opt)
    score = lambda m: batch_accuracy(m, scoring, lambda m, b: (m(b[0]), b[1]), lambda c, t: (c, t))  # noqa: E731
    epoch, hand_stop = 0, None
    while not driver.done:
        driver.begin_epoch(opt, len(batches[0]))
        for xb, yb in batches[epoch]:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            driver.before_step()
            opt.step()
            driver.after_step(model)
        if driver.end_epoch(model, score, opt) == "stop":
            hand_stop = epoch
        epoch += 1

    # the Lightning callback, with the same batches each epoch
    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = create_model("mlp", 4, 1, 8)
            self.net.load_state_dict(init)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            return F.cross_entropy(self(batch[0]), batch[1])

        def train_dataloader(self):
            return Epoch(batches[self.current_epoch])

        def configure_optimizers(self):
            return _optimizer(self)

    callback = ARTLightningCallback(0.9, score_batches=scoring, refresh_every=32, **ART_SETTINGS)
    trainer = L.Trainer(max_epochs=40, accelerator="cpu", callbacks=[callback], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        reload_dataloaders_every_n_epochs=1, default_root_dir=tmp_path)
    trainer.fit(Net())
    lightning_stop = next(h["epoch"] for h in callback.art.history if h.get("chosen_epoch") is not None)

    assert cli_stop == hand_stop == lightning_stop
    for masks in (driver.method.masks, callback.art.masks):  # the Lightning module names its layers net.1, ...
        assert len(masks) == len(cli_masks)
        assert all(torch.equal(a, b) for a, b in zip(masks.values(), cli_masks.values()))


def test_auto_lambda_works_in_the_lightning_callback(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from hypersparse.integrations.lightning import ARTLightningCallback
    from hypersparse.schedule import lambda_for_push

    x = torch.randn(256, 16)
    y = x[:, :4].argmax(1)

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return _optimizer(self)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    callback = ARTLightningCallback(0.8, warmup_epochs=1, lambda_init="auto:0.05", eta=2.0, finetune_epochs=1,
                                    score_batches=2)
    module = Net()
    seen = {}

    class Peek(L.Callback):  # the weights as regularization starts, to recompute lambda_init independently
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                seen["lambda"] = lambda_for_push(callback.art.regularizer, 0.8, 0.05, 0.1, 0.9, len(loader))

    trainer = L.Trainer(max_epochs=30, accelerator="cpu", callbacks=[Peek(), callback], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, loader)
    reg = [h for h in callback.art.history if h["phase"] == "regularize"]
    assert reg and reg[0]["lambda_init"] == pytest.approx(seen["lambda"], rel=1e-12) and reg[0]["lambda"] > 0
    assert callback.art.done
