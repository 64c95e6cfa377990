r"""The learned update rule as pure functions over flat tensors.

This module is the only place the LSTM optimizer's math lives. Two callers use it:

* :class:`learned_optim.LearnedLSTMOptim` calls :func:`lstm_step` under ``torch.no_grad()``
  on chunks it gathers from the parameters, and writes the results into its state in place;
* the MetaTrainer calls :func:`lstm_update` with the autograd graph kept through φ.

For one coordinate (Andrychowicz et al. 2016, eq. 3 and Appendix A):

.. math::
    x_t &= \operatorname{preprocess}(\nabla_t) \\
    [g_t, h_{t+1}] &= m(x_t, h_t; \phi) \\
    \theta_{t+1} &= \theta_t + g_t

Every coordinate is independent of every other one. The functions below are written so that
this holds bit for bit, whatever the chunking: matrix multiplies run on blocks padded to a
multiple of :data:`ROW_ALIGN` rows (CPU BLAS rounds differently for a handful of rows), and the
gate sigmoids are computed as :math:`\sigma(x) = \tfrac12 \tanh(x/2) + \tfrac12` because
``torch.tanh`` gives the same bits at every position of a tensor, while ``torch.sigmoid`` on CPU
computes the tail of a vectorised loop with a different scalar formula.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from .network import LSTMOptimizerConfig, LSTMOptimizerNet

__all__ = [
    "ROW_ALIGN",
    "FusedLSTMWeights",
    "fuse_weights",
    "preprocess_gradient",
    "lstm_step",
    "lstm_update",
    "iter_chunks",
    "update_bound",
]

#: Chunks are padded to a multiple of this many rows before each matrix multiply.
ROW_ALIGN = 8

# Smallest |∇| fed to the log; anything below takes the other branch of the preprocessing.
_TINY = 1e-38


class FusedLSTMWeights(NamedTuple):
    """φ laid out for the update rule: one matrix per layer over ``[input, h]``.

    ``layers[l] = (weight, bias)`` with ``weight`` of shape ``(4H, in_l + H)`` whose input,
    forget and output gate rows are pre-multiplied by 1/2 (exact in floating point) so one
    ``tanh`` yields all four gates. ``head = (weight (1, H), bias (1,))``.
    """

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    head_weight: torch.Tensor
    head_bias: torch.Tensor
    config: LSTMOptimizerConfig


def fuse_weights(net: LSTMOptimizerNet, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> FusedLSTMWeights:
    """Lay out ``net``'s weights for :func:`lstm_step` (differentiable with respect to φ)."""
    hidden = net.config.hidden_size
    # nn.LSTMCell gate order is (input, forget, cell, output); sigmoid gates get the 1/2.
    gate_scale = torch.full((4 * hidden, 1), 0.5)
    gate_scale[2 * hidden:3 * hidden] = 1.0
    layers = []
    for cell in net.cells:
        weight = torch.cat([cell.weight_ih, cell.weight_hh], dim=1)
        bias = cell.bias_ih + cell.bias_hh
        scale = gate_scale.to(device=weight.device, dtype=weight.dtype)
        weight, bias = weight * scale, bias * scale.squeeze(1)
        layers.append((weight.to(device=device, dtype=dtype), bias.to(device=device, dtype=dtype)))
    return FusedLSTMWeights(
        layers=tuple(layers),
        head_weight=net.head.weight.to(device=device, dtype=dtype),
        head_bias=net.head.bias.to(device=device, dtype=dtype),
        config=net.config,
    )


