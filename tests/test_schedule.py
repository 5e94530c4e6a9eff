import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F

import hypersparse as hs

from conftest import make_mlp, synthetic_problem


def accuracy_on(x, y):
    def acc(model):
        model.eval()
        with torch.no_grad():
            return (model(x).argmax(1) == y).float().mean().item()

    return acc


def run_art(model, opt, art, reg, x, y, stop_after=None, seed=0):
    """A plain training loop driven by ART; returns the events."""
    acc = accuracy_on(x, y)
    events = []
    while not art.done:
        if stop_after is not None and art.epoch == stop_after:
            return events
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1000 + art.epoch))
        model.train()
        correct = 0
        for idx in perm.split(64):
            opt.zero_grad()
            out = model(x[idx])
            correct += (out.argmax(1) == y[idx]).sum().item()
            F.cross_entropy(out, y[idx]).backward()
            if art.lam:
                reg.add_grad_(art.lam)
            opt.step()
        event = art.end_epoch(model, dense_acc=correct / len(x), pruned_acc=acc)
        if event == "stop":
            hs.apply_masks_(model, art.masks, opt)
        events.append(event)
    return events


def setup(seed=0):
    torch.manual_seed(seed)
    x, y = synthetic_problem(n=512, d=10, classes=3, seed=seed)
    model = make_mlp((10, 64, 64, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    reg = hs.HyperSparse(model, 0.9)
    art = hs.ARTSchedule(reg, warmup_epochs=3, lambda_init=1e-3, eta=1.3, max_reg_epochs=40, finetune_epochs=3)
    return x, y, model, opt, reg, art


def test_art_terminates_at_exact_sparsity_and_records_history():
    x, y, model, opt, reg, art = setup()
    events = run_art(model, opt, art, reg, x, y)
    assert events[:3] == ["warmup"] * 3
    assert "stop" in events and events[-3:] == ["finetune"] * 3
    n = reg.numel
    assert hs.sparsity_report(model).zeros == math.floor(0.9 * n)
    reg_rows = [h for h in art.history if h["phase"] == "regularize"]
    assert len(reg_rows) >= 3
    for i, row in enumerate(reg_rows):
        assert row["lambda"] == pytest.approx(1e-3 * 1.3**i)
        assert 0 <= row["pruned_acc"] <= 1 and 0 <= row["dense_acc"] <= 1
    # the chosen model is the middle of the last buffer of three
    assert art.chosen_epoch == reg_rows[-2]["epoch"]
    assert all(h["lambda"] == 0 for h in art.history if h["phase"] != "regularize")
    assert accuracy_on(x, y)(model) > 0.9


def test_resume_mid_regularization_gives_the_same_decisions():
    x, y, model, opt, reg, art = setup()
    run_art(model, opt, art, reg, x, y)
    reference = art.history
    assert any(h["phase"] == "regularize" for h in reference)

    x, y, model, opt, reg, art = setup()
    run_art(model, opt, art, reg, x, y, stop_after=5)  # 3 warm-up + 2 regularization epochs
    assert art.phase == "regularize" and art.reg_epochs == 2
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "art": art.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)

    x, y, model, opt, reg, art = setup(seed=0)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    art.load_state_dict(saved["art"])
    run_art(model, opt, art, reg, x, y)
    assert art.history == reference


def test_art_raises_when_it_never_converges():
    x, y, model, opt, reg, art = setup()
    art = hs.ARTSchedule(reg, warmup_epochs=0, lambda_init=1e-12, eta=1.0, max_reg_epochs=3)
    with pytest.raises(hs.ARTDidNotConverge,
                       match="raise lambda_init or eta, or allow more epochs with max_reg_epochs, or set a deadline"):
        for _ in range(5):
            art.end_epoch(model, dense_acc=1.0, pruned_acc=lambda m: 0.5)


def test_pruned_copy_is_scored_at_target_and_model_restored():
    model = make_mlp((10, 20, 3))
    reg = hs.HyperSparse(model, 0.8)
    art = hs.ARTSchedule(reg, warmup_epochs=0, max_layer_sparsity=1.0)  # no ceiling: the k smallest over all go
    before = copy.deepcopy(model.state_dict())
    seen = {}

    def score(m):
        seen["zeros"] = hs.sparsity_report(m).zeros
        return 0.1

    assert art.end_epoch(model, dense_acc=0.9, pruned_acc=score) == "regularize"
    assert seen["zeros"] == math.floor(0.8 * reg.numel)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the L1 share the pruned copy drops, measured on the dense weights: the k smallest magnitudes over all
    mags = torch.cat([p.detach().abs().flatten() for p in reg.params]).double().sort().values
    expected = float(mags[: math.floor(0.8 * reg.numel)].sum() / mags.sum())
    assert art.history[-1]["pruned_mass"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("regularizer,kwargs,match", [
    ("l1", {}, "sparsity="),
    ("l1", {"sparsity": 1.0}, "sparsity"),
    ("hs", {"sparsity": 0.8}, "one value"),
    ("l1", {"sparsity": 0.9, "lambda_init": -1}, "positive"),
    ("hs", {"finetune_epochs": 1.5}, r"finetune_epochs must be an integer >= 0, got 1.5"),  # trial 31d A217
    ("hs", {"finetune_epochs": -1}, r"finetune_epochs must be an integer >= 0"),
    ("hs", {"warmup_epochs": 2.5}, r"warmup_epochs must be an integer >= 0"),
])
def test_art_validates_settings(regularizer, kwargs, match):
    reg = hs.L1(make_mlp()) if regularizer == "l1" else hs.HyperSparse(make_mlp(), 0.9)
    with pytest.raises(ValueError, match=match):
        hs.ARTSchedule(reg, **kwargs)


def feed(art, model, pruned, dense=0.9):
    """Regularization epochs whose pruned copy scores the given accuracies; returns the lambda of each."""
    lams = []
    for acc in pruned:
        lams.append(art.lam)
        art.end_epoch(model, dense_acc=dense, pruned_acc=lambda m, a=acc: a)
    return lams


def test_eta_rises_only_when_progress_would_miss_the_target():
    model = make_mlp((10, 20, 3))
    # fixed eta (no target): the authors' lambda_init * eta**e, bit for bit
    art = hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3, eta=1.05)
    assert feed(art, model, [0.1] * 6) == [1e-3 * 1.05**e for e in range(6)]
    # a flat gap never closes: once target // 2 = 4 epochs and four gaps are known, the growth is multiplied by
    # eta each epoch
    art = hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3, eta=1.05, reg_epochs_target=8)
    lams = feed(art, model, [0.1] * 7)
    growths = [1.05, 1.05, 1.05, 1.05**2, 1.05**3, 1.05**4, 1.05**5]
    assert lams == pytest.approx([1e-3 * math.prod(growths[:e]) for e in range(7)], rel=1e-12)
    assert [h["eta"] for h in art.history] == pytest.approx(growths)
    # a gap closing 0.05 a epoch (0.8 ... 0.65) needs 0.65 / 4 epochs left = 0.1625 a epoch: the log-growth is scaled
    # by 0.1625 / 0.05; closing 0.2 a epoch (0.8 ... 0.2) is on time, so eta stays at its floor
    for pruned, last in (([0.1, 0.15, 0.2, 0.25], 1.05 ** 3.25), ([0.1, 0.3, 0.5, 0.7], 1.05)):
        art = hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3, eta=1.05,
                             reg_epochs_target=8, buffer_k=0)
        feed(art, model, pruned, dense=0.9)
        assert [h["eta"] for h in art.history] == pytest.approx([1.05, 1.05, 1.05, last], rel=1e-12)
    # the growth comes back down once the gap closes fast enough (no wind-up)
    art = hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3, eta=1.05, reg_epochs_target=8,
                         buffer_k=0)
    feed(art, model, [0.1, 0.1, 0.1, 0.1, 0.1, 0.4, 0.7], dense=0.9)
    etas = [h["eta"] for h in art.history]
    assert etas[3:5] == pytest.approx([1.05**2, 1.05**3]) and etas[6] < etas[5]
    # and the growth is capped: from target // 2 = 5 epochs on, 1.2**2, then 1.5 instead of 1.2**3
    art = hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3, eta=1.2, reg_epochs_target=10)
    feed(art, model, [0.1] * 9)
    assert [h["eta"] for h in art.history] == pytest.approx([1.2] * 4 + [1.44] + [hs.schedule.ETA_MAX] * 4)
    # a gap that closes by a hair asks for a growth of 1.05**(~1e13): capped, not an OverflowError
    art = hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3, eta=1.05, reg_epochs_target=8,
                         buffer_k=0)
    feed(art, model, [0.1, 0.1 + 1e-14, 0.1 + 2e-14, 0.1 + 3e-14], dense=0.9)
    assert art.history[-1]["eta"] == hs.schedule.ETA_MAX
    # a base eta above the cap (e.g. from --epochs-scale) is never lowered
    art = hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3, eta=2.0, reg_epochs_target=10)
    feed(art, model, [0.1] * 9)
    assert [h["eta"] for h in art.history] == [2.0] * 9


