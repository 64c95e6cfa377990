r"""Run one optimizer on many seeds (and learning rates) of a task family; record every loss.

Each run is an ordinary training loop, exactly what a user writes::

    loss = f(θ; batch_t);  optimizer.zero_grad();  loss.backward();  optimizer.step()

and records :math:`f(\theta_t)` on the batch of step :math:`t`, before step :math:`t`'s update.

Two ways to run many of them, with the same results:

* **side by side** (families with ``batched_seeds``): the parameters of all (lr, seed) copies
  are stacked along new leading dimensions and the loss of every copy is computed with
  ``torch.func.vmap`` over ``functional_call``. Backpropagating the *sum* of the copies' losses
  gives each copy exactly its own gradient, and a coordinatewise optimizer (SGD, Nesterov,
  RMSprop and Adam per element, the learned LSTM per coordinate) makes a stacked run the same
  computation as separate runs; one param group per learning rate. This is what makes
  10,000-step rows affordable on 2 CPU cores.
* **one at a time** (any family): a fresh task and optimizer per (lr, seed).

A learned net with ``tensor_feature=True`` or ``hypergradient_rate > 0`` is not
coordinatewise: it reads one statistic of each parameter *tensor* (or scales each tensor's
steps), and a stacked tensor holds every seed, so stacked it would pool that over the seeds
(:attr:`OptimizerSpec.coordinatewise`). Such nets always run one at a time.

The learned optimizer leaves a parameter *tensor* unchanged when its gradient holds NaN/inf
(with a warning); stacked, that tensor holds every seed, so a stacked learned run that hits a
non-finite gradient is re-run one seed at a time.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.func import functional_call, vmap

from ..optimizer import LearnedLSTMOptim
from ..routing import FC_ROUTE
from ..tasks.base import Task, TaskFamily
from ..weights import resolve_weights
from .baselines import make_baseline

__all__ = ["OptimizerSpec", "run_losses", "time_per_step", "final_loss", "mean_loss"]

_STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of the evidence table.

    Args:
        label: its name in the table, e.g. ``"Adam (tuned)"`` or ``"l2l-digits-mlp"``.
        kind: a baseline name (``"sgd"``, ``"nesterov"``, ``"rmsprop"``, ``"adam"``) or
            ``"learned"``.
        weights: the bundled weights of a learned optimizer.
        state_dtype: ``"bfloat16"`` to store a learned optimizer's hidden state in bfloat16.
    """

    label: str
    kind: str
    weights: str | None = None
    state_dtype: str | None = None

    @property
    def coordinatewise(self) -> bool:
        """Whether every coordinate's step depends on that coordinate alone, so that runs
        stacked along a new dimension step exactly as separate runs do: true for the
        baselines and for learned nets without per-tensor inputs or step scales
        (:attr:`~learned_optim.network.LSTMOptimizerConfig.per_tensor`)."""
        if self.kind != "learned":
            return True
        bundle = resolve_weights(self.weights)
        return not any(net.config.per_tensor for net in bundle.nets.values())

    def build(self, copies: Sequence[dict[str, torch.Tensor]], lrs: Sequence[float],
              routes: dict[str, str], total_steps: int | None = None) -> torch.optim.Optimizer:
        """The optimizer over ``copies`` (one dict of leaves per learning rate). A learned
        optimizer is told the run's length ``total_steps`` (used only by nets that read the
        progress); the baselines keep a constant lr."""
        if self.kind != "learned":
            return make_baseline(self.kind, [{"params": list(c.values()), "lr": lr}
                                             for c, lr in zip(copies, lrs)])
        bundle = resolve_weights(self.weights)
        groups = []
        for leaves, lr in zip(copies, lrs):
            for route in sorted(set(routes.values())):
                groups.append({
                    "params": [p for name, p in leaves.items() if routes[name] == route],
                    "lr": lr,
                    # e.g. a conv layer under an fc-only bundle: the fc net, as "auto" would
                    "route": route if route in bundle.routes else FC_ROUTE})
        return LearnedLSTMOptim(groups, weights=bundle, total_steps=total_steps,
                                state_dtype=_STATE_DTYPES.get(self.state_dtype))


