import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hypersparse.models import create_model


@pytest.fixture(autouse=True)
def _threads_and_seed():
    torch.manual_seed(0)
    yield


class Nudge(torch.optim.Optimizer):
    """An optimizer hypersparse does not know, which moves every weight, zero gradient or not."""

    def __init__(self, params):
        super().__init__(params, {"lr": 0.01})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(0.01 if p.grad is None else -group["lr"] * p.grad + 0.001)


def make_mlp(sizes=(8, 16, 4), bias=True):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b, bias=bias), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def make_convnet():
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Identity(),
        nn.Conv2d(6, 5, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7),
    )


def synthetic_problem(n=512, d=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g) * 2.5
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    return x, y


SHAPES = {"resnet20": (3, 32), "resnet32": (3, 32), "vgg11": (3, 32), "lenet5": (1, 28)}


def sparse_model(name: str, pattern: str, seed: int = 0) -> nn.Module:
    """``name`` in eval mode with a sparse pattern: ``random`` (99 % of each layer's weights zeroed at random) or
    ``dead`` (random 90 %, plus half the output channels of every conv and a quarter of the inputs every layer
    reads emptied). BatchNorm's statistics are measured on random inputs, as training would, and its affine
    parameters and the biases drawn with both signs (so dead channels are constants, some positive): the outputs
    depend on the input, and a kernel that got it wrong would show."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    channels, size = SHAPES[name]
    model = create_model(name, 10, channels, size)
    batchnorm = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # else (LeNet-5) the kept weights grow
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                keep = torch.rand(m.weight.shape, generator=g) > (0.99 if pattern == "random" else 0.9)
                if pattern == "dead":
                    if isinstance(m, nn.Conv2d) and m.weight.shape[0] > 10:
                        keep[torch.randperm(m.weight.shape[0], generator=g)[: m.weight.shape[0] // 2]] = False
                    if m.weight.shape[1] > 3:
                        keep[:, torch.randperm(m.weight.shape[1], generator=g)[: m.weight.shape[1] // 4]] = False
                m.weight.mul_(keep if batchnorm else keep / keep.float().mean().clamp_min(1e-3).sqrt())
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # a plain mean over the calibration batches
        model.train()
        for _ in range(3):
            model(torch.randn(16, channels, size, size, generator=g))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5)
    return model.eval()


def assert_same_outputs(out: torch.Tensor, ref: torch.Tensor) -> None:
    """Within 1e-4 of the largest output; with several inputs, the part of the outputs that depends on the input
    (not zero here: it is checked) within 1 % of itself, so that a kernel that lost the signal would fail."""
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
    if len(ref) > 1:
        spread = ref - ref.mean(0)
        assert spread.abs().max() > 1e-3 * ref.abs().max()
        assert ((out - out.mean(0)) - spread).abs().max() <= 1e-2 * spread.abs().max()


class Deadline(Exception):
    """A call ran past the time a test allows it (a hang, made a failure)."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise Deadline in this (main) thread if the block runs longer than ``seconds``."""
    def expire(signum, frame):
        raise Deadline(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_cli(argv: list[str], capsys, seconds: float = 60) -> tuple[int, list[str]]:
    """``hypersparse.cli.main(argv)`` in this process, under a deadline: (exit code, stderr lines)."""
    from hypersparse.cli import main

    try:
        with deadline(seconds):
            code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    return code, err.strip().splitlines()


def cli(*args, cwd=None, timeout=300):
    """``python -m hypersparse *args`` in a fresh process, its output captured."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "hypersparse", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env
    )


def run_metrics(run_dir):
    """A run's metrics rows and summary without their timings (which differ between identical runs)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds"), r.pop("train_seconds"), r.pop("measure_seconds"), r.pop("stats_seconds")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("phase_seconds")
    return rows, summary


def image_folder(root: Path, layout: str = "split", sizes=(8, 8)) -> Path:
    """Three classes of 8x8 grey images (bright left, top or right half) as train/ and test/ folders or flat."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 10)) if layout == "split" else ((".", 50),):
        for c, name in enumerate(("left", "top", "right")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = (rng.random(sizes) * 60).astype(np.uint8)
                (a[:, :4] if c == 0 else a[:4] if c == 1 else a[:, 4:])[...] += 150
                Image.fromarray(a, mode="L").save(folder / f"{i}.png")
    return root


def snapshot(root) -> dict[str, str]:
    """Every file and folder under ``root``: its SHA-256, or what it is."""
    import hashlib
    import stat

    out = {}
    for p in sorted(Path(root).rglob("*")):
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(root))] = stat.filemode(st.st_mode)[0]
    return out


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A finished digits run (MLP, 90 %, a few epochs) with its sparse export beside it; copy it before changing it."""
    from hypersparse.config import TrainConfig
    from hypersparse.engine import train
    from hypersparse.export import save_sparse
    from hypersparse.run_read import model_from_run

    run = tmp_path_factory.mktemp("finished") / "run"
    cfg = TrainConfig.from_dict({"sparsity": 0.9, "warmup_epochs": 1, "finetune_epochs": 1, "lr_steps": "1",
                                 "lambda_init": 1e-3})
    with open(os.devnull, "w") as quiet:
        train(cfg, run, progress=False, out=quiet)
    arch = json.loads((run / "summary.json").read_text())["arch"]
    save_sparse(model_from_run(run), run / "model.sparse.safetensors", arch)
    return run
