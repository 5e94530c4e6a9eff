import copy
import math

import pytest
import torch
from torch import nn

import hypersparse as hs
from hypersparse import apply_masks_, magnitude_masks
from hypersparse.keep_pruned import has_masks
from hypersparse.models import create_model

from conftest import Nudge, make_convnet, make_mlp

SPARSITIES = [0, 0.5, 0.9, 0.98, 0.995, 0.998]


def zeros(model):
    return hs.sparsity_report(model).zeros


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_global_mask_zeroes_exactly_floor_kappa_n(sparsity):
    model = make_mlp((100, 60, 30, 10))
    n = sum(p.numel() for _, p in hs.prunable_parameters(model))
    masks = hs.magnitude_masks(model, sparsity)
    assert sum(int((~m).sum()) for m in masks.values()) == math.floor(sparsity * n + 1e-9)
    hs.apply_masks_(model, masks)
    assert zeros(model) == math.floor(sparsity * n + 1e-9)


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_exact_count_with_many_ties(sparsity):
    torch.manual_seed(0)
    model = make_mlp((100, 60, 30, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-3, 4, p.shape).float() * 0.25)  # 7 distinct values, many zeros
    n = sum(p.numel() for _, p in hs.prunable_parameters(model))
    masks = hs.magnitude_masks(model, sparsity)
    assert sum(int((~m).sum()) for m in masks.values()) == math.floor(sparsity * n + 1e-9)
    # deterministic: the same masks twice
    again = hs.magnitude_masks(model, sparsity)
    assert all(torch.equal(masks[k], again[k]) for k in masks)
    # every kept weight is at least as large as every pruned one
    kept = torch.cat([p.detach().abs()[masks[n_]] for n_, p in hs.prunable_parameters(model)])
    pruned = torch.cat([p.detach().abs()[~masks[n_]] for n_, p in hs.prunable_parameters(model)])
    if kept.numel() and pruned.numel():
        assert kept.min() >= pruned.max()


def test_layer_scope_prunes_each_layer():
    model = make_convnet()
    masks = hs.magnitude_masks(model, 0.9, scope="layer")
    for name, p in hs.prunable_parameters(model):
        assert int((~masks[name]).sum()) == math.floor(0.9 * p.numel() + 1e-9)
    with pytest.raises(ValueError, match="scope"):
        hs.magnitude_masks(model, 0.9, scope="neuron")


def test_parameter_list_and_filter():
    model = make_convnet()
    only_linear = hs.prunable_parameters(model, filter=lambda name, m: isinstance(m, nn.Linear))
    assert [n for n, _ in only_linear] == ["7.weight"]
    w = torch.randn(10, 10)
    masks = hs.magnitude_masks([w], 0.9)
    assert list(masks) == ["0"] and int(masks["0"].sum()) == 10


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-1),
    ],
)
def test_pruned_weights_stay_zero_through_optimizer_steps(make_opt):
    model = make_mlp((20, 30, 5))
    opt = make_opt(model.parameters())
    x, y = torch.randn(64, 20), torch.randint(0, 5, (64,))
    for _ in range(5):  # build up momentum / Adam moments while dense
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    masks = hs.magnitude_masks(model, 0.9)
    expected = sum(int((~m).sum()) for m in masks.values())
    hs.apply_masks_(model, masks, opt)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        for name, p in hs.prunable_parameters(model):
            assert torch.all(p[~masks[name]] == 0)
    assert zeros(model) == expected


def test_without_optimizer_reapply_keeps_zeros():
    model = make_mlp((20, 30, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.5))
    expected = zeros(model)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 20)).sum().backward()
        opt.step()
        handle.reapply_()
    assert zeros(model) == expected
    handle.remove()


def _new_sgd(model, first):  # a new optimizer for fine-tuning, made after masking
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _new_adam(model, first):
    return torch.optim.Adam(model.parameters(), lr=0.05)


def _the_first_after_a_second_apply(model, first):  # the masks applied again with another optimizer
    hs.apply_masks_(model, hs.masks_from_zeros(model), torch.optim.SGD(model.parameters(), lr=0.1))
    return first


def _unknown(model, first):
    return Nudge(model.parameters())


