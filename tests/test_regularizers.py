import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.optim import optimizer as torch_optimizer

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
            for exact_p, lazy_p in zip(exact.params, lazy.params):
                exact_p -= 0.5 * exact_p.grad
                lazy_p.copy_(exact_p)
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


# -- weights that are already zero (docs/methods.md, "Weights that are already zero") ----------------------------------
def closed_formula_with_cut_f64(params, cut):
    """The HyperSparse gradient of the closed formula with a given cut, in float64 (zeros get 0: sign(0) = 0)."""
    w = torch.cat([p.detach().double().flatten() for p in params])
    a = w.abs()
    s = math.atanh(1 / math.sqrt(3)) / cut
    g = torch.sign(w) * s / torch.cosh(s * a) ** 2 * a.sum() / torch.tanh(s * a).sum()
    return list(g.split([p.numel() for p in params]))


def sparse_mlp(sparsity=0.9):
    model = make_mlp((60, 80, 10))
    hs.apply_masks_(model, hs.magnitude_masks(model, sparsity))
    return model


@pytest.mark.parametrize("kappa", [0.8, 0.9, 0.95])
@pytest.mark.parametrize("refresh_every", [1, 32])
def test_a_model_that_is_already_sparse_gets_a_finite_gradient_at_the_nearest_live_weight(kappa, refresh_every):
    """90 % of the weights are exact zeros. At kappa 0.8 and 0.9 the k-th smallest magnitude is 0: the cut moves to
    the smallest nonzero magnitude, the zeros get no gradient, the live weights the formula's; at 0.95 the cut is a
    live weight as usual. Every path agrees (fast, exact, autograd), and nothing is NaN."""
    model = sparse_mlp(0.9)
    reg = hs.HyperSparse(model, kappa, refresh_every=refresh_every)
    flat = torch.cat([p.detach().abs().flatten() for p in reg.params])
    k = math.floor(kappa * flat.numel())
    expected_cut = flat[flat > 0].min() if kappa <= 0.9 else flat.kthvalue(k).values
    assert float(reg.threshold()) == pytest.approx(float(expected_cut), rel=1e-6)
    for p in reg.params:
        p.grad = None
    reg.add_grad_(1.0)
    fast = [p.grad.clone() for p in reg.params]
    exact = closed_formula_with_cut_f64(reg.params, float(expected_cut))
    assert all(torch.isfinite(g).all() for g in fast)
    assert rel_err(fast, exact) <= 1e-5 and rel_err(autograd_of_loss(reg), exact) <= 1e-5
    zero = torch.cat([p.detach().flatten() == 0 for p in reg.params])
    assert torch.all(torch.cat([g.flatten() for g in fast])[zero] == 0)
    reg.add_grad_(1e-6)  # the fast path's second call reuses the cut: still finite
    assert all(torch.isfinite(p.grad).all() for p in reg.params)


def test_all_zero_weights_and_denormal_magnitudes_give_finite_gradients():
    zeros = [torch.zeros(10, 10, requires_grad=True)]
    reg = hs.HyperSparse(zeros, 0.5)
    reg.add_grad_(1.0)
    assert torch.equal(zeros[0].grad, torch.zeros(10, 10))
    tiny = torch.zeros(100)
    tiny[:3] = torch.tensor([1e-44, 3e-40, 2.0])  # denormals: s would overflow float32 at them
    tiny.requires_grad_()
    reg = hs.HyperSparse([tiny], 0.99)
    for strength in (1.0, 1e30):
        tiny.grad = None
        reg.add_grad_(strength)
        assert torch.isfinite(tiny.grad).all()
    assert torch.isfinite(reg.gradient()[0]).all()


def test_an_embedding_with_exact_zero_rows_is_regularized_without_nan():
    """A pretrained model whose embedding table holds zero rows (a padding index, unused tokens)."""
    emb = nn.Embedding(200, 16, padding_idx=0)
    with torch.no_grad():
        emb.weight[:150] = 0  # 75 % of the table is exactly zero
    head = nn.Linear(16, 4)
    model = nn.Sequential(emb, head)
    reg = hs.HyperSparse(model, 0.7, filter=lambda name, m: isinstance(m, (nn.Embedding, nn.Linear)))
    model(torch.randint(0, 200, (8, 5))).sum().backward()
    reg.add_grad_(1e-3)
    assert all(torch.isfinite(p.grad).all() for p in reg.params)
    assert float(reg.threshold()) > 0


