"""Fully connected and LeNet models for small images."""
from torch import nn


class MLP(nn.Sequential):
    """Two hidden layers of ``hidden`` units with ReLU."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256):
        super().__init__(
            nn.Flatten(),
            nn.Linear(in_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )


class LeNet300(nn.Sequential):
    """LeNet-300-100 (LeCun et al. 1998): 784-300-100-10."""

    def __init__(self, in_features: int = 784, num_classes: int = 10):
        super().__init__(
            nn.Flatten(),
            nn.Linear(in_features, 300), nn.ReLU(),
            nn.Linear(300, 100), nn.ReLU(),
            nn.Linear(100, num_classes),
        )


class LeNet5(nn.Sequential):
    """LeNet-5, Caffe variant: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10):
        side = ((image_size - 4) // 2 - 4) // 2
        super().__init__(
            nn.Conv2d(in_channels, 20, 5), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(50 * side * side, 500), nn.ReLU(),
            nn.Linear(500, num_classes),
        )