@pytest.mark.parametrize("other", [_new_sgd, _new_adam, _the_first_after_a_second_apply, _unknown])
@pytest.mark.parametrize("with_optimizer", [False, True])
def test_an_optimizer_the_handle_does_not_name_keeps_the_zeros(other, with_optimizer):
    """Trial 31d's S1: masks applied with optimizer o1 (or with none), then another optimizer steps the weights, or
    o1 after a second apply_masks_ took them over: the pruned weights stay exactly zero after every step, with no
    reapply_ (sparsity went from 89.6 % to 18.75 % in 4 steps)."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    first = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    masks = hs.magnitude_masks(model, 0.9)
    handle = hs.apply_masks_(model, masks, first if with_optimizer else None)
    expected = zeros(model)
    opt = other(model, first)
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(4, 8)).sum().backward()
        opt.step()
        assert zeros(model) == expected
    handle.remove()


def _steps(model, opt, n=3, x=None):
    for _ in range(n):
        opt.zero_grad()
        model(torch.randn(4, 8) if x is None else x).sum().backward()
        opt.step()


def test_a_handle_the_caller_drops_still_keeps_the_zeros():
    """Trial 31e S1/S2: the returned handle not kept (as the README's masks_from_zeros line does), the first
    optimizer replaced and collected: the model carries its handle, so a new optimizer, or one whose momentum predates
    the mask, cannot revive a pruned weight."""
    import gc

    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    hs.apply_masks_(model, hs.magnitude_masks(model, 0.9), torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9))
    expected = zeros(model)
    gc.collect()  # the first optimizer is gone
    _steps(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    assert zeros(model) == expected

    model = make_mlp((8, 16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    _steps(model, opt)  # momentum of every weight, dense
    with torch.no_grad():
        for name, keep in hs.magnitude_masks(model, 0.9).items():
            model.get_parameter(name).mul_(keep)
    hs.apply_masks_(model, hs.masks_from_zeros(model))
    gc.collect()
    expected = zeros(model)
    _steps(model, opt)
    assert zeros(model) == expected


@pytest.mark.parametrize("make_opt", [None, lambda ps: torch.optim.SGD(ps, lr=0.5),
                                      lambda ps: torch.optim.Adagrad(ps, lr=0.5),
                                      lambda ps: torch.optim.SparseAdam(ps, lr=0.5)])
def test_sparse_gradients_cannot_revive_pruned_entries(make_opt):
    """Trial 31e S3: an Embedding(sparse=True) gives sparse gradients; masked with its optimizer, with none, or
    stepped by one the handle does not name, its pruned entries stay zero (and the gradient hook takes them)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 4, sparse=True))
    keep = torch.rand(20, 4) > 0.5
    opt = make_opt(list(model.parameters())) if make_opt else None
    hs.apply_masks_(model, {"0.weight": keep}, opt)
    other = opt or torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        other.zero_grad()
        model(torch.arange(20)).sum().backward()
        other.step()
    assert torch.all(model[0].weight.detach()[~keep] == 0) and bool(model[0].weight.detach()[keep].ne(0).all())


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_loading_the_optimizers_state_after_masking_keeps_the_zeros(kind):
    """Trial 31e S4, the resume pattern: masks applied with an optimizer, then that optimizer's dense state loaded
    (momentum or moments for pruned weights): the state is masked again, and no step revives a weight."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    make = {"sgd": lambda: torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9),
            "adam": lambda: torch.optim.Adam(model.parameters(), lr=0.05)}[kind]
    dense = make()
    _steps(model, dense)
    saved = dense.state_dict()
    opt = make()
    hs.apply_masks_(model, hs.magnitude_masks(model, 0.9), opt)
    expected = zeros(model)
    opt.load_state_dict(saved)
    _steps(model, opt)
    assert zeros(model) == expected


def test_an_unhashable_optimizer_steps_while_masks_exist():
    """Trial 31e E031: an optimizer class with __eq__ (so not hashable) on an unrelated model steps as it would
    without masks anywhere."""

    class EqSGD(torch.optim.SGD):
        def __eq__(self, other):
            return self is other

    masked = make_mlp((8, 16, 4))
    handle = hs.apply_masks_(masked, hs.magnitude_masks(masked, 0.9))
    model = make_mlp((8, 16, 4))
    before = [p.detach().clone() for p in model.parameters()]
    _steps(model, EqSGD(model.parameters(), lr=0.1), n=1)
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))
    handle.remove()


def test_functional_call_on_a_masked_model_leaves_the_callers_tensors_alone():
    """Trial 31e S5: torch.func.functional_call(masked, other_params) ran the masks' keeper on the caller's
    tensors, zeroing another model's weights in place. The masked model's own weights stay masked."""
    torch.manual_seed(0)
    student, teacher = make_mlp((8, 16, 4)), make_mlp((8, 16, 4))
    handle = hs.apply_masks_(student, hs.magnitude_masks(student, 0.9))
    before = [p.detach().clone() for p in teacher.parameters()]
    expected = zeros(student)
    torch.func.functional_call(student, dict(teacher.named_parameters()), (torch.randn(2, 8),))
    assert all(torch.equal(p, q) for p, q in zip(teacher.parameters(), before))
    assert zeros(student) == expected
    # strict=True asks for every buffer: docs/methods.md says to pass the model's own (the masks among them) along
    x = torch.randn(2, 8)
    out = torch.func.functional_call(student, {**dict(student.named_parameters()), **dict(student.named_buffers())},
                                     (x,), strict=True)
    assert torch.equal(out, student(x))
    handle.remove()


def test_masks_applied_under_inference_mode_train_outside_it():
    """Trial 31e E120: masks made under torch.inference_mode() could not be read by training outside it."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    with torch.inference_mode():
        handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    expected = zeros(model)
    _steps(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    assert zeros(model) == expected
    handle.remove()


def test_a_mask_on_the_meta_device_is_a_value_error():
    model = make_mlp((8, 16, 4))
    with pytest.raises(ValueError, match="meta device"):
        hs.apply_masks_(model, {"0.weight": torch.ones(16, 8, dtype=torch.bool, device="meta")})


def test_a_copys_zeros_survive_any_optimizer():
    """A deepcopy carries its masks without a handle; an unknown optimizer on the copy cannot revive them."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    twin = copy.deepcopy(model)
    expected = zeros(twin)
    _steps(twin, Nudge(twin.parameters()))
    assert zeros(twin) == expected
    handle.remove()


def test_mask_name_mismatch_is_an_error():
    model = make_mlp()
    with pytest.raises(ValueError, match="nope"):
        hs.apply_masks_(model, {"nope": torch.ones(3, dtype=torch.bool)})


def test_a_mask_on_a_buffer_is_refused_since_the_module_writes_it():
    """Trial 31g A020: BatchNorm's running_mean was accepted as a mask target and came back nonzero after one forward
    in train mode: a mask cannot hold what the module itself overwrites."""
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="'1.running_mean', a buffer"):
        hs.apply_masks_(model, {"1.running_mean": torch.tensor([True, False, True, False])})
    assert not hasattr(model[1], "running_mean_mask")


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.out = nn.Embedding(10, 6), nn.Linear(6, 10, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, x):
        return self.out(self.embed(x))


def test_a_tied_tensor_takes_one_mask_under_both_names():
    """Trial 31e E044: two different masks for one tied tensor were silently combined."""
    torch.manual_seed(0)
    model = _Tied()
    first = torch.rand(10, 6) > 0.5
    with pytest.raises(ValueError, match="'embed.weight' and 'out.weight' differ, but they name one tied tensor"):
        hs.apply_masks_(model, {"embed.weight": first, "out.weight": ~first})
    handle = hs.apply_masks_(model, {"embed.weight": first, "out.weight": first.clone()})
    assert torch.equal(model.embed.weight != 0, first)
    handle.remove()


def test_a_scripted_model_is_refused_with_what_to_do():
    """Trial 31e E114: a TorchScript model was said to have no Linear or Conv layer."""
    scripted = torch.jit.script(make_mlp((8, 16, 4)))
    for call in (lambda: hs.magnitude_masks(scripted, 0.9),
                 lambda: hs.apply_masks_(scripted, {"0.weight": torch.ones(16, 8, dtype=torch.bool)})):
        with pytest.raises(TypeError, match="scripted model .* prune the eager model, then script it"):
            call()


def test_masks_for_a_layer_the_filter_leaves_out_say_so():
    """Trial 31e E153: the error said the model lacked a layer it has; the filter had left it out."""
    model = make_mlp((8, 16, 4))
    masks = hs.magnitude_masks(model, 0.5)
    with pytest.raises(ValueError, match=r"the filter leaves out: \['2.weight'\]"):
        hs.apply_masks_(model, masks, filter=hs.Exclude(["2"]))


def test_a_parametrization_added_after_masking_is_an_error_not_a_silent_revival():
    """Trial 31e E136: weight_norm added after masking recomputed the weight from new tensors at every forward, and
    31 of 109 pruned entries came back. Parametrized weights are refused when masked; added later, at the forward."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    nn.utils.parametrizations.weight_norm(model[0])
    with pytest.raises(ValueError, match="recomputed from other tensors since .* undo that"):
        model(torch.randn(2, 8))
    handle.remove()
    model(torch.randn(2, 8))  # without masks, the parametrized model is the user's to train


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_a_state_loaded_with_assign_keeps_the_zeros_under_a_new_optimizer(with_optimizer):
    """Trial 31f S2: load_state_dict(assign=True) puts new tensors in the modules; the keeper took them for
    functional_call's stand-ins and left them unmasked, so a new optimizer revived 160 of 172 pruned weights."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9), opt if with_optimizer else None)
    expected = zeros(model)
    dense = {k: v + 1 for k, v in make_mlp((8, 16, 4)).state_dict().items()}
    model.load_state_dict(dense, assign=True)
    assert zeros(model) == expected
    _steps(model, torch.optim.Adam(model.parameters(), lr=0.1), n=4)
    assert zeros(model) == expected
    handle.remove()
    assert not has_masks(model)


def test_a_weight_replaced_by_hand_is_masked_when_an_optimizer_steps_it():
    """A new Parameter put in a masked module (here by hand; remove_parametrizations(leave_parametrized=True) does
    the same) is in no registry while the handle's optimizer holds the old one; the module's mask is still its."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9), opt)
    keep = model[0].weight_mask.clone()
    model[0].weight = nn.Parameter(model[0].weight.detach() * keep)  # its zeros, as a new tensor
    _steps(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), n=4)
    assert (model[0].weight[~keep] == 0).all()
    handle.remove()


