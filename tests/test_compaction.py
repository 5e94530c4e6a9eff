"""Channel compaction gives the dense model's outputs with fewer channels, refuses training-mode BatchNorm, and
leaves a model with nothing to remove as it is; sparse_inference uses it on CNNs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hypersparse.compaction import compact_channels
from hypersparse.inference import sparse_inference
from hypersparse.models import create_model

from conftest import SHAPES, assert_same_outputs, sparse_model


def _widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("pattern", ["random", "dead"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_compaction_keeps_the_outputs(name, pattern):
    """Every removable channel gone (align=1), and with the default, widths a multiple of 8 or as they were."""
    model = sparse_model(name, pattern)
    channels, size = SHAPES[name]
    for align in (1, 8):
        compacted, removed = compact_channels(model, align=align)
        if align == 1:
            assert removed > 0
            assert sum(p.numel() for p in compacted.parameters()) < sum(p.numel() for p in model.parameters())
        else:
            assert all(new % 8 == 0 or new == old for new, old in zip(_widths(compacted), _widths(model)))
        for batch in (1, 3):
            x = torch.randn(batch, channels, size, size)
            with torch.no_grad():
                assert_same_outputs(compacted(x), model(x))


def test_training_mode_batchnorm_is_refused():
    model = sparse_model("vgg11", "dead").train()
    with pytest.raises(ValueError, match=r"model.eval\(\) first"):
        compact_channels(model)


def test_a_model_with_nothing_to_remove_comes_back_as_it_is():
    model = create_model("resnet20", 10, 3, 32).eval()  # dense: every channel produces and is read
    same, removed = compact_channels(model)
    assert same is model and removed == 0


def test_sparse_inference_compacts_a_cnn_and_keeps_its_outputs():
    model = sparse_model("vgg11", "dead")
    x = torch.randn(2, 3, 32, 32)
    fast = sparse_inference(model, x, reps=5)
    choice = fast.hypersparse_compaction
    assert choice["removed"] > 0 and isinstance(choice["kept"], bool)
    with torch.no_grad():
        assert_same_outputs(fast(x), model(x))


CNN = """
from torch import nn


def build(num_classes, in_channels, image_size):
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (image_size // 2) ** 2, num_classes))
"""


def test_compacted_onnx_export_and_eval_fast_score_the_runs_accuracy(tmp_path):
    """A small CNN with BatchNorm trained to 98 % on digits, exported with --compact: fewer channels, and in
    onnxruntime on raw test pixels the run's test accuracy (within one image); so does eval --fast."""
    pytest.importorskip("onnxruntime")
    import json
    import os
    import subprocess
    import sys

    import onnxruntime

    from hypersparse.data import load_dataset

    (tmp_path / "tinycnn.py").write_text(CNN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    run = tmp_path / "run"

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "hypersparse", *args], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    cli("train", "--model", "tinycnn:build", "--sparsity", "0.98", "--epochs-scale", "0.05", "--lambda-init", "auto",
        "--run-dir", str(run))
    said = cli("export", str(run), "--format", "onnx", "--compact", "--out", str(run / "compact.onnx"), "--model",
               "tinycnn:build")
    removed = int(said.rsplit(", ", 1)[1].split()[0])  # "..., N channels removed by compaction"
    assert removed > 0
    summary = json.loads((run / "summary.json").read_text())
    data = load_dataset("digits", None, 0)
    session = onnxruntime.InferenceSession(str(run / "compact.onnx"))
    acc = (session.run(None, {"input": data.test_x.float().numpy()})[0].argmax(1) == data.test_y.numpy()).mean()
    assert abs(acc - summary["sparse"]["test_acc"]) <= 1 / len(data.test_y)
    out = subprocess.run([sys.executable, "-m", "hypersparse", "export", str(run), "--format", "sparse", "--compact"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "--compact applies to --format onnx" in out.stderr
    # eval --fast scores the model sparse_inference makes of it: the run's accuracy, and a latency line
    said = cli("eval", str(run), "--fast", "4", "--model", "tinycnn:build")
    line = [x for x in said.splitlines() if x.startswith("sparse_inference at batch 4: test ")][0]
    said_acc = float(line.split("test ")[1].split("%")[0]) / 100
    assert abs(said_acc - summary["sparse"]["test_acc"]) <= 1 / len(data.test_y)
    assert " ms per batch against " in line
    assert f"compaction removed {removed} channels" in line or f"compaction could remove {removed} channels" in line
    # without --out, --compact writes model.compact.onnx beside the plain export, which it leaves as it was
    cli("export", str(run), "--format", "onnx", "--model", "tinycnn:build")
    plain = (run / "model.onnx").read_bytes()
    cli("export", str(run), "--format", "onnx", "--compact", "--model", "tinycnn:build")
    assert (run / "model.onnx").read_bytes() == plain and (run / "model.compact.onnx").exists()
    said = cli("eval", str(run / "model.compact.onnx"))  # run by onnxruntime, the run's accuracy
    onnx_acc = float(said.split("test ")[1].split("%")[0]) / 100
    assert abs(onnx_acc - summary["sparse"]["test_acc"]) <= 1 / len(data.test_y)


def test_a_grouped_dilated_convolution_with_batchnorm_keeps_its_channels_and_outputs():
    """Trial 31b, NA02: a masked CNN with a grouped (groups=4), dilated convolution between BatchNorms. Its channels
    belong to their groups, so none is removed around it; compaction and sparse_inference give its outputs."""
    import hypersparse as hs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(-2, 2)
    hs.apply_masks_(model, hs.magnitude_masks(model, 0.95))
    model.eval()
    x = torch.randn(8, 1, 16, 16)
    with torch.no_grad():
        ref = model(x)
        compacted, _ = compact_channels(model, align=1)
        assert_same_outputs(compacted(x), ref)
        assert_same_outputs(sparse_inference(model, x[:2], reps=3)(x), ref)


@pytest.mark.parametrize("bn", [dict(affine=False), dict(track_running_stats=False)])
def test_a_batchnorm_without_parameters_or_running_statistics_keeps_the_outputs(bn):
    """Trial 31h T1: sparse_inference of a masked CNN whose BatchNorm had affine=False ended in an AttributeError
    (folding read its weight); one without running statistics cannot be folded and is left as it is."""
    import hypersparse as hs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8, **bn), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 36, 3)).eval()
    hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    x = torch.randn(4, 3, 8, 8)
    fast = sparse_inference(model, x, reps=2)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-5)
