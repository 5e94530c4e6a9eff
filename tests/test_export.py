import os
import subprocess
import sys

import pytest
import torch

import hypersparse as hs
from hypersparse.config import TrainConfig
from hypersparse.engine import train
from hypersparse.export import load_sparse, load_sparse_state, save_sparse, sparse_inference
from hypersparse.errors import UserError
from hypersparse.models import create_model

ARCH = {"model": "resnet32", "num_classes": 10, "in_channels": 3, "image_size": 32}


def pruned(name, sparsity, ch=3, size=32, seed=0):
    torch.manual_seed(seed)
    model = create_model(name, 10, ch, size)
    hs.apply_masks_(model, hs.magnitude_masks(model, sparsity))
    return model.eval()


def test_resnet32_at_995_round_trip_bit_exact_and_50x_smaller(tmp_path):
    model = pruned("resnet32", 0.995)
    with torch.no_grad():  # BN statistics that are not the defaults, so they must round-trip too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    info = save_sparse(model, tmp_path / "m.safetensors", ARCH)
    dense = tmp_path / "dense.pt"
    torch.save(model.state_dict(), dense)
    assert os.path.getsize(dense) / info["bytes"] >= 50
    back = load_sparse(tmp_path / "m.safetensors")
    for (k, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), back(x))


def test_each_encoding_is_chosen_where_smallest(tmp_path):
    t = {
        "full": torch.randn(64, 64),
        "halfzero": torch.randn(64, 64) * (torch.rand(64, 64) < 0.5),
        "mostlyzero": torch.randn(64, 64) * (torch.rand(64, 64) < 0.01),
        "counts": torch.arange(10),
        "scalar": torch.tensor(3.0),
    }
    model = torch.nn.Module()
    for k, v in t.items():
        model.register_buffer(k, v)
    info = save_sparse(model, tmp_path / "m.safetensors")
    assert info["encodings"] == {"full": "dense", "halfzero": "bitmask", "mostlyzero": "csr", "counts": "dense",
                                 "scalar": "dense"}
    state, arch = load_sparse_state(tmp_path / "m.safetensors")
    assert arch == {} and all(torch.equal(state[k], v) for k, v in t.items())
    with pytest.raises(UserError, match="model="):
        load_sparse(tmp_path / "m.safetensors")


def test_sparse_inference_matches_dense_outputs():
    model = pruned("lenet300", 0.995, ch=1, size=28)
    for batch in (1, 64):
        x = torch.randn(batch, 1, 28, 28)
        fast = sparse_inference(model, x, reps=5)
        assert set(fast.hypersparse_choices) == {"1", "3", "5"}
        with torch.no_grad():
            assert torch.allclose(fast(x), model(x), atol=1e-5, rtol=0)


def test_export_cli_and_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnxruntime

    cfg = TrainConfig(sparsity=0.95, epochs_scale=0.02, lambda_init=1e-3)
    train(cfg, tmp_path / "run", progress=False, out=open(os.devnull, "w"))
    env = dict(os.environ)
    for fmt in ("sparse", "onnx"):
        out = subprocess.run([sys.executable, "-m", "hypersparse", "export", str(tmp_path / "run"), "--format", fmt],
                             capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
    model = load_sparse(tmp_path / "run" / "model.sparse.safetensors")
    assert hs.sparsity_report(model).sparsity == pytest.approx(0.95, abs=1e-4)
    session = onnxruntime.InferenceSession(str(tmp_path / "run" / "model.onnx"))
    x = torch.randn(7, 1, 8, 8)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - ref).max() <= 1e-4
    # eval reads the sparse file too
    out = subprocess.run([sys.executable, "-m", "hypersparse", "eval", str(tmp_path / "run" / "model.sparse.safetensors")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "sparsity 95.00%" in out.stdout, out.stderr