def test_an_optimizers_parameter_list_changed_in_place_is_read_again():
    """Trial 31e E016, 31f V001: an optimizer whose list was filled in place with another masked model's tensors (as
    many as before) kept its first lookup, and 160 pruned weights came back."""
    torch.manual_seed(0)
    a, b = make_mlp((8, 16, 4)), make_mlp((8, 16, 4))
    handles = [hs.apply_masks_(m, hs.magnitude_masks(m, 0.9)) for m in (a, b)]
    opt = Nudge(a.parameters())
    _steps(a, opt, n=1)
    expected = zeros(b)
    opt.param_groups[0]["params"][:] = list(b.parameters())
    _steps(b, opt, n=3)
    assert zeros(b) == expected
    for h in handles:
        h.remove()


@pytest.mark.parametrize("recompute", ["weight_norm (hooks)", "torch prune"])
def test_a_hook_that_recomputes_a_masked_weight_later_is_an_error(recompute):
    """Trial 31f S3: torch.nn.utils.weight_norm (the hook form) added after masking revived every pruned weight of
    the layer; torch.nn.utils.prune after masking replaced the mask's buffer, which remove() then took from prune."""
    import warnings

    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the hook form is deprecated, and still shipped
        if recompute == "torch prune":
            nn.utils.prune.l1_unstructured(model[0], "weight", 0.3)
        else:
            nn.utils.weight_norm(model[0])
    with pytest.raises(ValueError, match="recomputed from other tensors since"):
        model(torch.randn(2, 8))
    handle.remove()
    model(torch.randn(2, 8)).sum().backward()  # torch's own machinery, and its buffers, as torch left them
    if recompute == "torch prune":
        assert hasattr(model[0], "weight_mask")


def test_a_buffer_of_the_masks_name_that_is_not_ours_is_refused_and_left_alone():
    """Trial 31f A060: a module's own persistent buffer 'weight_mask' was replaced without a word, and deleted by
    remove()."""
    model = make_mlp((8, 16, 4))
    mine = torch.ones(16, 8)
    model[0].register_buffer("weight_mask", mine)
    with pytest.raises(ValueError, match="already has a 'weight_mask'"):
        hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    assert model[0].weight_mask is mine and not has_masks(model)


def test_load_sparse_into_a_masked_model_is_refused(tmp_path):
    """Trial 31f S4: load_sparse promises the file's weights bit for bit; a model masked earlier zeroed 18 of them."""
    torch.manual_seed(0)
    source, target = make_mlp((8, 16, 4)), make_mlp((8, 16, 4))
    hs.apply_masks_(source, hs.magnitude_masks(source, 0.5))
    hs.save_sparse(source, tmp_path / "m.safetensors")
    handle = hs.apply_masks_(target, hs.magnitude_masks(target, 0.9))
    with pytest.raises(ValueError, match="carries masks"):
        hs.load_sparse(tmp_path / "m.safetensors", model=target)
    handle.remove()
    loaded = hs.load_sparse(tmp_path / "m.safetensors", model=target)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values()))


