import pytest
import torch
from torch import nn

from hypersparse.models import create_model


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