def test_lambda_auto_and_art_run_on_a_model_that_is_already_sparse():
    """ART from a 90 %-sparse model at 0.8: lambda_init auto is set from the live weight at the cut, and a few
    regularization epochs train without NaN."""
    x, y = torch.randn(256, 60), torch.randint(0, 10, (256,))

    def acc(m):
        return float((m(x).argmax(1) == y).float().mean())

    for kappa in (0.8, 0.9, 0.95):
        model = hs.keep_pruned.strip_masks_(sparse_mlp(0.9))  # as a loaded checkpoint: its zeros, no mask installed
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        art = hs.ARTSchedule(hs.HyperSparse(model, kappa), warmup_epochs=0, lambda_init="auto", finetune_epochs=1)
        assert art.begin_epoch(0.1, 0.9, 4) is not None and 0 < art.lam < math.inf
        for _ in range(3):
            for xb, yb in zip(x.split(64), y.split(64)):
                opt.zero_grad()
                nn.functional.cross_entropy(model(xb), yb).backward()
                art.regularizer.add_grad_(art.lam)
                opt.step()
            assert all(torch.isfinite(p).all() for p in model.parameters())
            art.end_epoch(model, dense_acc=acc(model), pruned_acc=acc)


# -- the C pass (hypersparse.native) against PyTorch's -----------------------------------------------------------------
def _run_fast_path(reg, params, steps=40):
    for p in params:
        p.grad = torch.zeros_like(p)
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn(p.shape, generator=g) * 1e-3)  # weights move between steps, as in training
        reg.add_grad_(1e-4)
    return [p.grad.clone() for p in params]


def test_the_c_pass_gives_the_torch_pass_and_does_not_depend_on_the_thread_count():
    """The same 40 fast-path steps (refreshes included) in C and in PyTorch agree to 1e-5; in C the result is
    bit-identical with one and with two threads (block sums added in a fixed order)."""
    from hypersparse import native

    if native.hypersparse_kernel() is None:
        pytest.skip("no C compiler")
    grads = {}
    before = torch.get_num_threads()
    try:
        for kind, threads in (("torch", 1), ("c", 1), ("c", 2)):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            params = [torch.randn(300, 784) * 0.05, torch.randn(100, 300) * 0.1, torch.randn(10, 100) * 0.3]
            reg = hs.HyperSparse(params, 0.98, refresh_every=8, compile=None if kind == "c" else False)
            assert (reg._native is not None) == (kind == "c")
            grads[kind, threads] = _run_fast_path(reg, params)
    finally:
        torch.set_num_threads(before)
    assert rel_err(grads["c", 1], grads["torch", 1]) <= 1e-5
    assert all(torch.equal(a, b) for a, b in zip(grads["c", 1], grads["c", 2]))


def _train_steps(fused: bool, optimizer_cls, steps: int = 12, **opt_kwargs):
    """A LeNet-300 (fresh, seed 0) trained ``steps`` steps with HyperSparse through the driver-style call: the fused
    pass when ``fused`` (and it applies), else ``add_grad_`` then the step. Returns the model, what step_sgd_ said and
    the optimizer."""
    from hypersparse.models.lenet import LeNet300

    torch.manual_seed(0)
    model = LeNet300()
    opt = optimizer_cls(model.parameters(), **opt_kwargs)
    reg = hs.HyperSparse(model, 0.98, refresh_every=4)
    g = torch.Generator().manual_seed(1)
    said = []
    for _ in range(steps):
        x, y = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        took = reg.step_sgd_(opt, 1e-4) if fused else False
        said.append(took)
        if not took:
            reg.add_grad_(1e-4)
        opt.step()
    return model, said, opt


