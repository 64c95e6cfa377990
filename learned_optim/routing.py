"""Which parameters go to which LSTM.

The paper's CIFAR experiment (Andrychowicz et al. 2016, Section 3.3) uses two optimizer nets
with separate weights: one for the convolutional layers and one for the fully connected ones.
A weights bundle holds one net per *route*; every bundle has an ``"fc"`` net, and bundles
meta-trained on convolutional models also have a ``"conv"`` net.

Rules:

* :func:`route_param_groups` routes by module: the weights *and biases* of every
  ``nn.Conv1d/2d/3d`` (and transposed convolution) go to ``"conv"``, all others to ``"fc"``.
* A param group whose ``route`` is ``"auto"`` (the default, e.g. plain ``model.parameters()``)
  routes by shape: a tensor with 3 or more dimensions (a convolution kernel) goes to ``"conv"``
  when the bundle has a conv net, everything else to ``"fc"``. Shapes cannot tell a conv bias
  from an fc bias, so conv biases go to ``"fc"`` under this rule; use
  :func:`route_param_groups` to route them with their layer.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

__all__ = ["FC_ROUTE", "CONV_ROUTE", "AUTO_ROUTE", "route_for_shape", "route_param_groups"]

FC_ROUTE = "fc"
CONV_ROUTE = "conv"
AUTO_ROUTE = "auto"


def route_for_shape(param: torch.Tensor, routes: Iterable[str]) -> str:
    """The route of ``param`` in a group whose route is ``"auto"``."""
    if param.dim() >= 3 and CONV_ROUTE in routes:
        return CONV_ROUTE
    return FC_ROUTE


def route_param_groups(model: nn.Module, **group_options: Any) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into a conv group and an fc group.

    Args:
        model: any module.
        **group_options: extra keys for both groups (e.g. ``lr=0.5``).

    Returns:
        A list of param-group dicts for :class:`~learned_optim.LearnedLSTMOptim` (empty groups
        are left out), each with ``"route"`` set to ``"conv"`` or ``"fc"``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(36, 10))
        >>> [g["route"] for g in route_param_groups(model)]
        ['conv', 'fc']
    """
    seen: set[int] = set()
    conv: list[nn.Parameter] = []
    fc: list[nn.Parameter] = []
    for module in model.modules():
        target = conv if isinstance(module, nn.modules.conv._ConvNd) else fc
        for param in module.parameters(recurse=False):
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                target.append(param)
    groups = []
    for route, params in ((CONV_ROUTE, conv), (FC_ROUTE, fc)):
        if params:
            groups.append({"params": params, "route": route, **group_options})
    return groups
