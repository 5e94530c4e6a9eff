import contextlib
import signal

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _threads_and_seed():
    torch.manual_seed(0)
    yield


def make_mlp(sizes=(8, 16, 4), bias=True):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b, bias=bias), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def make_convnet():
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv1d(1, 1, 1) if False else nn.Identity(),
        nn.Conv2d(6, 5, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7),
    )


def synthetic_problem(n=512, d=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g) * 2.5
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    return x, y


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


def snapshot(root) -> dict[str, str]:
    """Every file and folder under ``root``: its SHA-256, or what it is."""
    import hashlib
    import os
    import stat
    from pathlib import Path

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
    import json
    import os

    from hypersparse.config import TrainConfig
    from hypersparse.engine import train
    from hypersparse.export import save_sparse
    from hypersparse.runs import model_from_run

    run = tmp_path_factory.mktemp("finished") / "run"
    cfg = TrainConfig.from_dict({"sparsity": 0.9, "warmup_epochs": 1, "finetune_epochs": 1, "lr_steps": "1",
                                 "lambda_init": 1e-3})
    with open(os.devnull, "w") as quiet:
        train(cfg, run, progress=False, out=quiet)
    arch = json.loads((run / "summary.json").read_text())["arch"]
    save_sparse(model_from_run(run), run / "model.sparse.safetensors", arch)
    return run