def preprocess_gradient(grad: torch.Tensor, config: LSTMOptimizerConfig) -> torch.Tensor:
    r"""Turn gradients of shape ``(n,)`` into LSTM inputs of shape ``(n, input_size)``.

    ``"log_sign"`` (paper, Appendix A):

    .. math::
        \nabla \mapsto \begin{cases}
            \left(\frac{\log |\nabla|}{p},\ \operatorname{sgn}(\nabla)\right)
                & \text{if } |\nabla| \ge e^{-p} \\
            \left(-1,\ e^{p} \nabla\right) & \text{otherwise}
        \end{cases}

    ``"clamped"`` (deepmind/learning-to-learn, with :math:`k = p`):
    :math:`\left(\max(\log(|\nabla| + \epsilon)/k, -1),\ \operatorname{clip}(e^{k}\nabla, -1, 1)\right)`.

    ``"none"``: the raw gradient, one input.
    """
    mode, p = config.preprocessing, config.p
    if mode == "none":
        return grad.unsqueeze(1)
    magnitude = grad.abs()
    if mode == "log_sign":
        large = magnitude >= math.exp(-p)
        log_part = torch.where(large, torch.log(magnitude.clamp_min(_TINY)) / p,
                               torch.full_like(grad, -1.0))
        sign_part = torch.where(large, torch.sign(grad), grad * math.exp(p))
    elif mode == "clamped":
        log_part = (torch.log(magnitude + 1e-8) / p).clamp_min(-1.0)
        sign_part = (grad * math.exp(p)).clamp(-1.0, 1.0)
    else:  # pragma: no cover - the config validates the mode
        raise ValueError(f"unknown preprocessing {mode!r}")
    return torch.stack([log_part, sign_part], dim=1)


def lstm_step(grad: torch.Tensor, hidden: torch.Tensor,
              weights: FusedLSTMWeights) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One step of the coordinatewise LSTM on a block of coordinates.

    Args:
        grad: gradients, shape ``(n,)``, in the dtype of ``weights``.
        hidden: state, shape ``(n, 2 * num_layers, hidden_size)``; row ``2l`` is
            :math:`h^{(l+1)}`, row ``2l + 1`` is :math:`c^{(l+1)}`.
        weights: φ from :func:`fuse_weights`.

    Returns:
        ``(update, new_hidden)``: the step :math:`g_t` of shape ``(n,)`` (already multiplied by
        ``output_scale``) and the new state, same shape as ``hidden``. Pure: no input is changed.

    Each layer computes, with :math:`\sigma(z) = \tfrac12\tanh(z/2) + \tfrac12`,

    .. math::
        (i, f, u, o) &= W [x; h] + b \\
        c' &= \sigma(f) \odot c + \sigma(i) \odot \tanh(u) \\
        h' &= \sigma(o) \odot \tanh(c')

    The step is bounded whatever the gradient and the state: every unit of the last layer has
    :math:`|h'| = |\sigma(o)\tanh(c')| < 1`, so (see :func:`update_bound`)

    .. math::
        |g| \le \text{output\_scale} \cdot \big(\lVert w \rVert_1 + |b|\big)

    and it is finite as long as φ, the gradient and the state are finite
    (:math:`|c'| \le |c| + 1`).
    """
    n = grad.shape[0]
    pad = (-n) % ROW_ALIGN
    if pad:
        grad = F.pad(grad, (0, pad))
        hidden = F.pad(hidden, (0, 0, 0, 0, 0, pad))
    layer_input = preprocess_gradient(grad, weights.config)
    new_states = []
    for layer, (weight, bias) in enumerate(weights.layers):
        h, c = hidden[:, 2 * layer], hidden[:, 2 * layer + 1]
        gates = torch.tanh(torch.addmm(bias, torch.cat([layer_input, h], dim=1), weight.t()))
        i, f, u, o = gates.chunk(4, dim=1)
        c_new = (f * 0.5 + 0.5) * c + (i * 0.5 + 0.5) * u
        h_new = (o * 0.5 + 0.5) * torch.tanh(c_new)
        new_states += [h_new, c_new]
        layer_input = h_new
    update = torch.addmm(weights.head_bias, layer_input, weights.head_weight.t()).squeeze(1)
    update = update * weights.config.output_scale
    new_hidden = torch.stack(new_states, dim=1)
    if pad:
        update, new_hidden = update[:n], new_hidden[:n]
    return update, new_hidden


def update_bound(net: LSTMOptimizerNet) -> float:
    r"""The largest step :func:`lstm_step` can take for ``net``, before the ``lr`` multiplier.

    .. math::
        |g_t| \le B(\phi) = \text{output\_scale} \cdot \big(\lVert w \rVert_1 + |b|\big)

    where :math:`(w, b)` is the linear head: its input :math:`h^{(L)} = \sigma(o) \tanh(c)`
    lies in :math:`(-1, 1)` for every unit, whatever the gradient or the hidden state. The
    optimizer's step on a coordinate is therefore at most ``lr * update_bound(net)``; the value
    is ``inf`` or ``nan`` only if φ holds non-finite values.
    """
    head = net.head
    total = head.weight.detach().double().abs().sum() + head.bias.detach().double().abs().sum()
    return float(total) * net.config.output_scale


def iter_chunks(sizes: Sequence[int], chunk_size: int) -> Iterator[list[tuple[int, int, int]]]:
    """Split the concatenation of tensors of ``sizes`` into blocks of ``chunk_size`` coordinates.

    Yields lists of ``(tensor_index, start, stop)`` pieces; each block but the last holds exactly
    ``chunk_size`` coordinates, so small tensors are batched together and big ones are split.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    pieces: list[tuple[int, int, int]] = []
    filled = 0
    for index, size in enumerate(sizes):
        start = 0
        while start < size:
            take = min(size - start, chunk_size - filled)
            pieces.append((index, start, start + take))
            filled += take
            start += take
            if filled == chunk_size:
                yield pieces
                pieces, filled = [], 0
    if pieces:
        yield pieces