def test_sparsity_report_counts_and_prints():
    model = make_mlp((10, 10, 2), bias=False)
    with torch.no_grad():
        model[0].weight[:5] = 0
    report = hs.sparsity_report(model)
    assert report.numel == 120 and report.zeros == 50
    assert [layer.zeros for layer in report.layers] == [50, 0]
    text = str(report)
    assert "0.weight" in text and "total" in text and "41.67%" in text


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), "half", None])
def test_masks_reject_bad_sparsity(bad):
    with pytest.raises(ValueError, match="sparsity"):
        hs.magnitude_masks(make_mlp(), bad)


def test_pruned_mass_is_the_removed_share_of_the_l1_norm():
    a = torch.tensor([[0.5, -1.0], [2.0, -0.25]])
    b = torch.tensor([-4.0, 0.25])
    masks = hs.magnitude_masks([a, b], 0.5)  # drops the 3 smallest: -0.25, 0.25, 0.5 of a total of 8
    assert hs.masks.pruned_mass([a, b], masks) == pytest.approx(1.0 / 8.0, rel=1e-12)
    assert hs.masks.pruned_mass([a, b], hs.magnitude_masks([a, b], 0.0)) == 0.0
    zeros = [torch.zeros(2, 2), torch.zeros(2)]
    assert hs.masks.pruned_mass(zeros, hs.magnitude_masks(zeros, 0.5)) == 0.0
    with pytest.raises(ValueError, match="does not have"):
        hs.masks.pruned_mass([a], masks)


def _revived(model, masks, steps=50) -> int:
    """Pruned weights that are not zero after ``steps`` of SGD with momentum and weight decay on ``model``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = model(torch.randn(8, 20, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = dict(model.named_parameters())
    return sum(int((params[n].detach()[~m] != 0).sum()) for n, m in masks.items())


def _masked_mlp():
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    masks = magnitude_masks(model, 0.8)
    apply_masks_(model, masks)
    return model, masks


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save", "state_dict+apply", "state_dict+load"])
def test_masks_travel_with_the_model(how, tmp_path):
    import copy
    import pickle

    from hypersparse.masks import masks_from_zeros

    model, masks = _masked_mlp()
    unmasked = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5)).requires_grad_()
    assert _revived(unmasked, masks) > 0  # the check can fail: an unmasked model does revive them
    assert set(model.state_dict()) == set(unmasked.state_dict())  # the README: a state_dict carries no mask
    if how == "deepcopy":
        other = copy.deepcopy(model)
    elif how == "pickle":
        other = pickle.loads(pickle.dumps(model))
    elif how == "torch.save":
        torch.save(model, tmp_path / "m.pt")
        other = torch.load(tmp_path / "m.pt", weights_only=False)  # our own file, in a test
    else:
        torch.save(model.state_dict(), tmp_path / "m.pt")
        other = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
        state = torch.load(tmp_path / "m.pt", weights_only=True)
        if how == "state_dict+apply":  # the file's zeros are its mask
            other.load_state_dict(state)
            apply_masks_(other, masks_from_zeros(other))
        else:  # masks applied to the fresh model first, then a dense state loaded into it: still masked
            apply_masks_(other, masks)
            other.load_state_dict({k: v + 1 for k, v in state.items()})
    assert _revived(other, masks) == 0


@pytest.mark.parametrize("how", ["deepcopy", "torch.save"])
def test_a_model_that_keeps_its_handle_as_an_attribute_copies_and_the_original_stays_masked(how, tmp_path):
    """Trial 31e B007: torch.save of a model holding its MaskHandle failed ("cannot pickle weakref"). The copy's
    handle owns nothing (its masks travel as buffers), and removing it leaves the original's enforcement alone."""
    model = make_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    masks = magnitude_masks(model, 0.8)
    model.handle = apply_masks_(model, masks, optimizer)
    if how == "deepcopy":
        other = copy.deepcopy(model)
    else:
        torch.save(model, tmp_path / "m.pt")
        other = torch.load(tmp_path / "m.pt", weights_only=False)  # our own file, in a test
    assert other.handle.masks == {}
    other.handle.remove()
    for net, opt in ((model, optimizer), (other, torch.optim.SGD(other.parameters(), lr=0.5, momentum=0.9))):
        for _ in range(3):
            opt.zero_grad()
            net(torch.randn(8, 8)).pow(2).mean().backward()
            opt.step()
        params = dict(net.named_parameters())
        assert all(not params[n].detach()[~m].any() for n, m in masks.items())


def test_half_after_masking_trains():
    model, masks = _masked_mlp()
    model.half()
    model(torch.randn(4, 20).half()).float().pow(2).mean().backward()
    assert model[0].weight.grad.dtype == torch.float16
    assert (model[0].weight.grad[~masks["0.weight"]] == 0).all()


@pytest.fixture
def swapping_conversions():
    """torch's future behaviour, where ``.half()``/``.to()`` swap each tensor's contents in place (swap_tensors)."""
    torch.__future__.set_swap_module_params_on_conversion(True)
    yield
    torch.__future__.set_swap_module_params_on_conversion(False)


