"""Tasks for meta-training: a family samples tasks; a task is a plain ``nn.Module`` to optimize.

Following google/learned_optimization: ``TaskFamily.sample(seed) -> Task``. A :class:`Task`
holds an ``nn.Module``, its initial parameters θ₀, a batch sampler and a loss. The MetaTrainer
unrolls it functionally with ``torch.func.functional_call(model, params, inputs)``, so any user
module becomes a meta-training task.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call

from ..errors import TaskError
from ..routing import CONV_ROUTE, FC_ROUTE

__all__ = ["Task", "TaskFamily", "FunctionTaskFamily", "named_routes"]


def named_routes(model: nn.Module) -> dict[str, str]:
    """``{parameter name: route}``: conv layers' weights and biases to "conv", the rest to "fc"."""
    routes = {}
    for module_name, module in model.named_modules():
        route = CONV_ROUTE if isinstance(module, nn.modules.conv._ConvNd) else FC_ROUTE
        for param_name, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                routes[f"{module_name}.{param_name}" if module_name else param_name] = route
    return routes


@dataclass
class Task:
    """One optimizee: minimise ``loss_fn(model(inputs), targets)`` over the model's parameters.

    Args:
        model: the module; its parameters' current values are ignored, θ comes from ``params``.
        params: initial parameters θ₀ by name (defaults to the model's own).
        sample_batch: ``step -> (inputs, targets)``; deterministic for a given task.
        loss_fn: ``(outputs, targets) -> scalar tensor``.
        routes: ``{name: route}`` (defaults to :func:`named_routes`).
    """

    model: nn.Module
    sample_batch: Callable[[int], tuple[Any, Any]]
    loss_fn: Callable[[Any, Any], torch.Tensor]
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.params:
            self.params = {name: p.detach().clone() for name, p in self.model.named_parameters()
                           if p.requires_grad}
        if not self.params:
            raise TaskError("the task's model has no trainable parameters (all have "
                            "requires_grad=False, or it has none): nothing to optimize. Pass "
                            "params={name: tensor} or unfreeze the parameters to meta-train on")
        bad = sorted(name for name, value in self.params.items()
                     if not (torch.is_tensor(value) and value.is_floating_point()))
        if bad:
            raise TaskError(f"the task's parameters {bad} are not floating point tensors; the "
                            "learned optimizer updates real-valued parameters only")
        if not self.routes:
            self.routes = named_routes(self.model)
        unknown = sorted(set(self.params) - set(self.routes))
        if unknown:
            self.routes.update({name: FC_ROUTE for name in unknown})

    def loss(self, params: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """f(θ) on the batch of ``step``, differentiable with respect to ``params``."""
        inputs, targets = self.sample_batch(step)
        outputs = functional_call(self.model, params, (inputs,))
        value = self.loss_fn(outputs, targets)
        if not torch.is_tensor(value) or value.numel() != 1 or not value.is_floating_point():
            raise TaskError("a task's loss must be a scalar, real-valued tensor, got "
                            f"{type(value).__name__} of shape {getattr(value, 'shape', None)} "
                            f"and dtype {getattr(value, 'dtype', None)}: "
                            "reduce it in loss_fn (e.g. .mean() or .sum()) and return a tensor")
        return value.reshape(())

    def to(self, device: torch.device | str) -> "Task":
        """This task on ``device``: a copy of the model, θ₀ and every batch moved there
        (batches are still drawn as before, then copied). The task itself is unchanged; on the
        device it is already on it is returned as it is. A ``loss_fn`` that closes over tensors
        of its own keeps them where they are; a subclass that overrides :meth:`loss` overrides
        this too (as :class:`~learned_optim.tasks.ReparamTask` does)."""
        device = torch.device(device)
        if all(value.device == device for value in self.params.values()):
            return self
        sample_batch = self.sample_batch

        def sample_on_device(step: int) -> tuple[Any, Any]:
            return _moved(sample_batch(step), device)

        return Task(model=copy.deepcopy(self.model).to(device), sample_batch=sample_on_device,
                    loss_fn=self.loss_fn,
                    params={name: value.to(device) for name, value in self.params.items()},
                    routes=dict(self.routes))


def _moved(value: Any, device: torch.device) -> Any:
    """Tensors in ``value`` (nested in tuples, lists and dicts) moved to ``device``."""
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_moved(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    return value


class TaskFamily:
    """A distribution over tasks. Subclasses implement :meth:`sample`."""

    #: registry name, e.g. "digits-mlp"
    name: str = "task-family"
    #: optimizer steps per task in the paper's protocol
    horizon: int = 100
    #: True when tasks of different seeds differ only in parameters, buffers and batches (same
    #: module structure, same ``loss_fn`` object): the evaluator may then run seeds side by
    #: side with ``torch.func.vmap``. A loss that closes over per-seed data must leave it False.
    batched_seeds: bool = False

    def sample(self, seed: int) -> Task:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description recorded in the provenance of trained weights."""
        return {"name": self.name, "horizon": self.horizon}


class FunctionTaskFamily(TaskFamily):
    """A task family from a function ``seed -> Task`` (for user-defined tasks)."""

    def __init__(self, name: str, make_task: Callable[[int], Task], horizon: int = 100):
        self.name, self.horizon, self._make_task = name, horizon, make_task

    def sample(self, seed: int) -> Task:
        return self._make_task(seed)
