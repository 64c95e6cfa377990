"""The coordinatewise LSTM optimizer network m(∇, h; φ).

Andrychowicz et al., "Learning to learn by gradient descent by gradient descent", NeurIPS 2016
(arXiv:1606.04474), Section 2 and Appendix A. This module holds the weights φ and the
configuration. It has no optimizer logic: the update rule that uses these weights lives in
:mod:`learned_optim.update`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["LSTMOptimizerConfig", "LSTMOptimizerNet", "PREPROCESSING_MODES", "FEATURE_MODES",
           "UPDATE_MODES", "MOMENTUM_DECAYS", "SECOND_MOMENT_DECAY", "FEATURE_CLIP",
           "SECOND_MOMENT_WEIGHT_COLUMN"]

#: Gradient preprocessing modes (see :func:`learned_optim.update.preprocess_gradient`).
PREPROCESSING_MODES = ("log_sign", "clamped", "none")
#: What the LSTM reads per coordinate: the preprocessed gradient alone (the paper), or
#: scale-free momentum features (see :func:`learned_optim.update.adaptive_features`).
FEATURE_MODES = ("gradient", "adaptive")
#: How the head turns the last layer's state into a step: the paper's linear output, or
#: direction x exp(magnitude) (see :func:`learned_optim.update.lstm_step`).
UPDATE_MODES = ("additive", "direction_magnitude")
#: Decay rates of the momenta that ``features="adaptive"`` keeps per coordinate.
MOMENTUM_DECAYS = (0.5, 0.9, 0.99)
#: Column of the adaptive features that holds Adam's direction, the momentum with decay 0.9 over
#: the root of the second moment (column 0 is the gradient over that root).
ADAM_FEATURE = 1 + MOMENTUM_DECAYS.index(0.9)
#: Decay rate of the second-moment estimate that normalises them.
SECOND_MOMENT_DECAY = 0.999
#: Adaptive features are clipped to [-FEATURE_CLIP, FEATURE_CLIP].
FEATURE_CLIP = 10.0
#: The largest ``step_scale_bound`` a config accepts: the per-tensor log step scale of
#: ``hypergradient_rate > 0`` stays in [-step_scale_bound, step_scale_bound], and this caps the
#: factor on the step at [1/100, 100] (the bound of every net before ``step_scale_bound``).
STEP_SCALE_BOUND = math.log(100.0)
# Fields added after format 1's first bundles; a config without them means the paper's net.
_OPTIONAL_FIELDS = {"features": "gradient", "update": "additive", "magnitude_scale": 1.0,
                    "parameter_feature": False, "tensor_feature": False,
                    "progress_feature": False, "tensor_statistic": "signal_to_noise",
                    "nominal_step": False, "hypergradient_rate": 0.0,
                    "step_scale_bound": STEP_SCALE_BOUND, "hypergradient_shrink": 1.0,
                    "departure_warmup": 0}
# The optional fields grouped by the change that added them, oldest first. A fingerprint leaves
# out each group whose fields all hold their defaults (see LSTMOptimizerConfig.identity_dict),
# so that adding an option does not change the fingerprint of weights that do not use it.
_OPTIONAL_FIELD_GROUPS = (("features", "update", "magnitude_scale"), ("parameter_feature",),
                          ("tensor_feature",), ("progress_feature",), ("tensor_statistic",),
                          ("nominal_step",), ("hypergradient_rate",),
                          ("step_scale_bound", "hypergradient_shrink"), ("departure_warmup",))
# Versions before identity_dict hashed every field they knew: they knew this many groups.
_GROUPS_KNOWN_BEFORE_IDENTITY = 5
#: Column of the accumulator row that holds the second moment's bias-correction weight
#: :math:`w_v = 1 - \beta_v^t` (after the momenta, the second moment and the momenta's weights).
SECOND_MOMENT_WEIGHT_COLUMN = 2 * len(MOMENTUM_DECAYS) + 1
#: Column of the accumulator row that holds the tensor feature (after the 8 accumulators).
TENSOR_FEATURE_COLUMN = 2 * (len(MOMENTUM_DECAYS) + 1)
#: What the tensor feature (``tensor_feature=True``) measures: see
#: :func:`learned_optim.update.tensor_signal_to_noise` and
#: :func:`learned_optim.update.tensor_gradient_change`.
TENSOR_STATISTICS = ("signal_to_noise", "gradient_change")


@dataclass(frozen=True)
class LSTMOptimizerConfig:
    """Shape and scaling of one LSTM optimizer net. Serialised as JSON (``dataclasses.asdict``).

    Presets: the paper's MNIST optimizer uses ``preprocessing="log_sign", p=10,
    output_scale=0.1``; deepmind/learning-to-learn uses ``preprocessing="clamped", p=5,
    output_scale=0.01``; the paper's quadratic runs used ``preprocessing="none"``.
    """

    # Units per LSTM layer (paper: 20).
    hidden_size: int = 20
    # Number of stacked LSTM layers (paper: 2).
    num_layers: int = 2
    # How the raw gradient is turned into LSTM inputs: "log_sign" (paper appendix, 2 inputs),
    # "clamped" (deepmind/learning-to-learn, 2 inputs) or "none" (the raw gradient, 1 input).
    preprocessing: str = "log_sign"
    # The paper's p (log_sign) or the official code's k (clamped); unused for "none".
    p: float = 10.0
    # Multiplier on the linear head's output (paper MNIST: 0.1).
    output_scale: float = 0.1
    # LSTM inputs: "gradient" (the preprocessed gradient, paper) or "adaptive" (the gradient
    # and three momenta, each divided by the root of a second-moment estimate: scale-free;
    # `preprocessing` and `p` are then unused).
    features: str = "gradient"
    # The step: "additive" (output_scale * (w.h + b), paper) or "direction_magnitude"
    # (output_scale * d * exp(magnitude_scale * s), (d, s) read from [h; features]).
    update: str = "additive"
    # Multiplier on the magnitude output s of update="direction_magnitude".
    magnitude_scale: float = 1.0
    # With features="adaptive": one more input, the coordinate's current value θ clipped to
    # [-FEATURE_CLIP, FEATURE_CLIP] (Metz et al. 2020, Wichrowska et al. 2017; issue 10). Not
    # scale-free, unlike the others: it lets the step depend on where the parameter is.
    parameter_feature: bool = False
    # With features="adaptive": one more input shared by every coordinate of a tensor, the
    # tensor's mean |m_0.9| / sqrt(v) after the previous step (its gradients' signal-to-noise
    # ratio; scale-free; see learned_optim.update.tensor_signal_to_noise; issue 10).
    tensor_feature: bool = False
    # With features="adaptive": one more input shared by every coordinate, the fraction of the
    # run already done, t / T (T: the optimizer's total_steps; 0 when it is not given), so the
    # net can anneal its step toward the end of a run (VeLO, Metz et al. 2022; issue 10).
    progress_feature: bool = False
    # What tensor_feature measures: "signal_to_noise" (above) or "gradient_change", the log of
    # how much the tensor's gradient changed relative to its size over the previous step
    # (near -10 when steps are far too small for the curvature, near 0 at the right size or
    # in noise; see learned_optim.update.tensor_gradient_change; issue 10). The latter keeps
    # each coordinate's last two gradients in its state.
    tensor_statistic: str = "signal_to_noise"
    # With update="direction_magnitude": a fixed Adam step added to the learned one,
    # output_scale * (d * exp(magnitude_scale * s) - m_0.9 / sqrt(v)), so the net learns a
    # departure from Adam(lr=output_scale) that starts at zero instead of the whole step (the
    # "nominal term" of Harrison, Metz and Sohl-Dickstein 2022; issue 10).
    nominal_step: bool = False
    # With features="adaptive": the rate beta of a step size kept per tensor and adapted online
    # by hypergradient descent (Baydin et al. 2018): every step is multiplied by exp(l), and
    # l <- clip(l - beta * cos(grad_t, step_{t-1}), +-ln 100) before each step, so the scale
    # grows while successive steps keep going downhill and shrinks when they overshoot
    # (see learned_optim.update.tensor_step_scale; issue 10). 0: off, the step is the net's.
    hypergradient_rate: float = 0.0
    # With hypergradient_rate > 0: the bound B on the log step scale, |l| <= B, so the step is
    # scaled by a factor in [e^-B, e^B] (default ln 100; at most STEP_SCALE_BOUND).
    step_scale_bound: float = STEP_SCALE_BOUND
    # With hypergradient_rate > 0: how much faster the scale shrinks than it grows, k >= 1. The
    # rate is k * beta when the cosine is positive (the previous step overshot) and beta when
    # it is negative, so a scale that has grown along a valley falls back within a few steps
    # once the steps start to cross it (issue 10). 1: the symmetric rule of Baydin et al.
    # No bundled optimizer uses k > 1: on minibatch gradients the cosine is as often positive
    # as negative, so the scale then drifts down (README, the nineteenth round's probe).
    hypergradient_shrink: float = 1.0
    # With nominal_step: the number of steps N over which the learned departure from Adam's
    # step ramps up, multiplied by min(1, t / N) at a coordinate's t-th step (t read from the
    # state; see learned_optim.update.departure_ramp), so the first steps are close to
    # Adam(lr=output_scale)'s (issue 10, fortieth round). 0: off, the departure is whole from
    # the first step.
    departure_warmup: int = 0

    @property
    def input_size(self) -> int:
        """Number of LSTM inputs per coordinate produced by the preprocessing."""
        if self.features == "adaptive":
            return (1 + len(MOMENTUM_DECAYS) + int(self.parameter_feature)
                    + int(self.tensor_feature) + int(self.progress_feature))
        return 1 if self.preprocessing == "none" else 2

    @property
    def accumulator_rows(self) -> int:
        """State rows (of ``hidden_size`` floats) for the adaptive features' running averages:
        the momenta, the second moment and their bias-correction weights."""
        return 1 if self.features == "adaptive" else 0

    @property
    def state_rows(self) -> int:
        """Rows of ``hidden_size`` floats of state per coordinate: (h, c) for each layer, then
        the accumulators."""
        return 2 * self.num_layers + self.accumulator_rows

    @property
    def state_size(self) -> int:
        """Floats of state per coordinate."""
        return self.state_rows * self.hidden_size

    @property
    def head_inputs(self) -> int:
        """Width of the head's input: ``h`` of the last layer (and the features, for
        ``update="direction_magnitude"``)."""
        extra = self.input_size if self.update == "direction_magnitude" else 0
        return self.hidden_size + extra

    @property
    def head_outputs(self) -> int:
        """1 (the step) or 2 (direction and magnitude)."""
        return 2 if self.update == "direction_magnitude" else 1

    def __post_init__(self) -> None:
        _check(isinstance(self.hidden_size, int) and not isinstance(self.hidden_size, bool)
               and 1 <= self.hidden_size <= 4096, "hidden_size", self.hidden_size,
               "an integer in [1, 4096]")
        _check(isinstance(self.num_layers, int) and not isinstance(self.num_layers, bool)
               and 1 <= self.num_layers <= 8, "num_layers", self.num_layers,
               "an integer in [1, 8]")
        _check(self.preprocessing in PREPROCESSING_MODES, "preprocessing", self.preprocessing,
               f"one of {list(PREPROCESSING_MODES)}")
        _check(_is_real(self.p) and 0.0 < self.p <= 80.0, "p", self.p, "a number in (0, 80]")
        _check(_is_real(self.output_scale) and math.isfinite(self.output_scale)
               and self.output_scale > 0.0, "output_scale", self.output_scale,
               "a finite positive number")
        _check(self.features in FEATURE_MODES, "features", self.features,
               f"one of {list(FEATURE_MODES)}")
        _check(self.update in UPDATE_MODES, "update", self.update, f"one of {list(UPDATE_MODES)}")
        _check(_is_real(self.magnitude_scale) and math.isfinite(self.magnitude_scale)
               and self.magnitude_scale > 0.0, "magnitude_scale", self.magnitude_scale,
               "a finite positive number")
        _check(self.update != "direction_magnitude" or self.features == "adaptive", "update",
               self.update, "'additive' unless features='adaptive' (the direction-magnitude head "
               "reads the features, and only the adaptive ones are bounded, which bounds its step)")
        _check(isinstance(self.parameter_feature, bool), "parameter_feature",
               self.parameter_feature, "true or false")
        _check(not self.parameter_feature or self.features == "adaptive", "parameter_feature",
               self.parameter_feature, "false unless features='adaptive' (the parameter value "
               "is an extra adaptive feature)")
        _check(isinstance(self.tensor_feature, bool), "tensor_feature", self.tensor_feature,
               "true or false")
        _check(not self.tensor_feature or self.features == "adaptive", "tensor_feature",
               self.tensor_feature, "false unless features='adaptive' (the tensor feature is "
               "computed from the adaptive features' running averages)")
        _check(isinstance(self.progress_feature, bool), "progress_feature",
               self.progress_feature, "true or false")
        _check(not self.progress_feature or self.features == "adaptive", "progress_feature",
               self.progress_feature, "false unless features='adaptive' (the progress is "
               "stored beside the adaptive features' running averages)")
        _check(self.tensor_statistic in TENSOR_STATISTICS, "tensor_statistic",
               self.tensor_statistic, f"one of {list(TENSOR_STATISTICS)}")
        _check(self.tensor_feature or self.tensor_statistic == "signal_to_noise",
               "tensor_statistic", self.tensor_statistic, "'signal_to_noise' unless "
               "tensor_feature=True (it says what the tensor feature measures)")
        _check(isinstance(self.nominal_step, bool), "nominal_step", self.nominal_step,
               "true or false")
        _check(not self.nominal_step or self.update == "direction_magnitude", "nominal_step",
               self.nominal_step, "false unless update='direction_magnitude' (the nominal Adam "
               "step is read from the adaptive features that head reads)")
        _check(_is_real(self.hypergradient_rate) and math.isfinite(self.hypergradient_rate)
               and 0.0 <= self.hypergradient_rate <= 1.0, "hypergradient_rate",
               self.hypergradient_rate, "a number in [0, 1] (0: no per-tensor step scale)")
        _check(self.hypergradient_rate == 0.0 or self.features == "adaptive",
               "hypergradient_rate", self.hypergradient_rate, "0 unless features='adaptive' (the "
               "step scale and the previous step are kept beside the adaptive features' running "
               "averages)")
        _check(_is_real(self.step_scale_bound) and math.isfinite(self.step_scale_bound)
               and 0.0 < self.step_scale_bound <= STEP_SCALE_BOUND, "step_scale_bound",
               self.step_scale_bound, f"a number in (0, ln 100 = {STEP_SCALE_BOUND:.6g}]")
        _check(_is_real(self.hypergradient_shrink) and math.isfinite(self.hypergradient_shrink)
               and 1.0 <= self.hypergradient_shrink <= 100.0, "hypergradient_shrink",
               self.hypergradient_shrink, "a number in [1, 100] (1: shrinks as fast as it grows)")
        for name in ("step_scale_bound", "hypergradient_shrink"):
            _check(self.scales_steps or getattr(self, name) == _OPTIONAL_FIELDS[name], name,
                   getattr(self, name), f"its default {_OPTIONAL_FIELDS[name]:g} unless "
                   "hypergradient_rate > 0 (it shapes the per-tensor step scale)")
        _check(isinstance(self.departure_warmup, int)
               and not isinstance(self.departure_warmup, bool)
               and 0 <= self.departure_warmup <= 10_000, "departure_warmup",
               self.departure_warmup, "an integer number of steps in [0, 10000] (0: off)")
        _check(self.departure_warmup == 0 or self.nominal_step, "departure_warmup",
               self.departure_warmup, "0 unless nominal_step=True (it ramps up the learned "
               "departure from the nominal Adam step)")
        accumulators = self.step_scale_column + 2 * int(self.scales_steps)
        _check(self.features != "adaptive" or self.hidden_size >= accumulators, "hidden_size",
               self.hidden_size, f"at least {accumulators} with features='adaptive'"
               + (" and tensor_feature=True" if self.tensor_feature else "")
               + (" and progress_feature=True" if self.progress_feature else "")
               + (" and tensor_statistic='gradient_change'" if self.keeps_gradients else "")
               + (" and hypergradient_rate > 0" if self.scales_steps else "")
               + " (its accumulators share one state row)")

    @property
    def progress_column(self) -> int:
        """Column of the accumulator row that holds the progress (``progress_feature``)."""
        return TENSOR_FEATURE_COLUMN + int(self.tensor_feature)

    @property
    def keeps_gradients(self) -> bool:
        """Whether each coordinate's state keeps its last two gradients
        (``tensor_statistic="gradient_change"``)."""
        return self.tensor_feature and self.tensor_statistic == "gradient_change"

    @property
    def gradient_column(self) -> int:
        """First of the two accumulator-row columns that hold the latest and the previous
        gradient (:attr:`keeps_gradients`)."""
        return self.progress_column + int(self.progress_feature)

    @property
    def scales_steps(self) -> bool:
        """Whether each tensor's steps are scaled by a hypergradient-adapted factor
        (``hypergradient_rate > 0``)."""
        return self.hypergradient_rate > 0.0

    @property
    def step_scale_column(self) -> int:
        """Column of the accumulator row that holds the tensor's log step scale
        (:attr:`scales_steps`); the next column holds the coordinate's previous step."""
        return self.gradient_column + 2 * int(self.keeps_gradients)

    @property
    def per_tensor(self) -> bool:
        """Whether a coordinate's step depends on the other coordinates of its tensor (a tensor
        feature or a per-tensor step scale): runs must not be stacked into one tensor."""
        return self.tensor_feature or self.scales_steps

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields."""
        return dataclasses.asdict(self)

    def identity_dict(self) -> dict[str, Any]:
        """The fields that identify this net, for fingerprints: :meth:`to_dict` without each
        group of later-added options that all hold their defaults. Weights saved before an
        option existed, and the same weights saved after, have the same identity."""
        data = self.to_dict()
        for group in _OPTIONAL_FIELD_GROUPS:
            if all(data[name] == _OPTIONAL_FIELDS[name] for name in group):
                for name in group:
                    del data[name]
        return data

    def earlier_identity_dicts(self) -> list[dict[str, Any]]:
        """What :meth:`identity_dict` was before it left out unused options (learned_optim
        hashed every field known at the time): one dict per set of fields of an earlier
        version, oldest first, so that optimizer state_dicts saved by those versions still match
        their weights."""
        data = self.to_dict()
        earlier: list[dict[str, Any]] = []
        for count in range(1, _GROUPS_KNOWN_BEFORE_IDENTITY + 1):
            known = {name for group in _OPTIONAL_FIELD_GROUPS[:count] for name in group}
            fields = {name: value for name, value in data.items()
                      if name not in _OPTIONAL_FIELDS or name in known}
            earlier.append(fields)
        return earlier

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LSTMOptimizerConfig":
        """Build a config from JSON data, naming any unknown or missing field."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"net config must be a JSON object of fields, got "
                              f"{type(data).__name__}; re-export the weights with "
                              "WeightsBundle.save_pretrained()")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data) - set(_OPTIONAL_FIELDS))
        if unknown or missing:
            raise ConfigError(
                f"net config fields do not match this version of learned_optim: "
                f"unknown {unknown}, missing {missing}. Expected exactly {sorted(names)}; "
                "re-export the weights with the current version or upgrade learned_optim."
            )
        return cls(**{**_OPTIONAL_FIELDS, **data})


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(ok: bool, field: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"invalid net config field {field}={value!r}: expected {expected}")


