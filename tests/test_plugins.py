"""Your own model and data from the command line: import paths, image folders, --plugin and entry points."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import image_folder

Image = pytest.importorskip("PIL.Image")

SHORT = ["--method", "gmp", "--sparsity", "0.8", "--warmup-epochs", "3", "--prune-epochs", "2", "--finetune-epochs",
         "3", "--set", "schedule.lr_steps=2", "--set", "run.stats=false"]

MODULE = '''
import numpy as np
import torch
from hypersparse.data import register_dataset
from hypersparse.models import register_model


def tiny_cnn(num_classes, in_channels):
    return torch.nn.Sequential(torch.nn.Conv2d(in_channels, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, num_classes))


def not_a_model():
    return "oops"


def stripes(data_dir, seed, download):
    rng = np.random.default_rng(0)
    def make(n):
        y = rng.integers(0, 2, n)
        x = (rng.random((n, 1, 8, 8)) * 60).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 0, :, ::2] += 150 if c else 0
            x[i, 0, ::2, :] += 0 if c else 150
        return x, y
    return (*make(400), *make(100))


register_model("plugged", lambda c, ch, s: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(ch * s * s, 32),
                                                                torch.nn.ReLU(), torch.nn.Linear(32, c)))
register_dataset("plugged-stripes", lambda data_dir, seed, download: __import__("hypersparse.data", fromlist=["_split"])
                 ._split("plugged-stripes", *stripes(None, 0, False), 40, seed, 2, False))
'''


def cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "hypersparse", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture
def work(tmp_path):
    (tmp_path / "mine.py").write_text(MODULE)
    return tmp_path


@pytest.mark.parametrize("layout", ["split", "flat"])
def test_model_by_import_path_on_an_image_folder(work, layout):
    data = image_folder(work / "pets", layout)
    out = cli("train", "--dataset", f"folder:{data}", "--model", "mine:tiny_cnn", *SHORT, "--run-dir", "run", cwd=work)
    assert out.returncode == 0, out.stderr
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert abs(summary["sparse"]["sparsity"] - 0.8) < 0.01
    assert summary["sparse"]["test_acc"] > 0.6  # three classes: chance is a third
    assert summary["arch"]["model"] == "mine:tiny_cnn" and summary["arch"]["in_channels"] == 1
    refused = cli("eval", "run", cwd=work)  # the run names code: imported only when the user types it
    assert refused.returncode == 2 and "needs --model mine:tiny_cnn; pass it if you trust it" in refused.stderr
    again = cli("eval", "run", "--model", "mine:tiny_cnn", cwd=work)  # the model is rebuilt from its import path
    assert again.returncode == 0, again.stderr
    assert f"{summary['sparse']['test_acc']:.2%}" in again.stdout


def test_plugin_registered_model_and_dataset_reach_the_command_line(work):
    out = cli("train", "--plugin", "mine", "--dataset", "plugged-stripes", "--model", "plugged", *SHORT,
              "--run-dir", "run", cwd=work)
    assert out.returncode == 0, out.stderr
    assert json.loads((work / "run" / "summary.json").read_text())["sparse"]["test_acc"] > 0.9
    refused = cli("eval", "run", cwd=work)  # the run's config names the plugin: it is not imported on its own
    assert refused.returncode == 2 and "needs --plugin mine; pass it if you trust it" in refused.stderr
    assert cli("eval", "run", "--plugin", "mine", cwd=work).returncode == 0


def test_an_installed_entry_point_is_found_without_a_flag(work):
    info = work / "site" / "mine_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mine-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[hypersparse.plugins]\nmine = mine\n")
    env = {"PYTHONPATH": os.pathsep.join([str(work / "site"), str(work)])}
    out = cli("train", "--dataset", "plugged-stripes", "--model", "plugged", *SHORT, "--run-dir", "run", cwd=work,
              env=env)
    assert out.returncode == 0, out.stderr


def test_a_dataset_by_import_path(work):
    out = cli("train", "--dataset", "mine:stripes", "--model", "mlp", *SHORT, "--run-dir", "run", cwd=work)
    assert out.returncode == 0, out.stderr
    assert json.loads((work / "run" / "summary.json").read_text())["sparse"]["test_acc"] > 0.9


@pytest.mark.parametrize("args,needle", [
    (["--model", "mine:not_a_model"], "returned a str, not an nn.Module"),
    (["--model", "mine:nothing"], "has no 'nothing'"),
    (["--model", "nomodule:x"], "cannot import"),
    (["--dataset", "folder:/no/such/folder"], "does not exist"),
    (["--plugin", "nomodule"], "--plugin nomodule"),
])
def test_bad_names_are_one_line(work, args, needle):
    out = cli("train", *args, *SHORT, "--run-dir", "run", cwd=work)
    assert out.returncode == 2 and needle in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (work / "run").exists()


def test_images_of_mixed_sizes_are_named(work):
    data = image_folder(work / "pets", "flat")
    Image.fromarray(np.zeros((9, 7), np.uint8), mode="L").save(data / "top" / "odd.png")
    out = cli("train", "--dataset", f"folder:{data}", *SHORT, "--run-dir", "run", cwd=work)
    assert out.returncode == 2 and "differ in size" in out.stderr and "odd.png" in out.stderr, out.stderr
