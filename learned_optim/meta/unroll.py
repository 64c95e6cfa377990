r"""Unrolled optimization of one task with the learned update rule.

The optimizee is unrolled functionally: θ is a dict of tensors, the loss is
``task.loss(θ, step)`` (``torch.func.functional_call`` inside), and each step applies the same
:func:`learned_optim.update.lstm_update` that :class:`~learned_optim.LearnedLSTMOptim` uses:

.. math::
    \nabla_t = \operatorname{stop\_gradient}\big(\nabla_\theta f(\theta_t)\big), \qquad
    [g_t, h_{t+1}] = m(\nabla_t, h_t; \phi), \qquad \theta_{t+1} = \theta_t + g_t

so that :math:`\partial \nabla_t / \partial \phi = 0` (Andrychowicz et al. 2016, Section 2.1).
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..network import LSTMOptimizerNet
from ..tasks.base import Task
from ..update import FusedLSTMWeights, fuse_weights, lstm_update, run_progress

__all__ = ["UnrollState", "start", "apply_update", "evaluate"]


class UnrollState:
    r"""θ, the per-parameter hidden state and the step counter of one unrolled optimizee, and
    :math:`\min_{s \le t} f(\theta_s)`, the run's best loss so far (a constant, for the
    MetaTrainer's stability term; ``None`` until a loss is measured)."""

    def __init__(self, params: dict[str, torch.Tensor], hidden: dict[str, torch.Tensor],
                 step: int = 0, best_loss: torch.Tensor | None = None):
        self.params, self.hidden, self.step = params, hidden, step
        self.best_loss = best_loss

    def detach(self) -> "UnrollState":
        """Cut the graph (truncated BPTT): θ becomes a fresh leaf, hidden state a constant."""
        return UnrollState({k: v.detach().requires_grad_() for k, v in self.params.items()},
                           {k: v.detach() for k, v in self.hidden.items()}, self.step,
                           self.best_loss)


def start(task: Task, nets: Mapping[str, LSTMOptimizerNet]) -> UnrollState:
    params = {name: value.detach().clone().requires_grad_() for name, value in task.params.items()}
    hidden = {name: nets[task.routes[name]].initial_state(value.numel(), dtype=value.dtype,
                                                          device=value.device)
              for name, value in params.items()}
    return UnrollState(params, hidden)


def apply_update(task: Task, state: UnrollState, loss: torch.Tensor,
                 weights: Mapping[str, FusedLSTMWeights], *, chunk_size: int | None,
                 keep_graph: bool, horizon: int | None = None) -> UnrollState:
    """One optimizer step from ``loss = f(θ_t)``: detached gradients in, θ_{t+1} out.
    ``horizon`` is the run's length T, for nets that read the progress t / T."""
    names = list(state.params)
    grads = torch.autograd.grad(loss, [state.params[n] for n in names],
                                retain_graph=keep_graph, allow_unused=True)
    new_params, new_hidden = dict(state.params), dict(state.hidden)
    for route in sorted({task.routes[n] for n in names}):
        members = [i for i, n in enumerate(names) if task.routes[n] == route]
        flat_grads = [(grads[i] if grads[i] is not None else torch.zeros_like(
            state.params[names[i]])).detach().reshape(-1) for i in members]
        values = [state.params[names[i]].detach().reshape(-1) for i in members]
        updates, hidden = lstm_update(flat_grads, [state.hidden[names[i]] for i in members],
                                      weights[route], chunk_size=chunk_size, params=values,
                                      progress=run_progress(state.step, horizon))
        for i, update, h in zip(members, updates, hidden):
            name = names[i]
            new_params[name] = state.params[name] + update.view_as(state.params[name])
            new_hidden[name] = h
    return UnrollState(new_params, new_hidden, state.step + 1, state.best_loss)


@torch.no_grad()
def _no_grad_weights(nets: Mapping[str, LSTMOptimizerNet]) -> dict[str, FusedLSTMWeights]:
    return {route: fuse_weights(net) for route, net in nets.items()}


def evaluate(task: Task, nets: Mapping[str, LSTMOptimizerNet], steps: int, *,
             chunk_size: int | None = None) -> list[float]:
    """Run the learned optimizer for ``steps`` steps; return f(θ_t) for t = 0..steps."""
    weights = _no_grad_weights(nets)
    state = start(task, nets)
    losses = []
    for _ in range(steps):
        with torch.enable_grad():
            loss = task.loss(state.params, state.step)
        losses.append(float(loss.detach()))
        with torch.no_grad():
            state = apply_update(task, state, loss, weights, chunk_size=chunk_size,
                                 keep_graph=False, horizon=steps)
        state = state.detach()
    with torch.no_grad():
        losses.append(float(task.loss(state.params, state.step)))
    return losses
