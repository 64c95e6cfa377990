"""The paper's quadratic functions (Andrychowicz et al. 2016, Section 3.1).

.. math:: f(\\theta) = \\lVert W\\theta - y \\rVert_2^2, \\quad W \\in \\mathbb{R}^{d\\times d},
    y \\in \\mathbb{R}^d, \\text{ entries IID } \\mathcal{N}(0, 1).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Task, TaskFamily

__all__ = ["QuadraticFamily"]


class _Quadratic(nn.Module):
    def __init__(self, W: torch.Tensor, y: torch.Tensor, theta: torch.Tensor):
        super().__init__()
        self.register_buffer("W", W)
        self.register_buffer("y", y)
        self.theta = nn.Parameter(theta)

    def forward(self, _inputs=None) -> torch.Tensor:
        return self.W @ self.theta - self.y


def _sum_of_squares(residual: torch.Tensor, _targets=None) -> torch.Tensor:
    return residual.square().sum()


class QuadraticFamily(TaskFamily):
    """Random 10-d quadratics; θ₀ ~ N(0, 1). Deterministic objective (no minibatches)."""

    batched_seeds = True

    def __init__(self, dim: int = 10, horizon: int = 100):
        self.dim, self.horizon, self.name = dim, horizon, "quadratic"

    def sample(self, seed: int) -> Task:
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(self.dim, self.dim, generator=g)
        y = torch.randn(self.dim, generator=g)
        model = _Quadratic(W, y, torch.randn(self.dim, generator=g))
        return Task(model=model, sample_batch=lambda step: (None, None), loss_fn=_sum_of_squares)

    def describe(self):
        return {**super().describe(), "dim": self.dim}