def final_loss(curves: torch.Tensor) -> torch.Tensor:
    """Mean loss over the last 10% of steps (minibatch noise averaged), per run."""
    tail = max(1, curves.shape[-1] // 10)
    return _finite_or_inf(curves[..., -tail:].mean(-1))


def mean_loss(curves: torch.Tensor) -> torch.Tensor:
    """Mean loss over the whole run, per run (inf if the run diverged)."""
    return _finite_or_inf(curves.mean(-1))


def _finite_or_inf(values: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(values), values, torch.full_like(values, math.inf))


def run_losses(family: TaskFamily, seeds: Sequence[int], horizon: int, spec: OptimizerSpec,
               lrs: Sequence[float] = (1.0,), *, side_by_side: bool | None = None
               ) -> torch.Tensor:
    """Losses of ``spec`` on ``family``: a float64 tensor ``(len(lrs), len(seeds), horizon)``.

    ``side_by_side`` defaults to ``family.batched_seeds`` for a coordinatewise ``spec`` and to
    ``False`` otherwise (:attr:`OptimizerSpec.coordinatewise`). A diverged run's remaining
    losses are ``inf``.
    """
    if side_by_side is None:
        side_by_side = family.batched_seeds and spec.coordinatewise
    elif side_by_side and not spec.coordinatewise:
        raise ValueError(
            f"{spec.label!r} reads per-tensor statistics (tensor_feature=True or "
            "hypergradient_rate > 0), so runs stacked side by side would share them across "
            "seeds: pass side_by_side=False (or None)")
    if not side_by_side:
        return _run_one_at_a_time(family, seeds, horizon, spec, lrs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        curves = _run_side_by_side(family, seeds, horizon, spec, lrs)
    if spec.kind == "learned" and any("skipped" in str(w.message) for w in caught):
        return _run_one_at_a_time(family, seeds, horizon, spec, lrs)
    return curves


def time_per_step(family: TaskFamily, seed: int, steps: int, spec: OptimizerSpec,
                  lr: float = 1.0) -> float:
    """Seconds per training step of one ordinary (unstacked) run, timed over ``steps`` steps."""
    task = family.sample(seed)
    leaves = leaf_copies(task.params)
    optimizer = spec.build([leaves], [lr], task.routes, total_steps=steps)
    started = time.perf_counter()
    for step in range(steps):
        _train_step(task.loss(leaves, step), optimizer)
    return (time.perf_counter() - started) / steps


def leaf_copies(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fresh leaf tensors holding ``params``' values (a task's θ₀), for an optimizer to train
    without touching the task's own tensors."""
    return {name: value.detach().clone().requires_grad_() for name, value in params.items()}


def _train_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _run_one_at_a_time(family, seeds, horizon, spec, lrs) -> torch.Tensor:
    """Each (lr, seed) alone: :func:`run_losses_as_tensors` with one seed."""
    return torch.stack([torch.cat([run_losses_as_tensors(family, [seed], horizon, spec, lr)[0]
                                   for seed in seeds]) for lr in lrs])


def run_losses_as_tensors(family: TaskFamily, seeds: Sequence[int], horizon: int,
                          spec: OptimizerSpec, lr: float = 1.0) -> torch.Tensor:
    r"""The losses of :func:`run_losses` (``lrs=(lr,)``) with every seed's parameters as their
    own tensors in **one** optimizer: a float64 tensor ``(1, len(seeds), horizon)``.

    Seeds stacked side by side (:func:`run_losses` with ``side_by_side=True``) share one tensor
    per parameter, so a per-tensor statistic (``tensor_feature``, the step scale of
    ``hypergradient_rate > 0``) would pool them. Here seed :math:`j`'s parameters are separate
    leaves, each with its own state; the optimizer steps on :math:`\sum_j f_j(\theta^{(j)})`,
    whose gradient with respect to :math:`\theta^{(j)}` is :math:`\nabla f_j` alone, so every
    seed sees what it would see run alone, and the LSTM runs once per step over all seeds'
    coordinates instead of once per seed. The curves equal one-at-a-time runs' up to the
    rounding of a larger matrix multiply (``tests/test_evaluation.py``; on the stability
    panel of ``benchmarks/step_scale_probe.py`` they are the same bits). A seed whose loss
    goes non-finite is dropped from the sum and its remaining losses are ``inf``; a tensor
    with a non-finite gradient is left unchanged by the optimizer, as in a lone run. Only for
    tasks whose loss reads nothing but their own parameters and batch (no shared global
    random state).
    """
    tasks = [family.sample(seed) for seed in seeds]
    leaves = [leaf_copies(task.params) for task in tasks]
    everything = {f"{j}/{name}": leaf for j, own in enumerate(leaves)
                  for name, leaf in own.items()}
    routes = {f"{j}/{name}": task.routes[name] for j, task in enumerate(tasks)
              for name in task.params}
    optimizer = spec.build([everything], [lr], routes, total_steps=horizon)
    curves = torch.full((len(seeds), horizon), math.inf, dtype=torch.float64)
    alive = [True] * len(seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergence is recorded as inf
        for step in range(horizon):
            total = None
            for j, (task, own) in enumerate(zip(tasks, leaves)):
                if not alive[j]:
                    continue
                loss = task.loss(own, step)
                value = float(loss.detach())
                if not math.isfinite(value):
                    alive[j] = False
                    continue
                curves[j, step] = value
                total = loss if total is None else total + loss
            if total is None:
                break
            _train_step(total, optimizer)
    return curves.unsqueeze(0)


class _SeedStack:
    """Tasks of several seeds (and copies per learning rate) evaluated in one vmapped call."""

    def __init__(self, tasks: list[Task], copies: int):
        template = tasks[0]
        self.tasks, self.model, self.loss_fn = tasks, template.model, template.loss_fn
        self.routes = template.routes
        self.initial = {name: torch.stack([t.params[name] for t in tasks])
                        for name in template.params}
        buffers = [dict(t.model.named_buffers()) for t in tasks]
        self.buffers = {name: torch.stack([b[name] for b in buffers]).unsqueeze(0)
                        .repeat(copies, *([1] * (value.dim() + 1))).clone()
                        for name, value in buffers[0].items()}
        self._vmapped: dict[tuple[bool, bool], Any] = {}

    def _loss_one(self, params, buffers, inputs, targets):
        return self.loss_fn(functional_call(self.model, {**params, **buffers}, (inputs,)),
                            targets).reshape(())

    def losses(self, params: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """``(copies, seeds)`` losses of the stacked ``params`` on each seed's batch ``step``."""
        batches = [t.sample_batch(step) for t in self.tasks]
        inputs, targets = (_stack([b[k] for b in batches]) for k in (0, 1))
        key = (inputs is None, targets is None)
        if key not in self._vmapped:
            data_dims = tuple(None if missing else 0 for missing in key)
            inner = vmap(self._loss_one, in_dims=(0, 0) + data_dims)
            self._vmapped[key] = vmap(inner, in_dims=(0, 0, None, None))
        return self._vmapped[key](params, self.buffers, inputs, targets)


def _stack(values: list[Any]) -> torch.Tensor | None:
    if all(v is None for v in values):
        return None
    return torch.stack(values)


def _run_side_by_side(family, seeds, horizon, spec, lrs) -> torch.Tensor:
    stack = _SeedStack([family.sample(seed) for seed in seeds], len(lrs))
    copies = [leaf_copies(stack.initial) for _ in lrs]
    optimizer = spec.build(copies, lrs, stack.routes, total_steps=horizon)
    curves = torch.full((horizon, len(lrs), len(seeds)), math.inf, dtype=torch.float64)
    for step in range(horizon):
        params = {name: torch.stack([c[name] for c in copies]) for name in stack.initial}
        losses = stack.losses(params, step)
        values = losses.detach().double()
        if not torch.isfinite(values).any():
            break
        curves[step] = values
        _train_step(losses.sum(), optimizer)
    return _finite_or_inf(curves).permute(1, 2, 0).contiguous()