def gather(tensors: Sequence[torch.Tensor], pieces: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    """Concatenate the pieces of ``tensors`` named by ``pieces`` (a view when there is one)."""
    if len(pieces) == 1:
        index, start, stop = pieces[0]
        return tensors[index][start:stop]
    return torch.cat([tensors[index][start:stop] for index, start, stop in pieces])


def lstm_update(grads: Sequence[torch.Tensor], hidden: Sequence[torch.Tensor],
                weights: FusedLSTMWeights, *, chunk_size: int | None = None,
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Apply :func:`lstm_step` to flat tensors, chunked over coordinates (functional).

    Args:
        grads: 1-D gradient tensors ``(n_i,)``.
        hidden: matching states ``(n_i, 2 * num_layers, hidden_size)``.
        weights: φ from :func:`fuse_weights`; gradients flow back to it.
        chunk_size: coordinates per block (``None``: all at once).

    Returns:
        ``(updates, new_hidden)``, lists matching the inputs. The results do not depend on
        ``chunk_size`` or on how coordinates are split into tensors.
    """
    sizes = [g.shape[0] for g in grads]
    total = sum(sizes)
    if total == 0:
        return [g.new_zeros(0) for g in grads], [h.clone() for h in hidden]
    update_parts: list[list[torch.Tensor]] = [[] for _ in grads]
    hidden_parts: list[list[torch.Tensor]] = [[] for _ in grads]
    for pieces in iter_chunks(sizes, chunk_size or total):
        update, new_hidden = lstm_step(gather(grads, pieces), gather(hidden, pieces), weights)
        offset = 0
        for index, start, stop in pieces:
            update_parts[index].append(update[offset:offset + stop - start])
            hidden_parts[index].append(new_hidden[offset:offset + stop - start])
            offset += stop - start
    updates = [_join(parts, g.new_zeros(0)) for parts, g in zip(update_parts, grads)]
    states = [_join(parts, h[:0]) for parts, h in zip(hidden_parts, hidden)]
    return updates, states


def _join(parts: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
    if not parts:
        return empty
    return parts[0] if len(parts) == 1 else torch.cat(parts)