def test_deadline_keeps_the_buffers_middle_model_when_the_rule_has_not_held():
    torch.manual_seed(0)
    model = make_mlp((10, 20, 3))
    art = hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3, eta=1.05, reg_epochs_target=5,
                         finetune_epochs=2)
    states, events = [], []
    # buffer mean at the deadline (0.5 + 0.55 + 0.6) / 3 = 0.55: (0.55 - 0.1) / (0.9 - 0.1) = 56 % of the way
    for acc in (0.1, 0.3, 0.5, 0.55, 0.6):
        with torch.no_grad():  # every epoch leaves other weights, so the chosen epoch can be told apart
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        states.append(copy.deepcopy(model.state_dict()))
        events.append(art.end_epoch(model, dense_acc=0.9, pruned_acc=lambda m, a=acc: a))
    assert events == ["regularize"] * 4 + ["stop"]
    assert art.stop_reason == "deadline" and art.history[-1]["stop_reason"] == "deadline"
    assert art.chosen_epoch == 3 and art.phase == "finetune"  # the buffer held epochs 2, 3, 4
    want = hs.magnitude_masks([states[3][n] for n in art.masks], 0.8)
    n = sum(m.numel() for m in art.masks.values())
    assert sum(int(m.sum()) for m in art.masks.values()) == n - math.floor(0.8 * n)
    for (name, mask), m in zip(art.masks.items(), want.values()):
        assert torch.equal(mask, m)
    for name, p in model.named_parameters():
        assert torch.equal(p, states[3][name] * art.masks[name] if name in art.masks else states[3][name])
    # the rule still wins when it holds first
    model = make_mlp((10, 20, 3))
    art = hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3, reg_epochs_target=5)
    assert [art.end_epoch(model, 0.9, lambda m: 0.95) for _ in range(3)] == ["regularize", "regularize", "stop"]
    assert art.stop_reason == "rule" and art.history[-1]["stop_reason"] == "rule"
    # a pruned copy that has not come half-way is not cut at the deadline: regularization goes on until it has
    assert hs.schedule.DEADLINE_PROGRESS == 0.5
    model = make_mlp((10, 20, 3))
    art = hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3, reg_epochs_target=5)
    feed(art, model, [0.1, 0.1, 0.1, 0.1, 0.1, 0.5, 0.5])
    assert art.phase == "regularize" and [h.get("past_deadline") for h in art.history[:4]] == [None] * 4
    assert [h["past_deadline"] for h in art.history[4:]] == pytest.approx([0.0, 1 / 6, 1 / 3], abs=1e-12)
    assert art.end_epoch(model, 0.9, lambda m: 0.5) == "stop" and art.stop_reason == "deadline"  # (0.5 - 0.1) / 0.8
    # without a target there is no deadline
    art = hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3)
    feed(art, model, [0.1] * 40)
    assert art.phase == "regularize" and art.stop_reason is None
    with pytest.raises(ValueError, match="buffer size 3"):
        hs.ARTSchedule(hs.HyperSparse(make_mlp(), 0.8), warmup_epochs=0, reg_epochs_target=2)


