"""The hand-designed baselines of the evidence table, and their learning-rate grid.

As in Andrychowicz et al. (2016), Section 3: SGD, RMSprop, Adam and Nesterov's accelerated
gradient (SGD with momentum 0.9, ``nesterov=True``), each with its learning rate tuned per
problem; every other hyperparameter stays at PyTorch's default.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["BASELINES", "BASELINE_LABELS", "LR_GRID", "QUICK_LR_GRID", "make_baseline"]

#: learning rates tried when tuning: 1e-4 ... 1 in half-decades (9 values)
LR_GRID: tuple[float, ...] = tuple(round(10 ** (-4 + k / 2), 10) for k in range(9))
#: the ``--quick`` grid: 1e-4 ... 1 in decades (5 values)
QUICK_LR_GRID: tuple[float, ...] = tuple(10.0 ** -k for k in range(4, -1, -1))

BASELINES: dict[str, Callable[[list[dict[str, Any]]], torch.optim.Optimizer]] = {
    "sgd": lambda groups: torch.optim.SGD(groups),
    "nesterov": lambda groups: torch.optim.SGD(groups, momentum=0.9, nesterov=True),
    "rmsprop": lambda groups: torch.optim.RMSprop(groups),
    "adam": lambda groups: torch.optim.Adam(groups),
}
BASELINE_LABELS = {"sgd": "SGD", "nesterov": "Nesterov", "rmsprop": "RMSprop", "adam": "Adam"}


def make_baseline(kind: str, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """``BASELINES[kind]`` over param groups that each carry their own ``"lr"``."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; known: {sorted(BASELINES)}")
    return BASELINES[kind]([{"params": g["params"], "lr": g["lr"]} for g in groups])
