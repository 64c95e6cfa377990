"""Synthetic regression problems for meta-training: a random teacher, a student of random shape.

:class:`TeacherRNNFamily` does the same for sequences with recurrent models; the rest of
this docstring is :class:`TeacherRegressionFamily`.

Generated data only (no dataset), so it may be meta-trained on. Each seed draws:

* inputs :math:`x \\sim \\mathcal N(0, I_d)`, :math:`d \\in \\{4, 8, 16\\}`, 512 samples;
* a teacher: a random tanh MLP :math:`d \\to 16 \\to 1`, and targets
  :math:`y = s \\cdot (\\text{teacher}(x) + 0.1 \\varepsilon)` at a target scale
  :math:`s = 10^{u}`, :math:`u \\sim U(0, 2.5)`;
* a student MLP (ReLU, tanh or sigmoid; 1 or 2 hidden layers of 16 or 32 units) whose
  initial weights are multiplied by :math:`10^{w}`, :math:`w \\sim U(-0.5, 0.5)`;
* a batch size of 16, 64 or the full 512.

The loss is the squared error divided by :math:`s^2`, so meta-losses of every seed are
comparable, while the student must grow its output weights by a factor of up to ~300: the
situation of a regression on raw, unstandardised targets (Metz et al. 2020 widen their
meta-training distribution with random scales for the same reason).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Task, TaskFamily
from .digits import DigitsMLP

__all__ = ["TeacherRegressionFamily", "TeacherRNNFamily", "ElmanRNN", "choose"]

_SAMPLES = 512


def choose(options, generator: torch.Generator):
    """One of ``options``, uniformly, drawn from ``generator`` (the families' random shapes)."""
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def _noise_stream(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 7_919 + 17) % (2**63))


class TeacherRegressionFamily(TaskFamily):
    """Random teacher-student regressions at random target and initialisation scales."""

    def __init__(self, horizon: int = 200, name: str = "teacher-regression", *,
                 target_scale: float | None = None, normalised_loss: bool = True,
                 noise_levels: tuple[float, ...] = (0.1,)):
        """``target_scale``: a fixed :math:`s` instead of a random one; ``normalised_loss=False``
        reports the plain squared error (of order :math:`s^2`), as a user's raw regression
        would; ``noise_levels``: the label noise :math:`\\sigma` (0.1 above) is drawn from
        these, so a task may have an irreducible loss of :math:`\\sigma^2` and minibatch
        gradients that stay noisy at the optimum."""
        if not noise_levels or min(noise_levels) < 0:
            raise ValueError(f"noise_levels must be a non-empty tuple of levels >= 0, got "
                             f"{noise_levels!r}")
        self.horizon, self.name = horizon, name
        self.target_scale, self.normalised_loss = target_scale, normalised_loss
        self.noise_levels = tuple(float(level) for level in noise_levels)

    def sample(self, seed: int) -> Task:
        g = torch.Generator().manual_seed(seed)

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand((), generator=g))

        inputs = choose((4, 8, 16), g)
        x = torch.randn(_SAMPLES, inputs, generator=g)
        w1 = torch.randn(inputs, 16, generator=g) / inputs ** 0.5
        w2 = torch.randn(16, 1, generator=g) / 4.0
        clean = torch.tanh(x @ w1) @ w2
        clean = clean / clean.std().clamp_min(1e-3)
        target_scale = 10.0 ** uniform(0.0, 2.5)
        if self.target_scale is not None:
            target_scale = float(self.target_scale)
        # a separate stream, so the default single level leaves every other draw as it was
        level = self.noise_levels[int(torch.randint(len(self.noise_levels), (1,),
                                                    generator=_noise_stream(seed)))]
        y = target_scale * (clean + level * torch.randn(_SAMPLES, 1, generator=g))
        activation = choose(("relu", "tanh", "sigmoid"), g)
        hidden, layers = choose((16, 32), g), choose((1, 2), g)
        batch_size = choose((16, 64, _SAMPLES), g)
        init_scale = 10.0 ** uniform(-0.5, 0.5)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsMLP(hidden, layers, activation, classes=1, inputs=inputs)
        params = {name: p.detach() * init_scale for name, p in model.named_parameters()}

        def sample_batch(step: int):
            if batch_size >= _SAMPLES:
                return x, y
            batch = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
            index = torch.randint(0, _SAMPLES, (batch_size,), generator=batch)
            return x[index], y[index]

        inverse_square = 1.0 / target_scale ** 2 if self.normalised_loss else 1.0

        def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(outputs, targets) * inverse_square

        return Task(model=model, params=params, sample_batch=sample_batch, loss_fn=loss_fn)

    def describe(self):
        scale = "10^U(0, 2.5)" if self.target_scale is None else self.target_scale
        return {**super().describe(), "samples": _SAMPLES, "target_scale": scale,
                "normalised_loss": self.normalised_loss,
                **({} if self.noise_levels == (0.1,) else {"noise_levels":
                                                          list(self.noise_levels)}),
                "init_scale": "10^U(-0.5, 0.5)", "student": "relu|tanh|sigmoid MLP, 1-2 x "
                "16|32, batch 16|64|512"}


