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