@pytest.mark.parametrize("holder", ["optimizer", "no optimizer", "copy"])
def test_a_conversion_that_swaps_tensors_keeps_the_mask(swapping_conversions, holder):
    """Trial 31e E105: swap_tensors refuses a tensor with a weak reference, and the masks held some. After the swap
    the gradient hook of a tensor without an optimizer stays with its old contents, so it is hooked again."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9), opt if holder == "optimizer" else None)
    if holder == "copy":
        model = copy.deepcopy(model)
        model(torch.randn(2, 8))  # the copy's keeper covers its tensors (zeros and gradient hooks)
    expected = zeros(model)
    weight = model[0].weight
    model.double()
    assert model[0].weight is weight and weight.dtype == torch.float64  # swapped in place, not replaced
    if holder != "optimizer":
        model(torch.randn(4, 8, dtype=torch.float64)).sum().backward()
        assert (weight.grad[weight == 0] == 0).all()
        opt = Nudge(model.parameters())  # moves every weight its gradient does not hold at zero
    _steps(model, opt, x=torch.randn(4, 8, dtype=torch.float64))
    assert zeros(model) == expected
    handle.remove()


def test_a_replaced_weight_of_a_copy_is_masked_once_nothing_holds_the_old_one():
    """The keeper tells a replaced weight (covered at the next forward) from functional_call's stand-in (left alone:
    the original lives on) by whether anything but itself still holds the weight it saw."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    twin = copy.deepcopy(model)
    twin(torch.randn(2, 8))
    expected = zeros(twin)
    twin[0].weight = nn.Parameter(torch.randn(16, 8))
    twin(torch.randn(2, 8)).sum().backward()
    assert zeros(twin) == expected and (twin[0].weight.grad[twin[0].weight == 0] == 0).all()
    handle.remove()


def test_sparsity_report_flags_layers_that_are_entirely_zero():
    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.ReLU(), torch.nn.Linear(10, 2))
    with torch.no_grad():
        model[2].weight.mul_(1e-3)  # the small layer goes first under global pruning
    apply_masks_(model, magnitude_masks(model, 0.2, max_layer_sparsity=1.0))  # no ceiling: the layer can go
    report = hs.sparsity_report(model)
    assert report.dead_layers == ["2.weight"] and report.to_dict()["dead_layers"] == ["2.weight"]
    assert "passes nothing on" in str(report).splitlines()[2] and "passes nothing on" not in str(report).splitlines()[1]


# -- one installation, owned by its handle (issue 30's reproductions) -------------------------------------------------
def hooks_on(model: nn.Module, opt=None) -> dict:
    """How many hooks and mask buffers the model (and optimizer) carry, by kind."""
    params = [p for p in model.parameters()]
    return {"tensor": max(len(p._backward_hooks or {}) for p in params),
            "forward_pre": max(len(m._forward_pre_hooks) for m in model.modules()),
            "load": max(len(m._load_state_dict_post_hooks) for m in model.modules()),
            "buffers": sum(1 for name, _ in model.named_buffers() if name.endswith("_mask")),
            "optimizer": (len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)) if opt else 0}


@pytest.mark.parametrize("pattern", ["remove+apply", "apply over apply", "update_"])
@pytest.mark.parametrize("with_optimizer", [False, True])
def test_a_thousand_mask_updates_leave_one_installation(pattern, with_optimizer):
    """GMP's pattern, 1,000 times: each weight keeps at most one hook, each module one keeper, the optimizer two."""
    model = make_mlp((20, 30, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if with_optimizer else None
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.5), opt)
    once = hooks_on(model, opt)
    for i in range(1000):
        masks = hs.magnitude_masks(model, 0.5 + 0.4 * i / 1000)
        if pattern == "remove+apply":
            handle.remove()
            handle = hs.apply_masks_(model, masks, opt)
        elif pattern == "apply over apply":
            handle = hs.apply_masks_(model, masks, opt)
        else:
            handle.update_(masks)
    assert hooks_on(model, opt) == once
    assert once["tensor"] == (0 if with_optimizer else 1) and once["forward_pre"] == 1
    # SGD: the gradients before the step; after it, a check (the weights are masked only if a later pre-hook ran)
    assert once["optimizer"] == (2 if with_optimizer else 0) and once["buffers"] == 2
    x = torch.randn(16, 20)
    for _ in range(3):  # and it still trains, with the last mask
        if opt is not None:
            opt.zero_grad()
        model(x).pow(2).mean().backward()
        if opt is not None:
            opt.step()
    assert all(torch.all(p[~masks[n]] == 0) for n, p in hs.prunable_parameters(model))


@pytest.mark.parametrize("with_optimizer", [False, True])
def test_remove_leaves_the_model_as_it_was_and_training_goes_on(with_optimizer):
    """After remove(): no buffer, no hook, nothing in the state_dict; backward and optimizer steps work and may
    revive pruned weights (the mask is gone), which the README documents."""
    model = make_convnet()
    before = hooks_on(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9), opt if with_optimizer else None)
    keys = set(model.state_dict())
    handle.remove()
    assert hooks_on(model) == before and hooks_on(model, opt)["optimizer"] == 0
    assert set(model.state_dict()) == keys and not hs.keep_pruned.has_masks(model)
    zeros_before = zeros(model)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3, 8, 8)).pow(2).mean().backward()
        opt.step()
    assert zeros(model) < zeros_before  # dense training again


def test_masks_on_a_masked_module_replace_the_old_ones_and_the_old_handle_lets_go():
    model = make_mlp((20, 30, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    first = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9), opt)
    second_masks = hs.magnitude_masks(model, 0.3, scope="layer")
    with torch.no_grad():
        for _, p in hs.prunable_parameters(model):
            p.add_(1.0)  # every weight alive again; the second mask decides
    second = hs.apply_masks_(model, second_masks, opt)
    assert first.masks == {} and set(second.masks) == set(second_masks)
    first.remove()  # owns nothing any more: the second installation stays
    assert hooks_on(model, opt)["optimizer"] == 2
    assert zeros(model) == sum(int((~m).sum()) for m in second_masks.values())


