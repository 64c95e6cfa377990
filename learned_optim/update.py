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
multiple of :data:`ROW_ALIGN` rows (CPU BLAS rounds differently for a handful of rows), and every
gate nonlinearity is built from ``torch.exp`` and arithmetic,

.. math::
    \sigma(z) = \frac{1}{1 + e^{-z}}, \qquad \tanh(z) = 1 - \frac{2}{1 + e^{2z}},

because ``torch.exp`` (like ``+``, ``*``, ``1/x`` and ``addcmul``) gives the same bits at every
position of a tensor, while ``torch.sigmoid`` on CPU computes the tail of a vectorised loop with
a different scalar formula. ``exp`` is also 3x cheaper than ``torch.tanh`` on CPU, and the gates need it on
80 values per coordinate and layer, the largest cost of a step after the two matrix multiplies.

Two entry points run the same math (:func:`_lstm_math`):

* :func:`lstm_step` is functional and differentiable (the MetaTrainer keeps the graph);
* :func:`lstm_step_` runs in place in a preallocated :class:`StepWorkspace` (no autograd, no
  allocation per block beyond the gradient preprocessing, the adaptive features and the
  direction-magnitude head, all counted by :func:`step_memory_bytes`), for the optimizer's
  ``step()``.
  Its results are bit-identical to :func:`lstm_step`'s (tested).
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from .network import (ADAM_FEATURE, FEATURE_CLIP, MOMENTUM_DECAYS, SECOND_MOMENT_DECAY,
                      SECOND_MOMENT_WEIGHT_COLUMN, TENSOR_FEATURE_COLUMN, LSTMOptimizerConfig,
                      LSTMOptimizerNet)

__all__ = [
    "ROW_ALIGN",
    "FusedLSTMWeights",
    "StepWorkspace",
    "fuse_weights",
    "preprocess_gradient",
    "adaptive_features",
    "parameter_feature",
    "accumulator_row",
    "tensor_signal_to_noise",
    "tensor_gradient_change",
    "tensor_statistic",
    "with_tensor_feature",
    "write_tensor_feature_",
    "stored_log_step_scale",
    "tensor_step_scale",
    "with_step_scale",
    "write_step_scale_",
    "run_progress",
    "with_progress",
    "write_progress_",
    "lstm_step",
    "lstm_step_",
    "lstm_update",
    "iter_chunks",
    "update_bound",
    "step_memory_bytes",
]

#: Chunks are padded to a multiple of this many rows before each matrix multiply.
ROW_ALIGN = 8

# Smallest |∇| fed to the log; anything below takes the other branch of the preprocessing.
_TINY = 1e-38


class FusedLSTMWeights(NamedTuple):
    """φ laid out for the update rule: one matrix per layer over ``[input, h]``.

    ``layers[l] = (weight, bias)`` with ``weight`` of shape ``(4H, in_l + H)`` whose input,
    forget and output gate rows are multiplied by -1 and whose cell-candidate rows are
    multiplied by 2 (both exact in floating point), so that one ``exp`` of the pre-activation
    gives :math:`e^{-z}` for the sigmoid gates and :math:`e^{2z}` for the tanh gate.
    ``head = (weight (1, H), bias (1,))``.
    """

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    head_weight: torch.Tensor
    head_bias: torch.Tensor
    config: LSTMOptimizerConfig


