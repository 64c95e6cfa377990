r"""The naive baseline of the benchmark: the LSTM optimizer as most re-implementations write it.

One Python loop over the parameter tensors; for each, the paper's preprocessing and two
``nn.LSTMCell`` layers over all its coordinates at once (no chunking, no batching across
tensors), each with its own ``(h, c)`` tensors:

.. math::
    [g, h] = \mathrm{head}\big(\mathrm{LSTMCell}_2(\mathrm{LSTMCell}_1(
        \operatorname{preprocess}(\nabla), h_1), h_2)\big), \qquad \theta \leftarrow \theta + g

It computes the same function as :class:`learned_optim.LearnedLSTMOptim` (up to float rounding:
``nn.LSTMCell`` uses ``sigmoid``/``tanh``) and is kept here, outside the package, only as the
reference column (a) of ``benchmarks/bench_step.py`` and as the naive unroll the MetaTrainer is
compared with. Do not use it to train anything.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from learned_optim import LSTMOptimizerNet
from learned_optim.tasks.base import Task

__all__ = ["NaiveLSTMOptimizer", "naive_preprocess", "naive_lstm", "naive_train_task"]


def naive_preprocess(grad: torch.Tensor, p: float) -> torch.Tensor:
    """The paper's ``(log|g|/p, sign g)`` or ``(-1, e^p g)`` inputs, shape ``(n, 2)``."""
    large = grad.abs() >= math.exp(-p)
    log_part = torch.where(large, grad.abs().clamp_min(1e-38).log() / p, -torch.ones_like(grad))
    sign_part = torch.where(large, grad.sign(), grad * math.exp(p))
    return torch.stack([log_part, sign_part], dim=1)


def naive_lstm(net: LSTMOptimizerNet, grad: torch.Tensor,
               states: list[tuple[torch.Tensor, torch.Tensor]]):
    """The update of one flat gradient ``(n,)`` and the new per-layer ``(h, c)`` states."""
    x = naive_preprocess(grad, net.config.p)
    new_states = []
    for cell, state in zip(net.cells, states):
        h, c = cell(x, state)
        new_states.append((h, c))
        x = h
    return net.head(x).squeeze(1) * net.config.output_scale, new_states


def _zero_states(net: LSTMOptimizerNet, numel: int, dtype: torch.dtype, device):
    hidden = net.config.hidden_size
    return [(torch.zeros(numel, hidden, dtype=dtype, device=device),
             torch.zeros(numel, hidden, dtype=dtype, device=device))
            for _ in range(net.config.num_layers)]


class NaiveLSTMOptimizer:
    """Per-tensor loop over ``nn.LSTMCell``: ``step()`` updates every param with a grad."""

    def __init__(self, params: Iterable[torch.Tensor], net: LSTMOptimizerNet):
        self.params = list(params)
        self.net = net.requires_grad_(False)
        self.state: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @torch.no_grad()
    def step(self) -> None:
        for index, param in enumerate(self.params):
            if param.grad is None:
                continue
            states = self.state.get(index) or _zero_states(self.net, param.numel(),
                                                           param.dtype, param.device)
            update, self.state[index] = naive_lstm(self.net, param.grad.reshape(-1), states)
            param.add_(update.view_as(param))


def naive_train_task(task: Task, net: LSTMOptimizerNet, meta_optimizer: torch.optim.Optimizer,
                     horizon: int, unroll: int) -> None:
    """Meta-train ``net`` on one task the naive way: truncated BPTT with the per-tensor
    ``nn.LSTMCell`` loop, graph kept through φ, Adam after every ``unroll`` steps on the mean
    loss with the meta-gradient clipped to norm 1 (the MetaTrainer's defaults)."""
    params = {k: v.detach().clone().requires_grad_() for k, v in task.params.items()}
    states = {k: _zero_states(net, v.numel(), v.dtype, v.device) for k, v in params.items()}
    step = 0
    while step < horizon:
        total, steps = 0.0, min(unroll, horizon - step)
        loss = task.loss(params, step)
        for _ in range(steps):
            grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True)
            new_params = {}
            for (name, value), grad in zip(params.items(), grads):
                update, states[name] = naive_lstm(net, grad.detach().reshape(-1), states[name])
                new_params[name] = value + update.view_as(value)
            params, step = new_params, step + 1
            loss = task.loss(params, step)
            total = total + loss
        meta_optimizer.zero_grad()
        (total / steps).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        meta_optimizer.step()
        params = {k: v.detach().requires_grad_() for k, v in params.items()}
        states = {k: [(h.detach(), c.detach()) for h, c in s] for k, s in states.items()}
