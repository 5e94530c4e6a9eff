import json
import math
import os

import pytest
import torch
from torch import nn

import hypersparse as hs
from hypersparse.config import TrainConfig
from hypersparse.engine import train
from hypersparse.methods.baselines import GMP, OneShot, gmp_sparsity, snip_masks, snip_scores

from conftest import make_mlp


def zeros(model):
    return hs.sparsity_report(model).zeros


def test_oneshot_prunes_once_after_dense_training():
    model = make_mlp((10, 40, 5))
    n = hs.sparsity_report(model).numel
    method = OneShot(0.9, dense_epochs=2, finetune_epochs=1)
    assert method.end_epoch(model, 0.5) == "warmup" and zeros(model) == 0
    assert method.end_epoch(model, 0.5) == "stop"
    assert zeros(model) == math.floor(0.9 * n)
    assert sum(int((~m).sum()) for m in method.masks.values()) == math.floor(0.9 * n)
    assert method.end_epoch(model, 0.5) == "finetune" and method.done


def test_gmp_sparsity_follows_the_cubic_schedule_step_by_step():
    torch.manual_seed(0)
    model = make_mlp((10, 40, 5))
    n = hs.sparsity_report(model).numel
    steps_per_epoch = 5
    method = GMP(0.9, dense_epochs=1, prune_epochs=2, finetune_epochs=1, steps_per_epoch=steps_per_epoch, frequency=1)
    step = 0
    seen = []
    for epoch in range(4):
        for _ in range(steps_per_epoch):
            with torch.no_grad():  # training moves the surviving weights
                for _, p in hs.prunable_parameters(model):
                    p.add_(torch.randn_like(p) * 0.01 * (p != 0))
            method.after_step(model)
            step += 1
            if method.phase == "prune":
                # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 with s_i = 0, s_f = 0.9, t0 = 5, n dt = 10
                expected = 0.9 + (0 - 0.9) * (1 - (step - 5) / 10) ** 3
                assert math.isclose(method.target_at(step), expected, abs_tol=1e-12)
                assert zeros(model) == math.floor(round(expected * n, 6))
                seen.append(zeros(model))
            elif method.phase == "warmup":
                assert zeros(model) == 0
        method.end_epoch(model, 0.5)
    assert seen == sorted(seen) and len(set(seen)) >= 8  # pruned step by step, monotonically
    assert method.phase == "finetune" and zeros(model) == math.floor(0.9 * n)
    assert gmp_sparsity(0, 5, 10, 0.9) == 0 and gmp_sparsity(15, 5, 10, 0.9) == pytest.approx(0.9)


def test_snip_scores_match_a_hand_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -1.0, 0.25], [1.5, 0.5, -0.5]]))
        model[2].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.75]]))
    model.double()  # float64 on both sides: softmax(z) - onehot cancels digits in float32
    x = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([1])
    scores = snip_scores(model, x, y)

    # by hand: h = W1 x, a = relu(h), z = W2 a, dL/dz = softmax(z) - onehot(y)
    W1, W2 = model[0].weight.detach(), model[2].weight.detach()
    h = W1 @ x[0]
    a = h.clamp_min(0)
    z = W2 @ a
    dz = torch.exp(z) / torch.exp(z).sum() - torch.tensor([0.0, 1.0], dtype=torch.float64)
    dW2 = torch.outer(dz, a)
    dh = (W2.T @ dz) * (h > 0).float()
    dW1 = torch.outer(dh, x[0])
    raw1, raw2 = (dW1 * W1).abs(), (dW2 * W2).abs()
    total = raw1.sum() + raw2.sum()
    assert torch.allclose(scores["0.weight"], raw1 / total, rtol=1e-10, atol=0)
    assert torch.allclose(scores["2.weight"], raw2 / total, rtol=1e-10, atol=0)

    masks = snip_masks(model, x, y, 0.5)
    assert sum(int((~m).sum()) for m in masks.values()) == 5  # floor(0.5 * 10)
    everything = torch.cat([(raw1 / total).flatten(), (raw2 / total).flatten()])
    kept = torch.cat([masks["0.weight"].flatten(), masks["2.weight"].flatten()])
    assert everything[kept].min() >= everything[~kept].max()


@pytest.mark.parametrize("method", ["oneshot", "gmp", "snip"])
def test_each_method_runs_end_to_end_at_exact_sparsity(method, tmp_path):
    cfg = TrainConfig.from_dict(dict(method=method, sparsity=0.95, epochs_scale=0.05, prune_epochs=40, seed=0))
    summary = train(cfg, tmp_path / method, progress=False, out=open(os.devnull, "w"))
    numel = summary["sparse"]["numel"]
    assert summary["sparse"]["kept"] == numel - math.floor(0.95 * numel)
    if method != "snip":  # the dense baseline is the model at the end of warm-up, before any pruning
        rows = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
        warmup = [r for r in rows if r["phase"] == "warmup"]
        assert len(warmup) == (5 if method == "oneshot" else 3)  # oneshot trains densely through the prune epochs
        assert summary["dense"]["epoch"] == len(warmup) and summary["dense"]["val_acc"] == warmup[-1]["val_acc"]
        assert warmup[-1]["sparsity"] == (0.0 if method == "gmp" else warmup[-1]["sparsity"])
    else:
        assert summary["dense"] is None
    assert summary["sparse"]["test_acc"] > 0.5
    assert sum(summary["epochs"].values()) == 3 + 2 + 8  # warm-up 3, prune/train 2, fine-tune 8 (scaled by 0.05)
