"""By default no method empties a whole layer: each tensor keeps at least a tenth of the average share kept
(1 - (1 - sparsity) / 10), one weight where the kept weights are too few for that, and the count stays exact."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hypersparse as hs
from hypersparse.masks import global_keep
from hypersparse.params import default_ceiling, num_pruned


def test_one_shot_on_a_fresh_mlp_keeps_its_output_layer():
    """The issue's case: magnitude_masks(m, 0.9) on a fresh MLP emptied the output layer."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    with torch.no_grad():
        model[4].weight.mul_(0.01)  # an output layer of small weights, as after a fresh zero-ish init
    free = hs.magnitude_masks(model, 0.9, max_layer_sparsity=1.0)
    assert int(free["4.weight"].sum()) == 0  # without the ceiling the layer is gone
    masks = hs.magnitude_masks(model, 0.9)
    numel = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == math.floor(0.9 * numel)
    assert int(masks["4.weight"].sum()) == 2560 - num_pruned(default_ceiling(0.9), 2560) == 26
    hs.apply_masks_(model, masks)
    assert hs.sparsity_report(model).dead_layers == []


@settings(derandomize=True, max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=5), sparsity=st.floats(0.0, 0.999),
       seed=st.integers(0, 2**16))
def test_default_reserve_keeps_the_count_exact_and_each_layer_alive_where_it_can(sizes, sparsity, seed):
    g = torch.Generator().manual_seed(seed)
    scores = [torch.rand(n, generator=g) * (0.01 if i == 0 else 1.0) for i, n in enumerate(sizes)]
    if sum(sizes) == 0:
        return
    keep = global_keep(scores, sparsity)
    total = sum(sizes)
    kept = total - num_pruned(sparsity, total)
    assert sum(int(k.sum()) for k in keep) == kept  # exact, whatever the reservation
    live = [int(k.sum()) for k, n in zip(keep, sizes) if n]
    shares = [n - num_pruned(default_ceiling(sparsity), n) for n in sizes if n]
    if sum(shares) <= kept:
        assert all(a >= s for a, s in zip(live, shares))  # each its share
    elif len(live) <= kept:
        assert min(live) >= 1  # each at least one weight


@pytest.mark.parametrize("method", ["oneshot", "gmp", "snip"])
def test_every_baseline_keeps_a_small_layer_alive_by_default(method):
    from hypersparse.methods.baselines import GMP, SNIP, OneShot

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    with torch.no_grad():
        model[2].weight.mul_(1e-3)
    x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
    built = {"oneshot": lambda: OneShot(0.95, 1, 1), "gmp": lambda: GMP(0.95, 0, 1, 1, steps_per_epoch=2, frequency=1),
             "snip": lambda: SNIP(0.95, 1, 1, lambda: (x, y))}[method]()
    built.start(model)
    for _ in range(2):
        built.after_step(model)
        built.after_step(model)
        built.end_epoch(model)
    assert built.masks is not None and int(built.masks["2.weight"].sum()) >= 1
    assert sum(int((~m).sum()) for m in built.masks.values()) == math.floor(0.95 * (16 * 64 + 64 * 4))


def test_arts_pruned_copy_and_mask_keep_a_small_layer_alive():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    with torch.no_grad():
        model[2].weight.mul_(1e-3)
    art = hs.ARTSchedule(hs.HyperSparse(model, 0.95), warmup_epochs=0, buffer_k=0)
    seen = {}

    def score(m):
        seen["dead"] = hs.sparsity_report(m).dead_layers
        return 1.0

    assert art.end_epoch(model, dense_acc=0.5, pruned_acc=score) == "stop"
    assert seen["dead"] == [] and int(art.masks["2.weight"].sum()) >= 1
