"""Performance guards for the mask mechanism, as ratios measured inside one process (never absolute times).

Each guard times two training steps of LeNet-300-100 (batch 64, one thread) call by call, alternating, so that a
busy machine slows both alike, and compares the median of the per-pair ratios with its bound. A guard measures up
to three times and passes on the first measurement within its bound: noise can only make a ratio look worse.
"""
from __future__ import annotations

import statistics
import time

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import hypersparse as hs
from hypersparse.models import create_model


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trainer(masked_updates: int | None):
    """A LeNet-300 step function: no mask (None), or a mask applied and then replaced ``masked_updates`` times the
    way GMP replaces it (remove, then apply)."""
    torch.manual_seed(0)
    model = create_model("lenet300", 10, 1, 28)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    if masked_updates is not None:
        handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.98), opt)
        for i in range(masked_updates):
            handle.remove()
            handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.98), opt)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def _ratio(slow, fast, pairs: int = 150) -> float:
    """Median over alternating calls of time(slow) / time(fast)."""
    for _ in range(20):
        slow(), fast()
    ratios = []
    for _ in range(pairs):
        t0 = time.perf_counter()
        slow()
        t1 = time.perf_counter()
        fast()
        t2 = time.perf_counter()
        ratios.append((t1 - t0) / (t2 - t1))
    return statistics.median(ratios)


def _within(bound: float, slow, fast) -> list[float]:
    seen = []
    for _ in range(3):
        seen.append(_ratio(slow, fast))
        if seen[-1] <= bound:
            break
    return seen


def test_a_masked_step_costs_at_most_1_3x_an_unmasked_one():
    seen = _within(1.3, _trainer(0), _trainer(None))
    assert min(seen) <= 1.3, f"masked / unmasked step time: {seen}"


def test_a_hundred_mask_updates_do_not_slow_a_step():
    seen = _within(1.2, _trainer(100), _trainer(0))
    assert min(seen) <= 1.2, f"step time after 100 mask updates / after 1: {seen}"


def test_gmp_through_the_driver_keeps_one_installation():
    """GMP updating its mask at every step for 300 steps, driven as the engine drives it: the masked weights carry
    no tensor hook (the optimizer enforces the mask), each module one keeper, the optimizer one hook."""
    from hypersparse.driver import Driver
    from hypersparse.methods.baselines import GMP

    model = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    driver = Driver(GMP(0.9, 1, 2, 1, steps_per_epoch=100, frequency=1))
    driver.start(model, opt)
    x, y = torch.randn(64, 20), torch.randint(0, 5, (64,))
    while not driver.done:
        driver.begin_epoch(opt, 100)
        for _ in range(100):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            driver.before_step()
            opt.step()
            driver.after_step(model)
        driver.end_epoch(model, None, opt)
    assert hs.sparsity_report(model).sparsity == pytest.approx(0.9, abs=1e-3)
    assert all(not p._backward_hooks for p in model.parameters())
    assert max(len(m._forward_pre_hooks) for m in model.modules()) == 1
    assert len(opt._optimizer_step_pre_hooks) == 1 and len(opt._optimizer_step_post_hooks) == 1


class _Regularizing:
    """The state of an ART run in its regularization phase, as the driver sees it: a regularizer and its lambda."""

    def __init__(self, model):
        self.regularizer, self.lam = hs.HyperSparse(model, 0.98, refresh_every=32), 1e-6

    def end_epoch(self, *args):  # never reached here
        raise AssertionError


def _regularizing_trainer():
    """A LeNet-300 step as the engine takes it while ART regularizes: HyperSparse's gradient through the driver,
    which hands it the loop's SGD (the fused pass), then the optimizer's step for the other parameters."""
    from hypersparse.driver import Driver

    torch.manual_seed(0)
    model = create_model("lenet300", 10, 1, 28)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    driver = Driver(_Regularizing(model))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        driver.before_step(opt)
        opt.step()

    return step


def test_a_regularization_step_costs_at_most_1_2x_a_plain_one():
    """HyperSparse (266k weights, refreshes of the cut included) adds at most a fifth to a LeNet-300 step."""
    seen = _within(1.2, _regularizing_trainer(), _trainer(None))
    assert min(seen) <= 1.2, f"regularization / plain step time: {seen}"
