"""RigL: ERK allocation, the cosine drop fraction, drop-and-grow keeping each layer's count, a short run, resume."""
import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import hypersparse as hs
from hypersparse.config import TrainConfig
from hypersparse.driver import Driver
from hypersparse.engine import Trainer, resume, train
from hypersparse.methods.rigl import RigL, RigLConfig, drop_fraction_at, layer_counts, layer_densities

SHAPES = {"conv1": (16, 3, 3, 3), "conv2": (32, 16, 3, 3), "fc1": (256, 512), "fc2": (10, 256)}


def reference_erk(shapes: dict, sparsity: float) -> dict:
    """google-research/rigl sparse_utils.get_sparsities_erdos_renyi (erk_power_scale 1), transcribed."""
    dense_layers, eps_valid = set(), False
    while not eps_valid:
        divisor, rhs, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            n_param = np.prod(shape)
            n_zeros, n_ones = n_param * sparsity, n_param * (1 - sparsity)
            if name in dense_layers:
                rhs -= n_zeros
            else:
                rhs += n_ones
                raw[name] = np.sum(shape) / np.prod(shape)
                divisor += raw[name] * n_param
        eps = rhs / divisor
        max_prob = max(raw.values())
        if max_prob * eps > 1:
            dense_layers |= {n for n, p in raw.items() if p == max_prob}
        else:
            eps_valid = True
    return {n: 0.0 if n in dense_layers else 1 - eps * raw[n] for n in shapes}


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_erk_allocation_matches_the_reference_formula(sparsity):
    ours = layer_densities(SHAPES, sparsity, "erk")
    ref = reference_erk(SHAPES, sparsity)
    assert all(math.isclose(1 - ours[n], ref[n], abs_tol=1e-12) for n in SHAPES)
    sizes = {n: math.prod(s) for n, s in SHAPES.items()}
    counts = layer_counts(SHAPES, sparsity, "erk")
    total = sum(sizes.values())
    assert sum(counts.values()) == total - math.floor(sparsity * total)  # exact, as for every method
    assert all(abs(counts[n] - ours[n] * sizes[n]) < 1 + 1e-9 for n in SHAPES)
    if sparsity == 0.5:  # the small layers' density would pass 1: they stay dense
        assert ours["fc2"] == 1.0 and ours["conv1"] == 1.0
    assert layer_densities(SHAPES, sparsity, "uniform") == {n: 1 - sparsity for n in SHAPES}


def test_the_drop_fraction_decays_by_a_cosine_to_zero_at_three_quarters():
    total = 1000
    assert drop_fraction_at(0, total) == pytest.approx(0.3)
    assert drop_fraction_at(375, total) == pytest.approx(0.15)  # half-way to the end of the updates
    assert drop_fraction_at(250, total) == pytest.approx(0.15 * (1 + math.cos(math.pi / 3)))
    assert drop_fraction_at(750, total) == 0.0 and drop_fraction_at(900, total) == 0.0
    values = [drop_fraction_at(t, total) for t in range(0, 760, 10)]
    assert values == sorted(values, reverse=True)


def _rigl(model, sparsity=0.9, update_every=2, steps=5, distribution="erk"):
    method = RigL(RigLConfig(distribution=distribution, update_every=update_every), sparsity=sparsity,
                  dense_epochs=0, sparse_epochs=4, finetune_epochs=1, steps_per_epoch=steps)
    return method


