"""Fine-tuning on the compacted network is the same training as on the full one: the same losses and weights to float
rounding after an epoch, the same optimizer state, a bit-exact resume, and no loss of accuracy.

Tolerance: the compacted products add the same nonzero terms as the full ones, in another order (fewer, shorter
rows), so each sum can differ in its last bit (about 6e-8 relative); over the few hundred steps of these epochs that
stays far below 1e-5 of the weights' scale, which is the bound used here.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import hypersparse as hs
from hypersparse.compact_training import CompactTraining
from hypersparse.config import TrainConfig
from hypersparse.engine import Trainer, resume, train

TOL = 1e-5

NETS = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(),
                                 nn.Linear(32, 10)),
    "cnn-bn": lambda: nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
                                    nn.Conv2d(12, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 2 * 2, 24), nn.ReLU(),
                                    nn.Linear(24, 10)),
    "lenet5-like": lambda: nn.Sequential(nn.Conv2d(1, 6, 3), nn.MaxPool2d(2), nn.Conv2d(6, 8, 2), nn.Flatten(),
                                         nn.Linear(8 * 2 * 2, 20), nn.ReLU(), nn.Linear(20, 10)),
    # at 97 % its second convolution keeps under 5 % of its weights: it trains as a sparse convolution in C
    "sparse-conv": lambda: nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 24, 3, stride=2,
                                         padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(24 * 4 * 4, 10)),
}
SPARSITY = {"sparse-conv": 0.97}
OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
}


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= TOL * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("net", list(NETS))
def test_compacted_steps_give_the_full_models_weights_and_optimizer_state(net, opt_name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 1, 8, 8, generator=g), torch.randint(0, 10, (128,), generator=g)
    full = NETS[net]()
    opt = OPTIMIZERS[opt_name](full.parameters())
    for _ in range(3):  # a trained start, with momentum / moments in the optimizer
        opt.zero_grad()
        F.cross_entropy(full(x), y).backward()
        opt.step()
    masks = hs.magnitude_masks(full, SPARSITY.get(net, 0.9), scope="layer")
    ref = copy.deepcopy(full)
    ref_opt = OPTIMIZERS[opt_name](ref.parameters())
    ref_opt.load_state_dict(opt.state_dict())
    hs.apply_masks_(ref, masks, ref_opt)
    hs.apply_masks_(full, masks, opt)
    compact = CompactTraining.build(full, masks, opt)
    assert compact is not None and compact.removed > 0
    from hypersparse import native
    from hypersparse.sparse_conv import SparseConvTrainable

    if net == "sparse-conv" and native.conv_backward_kernels() is not None:
        assert any(isinstance(m, SparseConvTrainable) for m in compact.model)
    assert sum(p.numel() for p in compact.model.parameters()) < sum(p.numel() for p in full.parameters())

    def steps(model, optimizer):
        losses = []
        for i in range(12):
            xb, yb = x[i % 4 * 32:(i % 4 + 1) * 32], y[i % 4 * 32:(i % 4 + 1) * 32]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    for a, b in zip(steps(ref, ref_opt), steps(compact.model, compact.optimizer)):
        assert abs(a - b) <= TOL * max(1.0, abs(a))
    compact.write_back()
    for (name, p), q in zip(ref.named_parameters(), full.parameters()):
        assert _close(q.detach(), p.detach()), name
        for key, value in ref_opt.state[p].items():
            if isinstance(value, torch.Tensor) and value.dim():
                assert _close(opt.state[q][key], value), (name, key)
    for m_ref, m_full in zip(ref.modules(), full.modules()):  # BatchNorm statistics of the channels that stayed
        if isinstance(m_ref, nn.BatchNorm2d):
            kept = [r for _, new, r in compact._norms][0]
            assert _close(m_full.running_mean[kept], m_ref.running_mean[kept])
    for n, keep in masks.items():  # pruned weights are still exactly zero in the full model
        assert torch.all(dict(full.named_parameters())[n].detach()[~keep] == 0)


def test_a_unit_that_feeds_nothing_decays_as_in_the_full_model_and_a_constant_unit_trains():
    """Unit 0 of the hidden layer has kept incoming weights but no outgoing one: it is removed, and its weights and
    bias still shrink by weight decay as the full model's do. Unit 1 has no incoming weight but feeds the output:
    it stays, and its bias trains."""
    torch.manual_seed(0)
    full = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    masks = {"0.weight": torch.ones(4, 6, dtype=torch.bool), "2.weight": torch.ones(3, 4, dtype=torch.bool)}
    masks["0.weight"][1] = False  # unit 1: no incoming weight
    masks["2.weight"][:, 0] = False  # unit 0: no outgoing weight
    with torch.no_grad():
        full[0].bias[1] = 0.5  # a live constant
    ref = copy.deepcopy(full)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1) for m in (full, ref))
    hs.apply_masks_(full, masks, opt)
    hs.apply_masks_(ref, masks, ref_opt)
    compact = CompactTraining.build(full, masks, opt)
    assert compact.model[0].out_features == 3  # units 1, 2, 3
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for model, optimizer in ((ref, ref_opt), (compact.model, compact.optimizer)):
        for _ in range(5):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    compact.write_back()
    assert torch.allclose(full[0].weight[0], ref[0].weight[0], rtol=0, atol=1e-7)  # decayed, not frozen
    assert not torch.allclose(full[0].bias[0], torch.tensor(0.0)) and float(full[0].bias[1]) != 0.5
    assert all(_close(p.detach(), q.detach()) for p, q in zip(full.parameters(), ref.parameters()))


def test_models_it_does_not_handle_train_at_full_size():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x) + x)

    shared = nn.Linear(4, 4)  # trial 31f S6: one layer at two positions was compacted as two, and trained apart
    tied = nn.Linear(4, 4)
    tied.weight = shared.weight
    for model in (Branchy(), nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)),
                  nn.Sequential(shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(4, 2)),
                  nn.Sequential(shared, nn.ReLU(), tied, nn.ReLU(), nn.Linear(4, 2))):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        assert CompactTraining.build(model, hs.magnitude_masks(model, 0.9), opt) is None


def _digits(**kw) -> TrainConfig:
    return TrainConfig.from_dict({"method": "oneshot", "sparsity": 0.97, "epochs_scale": 0.05, "seed": 4, **kw})


def test_one_engine_epoch_compacted_against_uncompacted_from_the_same_state(tmp_path):
    """From a checkpoint at the start of fine-tuning, one epoch with and one without compaction: the same loss and
    weights to the tolerance above."""
    quiet = open(os.devnull, "w")
    out = {}
    for compact in (True, False):
        run = tmp_path / str(compact)
        run.mkdir()
        trainer = Trainer(_digits(compact_finetune=compact), run, progress=False, out=quiet)
        trainer.driver.start(trainer.model, trainer.optimizer)
        while not trainer.method.mask_fixed:
            trainer.epoch()
        trainer.epoch()
        out[compact] = (trainer.metrics[-1], {k: v.clone() for k, v in trainer.model.state_dict().items()},
                        trainer.compact)
    (row_c, state_c, used), (row_f, state_f, unused) = out[True], out[False]
    assert used is not None and unused is None and row_c["phase"] == row_f["phase"] == "finetune"
    assert abs(row_c["loss"] - row_f["loss"]) <= TOL * row_f["loss"]
    assert all(_close(state_c[k].float(), state_f[k].float()) for k in state_f)


def test_resume_in_the_middle_of_compacted_fine_tuning_is_bit_exact(tmp_path, monkeypatch):
    quiet = open(os.devnull, "w")
    ref = train(_digits(), tmp_path / "ref", progress=False, out=quiet)
    original = Trainer.epoch

    def stop_midway(self):
        original(self)
        if self.method.fine_tuning and self.method.finetune_done == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "epoch", stop_midway)
    with pytest.raises(Exception, match="--resume"):
        train(_digits(), tmp_path / "cut", progress=False, out=quiet)
    monkeypatch.setattr(Trainer, "epoch", original)
    again = resume(tmp_path / "cut", progress=False, out=quiet)

    def clean(summary):
        return {k: v for k, v in summary.items() if k != "phase_seconds"}

    assert clean(again) == clean(ref)
    a = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tuning_compacted_keeps_the_accuracy_over_seeds(tmp_path):
    """A whole fine-tuning phase, three seeds: the test accuracies with and without compaction agree within the
    seed-to-seed spread (they are the same training up to float rounding)."""
    quiet = open(os.devnull, "w")
    acc = {True: [], False: []}
    for seed in (0, 1, 2):
        for compact in (True, False):
            summary = train(_digits(seed=seed, compact_finetune=compact), tmp_path / f"{seed}-{compact}",
                            progress=False, out=quiet)
            acc[compact].append(summary["sparse"]["test_acc"])
    spread = max(acc[False]) - min(acc[False])
    assert all(abs(a - b) <= max(spread, 1 / 360) for a, b in zip(acc[True], acc[False]))


def test_a_hand_written_loop_fine_tunes_the_compacted_network_through_one_driver_call():
    from conftest import synthetic_problem

    torch.manual_seed(0)
    x, y = synthetic_problem(n=512, d=10, classes=3)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    driver = hs.ARTDriver(0.97, warmup_epochs=1, lambda_init=1e-3, eta=2.0, finetune_epochs=3)
    driver.attach(model)
    driver.start(model, opt)
    score = lambda m: float((m(x).argmax(1) == y).float().mean())  # noqa: E731
    ct = None
    while not driver.done:
        driver.begin_epoch(opt, 8)
        net, optimizer = (ct.model, ct.optimizer) if ct is not None else (model, opt)
        for xb, yb in zip(x.split(64), y.split(64)):
            optimizer.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            driver.before_step()
            optimizer.step()
            driver.after_step(model)
        if ct is not None:
            ct.write_back()
        driver.end_epoch(model, score, opt)
        if ct is None:
            ct = driver.compacted(model, opt)  # None until the mask is fixed
    assert ct is not None and ct.removed > 0
    report = hs.sparsity_report(model)
    assert report.zeros >= int(0.97 * report.numel) and score(model) > 0.8
