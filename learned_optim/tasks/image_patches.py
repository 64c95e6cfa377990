"""Autoencoders on 8x8 grey patches of scikit-learn's sample images, for meta-training.

The sample images (``load_sample_images``: a Chinese temple and a flower) ship offline and
may be meta-trained on. Each seed crops 2,048 random 8x8 patches from one of them (grey
levels in [0, 1]) and draws an autoencoder :math:`64 \\to k \\to 64` with a code of
:math:`k \\in \\{8, 24, 32\\}` units (tanh, ReLU or sigmoid) and a sigmoid or linear output,
trained with the squared reconstruction error on minibatches of 32, 64 or 128 patches. The
held-out suite's digits autoencoder (64-16-64 on the digits test images) is not one of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Task, TaskFamily
from .digits import _ACTIVATIONS
from .neural_art import _sample_images
from .synthetic import choose

__all__ = ["PatchAutoencoderFamily"]

_PATCHES, _SIZE = 2048, 8


class _PatchAutoencoder(nn.Module):
    def __init__(self, code: int, activation: str, sigmoid_output: bool):
        super().__init__()
        self.encode = nn.Linear(_SIZE * _SIZE, code)
        self.code = _ACTIVATIONS[activation]()
        self.decode = nn.Linear(code, _SIZE * _SIZE)
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode(self.code(self.encode(x)))
        return torch.sigmoid(out) if self.sigmoid_output else out


def grey_patches(seed: int, count: int = _PATCHES) -> torch.Tensor:
    """``(count, 64)`` random 8x8 grey patches of one sample image, chosen by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    image = _sample_images()[int(torch.randint(2, (1,), generator=g))].mean(0)
    rows = torch.randint(0, image.shape[0] - _SIZE + 1, (count,), generator=g)
    cols = torch.randint(0, image.shape[1] - _SIZE + 1, (count,), generator=g)
    offsets = torch.arange(_SIZE)
    index_rows = (rows[:, None] + offsets)[:, :, None]
    index_cols = (cols[:, None] + offsets)[:, None, :]
    return image[index_rows, index_cols].reshape(count, _SIZE * _SIZE)


class PatchAutoencoderFamily(TaskFamily):
    """Random autoencoders on random sample-image patches (see the module docstring)."""

    def __init__(self, horizon: int = 200, name: str = "patch-autoencoder"):
        self.horizon, self.name = horizon, name

    def sample(self, seed: int) -> Task:
        g = torch.Generator().manual_seed(seed + 1)

        code, activation = choose((8, 24, 32), g), choose(("tanh", "relu", "sigmoid"), g)
        sigmoid_output, batch_size = choose((True, False), g), choose((32, 64, 128), g)
        x = grey_patches(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _PatchAutoencoder(code, activation, sigmoid_output)

        def sample_batch(step: int):
            batch = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
            index = torch.randint(0, _PATCHES, (batch_size,), generator=batch)
            return x[index], x[index]

        return Task(model=model, sample_batch=sample_batch, loss_fn=F.mse_loss)

    def describe(self):
        return {**super().describe(), "patches": _PATCHES, "code": "8|24|32",
                "activation": "tanh|relu|sigmoid", "output": "sigmoid|linear",
                "batch_size": "32|64|128"}
