r"""Generated curved valleys for meta-training (issue 10, twenty-second round).

Narrow valleys that bend are where a learned optimizer's step size must grow along the floor and
shrink at the walls; 2 of 4 seeds of ``default``'s recipe blow up on the stability panel's
(``benchmarks/step_scale_probe.py``). These are *generated* ones, so they may be meta-trained
on, and they are kept apart from every function used for judging: the held-out suite's
Rosenbrock valley (a parabola, :math:`y = x^2`) and the stability panel's Beale, Dixon-Price,
straight quadratic, six-hump camel, sine (:math:`y = \sin 2x`) and cubic (:math:`y = x^3`)
valleys. Here the floor is an S-bend plus a bump,

.. math::
    f(\theta) = \sum_{j=1}^{k} (x_j - a_j)^2 + w_j \big(y_j - c_j(x_j)\big)^2, \qquad
    c_j(x) = A_j \tanh\big(\omega_j (x - s_j)\big) + B_j\, e^{-(x - b_j)^2}

over :math:`\theta = (x_1, y_1, \dots, x_k, y_k)`, with :math:`k \in \{1, 2, 4\}` independent
valleys per task, each drawing :math:`a, s, b \sim U(-2, 2)`, :math:`|A| \sim U(0.5, 2)` of
random sign, :math:`\omega = e^{u}, u \sim U(\ln 0.5, \ln 3)`, :math:`B \sim U(-2, 2)` and a wall
:math:`w = 10^{u}, u \sim U(1, 3)`. The minimum is 0 at :math:`x = a, y = c(a)`. Each start
lies 2 to 4 away from :math:`a` along :math:`x` (either side) and 0 to 1 off the floor along
:math:`y`, so an optimizer must travel the bending floor between steep walls.

``floor_starts`` :math:`= p` (thirty-second round's finding, default 0): each task starts, with
probability :math:`p`, on its valley floor instead, :math:`y = c(x) + 0.02\,u` with the same
:math:`u \sim U(-1, 1)` and the same :math:`x` it would otherwise have. From the stability
panel's steep sine valley, starts on the floor (a starting loss of 8-17 against 100-3,000)
are where most epochs of the valley recipes climb the wall above 10x their start, 161-330
steps into the run, while Adam at lr 0.01 does not rise at all; off the floor such a climb
is hidden by the large starting loss. With :math:`p = 0` the tasks are bit for bit those
of the family without the option.
"""

from __future__ import annotations

import math

import torch

from .base import Task, TaskFamily
from .heldout import _Point  # a point in R^n as a module (no data)

__all__ = ["CurvedValleyFamily"]


def _uniform(low: float, high: float, size: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def _random_sign(size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(size, generator=generator) < 0.5, -1.0, 1.0).double()


class _Valleys:
    """The loss of one task: its coefficients, each a tensor of shape ``(k,)``."""

    def __init__(self, generator: torch.Generator, valleys: int):
        k = valleys
        self.minimum_x = _uniform(-2, 2, k, generator)
        self.bend = _random_sign(k, generator) * _uniform(0.5, 2, k, generator)
        self.sharpness = _uniform(math.log(0.5), math.log(3), k, generator).exp()
        self.bend_at = _uniform(-2, 2, k, generator)
        self.bump = _uniform(-2, 2, k, generator)
        self.bump_at = _uniform(-2, 2, k, generator)
        self.wall = 10 ** _uniform(1, 3, k, generator)

    def floor(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`c(x)`, the valley floor's height at ``x``."""
        bend = self.bend.to(x) * torch.tanh(self.sharpness.to(x) * (x - self.bend_at.to(x)))
        return bend + self.bump.to(x) * torch.exp(-(x - self.bump_at.to(x)).square())

    def __call__(self, theta: torch.Tensor, _targets=None) -> torch.Tensor:
        x, y = theta[0::2], theta[1::2]
        along = (x - self.minimum_x.to(x)).square()
        across = self.wall.to(x) * (y - self.floor(x)).square()
        return (along + across).sum()


class CurvedValleyFamily(TaskFamily):
    """Random bending narrow valleys in 2, 4 or 8 dimensions (see the module docstring)."""

    def __init__(self, horizon: int = 200, name: str = "curved-valley",
                 valleys: tuple[int, ...] = (1, 2, 4), floor_starts: float = 0.0):
        if not valleys or min(valleys) < 1:
            raise ValueError(f"valleys must be a non-empty tuple of counts >= 1, got {valleys!r}")
        if not 0.0 <= floor_starts <= 1.0:
            raise ValueError(f"floor_starts is a probability, in [0, 1]; got {floor_starts!r}")
        self.horizon, self.name, self.valleys = horizon, name, tuple(valleys)
        self.floor_starts = float(floor_starts)

    def sample(self, seed: int) -> Task:
        generator = torch.Generator().manual_seed(seed)
        k = self.valleys[int(torch.randint(len(self.valleys), (1,), generator=generator))]
        loss = _Valleys(generator, k)
        x = loss.minimum_x + _random_sign(k, generator) * _uniform(2, 4, k, generator)
        off_floor = _uniform(-1, 1, k, generator)
        if self.floor_starts > 0 and float(torch.rand(1, generator=generator)) < self.floor_starts:
            off_floor = 0.02 * off_floor  # drawn after everything else: other tasks unchanged
        y = loss.floor(x) + off_floor
        start = torch.stack([x, y], 1).reshape(-1).float()
        return Task(model=_Point(start), sample_batch=lambda step: (None, None), loss_fn=loss)

    def describe(self):
        description = {**super().describe(), "valleys": list(self.valleys)}
        if self.floor_starts:
            description["floor_starts"] = self.floor_starts
        return description
