"""The paper's MNIST and CIFAR optimizees, scaled to scikit-learn's offline 8x8 digits.

* :class:`DigitsMLPFamily`: Section 3.2, an MLP with one hidden layer of 20 sigmoid units,
  cross-entropy, minibatches of 128; options for the transfer variants (40 units, 2 hidden
  layers, ReLU).
* :class:`DigitsCNNFamily`: Section 3.3's CIFAR network on 8x8 digits: three conv layers
  (3x3, batch norm, ReLU, 2x2 max pooling), then a hidden fully connected layer of 32 units;
  all 10 classes or a label subset.

Data: ``sklearn.datasets.load_digits`` (1,797 images) with a fixed split: 1,400 training
images, used for meta-training, and 397 test images, used only for evaluation.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Task, TaskFamily

__all__ = ["DigitsMLPFamily", "DigitsCNNFamily", "DigitsMLP", "DigitsCNN", "digits_split"]

_TRAIN_SIZE = 1400
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU,
                "elu": nn.ELU}


@lru_cache(maxsize=None)
def _all_digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("digits tasks need scikit-learn: pip install 'learned_optim[examples]'"
                          ) from exc
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order], y[order]


def digits_split(split: str, classes: Sequence[int] = tuple(range(10))
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (n, 64), y (n,))`` of the ``"train"`` or ``"test"`` split, labels remapped to
    ``0..len(classes)-1``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    x, y = _all_digits()
    x, y = (x[:_TRAIN_SIZE], y[:_TRAIN_SIZE]) if split == "train" else (x[_TRAIN_SIZE:],
                                                                       y[_TRAIN_SIZE:])
    keep = torch.isin(y, torch.tensor(list(classes)))
    remap = torch.full((10,), -1, dtype=torch.long)
    remap[torch.tensor(list(classes))] = torch.arange(len(classes))
    return x[keep], remap[y[keep]]


class DigitsMLP(nn.Module):
    def __init__(self, hidden: int = 20, layers: int = 1, activation: str = "sigmoid",
                 classes: int = 10, inputs: int = 64):
        super().__init__()
        modules, width = [], inputs
        for _ in range(layers):
            modules += [nn.Linear(width, hidden), _ACTIVATIONS[activation]()]
            width = hidden
        modules.append(nn.Linear(width, classes))
        self.net = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsCNN(nn.Module):
    def __init__(self, classes: int = 10, channels: int = 8, hidden: int = 32):
        super().__init__()
        blocks, width = [], 1
        for _ in range(3):  # 8x8 -> 4x4 -> 2x2 -> 1x1
            blocks += [nn.Conv2d(width, channels, 3, padding=1), nn.BatchNorm2d(channels),
                       nn.ReLU(), nn.MaxPool2d(2)]
            width = channels
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(),
                                        nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.view(-1, 1, 8, 8)))


def _batch_sampler(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
    def sample(step: int):
        g = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
        index = torch.randint(0, len(x), (batch_size,), generator=g)
        return x[index], y[index]
    return sample


class _DigitsFamily(TaskFamily):
    batched_seeds = True

    def __init__(self, *, split: str, classes: Sequence[int], batch_size: int, horizon: int):
        self.split, self.classes = split, tuple(classes)
        self.batch_size, self.horizon = batch_size, horizon

    def _make(self, model: nn.Module, seed: int) -> Task:
        x, y = digits_split(self.split, self.classes)
        return Task(model=model, sample_batch=_batch_sampler(x, y, self.batch_size, seed),
                    loss_fn=F.cross_entropy)

    def describe(self):
        return {**super().describe(), "split": self.split, "classes": list(self.classes),
                "batch_size": self.batch_size}


class DigitsMLPFamily(_DigitsFamily):
    """The paper's MNIST MLP on digits; initial weights from PyTorch's default init."""

    def __init__(self, hidden: int = 20, layers: int = 1, activation: str = "sigmoid",
                 batch_size: int = 128, horizon: int = 100, split: str = "train",
                 classes: Sequence[int] = tuple(range(10)), name: str = "digits-mlp"):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}")
        super().__init__(split=split, classes=classes, batch_size=batch_size, horizon=horizon)
        self.hidden, self.layers, self.activation, self.name = hidden, layers, activation, name

    def sample(self, seed: int) -> Task:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsMLP(self.hidden, self.layers, self.activation, len(self.classes))
        return self._make(model, seed)

    def describe(self):
        return {**super().describe(), "hidden": self.hidden, "layers": self.layers,
                "activation": self.activation}


class DigitsCNNFamily(_DigitsFamily):
    """The paper's CIFAR conv net on digits (conv and fc routes)."""

    def __init__(self, classes: Sequence[int] = tuple(range(10)), batch_size: int = 128,
                 horizon: int = 100, split: str = "train", name: str = "digits-cnn"):
        super().__init__(split=split, classes=classes, batch_size=batch_size, horizon=horizon)
        self.name = name

    def sample(self, seed: int) -> Task:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsCNN(len(self.classes))
        return self._make(model, seed)
