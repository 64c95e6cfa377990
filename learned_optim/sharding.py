r"""Sharded parameters (FSDP2, tensor parallel): the optimizer works on each process's shard.

Under ``torch.distributed.fsdp.fully_shard`` parameters and their gradients are ``DTensor``\ s
and each process holds one shard of every parameter. The learned update is coordinatewise,

.. math::
    [g_i, h_i] = m(\nabla_i, h_i; \phi) \quad \text{for every coordinate } i,

so a process can update its own coordinates with its own rows of hidden state and no
communication: :func:`local_tensor` hands the optimizer the local shard, and the hidden state
is created with the local shard's number of coordinates.

For checkpoints the local state has to say where it sits in the whole.
:func:`sharded_hidden` wraps a shard's hidden state, shaped ``(n_local, 2L, H)`` inside the
optimizer, as a ``DTensor`` of global shape ``(*param.shape, 2L, H)`` with the parameter's own
device mesh and placements (a view, no copy): sharding the parameter along a dimension shards
its hidden state along the same dimension, whatever the sizes. ``torch.distributed.checkpoint``
then saves each shard once and can load it at another world size.

``torch.distributed.tensor`` takes seconds to import, so it is only looked up here, never
imported: a ``DTensor`` cannot exist before that module is loaded.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

__all__ = ["is_sharded", "local_tensor", "sharded_hidden", "saved_hidden_problem",
           "local_hidden"]


def _dtensor_class() -> Any:
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def is_sharded(tensor: Any) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (a parameter or gradient under FSDP2 or TP)."""
    cls = _dtensor_class()
    return cls is not None and isinstance(tensor, cls)


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The part of ``tensor`` this process holds: a ``DTensor``'s local shard (a view, so
    in-place updates reach the parameter), any other tensor itself."""
    return tensor.to_local() if is_sharded(tensor) else tensor


def _real_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """Shape of the real view the optimizer steps: complex numbers are (real, imag) pairs."""
    return tuple(tensor.shape) + ((2,) if tensor.is_complex() else ())


def _hidden_shapes(param: torch.Tensor, rows: int, hidden_size: int
                   ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(flat, shaped)``: the hidden state shapes a state_dict may hold for ``param``.

    ``flat`` is ``(numel, rows, hidden_size)`` (the optimizer's own layout), ``shaped`` is
    ``(*param.shape, rows, hidden_size)`` (the layout of a gathered sharded state). For a
    ``DTensor`` both count the coordinates of the local shard.
    """
    shape = _real_shape(local_tensor(param))
    numel = 1
    for size in shape:
        numel *= size
    return (numel, rows, hidden_size), shape + (rows, hidden_size)


def sharded_hidden(param: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """``hidden`` (the local shard's state, ``(n_local, 2L, H)``) as a ``DTensor`` of global
    shape ``(*param.shape, 2L, H)`` placed like ``param``; a view of ``hidden``."""
    cls = _dtensor_class()
    tail = tuple(hidden.shape[1:])
    local = hidden.view(_real_shape(param.to_local()) + tail)
    shape = _real_shape(param) + tail
    stride, step = [], 1
    for size in reversed(shape):
        stride.append(step)
        step *= size
    return cls.from_local(local, param.device_mesh, param.placements, run_check=False,
                          shape=torch.Size(shape), stride=tuple(reversed(stride)))


def saved_hidden_problem(param: torch.Tensor, hidden: torch.Tensor, rows: int,
                         hidden_size: int) -> str | None:
    """Why ``hidden``, from a state_dict, cannot be ``param``'s hidden state (``None``: it can).

    An unsharded parameter takes ``(numel, rows, hidden_size)`` or ``(*shape, rows,
    hidden_size)`` (a gathered sharded state); a sharded one takes a ``DTensor`` from
    :func:`sharded_hidden` (or ``torch.distributed.checkpoint``) with the same placements, whose
    local shard covers the parameter's local shard.
    """
    flat, shaped = _hidden_shapes(param, rows, hidden_size)
    if is_sharded(param):
        if not is_sharded(hidden):
            return (", but the parameter is sharded (a DTensor) and the state is not: save and "
                    "load sharded optimizer state with torch.distributed.checkpoint "
                    "(get_optimizer_state_dict / set_optimizer_state_dict), or the state_dict "
                    "of this sharded optimizer")
        whole = _real_shape(param) + (rows, hidden_size)
        local = tuple(hidden.to_local().shape)
        if tuple(hidden.shape) != whole or local != shaped \
                or tuple(hidden.placements) != tuple(param.placements):
            return (f" (local shard {local}, placements {tuple(hidden.placements)}), but the "
                    f"sharded parameter of shape {tuple(param.shape)} (local shard "
                    f"{tuple(param.to_local().shape)}, placements {tuple(param.placements)}) "
                    f"needs {whole} placed the same way: the state_dict belongs to other "
                    "parameters or another sharding")
        return None
    if is_sharded(hidden):
        return (", but it is sharded (a DTensor) and the parameter is not: gather it first with "
                "torch.distributed.checkpoint.state_dict.get_optimizer_state_dict(model, "
                "optimizer, options=StateDictOptions(full_state_dict=True))")
    if tuple(hidden.shape) not in (flat, shaped):
        return (f", but the parameter of shape {tuple(param.shape)} needs {flat}"
                + (f" or {shaped}" if shaped != flat else "")
                + ": the state_dict belongs to other parameters")
    return None


def local_hidden(param: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """A checked saved ``hidden`` in the optimizer's layout ``(n_local, rows, hidden_size)``
    (may be a view of ``hidden``)."""
    return local_tensor(hidden).reshape(-1, *hidden.shape[-2:])
