"""docs/sparse-format.md's reference decoder, copied from the page, runs where hypersparse, torch and safetensors
cannot be imported, decodes every encoding bit for bit, and gets the run's test accuracy."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from hypersparse.config import TrainConfig
from hypersparse.data import load_dataset
from hypersparse.engine import train
from hypersparse.export import load_sparse_state, save_sparse
from hypersparse.run_read import model_from_run

DOC = Path(__file__).resolve().parents[1] / "docs" / "sparse-format.md"

# what a machine without hypersparse is: the import of these fails before anything else runs
WITHOUT = r'''
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("hypersparse", "torch", "safetensors"):
            raise ModuleNotFoundError(f"No module named {name!r}")
for _name in ("hypersparse", "torch", "safetensors"):
    sys.modules.pop(_name, None)
sys.meta_path.insert(0, _Absent())
for _name in ("hypersparse", "torch", "safetensors"):
    try:
        __import__(_name)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"{_name} is importable")
'''


def _blocks(after: str) -> str:
    text = DOC.read_text()
    return re.search(re.escape(after) + r".*?```python\n(.*?)```", text, re.S).group(1)


def test_reference_decoder_without_hypersparse_reproduces_the_run(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig.from_dict({"sparsity": 0.95, "epochs_scale": 0.03, "lambda_init": 1e-3}), run, progress=False,
          out=open(os.devnull, "w"))
    summary = json.loads((run / "summary.json").read_text())
    info = save_sparse(model_from_run(run), run / "model.sparse.safetensors", summary["arch"], summary["input"])
    assert set(info["encodings"].values()) == {"dense", "csr", "bitmask"}  # the page's three encodings, all read
    data = load_dataset("digits", None, 0)
    np.save(tmp_path / "pixels.npy", data.test_x.numpy())
    np.save(tmp_path / "labels.npy", data.test_y.numpy())
    script = WITHOUT + _blocks("## A reference decoder") + _blocks("## Using it") + r'''
import json, sys
import numpy as np
folder = sys.argv[1]
state, arch, inputs = read_sparse(folder + "/run/model.sparse.safetensors")
pixels, labels = np.load(folder + "/pixels.npy"), np.load(folder + "/labels.npy")
np.savez(folder + "/decoded.npz", **state)
print(json.dumps({"acc": float((mlp_predict(state, inputs, pixels) == labels).mean()), "arch": arch}))
'''
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-I", "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["arch"] == summary["arch"]
    assert abs(result["acc"] - summary["sparse"]["test_acc"]) <= 1 / len(data.test_y), (result, summary["sparse"])
    # bit for bit: every tensor as hypersparse itself reads it
    state, _ = load_sparse_state(run / "model.sparse.safetensors")
    decoded = np.load(tmp_path / "decoded.npz")
    for name, tensor in state.items():
        assert decoded[name].dtype == tensor.numpy().dtype and decoded[name].tobytes() == tensor.numpy().tobytes()


def test_eval_of_an_onnx_file_without_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    import pytest

    from hypersparse.errors import UserError
    from hypersparse.evaluate import evaluate_onnx

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"pip install 'hypersparse\[onnx\]'"):
        evaluate_onnx(tmp_path / "model.onnx", None)


def test_a_bfloat16_model_round_trips_and_the_reference_decoder_reads_it(tmp_path):
    """Trial 31e E058: save_sparse of a bfloat16 model failed inside numpy, which has no bfloat16."""
    import torch

    import hypersparse as hs

    torch.manual_seed(0)

    def mlp():
        return torch.nn.Sequential(torch.nn.Linear(40, 30), torch.nn.ReLU(), torch.nn.Linear(30, 4))

    model = mlp()
    hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    model = model.bfloat16()
    info = save_sparse(model, tmp_path / "m.safetensors")
    assert set(info["encodings"].values()) >= {"csr", "dense"}  # the weights compressed, not stored whole
    loaded = hs.load_sparse(tmp_path / "m.safetensors", model=mlp().bfloat16())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    script = WITHOUT + _blocks("## A reference decoder") + r'''
import sys
import numpy as np
state, _, _ = read_sparse(sys.argv[1] + "/m.safetensors")
np.savez(sys.argv[1] + "/decoded.npz", **state)
'''
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-I", "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    decoded = np.load(tmp_path / "decoded.npz")
    for name, tensor in model.state_dict().items():
        assert np.array_equal(decoded[name], tensor.float().numpy()), name


def test_a_compiled_model_saves_and_loads_under_its_own_names(tmp_path):
    """Trial 31h L111: save_sparse of a torch.compile wrapper stored `_orig_mod.` names, which the plain model
    refused. The file holds the model's own names; it loads into the plain model and into a compiled one."""
    import torch
    from torch import nn

    import hypersparse as hs

    def net():
        return nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))

    torch.manual_seed(0)
    model = net()
    hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    hs.save_sparse(torch.compile(model), tmp_path / "m.safetensors")
    plain, compiled = net(), torch.compile(net())
    hs.load_sparse(tmp_path / "m.safetensors", plain)
    assert hs.load_sparse(tmp_path / "m.safetensors", compiled) is compiled
    x = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(plain(x), model(x)) and torch.equal(compiled._orig_mod(x), model(x))