@pytest.mark.parametrize("name", ["resnet32", "vgg19"])
def test_sparse_inference_and_compaction_take_a_model_masked_through_the_readme_api(name):
    """The README's headline: a CNN masked with apply_masks_ at 99.5 % per layer, then sparse_inference (and
    compaction and every kernel swap) gives the masked model's outputs. (Whether the kernels follow the input is
    tested on calibrated sparse models in test_compaction.py and test_sparse_conv.py.)"""
    from hypersparse.compaction import compact_channels
    from hypersparse.inference import swap_convs

    model = create_model(name, 10, 3, 32)
    hs.apply_masks_(model, hs.magnitude_masks(model, 0.995, scope="layer"))
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        compacted, removed = compact_channels(model)
        assert removed > 0 and not hs.keep_pruned.has_masks(compacted)
        for out in (compacted(x), swap_convs(compacted)(x), hs.sparse_inference(model, x, reps=1)(x)):
            assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert hs.keep_pruned.has_masks(model)  # the consumers worked on copies


def test_exports_of_a_masked_model_load_elsewhere_with_its_outputs(tmp_path):
    model = make_convnet().eval()
    masks = hs.magnitude_masks(model, 0.9)
    hs.apply_masks_(model, masks)
    hs.save_sparse(model, tmp_path / "m.safetensors")
    fresh = make_convnet().eval()
    loaded = hs.load_sparse(tmp_path / "m.safetensors", model=fresh)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not hs.keep_pruned.has_masks(loaded)


@pytest.mark.parametrize("with_optimizer", [False, True])
def test_update_changes_the_mask_everywhere_it_acts_and_never_the_callers_tensors(with_optimizer):
    model = make_mlp((20, 30, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if with_optimizer else None
    first = hs.magnitude_masks(model, 0.5)
    kept_before = {n: m.clone() for n, m in first.items()}
    handle = hs.apply_masks_(model, first, opt)
    second = hs.magnitude_masks(model, 0.9)
    handle.update_(second)
    assert all(torch.equal(first[n], kept_before[n]) for n in first)  # the caller's masks are not written
    model(torch.randn(8, 20)).pow(2).mean().backward()
    if opt is None:  # the gradient hook reads the mask as it is now
        assert all(torch.all(p.grad[~second[n]] == 0) for n, p in hs.prunable_parameters(model))
    else:
        opt.step()
        assert all(torch.all(p[~second[n]] == 0) for n, p in hs.prunable_parameters(model))
    copied = __import__("copy").deepcopy(model)
    copied(torch.randn(2, 20)).sum().backward()  # a copy made after the update carries the new mask
    assert all(torch.all(p.grad[~second[n]] == 0) for n, p in hs.prunable_parameters(copied))


def test_a_masked_model_that_nobody_holds_is_freed():
    import gc
    import weakref

    model = make_mlp((20, 30, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hs.apply_masks_(model, hs.magnitude_masks(model, 0.5), opt)
    hs.apply_masks_(hs.prunable_parameters(model), hs.magnitude_masks(model, 0.5))
    alive = weakref.ref(model)
    del model, opt
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("how", ["positional", "keyword"])
def test_a_step_that_computes_its_gradients_in_a_closure_keeps_the_mask(how):
    """Lightning and LBFGS call step(closure): the gradients appear inside step, after its pre-hooks."""
    model = make_mlp((20, 30, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masks = hs.magnitude_masks(model, 0.8)
    hs.apply_masks_(model, masks, opt)
    x = torch.randn(16, 20)

    def closure():
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure) if how == "positional" else opt.step(closure=closure)
    assert all(torch.all(p[~masks[n]] == 0) for n, p in hs.prunable_parameters(model))
    assert all(torch.all(opt.state[p]["momentum_buffer"][~masks[n]] == 0) for n, p in hs.prunable_parameters(model))


@pytest.mark.parametrize("call", [lambda x: hs.sparsity_report(x), lambda x: magnitude_masks(x, 0.9),
                                  lambda x: hs.HyperSparse(x, 0.9)], ids=["sparsity_report", "magnitude_masks",
                                                                         "HyperSparse"])
@pytest.mark.parametrize("wrong", [5, None, torch.zeros(3, 3)], ids=["int", "None", "a bare tensor"])
def test_neither_a_model_nor_tensors_is_a_type_error_that_says_what_is_expected(call, wrong):
    """Trial 31d A068/A069: "'int' object is not iterable" did not say what to pass."""
    with pytest.raises(TypeError, match=r"expected a model \(an nn.Module\) or a list of tensors"):
        call(wrong)


def test_a_mask_buffer_removed_since_is_one_clear_error():
    """Trial 31g T1: torch.nn.utils.prune after masking took the buffer's name, and prune.remove then deleted it; the
    next backward died in the masks' gradient hook with an AttributeError."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    del model[0]._buffers["weight_mask"]
    with pytest.raises(ValueError, match="its mask buffer 'weight_mask' was removed since"):
        model(torch.randn(2, 8))
    handle.remove()
    model(torch.randn(2, 8)).sum().backward()


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_whose_masked_layer_never_runs_its_own_forward_keeps_its_zeros(how):
    """Trial 31g S3: a copy's masks were put to work by the masked module's forward, which MultiheadAttention's
    out_proj never runs (its parent reads the weight): a new Adam on a copy revived 33 of 57 pruned weights."""
    import pickle

    torch.manual_seed(0)
    model = nn.MultiheadAttention(8, 2, batch_first=True)
    handle = hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    twin = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
    expected = zeros(twin)
    opt, x = torch.optim.Adam(twin.parameters(), lr=1e-2), torch.randn(2, 4, 8)
    for _ in range(3):
        opt.zero_grad()
        twin(x, x, x)[0].pow(2).mean().backward()
        opt.step()
    assert zeros(twin) == expected
    handle.remove()


def test_to_empty_then_a_load_keeps_the_mask():
    """Trial 31g S2: Module.to_empty() leaves every buffer uninitialised, the masks too, and the state_dict loaded next
    does not hold them: the mask became whatever was in memory, and Adam revived 27 of 216 pruned weights."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    masks = hs.magnitude_masks(model, 0.9)
    handle = hs.apply_masks_(model, masks)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.to_empty(device="cpu")
    with torch.no_grad():
        model[0].weight_mask.fill_(True)  # what uninitialised memory may hold
    model.load_state_dict(state)
    assert all(torch.equal(getattr(model.get_submodule(n.rpartition(".")[0]), "weight_mask"), m)
               for n, m in masks.items())
    _steps(model, torch.optim.Adam(model.parameters(), lr=1e-2), n=4)
    assert all((p[~masks[n]] == 0).all() for n, p in hs.prunable_parameters(model))
    handle.remove()


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "deepcopy via meta"])
def test_a_copy_keeps_its_mask_through_to_empty_and_a_load(how):
    """Trial 31h S1: a copy has no handle to take its masks back from: to_empty() on it, then a dense state loaded,
    and its masks were garbage; SGD revived pruned weights. A copy records the masks it was copied with. Through the
    meta device (a forward there too: it compared the mask's values, which a meta tensor has none of)."""
    import pickle

    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    masks = hs.magnitude_masks(model, 0.9)
    hs.apply_masks_(model, masks)
    copy_ = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
    if how.endswith("meta"):
        copy_ = copy_.to("meta")
        copy_(torch.randn(2, 8, device="meta"))
    copy_.to_empty(device="cpu")
    with torch.no_grad():
        copy_[0].weight_mask.fill_(True)  # what uninitialised memory may hold
    copy_.load_state_dict(make_mlp((8, 16, 4)).state_dict())  # dense: nonzero where the mask prunes
    _steps(copy_, torch.optim.SGD(copy_.parameters(), lr=0.1, momentum=0.9), n=4)
    assert all((p[~masks[n]] == 0).all() for n, p in hs.prunable_parameters(copy_))


@pytest.mark.parametrize("opt", ["Adam", "SGD"])
def test_a_step_pre_hook_added_after_the_mask_cannot_revive_pruned_weights(opt):
    """Trial 31h S2: a user's step pre-hook on the handle's own optimizer, registered after apply_masks_, ran after
    the gradients were masked; gradient noise added there was stepped into every pruned weight."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    masks = hs.magnitude_masks(model, 0.9)
    optimizer = getattr(torch.optim, opt)(model.parameters(), lr=1e-2)
    hs.apply_masks_(model, masks, optimizer)

    def gradient_noise(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.add_(torch.randn_like(p.grad) * 1e-3)

    optimizer.register_step_pre_hook(gradient_noise)
    _steps(model, optimizer, n=4)
    assert all((p[~masks[n]] == 0).all() for n, p in hs.prunable_parameters(model))


def test_swa_averaging_of_a_masked_model_keeps_the_zeros():
    """torch.optim.swa_utils as docs/methods.md shows it (trial 31h A118): AveragedModel with its default
    ``use_buffers=False`` averages a masked model's weights, whose pruned entries stay exactly zero, and update_bn
    computes BatchNorm's statistics; ``use_buffers=True`` would average the bool mask buffers, which torch refuses."""
    from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

    torch.manual_seed(0)
    model = make_convnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    masks = magnitude_masks(model, 0.9)
    apply_masks_(model, masks, opt)
    swa, scheduler = AveragedModel(model), SWALR(opt, swa_lr=0.01)
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 7, (8,))) for _ in range(4)]
    for _ in range(3):
        for x, y in data:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        swa.update_parameters(model)
        scheduler.step()
    update_bn([x for x, _ in data], swa)
    averaged = dict(swa.module.named_parameters())
    for name, keep in masks.items():
        assert (averaged[name][~keep] == 0).all(), name
        assert averaged[name][keep].abs().sum() > 0, name
    assert swa(data[0][0]).isfinite().all()