def test_adapted_eta_resumes_exactly():
    # the cut falls after eta has adapted once (epoch 4) and the run ends at the deadline (epoch 6)
    pruned = [0.1, 0.2, 0.4, 0.5, 0.6, 0.7, 0.75]
    torch.manual_seed(0)
    first = make_mlp((10, 20, 3))

    def make():
        model = copy.deepcopy(first)  # the deadline prunes the model: each run gets its own copy
        return model, hs.ARTSchedule(hs.HyperSparse(model, 0.8), warmup_epochs=0, lambda_init=1e-3, eta=1.05,
                                     reg_epochs_target=6)

    model, whole = make()
    want = feed(whole, model, pruned)
    assert whole.stop_reason == "deadline" and whole.history[3]["eta"] > 1.05  # adapted before the cut
    model, cut = make()
    feed(cut, model, pruned[:4])
    buf = io.BytesIO()
    torch.save(cut.state_dict(), buf)
    buf.seek(0)
    resumed_model, resumed = make()
    resumed_model.load_state_dict(model.state_dict())
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    assert feed(resumed, resumed_model, pruned[4:]) == want[4:]
    assert resumed.history == whole.history and resumed.stop_reason == "deadline"
    assert resumed.masks.keys() == whole.masks.keys()
    assert all(torch.equal(resumed.masks[k], whole.masks[k]) for k in whole.masks)