class ElmanRNN(nn.Module):
    """An Elman RNN read out from its last hidden state: :math:`h_t = \\tanh(W x_t + U h_{t-1}
    + b)`, :math:`\\hat y = V h_L + c`; inputs ``(..., L, inputs)``, output ``(..., 1)``."""

    def __init__(self, inputs: int = 2, width: int = 16):
        super().__init__()
        self.input = nn.Linear(inputs, width)
        self.recurrent = nn.Linear(width, width, bias=False)
        self.readout = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(*x.shape[:-2], self.recurrent.in_features, dtype=x.dtype,
                        device=x.device)
        for t in range(x.shape[-2]):
            h = torch.tanh(self.input(x[..., t, :]) + self.recurrent(h))
        return self.readout(h)


class TeacherRNNFamily(TaskFamily):
    r"""Random teacher-student sequence regressions: recurrent models for meta-training.

    Generated data only. Each seed draws an input size :math:`d \in \{1, 2, 4\}`, a sequence
    length :math:`L \in \{4, 8, 12\}` and a teacher tanh RNN of 8 units with a random
    orthogonal recurrent matrix and small input weights (so its read-out still depends on the
    first inputs: a random Gaussian recurrent matrix forgets them within a few steps). The target is the
    teacher's read-out after :math:`L` steps, standardised, plus label noise
    :math:`0.1\,\varepsilon`. The student is a tanh RNN of 8, 16 or 32 units (PyTorch's
    default init times :math:`10^{U(-0.3, 0.3)}`), trained on a fresh minibatch of 16, 32 or
    64 sequences :math:`x_t \sim \mathcal N(0, I_d)` every step, with the squared error.
    """

    def __init__(self, horizon: int = 200, name: str = "teacher-rnn"):
        self.horizon, self.name = horizon, name

    def sample(self, seed: int) -> Task:
        g = torch.Generator().manual_seed(seed)

        inputs, length = choose((1, 2, 4), g), choose((4, 8, 12), g)
        width, batch_size = choose((8, 16, 32), g), choose((16, 32, 64), g)
        init_scale = 10.0 ** (-0.3 + 0.6 * float(torch.rand((), generator=g)))
        teacher = ElmanRNN(inputs, 8).requires_grad_(False)
        with torch.no_grad():
            teacher.input.weight.copy_(0.5 * torch.randn(8, inputs, generator=g) / inputs ** 0.5)
            teacher.input.bias.copy_(0.1 * torch.randn(8, generator=g))
            orthogonal, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
            teacher.recurrent.weight.copy_(orthogonal)
            teacher.readout.weight.copy_(torch.randn(1, 8, generator=g))
            teacher.readout.bias.zero_()
            reference = teacher(torch.randn(1024, length, inputs, generator=g))
        shift, spread = float(reference.mean()), float(reference.std().clamp_min(1e-3))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ElmanRNN(inputs, width)
        params = {name: p.detach() * init_scale for name, p in model.named_parameters()}

        def sample_batch(step: int):
            batch = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
            x = torch.randn(batch_size, length, inputs, generator=batch)
            with torch.no_grad():
                y = (teacher(x) - shift) / spread
            return x, y + 0.1 * torch.randn(batch_size, 1, generator=batch)

        return Task(model=model, params=params, sample_batch=sample_batch, loss_fn=F.mse_loss)

    def describe(self):
        return {**super().describe(), "teacher": "tanh RNN, 8 units, orthogonal recurrent matrix",
                "inputs": "1|2|4", "length": "4|8|12", "student": "tanh RNN 8|16|32 units, "
                "init x 10^U(-0.3, 0.3)", "batch_size": "16|32|64", "label_noise": 0.1}