def _pruned_nonzero(model, masks) -> int:
    params = dict(model.named_parameters())
    return sum(int((params[n].detach()[~k] != 0).sum()) for n, k in masks.items())


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                      lambda p: torch.optim.Adam(p, lr=0.1)])
def test_a_gradient_noise_hook_removed_later_leaves_no_momentum_to_revive_pruned_weights(make_opt):
    """Trial 31i S2: a step pre-hook registered after apply_masks_ adds noise to every gradient; the weights were
    masked after each step, but the noise built momentum (Adam's moments) at pruned positions, which revived all of
    them at the first step after the hook was removed."""
    torch.manual_seed(0)
    model = make_mlp((16, 12, 5))
    masks = magnitude_masks(model, 0.8)
    opt = make_opt(model.parameters())
    apply_masks_(model, masks, opt)

    def noise(optimizer, args, kwargs):
        for p in model.parameters():
            p.grad.add_(torch.randn_like(p.grad))

    x = torch.randn(8, 16)

    def step():
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()

    hook = opt.register_step_pre_hook(noise)
    for _ in range(3):
        step()
    hook.remove()
    for _ in range(3):
        step()
        assert _pruned_nonzero(model, masks) == 0


@pytest.mark.parametrize("case", ["eps 0", "float16", "numpy eps 0", "tensor eps 0", "numpy eps, float16"])
@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adamax])
def test_the_handles_own_optimizer_keeps_zeros_when_its_eps_is_zero_in_the_weights_dtype(cls, case):
    """Trial 31i S3: the handle trusted Adam-like optimizers to leave a weight with zero gradient and state at +0.0;
    with eps 0 (set by the user, or Adam's default 1e-8, which is 0 in float16) the update is 0/0, and every pruned
    weight became NaN. Pruned weights stay exactly +0.0 (kept ones are torch's business: a float16 Adam NaNs
    any weight whose gradient is 0, mask or none)."""
    torch.manual_seed(0)
    model = make_mlp((16, 12, 5))
    masks = magnitude_masks(model, 0.8)
    import numpy as np

    eps = {"eps 0": 0.0, "numpy eps 0": np.float32(0), "tensor eps 0": torch.tensor(0.0),
           "numpy eps, float16": np.float32(1e-8)}  # trial 31j S1: eps not a Python float was trusted
    opt = cls(model.parameters(), lr=0.01, **({"eps": eps[case]} if case in eps else {}))
    apply_masks_(model, masks, opt)
    x = torch.randn(8, 16)
    if "float16" in case:
        model.half()
        x = x.half()
    for _ in range(2):
        opt.zero_grad()
        model(x).float().pow(2).mean().backward()
        opt.step()
        params = dict(model.named_parameters())
        for n, k in masks.items():
            pruned = params[n].detach()[~k]
            assert (pruned == 0).all() and not torch.signbit(pruned).any(), n


