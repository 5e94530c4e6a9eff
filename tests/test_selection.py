"""Which weights are prunable (--exclude, Exclude) and a per-layer ceiling (--max-layer-sparsity): every method
prunes exactly floor(kappa N) of the selected weights, leaves excluded layers dense and no layer above its ceiling."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from torch import nn

from hypersparse import magnitude_masks, sparsity_report
from hypersparse.config import TrainConfig
from hypersparse.engine import train
from hypersparse.params import Exclude, head_layers, prunable_parameters
from hypersparse.run_read import model_from_run


def test_patterns_name_consecutive_parts_of_a_layer_name():
    model = nn.Module()
    model.body = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model.body.add_module("query", nn.Linear(4, 4))
    model.classifier = nn.Linear(4, 2)
    pick = lambda *p: [n for n, _ in prunable_parameters(model, Exclude(list(p)))]  # noqa: E731
    assert pick("classifier") == ["body.0.weight", "body.1.weight", "body.query.weight"]
    assert pick("body.*") == ["classifier.weight"]
    assert pick("query", "0") == ["body.1.weight", "classifier.weight"]
    assert pick("classif*") == ["body.0.weight", "body.1.weight", "body.query.weight"]
    with pytest.raises(ValueError, match="'clasifier' names no prunable layer"):
        Exclude(["clasifier"]).check(model)


@pytest.mark.parametrize("call", [
    lambda hs, m, f: hs.apply_masks_(m, hs.magnitude_masks(m, 0.9), filter=f),
    lambda hs, m, f: hs.magnitude_masks(m, 0.9, filter=f),
    lambda hs, m, f: hs.HyperSparse(m, 0.9, filter=f),
    lambda hs, m, f: hs.sparsity_report(m, filter=f),
])
def test_every_api_taking_a_filter_refuses_a_pattern_that_names_no_layer(call):
    """Trial 31i A041: apply_masks_(..., filter=Exclude(["clasifier"])) was accepted, and the typo kept nothing
    dense without a word; each call that takes a filter checks it against the model."""
    import hypersparse as hs

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="'clasifier' names no prunable layer"):
        call(hs, model, Exclude(["clasifier"]))


def test_ceiling_keeps_every_layer_alive_and_the_count_exact():
    torch.manual_seed(0)
    small = torch.randn(100) * 0.01  # a layer far smaller than the rest: global ranking would empty it
    big = torch.randn(900)
    free = magnitude_masks([small, big], 0.9, max_layer_sparsity=1.0)  # no ceiling
    assert int(free["0"].sum()) == 0
    default = magnitude_masks([small, big], 0.9)  # 1 - (1 - 0.9) / 10 = 0.99: one of the small layer's 100 stays
    assert int(default["0"].sum()) == 1 and sum(int((~m).sum()) for m in default.values()) == 900
    capped = magnitude_masks([small, big], 0.9, max_layer_sparsity=0.95)
    assert int(capped["0"].sum()) == 5  # the 5 largest of the small layer are kept
    assert bool(capped["0"][small.abs().topk(5).indices].all())
    assert sum(int((~m).sum()) for m in capped.values()) == 900
    with pytest.raises(ValueError, match="raise max_layer_sparsity"):
        magnitude_masks([torch.randn(5), torch.randn(5)], 0.9, max_layer_sparsity=0.91)  # 2 x floor(4.55) < 9
    with pytest.raises(ValueError, match="above the sparsity"):
        magnitude_masks([small, big], 0.9, max_layer_sparsity=0.9)


@pytest.mark.parametrize("method", ["art", "oneshot", "gmp", "snip"])
def test_every_method_honours_exclude_and_the_ceiling(tmp_path, method):
    settings = {"method": method, "sparsity": 0.95, "exclude": "5", "max_layer_sparsity": 0.97, "warmup_epochs": 2,
                "finetune_epochs": 1, "lr_steps": "1", "seed": 0}
    settings.update({"lambda_init": 1e-3, "eta": 2.0} if method == "art" else {"prune_epochs": 2})
    train(TrainConfig.from_dict(settings), tmp_path / "run", progress=False, out=open(os.devnull, "w"))
    model = model_from_run(tmp_path / "run")
    layers = {layer.name: layer for layer in sparsity_report(model).layers}
    assert layers["5.weight"].zeros == 0  # excluded: dense
    selected = [layers["1.weight"], layers["3.weight"]]
    assert sum(la.zeros for la in selected) == math.floor(0.95 * sum(la.numel for la in selected))
    assert all(la.zeros <= math.floor(0.97 * la.numel) for la in selected)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["sparse"]["sparsity"] == pytest.approx(0.95, abs=1e-4)  # counted over the selected weights


def test_head_layers_of_a_transformers_model():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    assert head_layers(transformers.BertForSequenceClassification(config)) == ["classifier"]
    assert head_layers(transformers.BertForMaskedLM(config)) == ["cls.predictions.decoder"]


def test_hf_model_from_a_saved_folder_trains_with_transformer_defaults(tmp_path):
    """`--model hf:<folder>`: a ViT saved with save_pretrained trains on digits through the CLI; its head stays dense,
    no layer is emptied, the rest is at the target, and eval reads the run back."""
    transformers = pytest.importorskip("transformers")
    from hypersparse.cli import main

    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=8, patch_size=4, num_channels=1)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    run = tmp_path / "run"
    assert main(["train", "--model", f"hf:{tmp_path / 'vit'}", "--epochs-scale", "0.05", "--lambda-init", "auto",
                 "--run-dir", str(run)]) == 0
    recorded = json.loads((run / "config.json").read_text())["sparsity"]
    assert recorded["exclude"] == "model.classifier" and recorded["max_layer_sparsity"] == pytest.approx(0.99)
    model = model_from_run(run)
    report = sparsity_report(model)
    assert report.dead_layers == [] and all(layer.sparsity <= 0.99 for layer in report.layers)
    assert int((model.model.classifier.weight == 0).sum()) == 0
    body = sparsity_report(model, Exclude(["classifier"]))
    assert body.zeros == math.floor(0.9 * body.numel)
    assert main(["eval", str(run)]) == 0
    assert main(["train", "--model", f"hf:{tmp_path / 'missing'}", "--run-dir", str(tmp_path / "r2")]) == 2
    assert not (tmp_path / "r2").exists()


def test_library_calls_take_the_same_filter():
    import hypersparse as hs

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    model[2].weight.data.mul_(1e-3)  # the smallest weights: excluded, they must survive
    keep = hs.Exclude(["2"])
    reg = hs.HyperSparse(model, 0.5, filter=keep)
    assert reg.names == ["0.weight"]
    masks = hs.magnitude_masks(model, 0.5, filter=keep)
    hs.apply_masks_(model, masks, filter=keep)
    assert hs.sparsity_report(model, keep).zeros == 32 and int((model[2].weight == 0).sum()) == 0
