"""Task augmentation: the same problem in rescaled coordinates (issue 10).

:class:`ReparamFamily` wraps a family and rewrites each of its tasks in new coordinates
:math:`\\theta'`, with :math:`\\theta = \\alpha \\odot \\theta'` for a positive scale
:math:`\\alpha` drawn per task:

.. math::
    f'(\\theta') = f(\\alpha \\odot \\theta'), \\qquad \\theta'_0 = \\theta_0 / \\alpha,
    \\qquad \\nabla_{\\theta'} f' = \\alpha \\odot \\nabla_\\theta f.

The losses along any run are those of the original task, but a step of size :math:`\\delta`
in :math:`\\theta'` moves :math:`\\theta` by :math:`\\alpha\\delta`: the best Adam learning
rate of the rescaled task is the original's divided by :math:`\\alpha`. The learned
optimizer's inputs are scale-free (``features="adaptive"``), so it cannot read
:math:`\\alpha` off the gradient's size; meta-trained on such tasks, it must infer the step a
problem wants from how the gradients respond to its steps, instead of learning one step size
that suits the training distribution. Metz et al. ("VeLO", 2022; ``ReparamWeightsFamily`` in
google/learned_optimization) augment their meta-training tasks the same way, at three levels:
``"none"`` (the task as it is), ``"global"`` (one :math:`\\alpha` for every parameter) and
``"tensor"`` (one per parameter tensor), each :math:`\\alpha` log-uniform in
``scale_range``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import Task, TaskFamily

__all__ = ["ReparamFamily", "ReparamTask", "LEVELS"]

#: the augmentation levels :class:`ReparamFamily` can draw from
LEVELS = ("none", "global", "tensor")


class ReparamTask(Task):
    """A task in rescaled coordinates: ``loss(θ', step) = inner.loss(scales * θ', step)``."""

    def __init__(self, inner: Task, scales: dict[str, float]):
        missing = sorted(set(inner.params) - set(scales))
        if missing:
            raise ValueError(f"no scale for the task's parameters {missing}")
        bad = sorted(name for name, scale in scales.items()
                     if not (math.isfinite(scale) and scale > 0))
        if bad:
            raise ValueError(f"scales must be finite and positive; {bad} are not")
        self.inner, self.scales = inner, dict(scales)
        super().__init__(model=inner.model, sample_batch=inner.sample_batch,
                         loss_fn=inner.loss_fn, routes=dict(inner.routes),
                         params={name: value / self.scales[name]
                                 for name, value in inner.params.items()})

    def to(self, device: torch.device | str) -> "ReparamTask":
        """The same rescaled task with its inner task on ``device`` (:meth:`Task.to`)."""
        inner = self.inner.to(device)
        return self if inner is self.inner else ReparamTask(inner, self.scales)

    def loss(self, params: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """:math:`f(\\alpha \\odot \\theta')` on the batch of ``step``."""
        return self.inner.loss({name: value * self.scales[name] if name in self.scales else value
                                for name, value in params.items()}, step)


class ReparamFamily(TaskFamily):
    """``family``'s tasks, each rescaled at a level drawn uniformly from ``levels``
    (:data:`LEVELS`), with scales log-uniform in ``scale_range``; see the module docstring.

    The draws come from their own stream of the seed, so ``family.sample(seed)`` is the task
    the ``"none"`` level returns unchanged.
    """

    def __init__(self, family: TaskFamily, scale_range: tuple[float, float] = (0.1, 10.0),
                 levels: tuple[str, ...] = LEVELS, name: str | None = None):
        low, high = (float(value) for value in scale_range)
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, finite, "
                             f"got {scale_range!r}")
        unknown = sorted(set(levels) - set(LEVELS))
        if not levels or unknown:
            raise ValueError(f"levels must be a non-empty tuple drawn from {LEVELS}, got "
                             f"{levels!r}")
        self.family, self.scale_range, self.levels = family, (low, high), tuple(levels)
        self.name = name or f"{family.name}-reparam"
        self.horizon = family.horizon

    def draw(self, seed: int, names: list[str]) -> tuple[str, dict[str, float]]:
        """The level and the per-parameter scales of task ``seed`` (parameters ``names``)."""
        g = torch.Generator().manual_seed((seed * 104_729 + 7_561) % (2**63))
        level = self.levels[int(torch.randint(len(self.levels), (1,), generator=g))]
        log_low, log_high = (math.log(value) for value in self.scale_range)

        def scale() -> float:
            return math.exp(log_low + (log_high - log_low) * float(torch.rand((), generator=g)))

        if level == "none":
            return level, {name: 1.0 for name in names}
        if level == "global":
            shared = scale()
            return level, {name: shared for name in names}
        return level, {name: scale() for name in names}

    def sample(self, seed: int) -> Task:
        task = self.family.sample(seed)
        level, scales = self.draw(seed, list(task.params))
        return task if level == "none" else ReparamTask(task, scales)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "family": self.family.describe(),
                "scale_range": list(self.scale_range), "levels": list(self.levels)}