def test_auto_lambda_by_push_matches_the_closed_formula():
    import math

    from hypersparse.regularizers import L1, HyperSparse
    from hypersparse.schedule import lambda_for_push

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    w = torch.cat([model[0].weight.detach().abs().flatten(), model[2].weight.detach().abs().flatten()]).double()
    kappa, push, lr, m, steps = 0.9, 0.02, 0.1, 0.9, 50
    cut = w.sort().values[math.floor(kappa * w.numel()) - 1]  # the k-th smallest magnitude
    # HyperSparse at the cut: s |w| = artanh(1/sqrt 3), so sech^2 = 2/3 and g = s (2/3) ||w||_1 / sum tanh(s|w|)
    s = math.atanh(1 / math.sqrt(3)) / cut
    g = s * (2 / 3) * w.sum() / torch.tanh(s * w).sum()
    want = push * (1 - m) / (lr * steps * float(g / cut))
    assert lambda_for_push(HyperSparse(model, kappa), kappa, push, lr, m, steps) == pytest.approx(want, rel=1e-6)
    # L1's gradient is 1 everywhere: lambda * steps * lr / (1 - m) = push * |w|_(k)
    want = push * (1 - m) * float(cut) / (lr * steps)
    assert lambda_for_push(L1(model), kappa, push, lr, m, steps) == pytest.approx(want, rel=1e-9)


def test_auto_lambda_is_set_by_begin_epoch_and_refuses_bad_forms_and_an_already_sparse_model():
    from hypersparse.errors import UserError
    from hypersparse.regularizers import HyperSparse
    from hypersparse.schedule import lambda_for_push

    model = torch.nn.Linear(10, 10)
    art = hs.ARTSchedule(HyperSparse(model, 0.5), warmup_epochs=0, lambda_init="auto:0.04")
    with pytest.raises(RuntimeError, match="call begin_epoch"):
        art.lam
    note = art.begin_epoch(lr=0.1, momentum=0.9, steps_per_epoch=10)
    assert art.lam == lambda_for_push(art.regularizer, 0.5, 0.04, 0.1, 0.9, 10) and "0.04 per epoch" in note
    for bad in ("auto:1", "auto:-0.1", "auto:x", "automatic"):
        with pytest.raises(ValueError, match="lambda_init must be"):
            hs.ARTSchedule(HyperSparse(model, 0.5), lambda_init=bad)
    with torch.no_grad():
        model.weight[:, :5] = 0  # half the weights are zero: the k-th smallest magnitude at 0.3 is a zero
    # the cut moves to the smallest weight still alive, so auto works on a model that is sparse already
    alive = model.weight.detach().abs()[model.weight != 0]
    reg = HyperSparse(model, 0.3)
    g = reg.gradient()[0].abs()[model.weight.detach().abs() == alive.min()][0]
    want = 0.02 * (1 - 0.9) / (0.1 * 10 * float(g / alive.min()))
    assert lambda_for_push(reg, 0.3, 0.02, 0.1, 0.9, 10) == pytest.approx(want, rel=1e-5)
    with torch.no_grad():
        model.weight.zero_()
    with pytest.raises(UserError, match="every prunable weight is zero.*--lambda-init"):
        lambda_for_push(HyperSparse(model, 0.3), 0.3, 0.02, 0.1, 0.9, 10)


def test_lambdas_start_has_one_name_and_one_default_and_the_old_names_still_work():
    from hypersparse.config import ARTConfig
    from hypersparse.schedule import LAMBDA_INIT

    art = hs.ARTSchedule(hs.HyperSparse(make_mlp(), 0.9))
    driver = hs.ARTDriver(0.9)
    assert art.lambda_init == ARTConfig().lambda_init == driver.options["lambda_init"] == LAMBDA_INIT == 5e-6
    with pytest.warns(DeprecationWarning, match="lambda_init"):
        assert art.lambda_0 == art.lambda_init
    assert hs.ART is hs.ARTSchedule
    # the checkpoint keeps its key: a state written before the rename loads
    state = art.state_dict()
    assert state["lambda_0"] == LAMBDA_INIT and "lambda_init" not in state
    other = hs.ARTSchedule(hs.HyperSparse(make_mlp(), 0.9), lambda_init="auto")
    other.load_state_dict(state)
    assert other.lambda_init == LAMBDA_INIT


def test_load_state_dict_of_something_else_names_what_is_missing():
    """Trial 31e E089: a state that is not an ARTSchedule's gave KeyError 'epoch' deep inside."""
    art = hs.ARTSchedule(hs.HyperSparse(make_mlp(), 0.5), sparsity=0.5)
    with pytest.raises(ValueError, match="lacks epoch"):
        art.load_state_dict({"x": 1})
    with pytest.raises(TypeError, match="state_dict"):
        art.load_state_dict([1])
