import math

import pytest
import torch
from torch import nn

import hypersparse as hs
from hypersparse.regularizers import INFLECTION
from conftest import make_convnet, make_mlp


def rel_err(a, b):
    a = torch.cat([x.flatten().double() for x in a])
    b = torch.cat([x.flatten().double() for x in b])
    return float((a - b).norm() / b.norm())


def closed_formula_f64(params, sparsity):
    """g_i = sign(w_i) s sech^2(s|w_i|) ||w||_1 / sum_j tanh(s|w_j|), all in float64."""
    w = torch.cat([p.detach().double().flatten() for p in params])
    a = w.abs()
    k = math.floor(sparsity * w.numel())
    t = torch.sort(a).values[k - 1]  # the k-th smallest magnitude, 1-indexed
    s = math.atanh(1 / math.sqrt(3)) / t
    g = torch.sign(w) * s / torch.cosh(s * a) ** 2 * a.sum() / torch.tanh(s * a).sum()
    out, offset = [], 0
    for p in params:
        out.append(g[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    return out


def autograd_of_loss(reg):
    for p in reg.params:
        p.grad = None
    reg.loss().backward()
    return [p.grad.clone() for p in reg.params]


MODELS = [
    lambda: make_mlp((8, 16, 4)),
    lambda: make_mlp((30, 50, 20, 10), bias=False),
    make_convnet,
    lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.Conv3d(4, 2, 1), nn.Linear(3, 3)),
]


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_hypersparse_add_grad_matches_autograd_and_closed_formula(make, sparsity):
    model = make()
    reg = hs.HyperSparse(model, sparsity)
    auto = autograd_of_loss(reg)
    for p in reg.params:
        p.grad = None
    reg.add_grad_(1.0)
    fast = [p.grad.clone() for p in reg.params]
    exact = closed_formula_f64(reg.params, sparsity)
    assert rel_err(fast, exact) <= 1e-5
    assert rel_err(auto, exact) <= 1e-5
    assert rel_err(fast, auto) <= 1e-5


def test_loss_value_is_zero_and_strength_scales_gradient():
    model = make_mlp((20, 30, 5))
    reg = hs.HyperSparse(model, 0.9)
    assert abs(float(reg.loss().detach())) < 1e-4
    for p in reg.params:
        p.grad = torch.ones_like(p)
    reg.add_grad_(0.25)
    expected = [1 + 0.25 * g for g in closed_formula_f64(reg.params, 0.9)]
    assert rel_err([p.grad for p in reg.params], expected) <= 1e-5


def test_threshold_is_kth_smallest_and_s_on_inflection():
    model = make_mlp((40, 40, 10))
    reg = hs.HyperSparse(model, 0.9)
    w = torch.cat([p.detach().abs().flatten() for p in reg.params])
    k = math.floor(0.9 * w.numel())
    assert reg.k == k
    assert float(reg.threshold()) == float(torch.sort(w).values[k - 1])
    s = reg.scale()
    # sech^2 has its inflection point where tanh(x) = 1/sqrt(3)
    assert math.isclose(math.tanh(float(s * reg.threshold())), 1 / math.sqrt(3), rel_tol=1e-6)
    assert math.isclose(INFLECTION, 0.6585, abs_tol=1e-4)


def test_small_weights_pushed_harder_than_large():
    w = torch.logspace(-4, 2, 601) * torch.tensor([-1.0, 1.0]).repeat(301)[:601]
    reg = hs.HyperSparse([w], 0.5)
    g = reg.gradient()[0]
    t = float(reg.threshold())
    small, large = w.abs() < t / 10, w.abs() > 10 * t
    # far below the cut the push is near its maximum (sech^2 ~ 1); far above it has faded (sech^2 < 1e-5)
    assert g[small].abs().min() > 1e4 * g[large].abs().max()
    # in float32 sech^2 = 1 - tanh^2 reaches exactly 0 far above the cut; elsewhere the push points to zero
    nonzero = g != 0
    assert nonzero[w.abs() < t].all()
    assert torch.all(torch.sign(g[nonzero]) == torch.sign(w[nonzero]))


@pytest.mark.parametrize("cls,grad", [(hs.L1, lambda w: torch.sign(w)), (hs.L2, lambda w: 2 * w)])
def test_l1_l2_forms_agree(cls, grad):
    model = make_convnet()
    reg = cls(model)
    auto = autograd_of_loss(reg)
    for p in reg.params:
        p.grad = None
    reg.add_grad_(0.5)
    fast = [p.grad.clone() for p in reg.params]
    expected = [0.5 * grad(p.detach()) for p in reg.params]
    assert rel_err(fast, expected) <= 1e-6
    assert rel_err(auto, [grad(p.detach()) for p in reg.params]) <= 1e-6


def test_regularizer_covers_only_prunable_weights():
    model = make_convnet()
    reg = hs.HyperSparse(model, 0.9)
    assert reg.names == ["0.weight", "4.weight", "7.weight"]
    assert reg.numel == 6 * 3 * 9 + 5 * 6 * 9 + 7 * 80


def train_steps(reg, steps, seed=0, lr=0.05):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        for p in reg.params:
            p.grad = torch.randn(p.shape, generator=g) * 0.01
        reg.add_grad_(1e-3)
        out.append([p.grad.clone() for p in reg.params])
        with torch.no_grad():
            for p in reg.params:
                p -= lr * p.grad
    return out


def test_lazy_threshold_difference_is_bounded():
    """Refreshing the cut every K steps stays close to the exact gradient, and the cut moves at most max|dw|."""
    torch.manual_seed(1)
    exact_model = make_mlp((64, 64, 32, 10))
    lazy_model = make_mlp((64, 64, 32, 10))
    lazy_model.load_state_dict(exact_model.state_dict())
    exact = hs.HyperSparse(exact_model, 0.9)
    lazy = hs.HyperSparse(lazy_model, 0.9, refresh_every=10, max_rank_drift=1e-3, compile=False)
    # same weights, same noise: compare the gradients the two would add at each step
    g = torch.Generator().manual_seed(3)
    for step in range(25):
        now = [p.detach().clone() for p in lazy.params]
        noise = [torch.randn(p.shape, generator=g) * 0.01 for p in exact.params]
        for reg in (exact, lazy):
            for p, n in zip(reg.params, noise):
                p.grad = n.clone()
            reg.add_grad_(1e-3)
        if lazy._since == 1:  # refreshed on this call, from the current weights
            at_refresh = now
        assert rel_err([p.grad for p in lazy.params], [p.grad for p in exact.params]) <= 2e-2
        # the k-th order statistic is 1-Lipschitz in the max-norm: the stale cut is off by at most max|dw|
        drift = max(float((a - b).abs().max()) for a, b in zip(now, at_refresh))
        assert abs(float(lazy._t) - float(exact.threshold())) <= drift + 1e-7
        with torch.no_grad():
            for e, l in zip(exact.params, lazy.params):
                e -= 0.5 * e.grad
                l.copy_(e)
    assert lazy.refreshes < exact.refreshes == 25


def test_lazy_refreshes_when_rank_drifts():
    w = torch.linspace(0.01, 1, 1000)
    reg = hs.HyperSparse([w], 0.5, refresh_every=1000, max_rank_drift=0.01, compile=False)
    reg.add_grad_(1.0)
    assert reg.refreshes == 1
    with torch.no_grad():
        w.mul_(0.5)  # every weight halves: the old cut now has 3/4 of them below it
    reg.add_grad_(1.0)  # this call notices the drift
    reg.add_grad_(1.0)  # ... and this one refreshes
    assert reg.refreshes == 2


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.9", None, True])
def test_bad_sparsity_raises_value_error_naming_it(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        hs.HyperSparse(make_mlp(), bad)


def test_model_without_prunable_parameter():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.ReLU())
    with pytest.raises(hs.NoPrunableParametersError, match="no prunable parameter"):
        hs.HyperSparse(model, 0.9)
    with pytest.raises(ValueError, match="no prunable parameter"):
        hs.magnitude_masks(model, 0.9)


def test_compiled_fused_path_matches_exact_formula_and_eager():
    """The torch.compile kernels the engine uses on large models compute the same gradient."""
    import shutil

    if shutil.which("cc") is None:
        pytest.skip("torch.compile needs a C compiler on the CPU")
    torch.manual_seed(4)
    model = make_mlp((64, 128, 64, 10))
    eager_model = make_mlp((64, 128, 64, 10))
    eager_model.load_state_dict(model.state_dict())
    compiled = hs.HyperSparse(model, 0.95, refresh_every=4, compile=True)
    eager = hs.HyperSparse(eager_model, 0.95, refresh_every=4, compile=False)
    for step in range(6):  # a refresh (exact) call, then fused calls with the stale threshold
        for reg in (compiled, eager):
            for p in reg.params:
                p.grad = None
            reg.add_grad_(1.0)
        assert compiled.compiled, "fell back to eager"
        got = [p.grad for p in compiled.params]
        assert rel_err(got, [p.grad for p in eager.params]) <= 1e-5
        if step % 4 == 0:
            assert rel_err(got, closed_formula_f64(compiled.params, 0.95)) <= 1e-5
        with torch.no_grad():
            for a, b in zip(compiled.params, eager.params):
                a -= 1e-3 * a.grad
                b.copy_(a)