@pytest.mark.parametrize("momentum,weight_decay", [(0.9, 1e-4), (0.0, 1e-4), (0.9, 0.0)])
def test_the_fused_sgd_pass_takes_the_same_steps_as_add_grad_then_sgd(momentum, weight_decay):
    """HyperSparse's pass fused with SGD's step (the engine's regularization step) moves every parameter, biases
    included, as add_grad_ followed by optimizer.step() does, from the first step (no momentum buffer yet) on, with
    refreshes of the cut between. Tolerance: 12 steps of float32 rounding differences (the C pass and torch's SGD
    round a * b + c differently), far below one step's size (lr * |gradient| ~ 1e-3)."""
    from hypersparse import native

    if native.hypersparse_sgd_kernel() is None:
        pytest.skip("no C compiler")
    kwargs = dict(lr=0.1, momentum=momentum, weight_decay=weight_decay)
    fused, said, opt = _train_steps(True, torch.optim.SGD, **kwargs)
    plain, _, plain_opt = _train_steps(False, torch.optim.SGD, **kwargs)
    assert all(said)
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        assert (a - b).abs().max() <= 1e-6, name
    if momentum:
        for a, b in zip(fused.parameters(), plain.parameters()):
            buf_a, buf_b = opt.state[a]["momentum_buffer"], plain_opt.state[b]["momentum_buffer"]
            assert (buf_a - buf_b).abs().max() <= 1e-5


@pytest.mark.parametrize("case", ["adam", "nesterov", "hook", "subclass"])
def test_the_fused_pass_declines_an_optimizer_it_does_not_write_out_and_changes_nothing(case):
    """Adam, Nesterov momentum, an optimizer with a step hook (a mask's), or an SGD subclass: step_sgd_ returns False
    and leaves weights and gradients as they were, so the caller's add_grad_ + step runs as before."""
    from hypersparse.models.lenet import LeNet300

    torch.manual_seed(0)
    model = LeNet300()
    params = list(model.parameters())

    class MySGD(torch.optim.SGD):
        pass

    opt = {"adam": lambda: torch.optim.Adam(params, lr=1e-3),
           "nesterov": lambda: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True),
           "hook": lambda: torch.optim.SGD(params, lr=0.1, momentum=0.9),
           "subclass": lambda: MySGD(params, lr=0.1, momentum=0.9)}[case]()
    if case == "hook":
        opt.register_step_pre_hook(lambda *a: None)
    nn.functional.cross_entropy(model(torch.randn(8, 1, 28, 28)), torch.randint(0, 10, (8,))).backward()
    before = [(p.detach().clone(), p.grad.clone()) for p in params]
    assert hs.HyperSparse(model, 0.98).step_sgd_(opt, 1e-4) is False
    assert all(torch.equal(p, w) and torch.equal(p.grad, g) for p, (w, g) in zip(params, before))


def test_the_fused_pass_runs_beside_masks_on_another_model_and_a_global_hook_of_the_users_stops_it():
    """Masks anywhere in the process install the masks' global step hook, which only zeroes masked weights: the
    fused pass still runs for an unmasked model (the regularization step stays fast). A global hook of the user's
    may do anything, so the pass declines then."""
    from hypersparse import native

    if native.hypersparse_sgd_kernel() is None:
        pytest.skip("no C compiler")
    other = nn.Linear(8, 8)
    handle = hs.apply_masks_(other, hs.magnitude_masks(other, 0.5), torch.optim.SGD(other.parameters(), lr=0.1))
    try:
        _, said, _ = _train_steps(True, torch.optim.SGD, steps=3, lr=0.1, momentum=0.9)
        assert all(said)
        users = torch_optimizer.register_optimizer_step_post_hook(lambda *a: None)
        try:
            _, said, _ = _train_steps(True, torch.optim.SGD, steps=2, lr=0.1, momentum=0.9)
            assert not any(said)
        finally:
            users.remove()
    finally:
        handle.remove()


