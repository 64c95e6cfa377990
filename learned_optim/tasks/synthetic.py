"""Synthetic regression problems for meta-training: a random teacher, a student of random shape.

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

from .base import Task, TaskFamily
from .digits import DigitsMLP

__all__ = ["TeacherRegressionFamily"]

_SAMPLES = 512


class TeacherRegressionFamily(TaskFamily):
    """Random teacher-student regressions at random target and initialisation scales."""

    def __init__(self, horizon: int = 200, name: str = "teacher-regression", *,
                 target_scale: float | None = None, normalised_loss: bool = True):
        """``target_scale``: a fixed :math:`s` instead of a random one; ``normalised_loss=False``
        reports the plain squared error (of order :math:`s^2`), as a user's raw regression
        would."""
        self.horizon, self.name = horizon, name
        self.target_scale, self.normalised_loss = target_scale, normalised_loss

    def sample(self, seed: int) -> Task:
        g = torch.Generator().manual_seed(seed)

        def pick(options):
            return options[int(torch.randint(len(options), (1,), generator=g))]

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand((), generator=g))

        inputs = pick((4, 8, 16))
        x = torch.randn(_SAMPLES, inputs, generator=g)
        w1 = torch.randn(inputs, 16, generator=g) / inputs ** 0.5
        w2 = torch.randn(16, 1, generator=g) / 4.0
        clean = torch.tanh(x @ w1) @ w2
        clean = clean / clean.std().clamp_min(1e-3)
        target_scale = 10.0 ** uniform(0.0, 2.5)
        if self.target_scale is not None:
            target_scale = float(self.target_scale)
        y = target_scale * (clean + 0.1 * torch.randn(_SAMPLES, 1, generator=g))
        activation = pick(("relu", "tanh", "sigmoid"))
        hidden, layers = pick((16, 32)), pick((1, 2))
        batch_size = pick((16, 64, _SAMPLES))
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
                "init_scale": "10^U(-0.5, 0.5)", "student": "relu|tanh|sigmoid MLP, 1-2 x "
                "16|32, batch 16|64|512"}