class LSTMOptimizerNet(nn.Module):
    r"""The optimizer network m of Andrychowicz et al. (2016): a coordinatewise 2-layer LSTM.

    The same weights φ are applied to every coordinate of the optimizee independently; each
    coordinate keeps its own hidden state. For one coordinate with gradient :math:`\nabla_t`:

    .. math::
        x_t &= \operatorname{preprocess}(\nabla_t) \\
        (h^{(1)}_{t+1}, c^{(1)}_{t+1}) &= \mathrm{LSTM}_1(x_t, h^{(1)}_t, c^{(1)}_t) \\
        (h^{(2)}_{t+1}, c^{(2)}_{t+1}) &= \mathrm{LSTM}_2(h^{(1)}_{t+1}, h^{(2)}_t, c^{(2)}_t) \\
        g_t &= \text{output\_scale} \cdot (w^\top h^{(2)}_{t+1} + b)

    and the optimizee moves by :math:`\theta_{t+1} = \theta_t + g_t`.

    The module only holds φ (``cells`` are registered ``nn.LSTMCell`` modules, ``head`` is an
    ``nn.Linear(hidden_size, 1)``). Apply it with :func:`learned_optim.update.lstm_update`.

    Example:
        >>> net = LSTMOptimizerNet(LSTMOptimizerConfig(), seed=0)
        >>> sum(p.numel() for p in net.parameters())
        5301
    """

    def __init__(self, config: LSTMOptimizerConfig | None = None, *, seed: int | None = None):
        super().__init__()
        self.config = config if config is not None else LSTMOptimizerConfig()
        if not isinstance(self.config, LSTMOptimizerConfig):
            raise TypeError(f"config must be an LSTMOptimizerConfig, got {type(config).__name__}")
        # A seed gives reproducible initial weights without touching the global RNG.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            sizes = [self.config.input_size] + [self.config.hidden_size] * self.config.num_layers
            self.cells = nn.ModuleList(
                nn.LSTMCell(sizes[i], sizes[i + 1]) for i in range(self.config.num_layers)
            )
            self.head = nn.Linear(self.config.head_inputs, self.config.head_outputs)
            if self.config.update == "direction_magnitude":
                _start_like_adam(self.head, self.config)

    def initial_state(self, numel: int, *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """Zero hidden state for ``numel`` coordinates, shape ``(numel, state_rows, hidden)``.

        Row ``2l`` holds :math:`h^{(l+1)}` and row ``2l + 1`` holds :math:`c^{(l+1)}`.
        """
        cfg = self.config
        return torch.zeros(numel, cfg.state_rows, cfg.hidden_size, dtype=dtype, device=device)

    def extra_repr(self) -> str:
        cfg = self.config
        if cfg.features == "adaptive":
            text = "features='adaptive'" + (", parameter_feature=True"
                                            if cfg.parameter_feature else "") + (
                ", tensor_feature=True" if cfg.tensor_feature else "") + (
                ", progress_feature=True" if cfg.progress_feature else "") + (
                ", nominal_step=True" if cfg.nominal_step else "") + (
                f", hypergradient_rate={cfg.hypergradient_rate}" if cfg.scales_steps else "") + (
                "".join(f", {name}={getattr(cfg, name):g}"
                        for name in ("step_scale_bound", "hypergradient_shrink")
                        if getattr(cfg, name) != _OPTIONAL_FIELDS[name]))
        else:
            text = f"preprocessing={cfg.preprocessing!r}, p={cfg.p}"
        text += f", update={cfg.update!r}, output_scale={cfg.output_scale}"
        if cfg.update == "direction_magnitude":
            text += f", magnitude_scale={cfg.magnitude_scale}"
        return text


@torch.no_grad()
def _start_like_adam(head: nn.Linear, config: LSTMOptimizerConfig) -> None:
    r"""Initialise a direction-magnitude head so that the untrained net steps like Adam.

    With adaptive features the momentum with decay 0.9 over the root of the second moment is
    exactly Adam's direction :math:`\hat m / \sqrt{\hat v}`; the direction output starts as
    minus that feature (plus the small random weights on ``h`` that break symmetry), the
    magnitude output starts at zero, so the first steps are
    :math:`-\text{output\_scale} \cdot \hat m / \sqrt{\hat v}`, and meta-training learns the
    departures from it (Metz et al. 2020 start learned optimizers near a hand-designed one too).
    With ``nominal_step`` that Adam step is added outside the head, whose direction then
    starts at the small weights on ``h`` alone: the same first steps.
    """
    hidden = config.hidden_size
    head.weight[:, :hidden].mul_(0.1)
    head.weight[:, hidden:].zero_()
    head.bias.zero_()
    if config.features == "adaptive" and not config.nominal_step:
        head.weight[0, hidden + ADAM_FEATURE] = -1.0