@pytest.mark.parametrize("momentum,weight_decay", [(0.9, 1e-4), (0.0, 1e-4), (0.9, 0.0)])
def test_sgd_in_c_takes_the_steps_torch_takes(momentum, weight_decay):
    """A dense epoch's step in C (the driver's, when no regularizer acts) moves every parameter as
    ``optimizer.step()`` does, over param groups of their own learning rates and a frozen layer, first step
    included; the same float tolerance as the fused pass's."""
    from hypersparse import native
    from hypersparse.models.lenet import LeNet300
    from hypersparse.regularizers import native_sgd_step_

    if native.sgd_kernel() is None:
        pytest.skip("no C compiler")

    def run(in_c: bool):
        torch.manual_seed(0)
        model = LeNet300()
        model[-1].weight.requires_grad_(False)  # frozen: no gradient, not stepped by either
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD([{"params": params[:2], "lr": 0.05}, {"params": params[2:]}], lr=0.1,
                              momentum=momentum, weight_decay=weight_decay)
        g = torch.Generator().manual_seed(1)
        took = []
        for _ in range(12):
            x, y = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            took.append(native_sgd_step_(opt) if in_c else False)
            opt.step()
        return model, opt, took

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread's work: above 128k entries, more threads leave the step to torch
    try:
        (a, opt_a, took), (b, opt_b, _) = run(True), run(False)
    finally:
        torch.set_num_threads(threads)
    assert all(took)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert (p - q).abs().max() <= 1e-6, name
        if momentum and p.requires_grad:
            assert (opt_a.state[p]["momentum_buffer"] - opt_b.state[q]["momentum_buffer"]).abs().max() <= 1e-5


def test_sgd_in_c_declines_what_it_does_not_write_out():
    """Adam, Nesterov, a step hook, a float64 parameter: native_sgd_step_ changes nothing and says so."""
    from hypersparse.regularizers import native_sgd_step_

    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    cases = [torch.optim.Adam(model.parameters()), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                                                                    nesterov=True)]
    hooked = torch.optim.SGD(model.parameters(), lr=0.1)
    hooked.register_step_pre_hook(lambda *a: None)
    cases.append(hooked)
    double = nn.Linear(4, 3).double()
    cases.append(torch.optim.SGD(double.parameters(), lr=0.1))
    for opt in cases:
        for p in (p for g in opt.param_groups for p in g["params"]):
            p.grad = torch.ones_like(p)
        before = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
        assert native_sgd_step_(opt) is False
        after = [p for g in opt.param_groups for p in g["params"]]
        assert all(torch.equal(p, q) and p.grad is not None for p, q in zip(after, before))


def test_adam_through_the_driver_step_still_gets_the_hypersparse_gradient():
    """The fallback: with Adam the fused pass declines, and the regularized run equals add_grad_ then Adam's step."""
    a, said, _ = _train_steps(True, torch.optim.Adam, steps=4, lr=1e-3)
    b, _, _ = _train_steps(False, torch.optim.Adam, steps=4, lr=1e-3)
    assert not any(said)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(values=st.lists(st.floats(0, 4, width=32), min_size=1, max_size=300), frac=st.floats(0, 1),
       near=st.one_of(st.floats(0, 5, width=32), st.just(float("inf"))), zeros=st.integers(0, 50))
def test_the_cut_found_near_the_last_one_is_the_exact_kth_smallest(values, frac, near, zeros):
    """The refresh looks for the new cut in a band around the last one; wherever that is (the band missing it, empty,
    or a model already sparse), the cut and its rank are those of a selection over every magnitude."""
    from hypersparse.regularizers import cut_magnitude

    flat = torch.tensor([0.0] * zeros + values, dtype=torch.float32)
    k = max(1, min(flat.numel(), round(frac * flat.numel())))
    exact, rank = cut_magnitude(flat, k)
    near_cut, near_rank = cut_magnitude(flat, k, near)
    assert torch.equal(exact, near_cut) and int(rank) == int(near_rank)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_frozen_layer_stays_where_it_is(momentum):
    """Trial 31c, N095: add_grad_ gave a frozen weight (requires_grad False) a .grad, so an optimizer over all
    parameters moved it. A frozen tensor still counts in the cut but gets no gradient, by either path."""
    from conftest import make_mlp

    torch.manual_seed(0)
    model = make_mlp((64, 32, 10))
    frozen = next(p for p in model.parameters() if p.dim() == 2)
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    reg = hs.HyperSparse(model, 0.9)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 64)).sum().backward()
        if not reg.step_sgd_(opt, 0.1):
            reg.add_grad_(0.1)
        opt.step()
    assert torch.equal(frozen, before) and frozen.grad is None