def fuse_weights(net: LSTMOptimizerNet, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> FusedLSTMWeights:
    """Lay out ``net``'s weights for :func:`lstm_step` (differentiable with respect to φ)."""
    hidden = net.config.hidden_size
    # nn.LSTMCell gate order is (input, forget, cell, output): sigmoid rows get -1, tanh rows 2.
    gate_scale = torch.full((4 * hidden, 1), -1.0)
    gate_scale[2 * hidden:3 * hidden] = 2.0
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


class _Buffers(NamedTuple):
    """Where :func:`_lstm_math` writes its intermediates (``None``: fresh tensors)."""

    gates: torch.Tensor | None
    inputs: tuple[torch.Tensor | None, ...]
    scratch: torch.Tensor | None
    update: torch.Tensor | None


_FRESH = _Buffers(None, (None,) * 8, None, None)


class StepWorkspace:
    """Preallocated buffers for :func:`lstm_step_` on blocks of up to ``rows`` coordinates.

    The caller writes gradients into ``grad[:n]`` (and, with ``parameter_feature``, the
    parameters' values into ``param[:n]``) and the state into ``hidden[:n]``; after
    :func:`lstm_step_` the new state is in ``hidden[:n]``. Reusing one workspace for every
    block of a step keeps the step's extra memory at :attr:`nbytes` (plus the gradient
    preprocessing's temporaries), whatever the model size, and avoids page faults.

    Args:
        rows: the largest block (rounded up to a multiple of :data:`ROW_ALIGN`).
        config: the net's config (sizes).
        dtype, device: those of the computation (float32, or float64 for float64 params).
    """

    def __init__(self, rows: int, config: LSTMOptimizerConfig, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        if rows < 1:
            raise ValueError(f"a workspace needs at least one row, got rows={rows}")
        self.rows, self.config = _aligned(rows), config
        hidden = config.hidden_size
        width = max(config.input_size, hidden) + hidden
        make = dict(dtype=dtype, device=device)
        # Uninitialised: every row is written before it is read (lstm_step_ zeroes the padding).
        self.grad = torch.empty(self.rows, **make)
        # θ of the block's coordinates, for parameter_feature=True (else None)
        self.param = torch.empty(self.rows, **make) if config.parameter_feature else None
        self.hidden = torch.empty(self.rows, config.state_rows, hidden, **make)
        self._gates = torch.empty(self.rows, 4 * hidden, **make)
        self._inputs = torch.empty(self.rows * width, **make)
        self._scratch = torch.empty(self.rows, hidden, **make)
        self._update = torch.empty(self.rows, 1, **make)

    @staticmethod
    def floats_per_row(config: LSTMOptimizerConfig) -> int:
        """Numbers held per coordinate: gradient (and θ), state, gates, layer input, scratch,
        update."""
        hidden = config.hidden_size
        # parameter_feature: θ's buffer, and the clipped θ and the features joined with it
        with_param = 1 + 2 + config.input_size if config.parameter_feature else 0
        return (1 + config.state_size + 4 * hidden + max(config.input_size, hidden) + hidden
                + hidden + 1 + _head_temporaries(config) + with_param)

    @property
    def nbytes(self) -> int:
        """Bytes held by the workspace's buffers."""
        return sum(t.nbytes for t in (self.grad, self.param, self.hidden, self._gates,
                                      self._inputs, self._scratch, self._update)
                   if t is not None)

    def _buffers(self, rows: int) -> _Buffers:
        widths = [self.config.input_size] + [self.config.hidden_size] * (self.config.num_layers - 1)
        inputs = tuple(self._inputs[:rows * (w + self.config.hidden_size)].view(
            rows, w + self.config.hidden_size) for w in widths)
        return _Buffers(self._gates[:rows], inputs, self._scratch[:rows], self._update[:rows])


def step_memory_bytes(rows: int, config: LSTMOptimizerConfig,
                      dtype: torch.dtype = torch.float32, *, largest_tensor: int = 0) -> int:
    """Upper bound on the extra memory of one optimizer step over blocks of ``rows`` coordinates.

    The :class:`StepWorkspace`, the gradient preprocessing's temporaries (at most
    :data:`_PREPROCESS_FLOATS_PER_ROW` numbers per coordinate) for ``rows`` rounded up to a
    multiple of :data:`ROW_ALIGN`, and twice the size of φ (its fused copy and one temporary
    while fusing). About 1 kB per coordinate in float32 for the paper's net, whatever the size
    of the model.

    A net with per-tensor inputs or step scales (``config.per_tensor``) also reduces each
    tensor as a whole (:func:`tensor_statistic`, :func:`tensor_step_scale`), with at most
    :data:`_PER_TENSOR_FLOATS` temporary numbers per coordinate of the tensor: pass the
    number of coordinates of the largest parameter tensor (of a shard, under FSDP2) as
    ``largest_tensor``.
    """
    per_row = StepWorkspace.floats_per_row(config) + _PREPROCESS_FLOATS_PER_ROW
    hidden, widths = config.hidden_size, [config.input_size] + [config.hidden_size] * (
        config.num_layers - 1)
    phi = sum(4 * hidden * (w + hidden) + 4 * hidden for w in widths) + (
        config.head_inputs + 1) * config.head_outputs
    itemsize = torch.empty(0, dtype=dtype).element_size()
    whole_tensor = _PER_TENSOR_FLOATS * largest_tensor if config.per_tensor else 0
    return (_aligned(rows) * per_row + 2 * phi + whole_tensor) * itemsize


# Live n-element temporaries of preprocess_gradient, counted generously (bool masks as floats);
# adaptive_features holds fewer than this too (8 new accumulators, 4 features, 8 temporaries).
_PREPROCESS_FLOATS_PER_ROW = 24
# Live n-element temporaries of tensor_statistic and tensor_step_scale on a tensor of n
# coordinates (copies in float32, NaN-free and normalised copies, a difference), generously.
_PER_TENSOR_FLOATS = 8


def _head_temporaries(config: LSTMOptimizerConfig) -> int:
    """Floats per row that a direction-magnitude head allocates: [h; x], (d, s), exp(s), g
    (and one more for the nominal Adam step), and the per-tensor step scale's clamped l,
    exp(l) and scaled step."""
    scale = 3 * int(config.scales_steps)
    if config.update != "direction_magnitude":
        return scale
    return config.head_inputs + 2 + 2 + int(config.nominal_step) + scale


def _aligned(rows: int) -> int:
    return rows + (-rows) % ROW_ALIGN


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
        log_part = torch.where(large, torch.log(magnitude.clamp_min(_TINY)) / p, -1.0)
        sign_part = torch.where(large, torch.sign(grad), grad * math.exp(p))
    elif mode == "clamped":
        log_part = (torch.log(magnitude + 1e-8) / p).clamp_min(-1.0)
        sign_part = (grad * math.exp(p)).clamp(-1.0, 1.0)
    else:  # pragma: no cover - the config validates the mode
        raise ValueError(f"unknown preprocessing {mode!r}")
    return torch.stack([log_part, sign_part], dim=1)


def adaptive_features(grad: torch.Tensor, accumulators: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Scale-free LSTM inputs from running averages kept per coordinate (``features="adaptive"``).

    ``accumulators`` has shape ``(n, k)`` with ``k >= 8``; its first 8 columns hold the momenta
    :math:`m_j` (decays :math:`\beta_j \in` :data:`~learned_optim.network.MOMENTUM_DECAYS`),
    the second moment :math:`v` (decay :math:`\beta_v` =
    :data:`~learned_optim.network.SECOND_MOMENT_DECAY`) and their bias-correction weights
    :math:`w`, all zero at the start. One step:

    .. math::
        m_j &\leftarrow \beta_j m_j + (1 - \beta_j) \nabla, \qquad
        w_j \leftarrow \beta_j w_j + (1 - \beta_j) \\
        v &\leftarrow \beta_v v + (1 - \beta_v) \nabla^2, \qquad
        w_v \leftarrow \beta_v w_v + (1 - \beta_v) \\
        x &= \operatorname{clip}\Big(\frac{(\nabla,\ m_1 / w_1,\ m_2 / w_2,\ m_3 / w_3)}
             {\sqrt{v / w_v} + \epsilon},\ -10,\ 10\Big)

    (:math:`w = 1 - \beta^t`: Adam's bias correction, kept per coordinate so the rule stays a
    function of the gradient and the state alone). Multiplying every gradient by
    :math:`c > 0` leaves :math:`x` unchanged (up to :math:`\epsilon = 10^{-12}`), the scale
    invariance of Adam (Kingma & Ba 2015) that Metz et al. (2020) and Wichrowska et al. (2017)
    build into learned optimizers. Feature 3, :math:`\hat m_{0.9} / \sqrt{\hat v}`, is
    exactly Adam's direction.

    Returns ``(x, new_accumulators)`` of shapes ``(n, 4)`` and ``(n, 8)``; elementwise
    operations only, so every coordinate's result is the same whatever the block. Any finite
    state and gradient give finite results (overflowing squares saturate at the dtype's
    largest value; a negative second moment or weight, which only a corrupted state can hold,
    is clamped).
    """
    decays = MOMENTUM_DECAYS + (SECOND_MOMENT_DECAY,)
    count = len(decays)
    old = accumulators[:, :2 * count]
    beta = grad.new_tensor(decays)
    largest = torch.finfo(grad.dtype).max
    momenta = torch.addcmul(old[:, :count - 1] * beta[:-1], grad.unsqueeze(1),
                            1.0 - beta[:-1].unsqueeze(0)).clamp(-largest, largest)
    second = torch.addcmul(old[:, count - 1] * decays[-1], grad, grad, value=1.0 - decays[-1])
    # Guards that change nothing for a state this function wrote (v >= 0, w >= 1 - beta), but
    # keep any finite state finite: g^2 can overflow, a corrupted state can be negative.
    second = second.clamp(0.0, largest)
    weights = torch.maximum(old[:, count:] * beta + (1.0 - beta), 1.0 - beta)
    scale = torch.sqrt(second / weights[:, -1]) + _EPSILON
    features = torch.cat([grad.unsqueeze(1), momenta / weights[:, :-1]], dim=1)
    features = torch.clamp(features / scale.unsqueeze(1), -FEATURE_CLIP, FEATURE_CLIP)
    return features, torch.cat([momenta, second.unsqueeze(1), weights], dim=1)


# Added to the root of the second moment (absolute; gradients below ~1e-12 read as zero).
_EPSILON = 1e-12


def parameter_feature(param: torch.Tensor) -> torch.Tensor:
    r"""The parameter value as an LSTM input (``parameter_feature=True``), shape ``(n, 1)``:

    .. math::
        x_\theta = \operatorname{clip}(\theta, -10, 10)

    (NaN reads as 0, so a non-finite parameter cannot make the step non-finite). Metz et al.
    (2020) and Wichrowska et al. (2017) give learned optimizers the parameter value, e.g. to
    learn weight decay or steps that depend on where a weight is. Unlike the adaptive
    features it is not scale-free.
    """
    return torch.clamp(torch.nan_to_num(param, nan=0.0), -FEATURE_CLIP, FEATURE_CLIP).unsqueeze(1)


def tensor_signal_to_noise(accumulators: torch.Tensor,
                           config: LSTMOptimizerConfig) -> torch.Tensor:
    r"""The tensor feature (``tensor_feature=True``): one number for a whole tensor.

    From the accumulators of :func:`adaptive_features` (``accumulators``: the tensor's
    accumulator rows, shape ``(n, hidden_size)``, :func:`accumulator_row`), the mean over its
    :math:`n` coordinates of Adam's direction,

    .. math::
        r = \frac{1}{n} \sum_{i=1}^{n} \operatorname{clip}\Big(
            \frac{|\hat m_{0.9, i}|}{\sqrt{\hat v_i} + \epsilon},\ 0,\ 10\Big),

    the tensor's gradient signal-to-noise ratio: near 1 while its gradients keep their sign,
    near 0 where they are noise (close to a minimum, or small batches). It is scale-free like
    the adaptive features and reads no parameter value. Learned optimizers with per-tensor
    inputs (Wichrowska et al. 2017, Metz et al. 2022's VeLO) use such tensor statistics to set
    the step size; here it is just one more LSTM input, the same for every coordinate of the
    tensor, computed after each step and read at the next (:func:`with_tensor_feature`).
    Computed in float32 (float64 for a float64 state), detached: like the gradient it is a
    constant for meta-training. 0 for an empty tensor or a fresh state.
    """
    _check_rows(accumulators, config)
    count = len(MOMENTUM_DECAYS) + 1
    accumulators = accumulators.detach()[:, :2 * count].to(_statistic_dtype(accumulators))
    adam = ADAM_FEATURE - 1  # the feature's momentum among the accumulators
    momentum = accumulators[:, adam] / accumulators[:, count + adam].clamp_min(1e-30)
    second = accumulators[:, count - 1].clamp_min(0.0) / accumulators[:, -1].clamp_min(1e-30)
    ratio = torch.nan_to_num(momentum.abs() / (torch.sqrt(second) + _EPSILON), nan=0.0)
    if ratio.numel() == 0:
        return ratio.new_zeros(())
    return ratio.clamp(0.0, FEATURE_CLIP).mean()


def tensor_gradient_change(accumulators: torch.Tensor,
                           config: LSTMOptimizerConfig) -> torch.Tensor:
    r"""The tensor feature with ``tensor_statistic="gradient_change"``: one number for a whole
    tensor, how much its gradient changed over the last step relative to its size,

    .. math::
        \rho = \operatorname{clip}\Big(\log \frac{\lVert \nabla_t - \nabla_{t-1} \rVert}
                                                  {\lVert \nabla_{t-1} \rVert},\ -10,\ 10\Big)

    over the tensor's coordinates, read from the last two gradients that each coordinate's
    accumulator row keeps (``config.gradient_column`` of ``accumulators``, shape ``(n,
    hidden_size)``, :func:`accumulator_row`). Near a minimum with curvature :math:`\lambda`, a
    step of size :math:`s` changes the gradient by about :math:`s \lambda` of itself: a very
    negative :math:`\rho` says the step is far too small for the curvature, :math:`\rho`
    near 0 that it is about right (or that the gradients are noise), :math:`\rho > \log 2`
    that it overshoots. It is the per-tensor signal of hypergradient step-size adaptation
    (Baydin et al. 2018) and of the tensor-level inputs of Wichrowska et al. (2017), and it is
    scale-free: multiplying every gradient by :math:`c > 0` leaves it unchanged. Computed after
    each step and read at the next (:func:`with_tensor_feature`), in float32 (float64 for a
    float64 state), detached; 0 before there are two gradients (a fresh state) and for an
    empty tensor, -10 when the gradient did not change at all.
    """
    _check_rows(accumulators, config)
    column = config.gradient_column
    latest_two = accumulators.detach()[:, column:column + 2].to(_statistic_dtype(accumulators))
    if latest_two.numel() == 0:
        return latest_two.new_zeros(())
    latest_two = _finite_scaled_to_one(latest_two)  # one scale for both: their ratio counts
    latest, previous = latest_two[:, 0], latest_two[:, 1]
    before = torch.linalg.vector_norm(previous)
    change = torch.linalg.vector_norm(latest - previous)
    log_ratio = torch.log(change / before).clamp(-FEATURE_CLIP, FEATURE_CLIP)
    return torch.where(before > 0, log_ratio, 0.0)  # no host sync


def _statistic_dtype(state: torch.Tensor) -> torch.dtype:
    """Per-tensor statistics are computed in float32, or float64 for a float64 state."""
    return torch.float64 if state.dtype == torch.float64 else torch.float32


def _finite_scaled_to_one(values: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``values`` (not empty) with NaN and inf read as 0, divided by their largest magnitude
    (over ``dim``, or all of them), so that norms of them cannot overflow."""
    values = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    largest = values.abs().amax() if dim is None else values.abs().amax(dim=dim, keepdim=True)
    return values / largest.clamp_min(torch.finfo(values.dtype).tiny)


def accumulator_row(hidden: torch.Tensor, config: LSTMOptimizerConfig) -> torch.Tensor:
    """The accumulator row of every coordinate of a state ``hidden`` of shape ``(n,
    config.state_rows, hidden_size)``: a view of shape ``(n, hidden_size)``, the row after the
    LSTM's (h, c) rows, where ``features="adaptive"`` keeps its running averages (and the
    tensor feature, the progress and the step scale, if any)."""
    return hidden[:, 2 * config.num_layers]


def _check_rows(accumulators: torch.Tensor, config: LSTMOptimizerConfig) -> None:
    if accumulators.dim() != 2 or accumulators.shape[1] != config.hidden_size:
        raise ValueError(f"expected accumulator rows of shape (n, {config.hidden_size}), got "
                         f"{tuple(accumulators.shape)}; pass accumulator_row(hidden, config) "
                         "of a state of shape (n, state_rows, hidden_size)")


def tensor_statistic(accumulators: torch.Tensor, config: LSTMOptimizerConfig) -> torch.Tensor:
    """The tensor feature of ``config.tensor_statistic``: :func:`tensor_signal_to_noise` or
    :func:`tensor_gradient_change` (a 0-d tensor) of a tensor's accumulator rows (shape ``(n,
    hidden_size)``, :func:`accumulator_row`)."""
    if config.tensor_statistic == "gradient_change":
        return tensor_gradient_change(accumulators, config)
    return tensor_signal_to_noise(accumulators, config)


def with_tensor_feature(hidden: torch.Tensor, config: LSTMOptimizerConfig) -> torch.Tensor:
    """``hidden`` (one tensor's state) with :func:`tensor_statistic` written into column
    :data:`~learned_optim.network.TENSOR_FEATURE_COLUMN` of every coordinate's accumulator
    row, out of place (the MetaTrainer's unroll keeps the graph through the other rows)."""
    statistic = tensor_statistic(accumulator_row(hidden, config), config)
    return _with_column(hidden, TENSOR_FEATURE_COLUMN, statistic.to(hidden.dtype), config)


def _with_column(hidden: torch.Tensor, column: int, value: torch.Tensor,
                 config: LSTMOptimizerConfig) -> torch.Tensor:
    """``hidden`` with ``value`` (a 0-d tensor of its dtype) in column ``column`` of every
    coordinate's accumulator row, out of place: the other entries keep their graph."""
    mask = torch.zeros(config.state_rows, config.hidden_size, dtype=torch.bool,
                       device=hidden.device)
    mask[2 * config.num_layers, column] = True
    return torch.where(mask, value, hidden)


@torch.no_grad()
def write_tensor_feature_(accumulators: torch.Tensor, config: LSTMOptimizerConfig) -> None:
    """:func:`with_tensor_feature` in place, on a tensor's accumulator rows (the optimizer's
    state, shape ``(n, hidden_size)``); the same bits."""
    value = tensor_statistic(accumulators, config)
    accumulators[:, TENSOR_FEATURE_COLUMN] = value.to(accumulators.dtype)


def stored_log_step_scale(accumulators: torch.Tensor,
                          config: LSTMOptimizerConfig) -> torch.Tensor:
    r"""The log step scale :math:`\ell` last written into one tensor's accumulator rows
    ``accumulators`` (shape ``(n, hidden_size)``, :func:`accumulator_row`) by
    :func:`write_step_scale_` (every coordinate's row holds the same value), a
    detached 0-d tensor; 0 for an empty tensor or a state no step has written yet. The step
    of every coordinate of the tensor was multiplied by :math:`e^{\ell}`."""
    _check_rows(accumulators, config)
    if accumulators.shape[0] == 0:
        return torch.zeros((), dtype=accumulators.dtype, device=accumulators.device)
    return accumulators.detach()[0, config.step_scale_column]


def tensor_step_scale(accumulators: torch.Tensor, grad: torch.Tensor,
                      config: LSTMOptimizerConfig, *, maximize: bool = False) -> torch.Tensor:
    r"""The tensor's log step scale for this step (``hypergradient_rate > 0``), a 0-d tensor.

    From the log scale :math:`\ell_{t-1}` and each coordinate's previous step
    :math:`g_{t-1}` (before scaling) kept in the tensor's accumulator rows ``accumulators``
    (shape ``(n, hidden_size)``, :func:`accumulator_row`), and this step's
    gradient :math:`\nabla_t` over the tensor's coordinates (``grad``, shape ``(n,)``):

    .. math::
        c_t = \frac{\langle \nabla_t, g_{t-1} \rangle}
                   {\lVert \nabla_t \rVert \lVert g_{t-1} \rVert}, \qquad
        \ell_t = \operatorname{clip}\big(\ell_{t-1} - \beta\, k^{[c_t > 0]}\, c_t,\ \pm B\big),
        \qquad \ell_0 = 0,

    and the step :math:`g_t` of every coordinate of the tensor is multiplied by
    :math:`e^{\ell_t}`, with :math:`\beta` = ``hypergradient_rate``, :math:`B` =
    ``step_scale_bound`` (default :math:`\ln 100`) and :math:`k` = ``hypergradient_shrink``
    (default 1): with :math:`k > 1` the scale shrinks :math:`k` times faster after a step that
    overshot (:math:`c_t > 0`) than it grows after one that kept going downhill, like the
    "bold driver" rule (Battiti 1989). This is the multiplicative hypergradient descent of Baydin et al.
    (2018), "Online learning rate adaptation with hypergradient descent", on a per-tensor log
    step size: the derivative of the loss after the previous step with respect to its log
    scale is :math:`\langle \nabla_t, e^{\ell} g_{t-1} \rangle`, normalised here to a cosine
    so that the rule is scale-free. The scale grows while successive steps keep going downhill
    (:math:`\cos < 0`) and shrinks when they overshoot. Wichrowska et al. (2017) and VeLO
    (Metz et al. 2022) likewise give learned optimizers a per-tensor step size.

    Computed in float32 (float64 for a float64 state), detached: like the gradient it is a
    constant for meta-training. The cosine is 0 (the scale is kept) for a fresh state, a zero
    gradient or an empty tensor; non-finite entries read as 0. ``maximize``: the gradient is
    that of a loss to maximise, and the net steps along its negation.
    """
    _check_rows(accumulators, config)
    column, dtype = config.step_scale_column, _statistic_dtype(accumulators)
    if accumulators.shape[0] == 0:
        return torch.zeros((), dtype=dtype, device=accumulators.device)
    row = accumulators.detach()
    log_scale = torch.nan_to_num(stored_log_step_scale(row, config).to(dtype), nan=0.0)
    vectors = torch.stack([grad.detach().to(dtype), row[:, column + 1].to(dtype)])
    vectors = _finite_scaled_to_one(vectors, dim=1)  # each its own scale: only angles count
    norms = torch.linalg.vector_norm(vectors, dim=1)
    cosine = torch.dot(vectors[0], vectors[1]) / (norms[0] * norms[1]).clamp_min(
        torch.finfo(dtype).tiny)
    if maximize:
        cosine = -cosine
    change = cosine * config.hypergradient_rate
    if config.hypergradient_shrink != 1.0:  # (in the cosine's dtype: no float32 scalar tensor)
        change = torch.where(cosine > 0, change * config.hypergradient_shrink, change)
    bound = config.step_scale_bound
    return torch.clamp(log_scale - change, -bound, bound)


def with_step_scale(hidden: torch.Tensor, grad: torch.Tensor,
                    config: LSTMOptimizerConfig) -> torch.Tensor:
    """``hidden`` (one tensor's state) with :func:`tensor_step_scale` for the gradient ``grad``
    written into column ``config.step_scale_column`` of every coordinate's accumulator row, out
    of place (the MetaTrainer's unroll), before the step."""
    log_scale = tensor_step_scale(accumulator_row(hidden, config), grad, config)
    return _with_column(hidden, config.step_scale_column, log_scale.to(hidden.dtype), config)


@torch.no_grad()
def write_step_scale_(accumulators: torch.Tensor, grad: torch.Tensor,
                      config: LSTMOptimizerConfig, *, maximize: bool = False) -> None:
    """:func:`with_step_scale` in place, on a tensor's accumulator rows (the optimizer's state,
    shape ``(n, hidden_size)``); the same bits."""
    value = tensor_step_scale(accumulators, grad, config, maximize=maximize)
    accumulators[:, config.step_scale_column] = value.to(accumulators.dtype)


def run_progress(steps_done: float, total_steps: int | None) -> float:
    r"""The progress input (``progress_feature=True``): the fraction of the run already done,

    .. math::
        p_t = \min(t / T,\ 1)

    for the step that follows :math:`t` steps of a run of :math:`T` = ``total_steps``; 0 when
    ``total_steps`` is ``None`` (the run's length is unknown: the net steps as at the start of
    a run). A run's length lets a learned optimizer anneal its step toward the end, as a
    cosine schedule does; VeLO (Metz et al. 2022) and Metz et al. (2020) feed training
    progress to their learned optimizers the same way.
    """
    if total_steps is None:
        return 0.0
    return min(max(float(steps_done), 0.0) / total_steps, 1.0)


def with_progress(hidden: torch.Tensor, progress: float,
                  config: LSTMOptimizerConfig) -> torch.Tensor:
    """``hidden`` (a state) with ``progress`` written into column ``config.progress_column`` of
    every coordinate's accumulator row, out of place (the MetaTrainer's unroll)."""
    return _with_column(hidden, config.progress_column, hidden.new_tensor(progress), config)


@torch.no_grad()
def write_progress_(accumulators: torch.Tensor, progress: float,
                    config: LSTMOptimizerConfig) -> None:
    """:func:`with_progress` in place, on accumulator rows (the optimizer's state, shape
    ``(n, hidden_size)``); the same bits."""
    _check_rows(accumulators, config)
    accumulators[:, config.progress_column] = progress


def lstm_step(grad: torch.Tensor, hidden: torch.Tensor, weights: FusedLSTMWeights,
              param: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One step of the coordinatewise LSTM on a block of coordinates.

    Args:
        grad: gradients, shape ``(n,)``, in the dtype of ``weights``.
        hidden: state, shape ``(n, config.state_rows, hidden_size)``; row ``2l`` is
            :math:`h^{(l+1)}`, row ``2l + 1`` is :math:`c^{(l+1)}`; with
            ``features="adaptive"`` the last row's first 8 columns hold the accumulators of
            :func:`adaptive_features` (and, with ``tensor_feature=True``, column 8 the
            tensor feature, :func:`with_tensor_feature`; with ``progress_feature=True``,
            column ``config.progress_column`` the progress, :func:`with_progress`; with
            ``hypergradient_rate > 0``, columns ``config.step_scale_column`` and the next the
            tensor's log step scale, :func:`with_step_scale`, and the previous step).
        weights: φ from :func:`fuse_weights`.
        param: the coordinates' current values θ, shape ``(n,)``: required with
            ``parameter_feature=True`` (:func:`parameter_feature`), ignored otherwise. Treated
            as a constant, like the gradient.

    Returns:
        ``(update, new_hidden)``: the step :math:`g_t` of shape ``(n,)`` (already multiplied by
        ``output_scale``) and the new state, same shape as ``hidden``. Pure: no input is changed.

    Each layer computes

    .. math::
        (i, f, u, o) &= W [x; h] + b \\
        c' &= \sigma(f) \odot c + \sigma(i) \odot \tanh(u) \\
        h' &= \sigma(o) \odot \tanh(c')

    as :math:`\sigma(z) = 1 / (1 + e^{-z})`, :math:`\sigma(i) \tanh(u) = \sigma(i) - 2 \sigma(i)
    \rho(u)` and :math:`\sigma(o) \tanh(c') = \sigma(o) - 2 \sigma(o) \rho(c')` with
    :math:`\rho(x) = 1 / (1 + e^{2x})`: one ``exp`` for all four gates, 14 ATen operations per
    layer. Exponents are capped at 80 (:func:`_inv_one_plus_exp`), which moves no value by more
    than :math:`2 \cdot 10^{-35}` and keeps the meta-gradient of a saturated LSTM finite.

    The paper's head (``update="additive"``) is :math:`g = \text{output\_scale} \cdot
    (w^\top h^{(L)} + b)`. ``update="direction_magnitude"`` reads :math:`z = [h^{(L)}; x]` (the
    last layer's output and the LSTM's inputs) and outputs a direction :math:`d` and a
    log-magnitude :math:`s`,

    .. math::
        (d, s) = W z + b, \qquad
        g = \text{output\_scale} \cdot d \cdot \exp(\min(\text{magnitude\_scale} \cdot s, 80))

    (Metz et al. 2020, "Tasks, stability, architecture, and compute", parameterise the step the
    same way, with small output scales, for stable meta-training). With ``nominal_step`` a
    fixed Adam step is added (Harrison, Metz and Sohl-Dickstein 2022, "A closer look at learned
    optimization"), so the net learns only a departure from Adam(lr=output_scale):

    .. math::
        g = \text{output\_scale} \cdot \big(d \cdot \exp(\min(\text{magnitude\_scale}
        \cdot s, 80)) - \hat m_{0.9} / \sqrt{\hat v}\big)

    With ``departure_warmup`` :math:`= N > 0` the departure :math:`d \cdot \exp(\cdot)` is
    multiplied by :math:`\rho_t = \min(1, t / N)` at the coordinate's :math:`t`-th step
    (:func:`departure_ramp`), so the first steps are close to Adam(lr=output_scale)'s.

    With ``hypergradient_rate > 0`` the step of every coordinate of a tensor is then multiplied
    by the tensor's :math:`e^{\ell_t}` (:func:`tensor_step_scale`), read from column
    ``config.step_scale_column`` of the state, where :func:`with_step_scale` has written it
    before the step; the step before that scale is kept in the next column for the next
    :math:`\ell`.

    The step is bounded whatever the gradient and the state: every unit of the last layer has
    :math:`|h'| = |\sigma(o)\tanh(c')| \le 1` (and adaptive features are clipped to
    :math:`\pm 10`), so :func:`update_bound` gives a bound from the head alone, e.g.

    .. math::
        |g| \le \text{output\_scale} \cdot \big(\lVert w \rVert_1 + |b|\big)

    and it is finite as long as φ, the gradient and the state are finite
    (:math:`|c'| \le |c| + 1`).
    """
    n = grad.shape[0]
    param = _checked_param(param, n, weights.config)
    pad = (-n) % ROW_ALIGN
    if pad:
        grad = F.pad(grad, (0, pad))
        hidden = F.pad(hidden, (0, 0, 0, 0, 0, pad))
        param = None if param is None else F.pad(param, (0, pad))
    update, new_hidden = _lstm_math(grad, hidden, weights, _FRESH, param)
    if pad:
        update, new_hidden = update[:n], new_hidden[:n]
    return update, new_hidden


@torch.no_grad()
def lstm_step_(workspace: StepWorkspace, rows: int, weights: FusedLSTMWeights, *,
               hidden: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`lstm_step` in place: the block's state is replaced by the new state.

    The caller has written the block's gradients into ``workspace.grad[:rows]`` (with
    ``parameter_feature``, its values into ``workspace.param[:rows]``) and its state
    into ``workspace.hidden[:rows]``, or passes the state itself as ``hidden`` (contiguous,
    shape ``(rows, config.state_rows, hidden_size)``, the workspace's dtype, ``rows`` a multiple of
    :data:`ROW_ALIGN`), which then is updated where it lies, with no copy in or out. Returns
    the update, a view ``(rows,)`` into the workspace that the next call overwrites.
    Bit-identical to :func:`lstm_step` on the same inputs.
    """
    if not 0 < rows <= workspace.rows:
        raise ValueError(f"rows must be in [1, {workspace.rows}] for this workspace, got {rows}")
    padded = _aligned(rows)
    workspace.grad[rows:padded].zero_()
    param = None
    if workspace.param is not None:
        workspace.param[rows:padded].zero_()
        param = workspace.param[:padded]
    if hidden is None:
        workspace.hidden[rows:padded].zero_()
        hidden = workspace.hidden[:padded]
    elif padded != rows or hidden.shape != workspace.hidden[:rows].shape \
            or hidden.dtype != workspace.hidden.dtype or not hidden.is_contiguous():
        raise ValueError(
            f"hidden of shape {tuple(hidden.shape)}, dtype {hidden.dtype} cannot be updated in "
            f"place: it must be contiguous, of dtype {workspace.hidden.dtype} and shape "
            f"{tuple(workspace.hidden[:rows].shape)} with rows a multiple of {ROW_ALIGN}; copy "
            "it into workspace.hidden instead")
    update, _ = _lstm_math(workspace.grad[:padded], hidden, weights, workspace._buffers(padded),
                           param)
    return update[:rows]


def _checked_param(param: torch.Tensor | None, rows: int,
                   config: LSTMOptimizerConfig) -> torch.Tensor | None:
    if not config.parameter_feature:
        return None
    if param is None or param.shape != (rows,):
        raise ValueError(f"this net reads the parameter value (parameter_feature=True): pass "
                         f"param=, the {rows} coordinates' current values, shape ({rows},)"
                         + ("" if param is None else f", got shape {tuple(param.shape)}"))
    return param.detach()


def _lstm_math(grad: torch.Tensor, hidden: torch.Tensor, weights: FusedLSTMWeights,
               into: _Buffers, param: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The LSTM on a padded block. With ``_FRESH`` every result is a new tensor (autograd
    works); with a workspace's buffers every result goes into them and ``hidden`` is
    overwritten with the new state. Same operations in the same order either way."""
    in_place = into is not _FRESH
    config = weights.config
    accumulators, acc_row = None, 2 * config.num_layers  # the row after every (h, c)
    if config.features == "adaptive":
        features, accumulators = adaptive_features(grad, hidden[:, acc_row])
        if config.parameter_feature:
            features = torch.cat([features, parameter_feature(param)], dim=1)
        if config.tensor_feature:  # written by with_tensor_feature after the previous step
            column = hidden[:, acc_row, TENSOR_FEATURE_COLUMN:TENSOR_FEATURE_COLUMN + 1]
            features = torch.cat([features, torch.clamp(torch.nan_to_num(column, nan=0.0),
                                                        -FEATURE_CLIP, FEATURE_CLIP)], dim=1)
        if config.progress_feature:  # written by with_progress before this step
            column = hidden[:, acc_row, config.progress_column:config.progress_column + 1]
            features = torch.cat([features, torch.clamp(torch.nan_to_num(column, nan=0.0),
                                                        0.0, 1.0)], dim=1)
        if config.keeps_gradients:  # (latest, previous): for tensor_gradient_change
            column = config.gradient_column
            latest_two = torch.stack([grad, hidden[:, acc_row, column]], dim=1)
    else:
        features = preprocess_gradient(grad, config)
    layer_input = features
    new_states = []
    for layer, (weight, bias) in enumerate(weights.layers):
        h, c = hidden[:, 2 * layer], hidden[:, 2 * layer + 1]
        stacked = torch.cat([layer_input, h], dim=1, out=into.inputs[layer])
        gates = torch.addmm(bias, stacked, weight.t(), out=into.gates)
        # gates hold -z (sigmoid rows) and 2z (tanh rows): 1 / (1 + exp(gates)) is sigma(z)
        # for i, f, o and rho(u) = (1 - tanh(u)) / 2 for u.
        i, f, r_u, o = _inv_one_plus_exp(gates, into.gates).chunk(4, dim=1)
        # c' = f c + i tanh(u) = (i - 2 i r_u) + f c
        c_new = torch.addcmul(i, i, r_u, value=-2.0, out=into.scratch)
        c_new = torch.addcmul(c_new, f, c, out=c if in_place else None)
        # h' = o tanh(c') = o - 2 o rho(c'), rho(c') = 1 / (1 + exp(2 c'))
        r_c = _inv_one_plus_exp(torch.mul(c_new, 2.0, out=into.scratch), into.scratch)
        h_new = torch.addcmul(o, o, r_c, value=-2.0, out=h if in_place else None)
        new_states += [h_new, c_new]
        layer_input = h_new
    if config.update == "direction_magnitude":
        ramp = departure_ramp(accumulators, config) if config.departure_warmup else None
        update = _direction_magnitude(torch.cat([layer_input, features], dim=1), weights, ramp)
        if in_place:
            update = into.update.squeeze(1).copy_(update)
    else:
        update = torch.addmm(weights.head_bias, layer_input, weights.head_weight.t(),
                             out=into.update)
        update = torch.mul(update, config.output_scale, out=into.update).squeeze(1)
    if accumulators is not None:
        # (first column, new values) of the accumulator row; the rest of the row (the tensor
        # feature, the progress and the step scale, if any) is kept
        written = [(0, accumulators)]
        if config.keeps_gradients:
            written.append((column, latest_two))
        if config.scales_steps:  # this step before its scale, a constant for meta-training
            written.append((config.step_scale_column + 1, update.detach().unsqueeze(1)))
        row = hidden[:, acc_row]
        if in_place:
            for first, values in written:
                row[:, first:first + values.shape[1]].copy_(values)
        else:
            new_states.append(_with_columns(row, written))
    if config.scales_steps:  # written by with_step_scale before this step
        log_scale = hidden[:, acc_row, config.step_scale_column]
        # clamped again so that any finite state keeps the step within update_bound
        bound = config.step_scale_bound
        scale = torch.exp(torch.clamp(torch.nan_to_num(log_scale, nan=0.0), -bound, bound))
        update = torch.mul(update, scale, out=update if in_place else None)
    return update, (hidden if in_place else torch.stack(new_states, dim=1))


def _with_columns(row: torch.Tensor,
                  written: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """``row`` (shape ``(n, k)``) with ``values`` in the columns from ``first`` on, for each
    ``(first, values)`` of ``written`` (in column order), out of place."""
    parts, start = [], 0
    for first, values in written:
        parts += [row[:, start:first], values]
        start = first + values.shape[1]
    return torch.cat(parts + [row[:, start:]], dim=1)


def departure_ramp(accumulators: torch.Tensor, config: LSTMOptimizerConfig) -> torch.Tensor:
    r"""The factor on the learned departure with ``departure_warmup`` :math:`= N > 0`, per
    coordinate, shape ``(n,)``:

    .. math::
        \rho_t = \min\Big(1, \frac{t}{N}\Big), \qquad
        t = \frac{\ln(1 - w_v)}{\ln \beta_v},

    :math:`t` the number of steps the coordinate has taken, this one included (rounded to an
    integer), read from the second moment's bias-correction weight
    :math:`w_v = 1 - \beta_v^t` of the new ``accumulators`` (:func:`adaptive_features`;
    :math:`\beta_v` = :data:`~learned_optim.network.SECOND_MOMENT_DECAY`). No state is added,
    and the rule stays a function of the gradient and the state: a state restored by
    ``load_state_dict`` goes on ramping where it stopped. :math:`\rho` is a constant for
    meta-training (:math:`w_v` does not depend on φ). A weight at or above 1 (the limit, which
    float32 reaches after about 16,000 steps, or a corrupted state) reads as :math:`\rho = 1`;
    a NaN one as 1 too.
    """
    weight = accumulators[:, SECOND_MOMENT_WEIGHT_COLUMN].detach()
    weight = torch.nan_to_num(weight, nan=1.0).clamp(0.0, 1.0)
    # +inf at weight 1; rounded, so that float rounding of w (float32 holds 1 - beta_v only
    # to ~1e-5) cannot keep the ramp a hair below 1 at t = N
    steps = torch.round(torch.log1p(-weight) / math.log(SECOND_MOMENT_DECAY))
    return torch.clamp(steps / config.departure_warmup, max=1.0)


def _direction_magnitude(head_input: torch.Tensor, weights: FusedLSTMWeights,
                         ramp: torch.Tensor | None = None) -> torch.Tensor:
    """output_scale * d * exp(min(magnitude_scale * s, 80)) with (d, s) = W [h; x] + b, minus
    output_scale * Adam's direction with ``nominal_step``; the first term times ``ramp``
    (:func:`departure_ramp`) where given."""
    config = weights.config
    # one matrix-vector product per output: a (K, 2) product rounds differently with the
    # number of rows on CPU, and blocks of any size must give the same bits
    direction, magnitude = (torch.addmm(weights.head_bias[k:k + 1], head_input,
                                        weights.head_weight[k:k + 1].t()).squeeze(1)
                            for k in range(2))
    size = torch.exp(torch.clamp(magnitude * config.magnitude_scale, max=_EXP_CAP))
    if ramp is not None:
        size = size * ramp
    if config.nominal_step:  # minus Adam's direction, the feature column ADAM_FEATURE of x
        adam = head_input[:, config.hidden_size + ADAM_FEATURE]
        return (direction * size - adam) * config.output_scale
    return direction * size * config.output_scale


def _inv_one_plus_exp(x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    r""":math:`1 / (1 + e^{\min(x, 80)})`, into ``out`` (``None``: a new tensor).

    The cap changes no value by more than :math:`2 \cdot 10^{-35}` (a saturated gate), and
    keeps :math:`e^x` finite: past it the backward of ``exp`` would multiply a zero gradient
    by an infinite :math:`e^x`, and the meta-gradient of a saturated LSTM would be NaN.
    """
    x = torch.clamp(x, max=_EXP_CAP, out=out)
    x = torch.exp(x, out=out)
    return torch.reciprocal(torch.add(x, 1.0, out=out), out=out)


# Largest exponent fed to exp: e^80 ~ 5.5e34 is finite in float32 (overflow at 88.7).
_EXP_CAP = 80.0


def update_bound(net: LSTMOptimizerNet) -> float:
    r"""The largest step :func:`lstm_step` can take for ``net``, before the ``lr`` multiplier.

    .. math::
        |g_t| \le B(\phi) = \text{output\_scale} \cdot \big(\lVert w \rVert_1 + |b|\big)

    where :math:`(w, b)` is the linear head: its input :math:`h^{(L)} = \sigma(o) \tanh(c)`
    lies in :math:`(-1, 1)` for every unit, whatever the gradient or the hidden state. The
    optimizer's step on a coordinate is therefore at most ``lr * update_bound(net)``; the value
    is ``inf`` or ``nan`` only if φ holds non-finite values.

    For ``update="direction_magnitude"`` the head reads :math:`[h; x]` with :math:`|x| \le C`
    (:data:`~learned_optim.network.FEATURE_CLIP`: the config allows this head only with the
    adaptive features) and

    .. math::
        |g| \le \text{output\_scale} \cdot D \cdot e^{\min(\text{magnitude\_scale} \cdot S, 80)}

    where :math:`D` and :math:`S` are :math:`\lVert w_h \rVert_1 + C \lVert w_x \rVert_1 + |b|`
    of the direction and the magnitude rows of the head; ``nominal_step`` adds
    :math:`\text{output\_scale} \cdot C` (Adam's direction, a clipped feature). A per-tensor
    step scale (``hypergradient_rate > 0``) multiplies the bound by its largest value,
    :math:`e^{B}` (``step_scale_bound``; 100 by default).
    """
    config = net.config
    weight = net.head.weight.detach().double()
    bias = net.head.bias.detach().double()
    largest_scale = math.exp(config.step_scale_bound) if config.scales_steps else 1.0
    if config.update != "direction_magnitude":
        return largest_scale * float(weight.abs().sum() + bias.abs().sum()) * config.output_scale
    hidden = config.hidden_size
    rows = [float(weight[k, :hidden].abs().sum() + FEATURE_CLIP * weight[k, hidden:].abs().sum()
                  + bias[k].abs()) for k in range(2)]
    nominal = FEATURE_CLIP if config.nominal_step else 0.0
    return largest_scale * config.output_scale * (
        rows[0] * math.exp(min(config.magnitude_scale * rows[1], _EXP_CAP)) + nominal)


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
                params: Sequence[torch.Tensor] | None = None,
                progress: float | None = None,
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Apply :func:`lstm_step` to flat tensors, chunked over coordinates (functional).

    Args:
        grads: 1-D gradient tensors ``(n_i,)``.
        hidden: matching states ``(n_i, config.state_rows, hidden_size)``.
        weights: φ from :func:`fuse_weights`; gradients flow back to it.
        chunk_size: coordinates per block (``None``: all at once).
        params: 1-D values θ matching ``grads``; required with ``parameter_feature=True``.
        progress: :func:`run_progress` of this step; required with ``progress_feature=True``
            (written into every state first, :func:`with_progress`), ignored otherwise.

    Returns:
        ``(updates, new_hidden)``, lists matching the inputs. The results do not depend on
        ``chunk_size``, nor on how coordinates are split into tensors unless the net has
        ``tensor_feature=True`` (then each tensor's state also gets its
        :func:`tensor_statistic`) or ``hypergradient_rate > 0`` (each tensor's steps are
        scaled by its :func:`tensor_step_scale`, written into its state first).
    """
    if weights.config.progress_feature:
        if progress is None:
            raise ValueError("this net reads the run's progress (progress_feature=True): pass "
                             "progress=run_progress(steps_done, total_steps)")
        hidden = [with_progress(h, progress, weights.config) for h in hidden]
    if weights.config.scales_steps:
        hidden = [with_step_scale(h, g, weights.config) for h, g in zip(hidden, grads)]
    sizes = [g.shape[0] for g in grads]
    total = sum(sizes)
    if total == 0:
        return [g.new_zeros(0) for g in grads], [h.clone() for h in hidden]
    update_parts: list[list[torch.Tensor]] = [[] for _ in grads]
    hidden_parts: list[list[torch.Tensor]] = [[] for _ in grads]
    for pieces in iter_chunks(sizes, chunk_size or total):
        param = None if params is None else gather(params, pieces)
        update, new_hidden = lstm_step(gather(grads, pieces), gather(hidden, pieces), weights,
                                       param)
        offset = 0
        for index, start, stop in pieces:
            update_parts[index].append(update[offset:offset + stop - start])
            hidden_parts[index].append(new_hidden[offset:offset + stop - start])
            offset += stop - start
    updates = [_join(parts, g.new_zeros(0)) for parts, g in zip(update_parts, grads)]
    states = [_join(parts, h[:0]) for parts, h in zip(hidden_parts, hidden)]
    if weights.config.tensor_feature:
        states = [with_tensor_feature(h, weights.config) for h in states]
    return updates, states


def _join(parts: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
    if not parts:
        return empty
    return parts[0] if len(parts) == 1 else torch.cat(parts)