def test_reapply_also_zeroes_momentum_changed_by_hand():
    """Trial 31i A225: momentum written at pruned positions by hand revived them; ``reapply_()`` is the documented
    remedy for anything changed outside a step, so it zeroes the optimizer's state there too."""
    torch.manual_seed(0)
    model = make_mlp((16, 12, 5))
    masks = magnitude_masks(model, 0.8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    handle = apply_masks_(model, masks, opt)
    x = torch.randn(8, 16)
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()
    for p in model.parameters():
        opt.state[p]["momentum_buffer"].fill_(1.0)
    handle.reapply_()
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()
    assert _pruned_nonzero(model, masks) == 0


def test_reapply_on_a_handle_that_masks_nothing_is_refused_as_update_is():
    """Trial 31j B033/H003: reapply_() on a removed handle, or on one a later apply_masks_ replaced, did nothing
    silently, where update_() refuses both."""
    model = make_mlp((8, 16, 4))
    removed = apply_masks_(model, magnitude_masks(model, 0.5))
    removed.remove()
    replaced = apply_masks_(model, magnitude_masks(model, 0.5))
    apply_masks_(model, magnitude_masks(model, 0.7))
    for handle in (removed, replaced):
        with pytest.raises(ValueError, match="this handle masks nothing"):
            handle.reapply_()


def test_a_masked_model_goes_through_torch_export_vmap_and_script_as_docs_say():
    """Trial 31k T1/T3: the keeper's forward pre-hook compared mask buffers with torch.equal, which torch.export and
    vmap cannot run; scripting needs the masks taken out first, as docs/methods.md says (the zeros stay)."""
    torch.manual_seed(0)
    model = make_mlp((8, 16, 4))
    handle = apply_masks_(model, magnitude_masks(model, 0.8))
    x = torch.randn(6, 8)
    exported = torch.export.export(model, (x,))
    assert torch.allclose(exported.module()(x), model(x))
    copies = [copy.deepcopy(model) for _ in range(2)]
    params, buffers = torch.func.stack_module_state(copies)
    base = copy.deepcopy(model).to("meta")
    out = torch.vmap(lambda p, b, x: torch.func.functional_call(base, (p, b), (x,)), in_dims=(0, 0, None))(
        params, buffers, x)
    assert torch.allclose(out[0], model(x), atol=1e-6)
    expected, zeros_before = model(x), zeros(model)
    handle.remove()
    scripted = torch.jit.script(model)
    assert torch.equal(scripted(x), expected) and zeros(model) == zeros_before


def test_meta_models_and_empty_masks_are_clear(tmp_path):
    """Trial 31k T2: sparsity_report and sparse_inference on a meta-device model failed inside torch's .item();
    T4: apply_masks_ with no masks (sparsity 0) raised from its own reapply_."""
    meta = make_mlp((8, 16, 4)).to("meta")
    model = make_mlp((8, 16, 4))
    hs.save_sparse(model, tmp_path / "m.safetensors")
    for call in (lambda: hs.sparsity_report(meta), lambda: hs.magnitude_masks(meta, 0.5),
                 lambda: hs.sparse_inference(meta, torch.randn(2, 8)),
                 # trial 31l G036: save_sparse failed inside torch's copy; a load into meta would keep nothing
                 lambda: hs.save_sparse(meta, tmp_path / "meta.safetensors"),
                 lambda: hs.load_sparse(tmp_path / "m.safetensors", model=meta)):
        with pytest.raises(ValueError, match="is on the meta device, which holds no values"):
            call()
    assert not (tmp_path / "meta.safetensors").exists()
    model = make_mlp((8, 16, 4))
    apply_masks_(model, {}).reapply_()  # nothing to mask, nothing to refuse


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64])
def test_integer_weights_are_ranked_by_their_value(dtype):
    """Trial 31l B030: magnitude_masks on a weight quantised by hand to int8 failed inside masked_fill (inf has no
    int8); int8's -128 has no int8 magnitude either."""
    model = make_mlp((8, 16, 4))
    values = torch.arange(-64, 64).view(16, 8) * 2
    values[0, 0] = -128
    model[0].weight = torch.nn.Parameter(values.to(dtype), requires_grad=False)
    for scope in ("global", "layer"):
        keep = magnitude_masks(model, 0.5, scope=scope)["0.weight"]
        assert bool(keep[0, 0]) and not bool(keep.flatten()[64])  # the largest magnitude kept, a zero pruned


def test_the_masks_a_handle_shows_are_a_copy():
    """Trial 31k C128: editing a tensor of ``handle.masks`` in place changed what was enforced, silently."""
    model = make_mlp((8, 16, 4))
    handle = apply_masks_(model, magnitude_masks(model, 0.8))
    shown = handle.masks
    for keep in shown.values():
        keep.fill_(True)
    assert all(not bool(k.all()) for k in handle.masks.values())