def test_each_update_keeps_every_layer_s_count_drops_by_magnitude_and_grows_by_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = _rigl(model)
    driver = Driver(method)
    driver.start(model, opt)
    counts = {n: int(m.sum()) for n, m in method.masks.items()}
    shapes = {n: tuple(p.shape) for n, p in hs.prunable_parameters(model)}
    assert counts == layer_counts(shapes, 0.9, "erk", floor=0.01)  # the default ceiling: no layer above 99 %
    x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
    updates = 0
    for step in range(12):
        before = {n: m.clone() for n, m in method.masks.items()}
        opt.zero_grad()
        F.cross_entropy(model(x[step % 4 * 16:][:16]), y[step % 4 * 16:][:16]).backward()
        grads = {n: p.grad.abs().clone() for n, p in hs.prunable_parameters(model)}
        driver.before_step()
        opt.step()
        weights = {n: p.detach().clone() for n, p in hs.prunable_parameters(model)}
        driver.after_step(model)
        for name, p in hs.prunable_parameters(model):
            keep, old = method.masks[name], before[name]
            assert int(keep.sum()) == counts[name]  # the exact count, after every step
            assert torch.all(p[~keep] == 0)
            grown, dropped = keep & ~old, old & ~keep
            if (step + 1) % 2 == 0 and grown.any():
                updates += 1
                k = int(method.drop_fraction(step + 1) * counts[name])
                assert int(grown.sum()) <= k and int(dropped.sum()) <= k
                assert torch.all(p[grown] == 0)  # a grown weight starts at zero
                # dropped: the smallest kept magnitudes; grown: the largest gradients among the rest
                kth = weights[name][old].abs().sort().values[k - 1]
                assert not dropped.any() or weights[name][dropped].abs().max() <= kth
                assert grads[name][grown].min() >= grads[name][~keep].max()
            else:
                assert torch.equal(keep, old)  # no update between update steps
    assert updates >= 3


def test_a_short_digits_run_reaches_the_target_with_accuracy_well_above_chance(tmp_path):
    cfg = TrainConfig.from_dict({"method": "rigl", "sparsity": 0.95, "epochs_scale": 0.05, "prune_epochs": 60,
                                 "rigl.update_every": 10, "seed": 0})
    summary = train(cfg, tmp_path / "r", progress=False, out=open(os.devnull, "w"))
    numel = summary["sparse"]["numel"]
    assert summary["sparse"]["kept"] == numel - math.floor(0.95 * numel)
    assert summary["sparse"]["test_acc"] > 0.8  # ten classes: chance is 0.1
    assert summary["epochs"] == {"warmup": 3, "train": 3, "finetune": 8}
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["phase"] == "train"]
    assert train_rows[0]["drop_fraction"] > train_rows[-1]["drop_fraction"] >= 0
    assert summary["dense"]["epoch"] == 3


@pytest.mark.parametrize("method", ["rigl", "gmp", "oneshot", "snip"])
def test_with_no_pruning_epochs_every_method_still_reaches_the_target(method, tmp_path):
    """--prune-epochs 0 (a new user's check): fine-tuning must start from a mask at the target, not a dense model."""
    cfg = TrainConfig.from_dict({"method": method, "sparsity": 0.9, "epochs_scale": 0.02, "prune_epochs": 0,
                                 "seed": 0})
    summary = train(cfg, tmp_path / "r", progress=False, out=open(os.devnull, "w"))
    numel = summary["sparse"]["numel"]
    assert summary["sparse"]["kept"] == numel - math.floor(0.9 * numel)


def test_resume_in_the_middle_of_the_sparse_phase_is_bit_exact(tmp_path, monkeypatch):
    def cfg():
        return TrainConfig.from_dict({"method": "rigl", "sparsity": 0.9, "epochs_scale": 0.05, "prune_epochs": 80,
                                      "rigl.update_every": 7, "seed": 1})

    quiet = open(os.devnull, "w")
    ref = train(cfg(), tmp_path / "ref", progress=False, out=quiet)
    original = Trainer.epoch

    def stop_midway(self):
        original(self)
        if self.method.phase == "train" and self.method.epoch == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "epoch", stop_midway)
    with pytest.raises(Exception, match="--resume"):
        train(cfg(), tmp_path / "cut", progress=False, out=quiet)
    monkeypatch.setattr(Trainer, "epoch", original)
    again = resume(tmp_path / "cut", progress=False, out=quiet)
    assert {k: v for k, v in again.items() if k != "phase_seconds"} == \
        {k: v for k, v in ref.items() if k != "phase_seconds"}
    a = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
