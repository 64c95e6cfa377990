r"""Meta-training across processes: the collectives the MetaTrainer needs, nothing else.

With :math:`P` processes and a meta-batch of :math:`M` tasks, process :math:`r` unrolls
:math:`M/P` of them and back-propagates :math:`\frac{1}{M}\sum_{i \in r} \mathcal{L}_i`;
summing the meta-gradients over processes gives the meta-batch mean

.. math::
    \nabla_\phi \frac{1}{M} \sum_{i=1}^{M} \mathcal{L}_i(\phi)
    = \sum_{r=1}^{P} \nabla_\phi \frac{1}{M} \sum_{i \in r} \mathcal{L}_i(\phi),

the gradient a single process would compute for the same :math:`M` tasks, so every process
applies the same Adam step and holds the same φ. Everything here is a no-op without a group.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

__all__ = ["rank_and_world_size", "all_reduce_sum", "all_reduce_gradients",
           "process_group_from_env"]


def rank_and_world_size(group) -> tuple[int, int]:
    """``(rank, world size)`` in ``group``; ``(0, 1)`` for ``None`` (one process)."""
    if group is None:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        raise RuntimeError("MetaTrainer got a process group but torch.distributed is not "
                           "initialized: call torch.distributed.init_process_group first "
                           "(torchrun sets the environment for it), or pass process_group=None")
    return dist.get_rank(group), dist.get_world_size(group)


def all_reduce_sum(values: torch.Tensor, group) -> torch.Tensor:
    """Sum ``values`` over the processes of ``group`` (in place; returned for chaining)."""
    if group is not None:
        import torch.distributed as dist

        dist.all_reduce(values, op=dist.ReduceOp.SUM, group=group)
    return values


def all_reduce_gradients(params: Sequence[torch.Tensor], group) -> None:
    """Replace each ``param.grad`` by its sum over the processes of ``group``.

    A process without a gradient for a parameter (its tasks never used that route) adds
    zeros. A parameter without a gradient on every process keeps ``grad = None``, as in one
    process, so Adam leaves it and its moments alone.
    """
    if group is None or not params:
        return
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float64)
    all_reduce_sum(present, group)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])
    all_reduce_sum(flat, group)
    offset = 0
    for param, count in zip(params, present.tolist()):
        size = param.numel()
        param.grad = flat[offset:offset + size].view_as(param).clone() if count else None
        offset += size


def process_group_from_env():
    """The default process group when launched by ``torchrun`` with ``WORLD_SIZE > 1``
    (initialised with the gloo backend if nobody has yet), else ``None``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.group.WORLD
