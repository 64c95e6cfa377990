"""The held-out generalization suite's optimizees: never meta-trained on, never used to choose.

Different datasets (wine, breast cancer, diabetes, moons), activations (GELU, ELU, ReLU), losses
(cross-entropy, squared error at unit and at raw scale), architectures (an autoencoder, an
Elman RNN, a 2-d test function) and batch sizes (8 to full batch). Used only by
``python -m learned_optim evaluate --suite heldout``.
"""

from __future__ import annotations

from functools import lru_cache
import torch
import torch.nn.functional as F
from torch import nn

from .base import Task
from .digits import DigitsMLP, digits_split
from .synthetic import ElmanRNN
from .transfer import _EvaluationFamily, _minibatches, _mse, _seeded, _sklearn, _standardise

__all__ = ["TabularFamily", "DigitsAutoencoderFamily", "AddingRNNFamily", "RosenbrockFamily"]


@lru_cache(maxsize=None)
def _table(dataset: str, standardise_targets: bool) -> tuple[torch.Tensor, torch.Tensor]:
    datasets = _sklearn()
    if dataset == "moons":
        x, y = datasets.make_moons(n_samples=1000, noise=0.2, random_state=0)
    else:
        data = getattr(datasets, f"load_{dataset}")()
        x, y = data.data, data.target
    x = _standardise(torch.tensor(x, dtype=torch.float32))
    if y.dtype.kind in "iu":
        return x, torch.tensor(y, dtype=torch.long)
    y = torch.tensor(y, dtype=torch.float32).unsqueeze(1)
    return x, (_standardise(y) if standardise_targets else y)


class TabularFamily(_EvaluationFamily):
    """An MLP on a scikit-learn table: classification (cross-entropy) or regression (squared
    error, targets standardised unless ``raw_targets``)."""

    def __init__(self, dataset: str, *, hidden: int, layers: int = 1, activation: str = "relu",
                 batch_size: int | None = 32, horizon: int = 500, raw_targets: bool = False,
                 name: str | None = None):
        self.dataset, self.hidden, self.layers, self.activation = dataset, hidden, layers, activation
        self.batch_size, self.horizon, self.raw_targets = batch_size, horizon, raw_targets
        self.name = name or f"{dataset}-mlp"

    def sample(self, seed: int) -> Task:
        x, y = _table(self.dataset, not self.raw_targets)
        regression = y.is_floating_point()
        outputs = 1 if regression else int(y.max()) + 1
        model = _seeded(seed, lambda: DigitsMLP(self.hidden, self.layers, self.activation,
                                                classes=outputs, inputs=x.shape[1]))
        return Task(model=model, sample_batch=_minibatches(x, y, self.batch_size, seed),
                    loss_fn=_mse if regression else F.cross_entropy)


class _Autoencoder(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.encode = nn.Linear(64, width)
        self.decode = nn.Linear(width, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode(torch.tanh(self.encode(x))))


class DigitsAutoencoderFamily(_EvaluationFamily):
    """A 64-16-64 autoencoder (tanh code, sigmoid output) on the digits *test* images."""

    def __init__(self, batch_size: int = 64, horizon: int = 1000):
        self.batch_size, self.horizon, self.name = batch_size, horizon, "digits-autoencoder"

    def sample(self, seed: int) -> Task:
        x, _ = digits_split("test")
        return Task(model=_seeded(seed, _Autoencoder),
                    sample_batch=_minibatches(x, x, self.batch_size, seed), loss_fn=_mse)


class AddingRNNFamily(_EvaluationFamily):
    r"""The adding problem (Hochreiter & Schmidhuber 1997) for an Elman RNN: inputs are pairs
    (value ~ U(0, 1), marker); two positions are marked and the target is the sum of their
    values. Sequences of ``length`` steps, a fresh minibatch every step."""

    def __init__(self, length: int = 10, batch_size: int = 32, horizon: int = 1000):
        self.length, self.batch_size, self.horizon = length, batch_size, horizon
        self.name = "adding-rnn"

    def sample(self, seed: int) -> Task:
        length, batch_size = self.length, self.batch_size

        def sample_batch(step: int):
            g = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
            values = torch.rand(batch_size, length, generator=g)
            marks = torch.zeros(batch_size, length)
            first = torch.randint(0, length // 2, (batch_size,), generator=g)
            second = torch.randint(length // 2, length, (batch_size,), generator=g)
            rows = torch.arange(batch_size)
            marks[rows, first] = 1.0
            marks[rows, second] = 1.0
            target = (values * marks).sum(1, keepdim=True)
            return torch.stack([values, marks], -1), target
        return Task(model=_seeded(seed, ElmanRNN), sample_batch=sample_batch, loss_fn=_mse)


class _Point(nn.Module):
    def __init__(self, start: torch.Tensor):
        super().__init__()
        self.xy = nn.Parameter(start)

    def forward(self, _inputs=None) -> torch.Tensor:
        return self.xy


def _rosenbrock(xy: torch.Tensor, _targets=None) -> torch.Tensor:
    return (1 - xy[0]).square() + 100 * (xy[1] - xy[0].square()).square()


class RosenbrockFamily(_EvaluationFamily):
    r""":math:`f(x, y) = (1 - x)^2 + 100 (y - x^2)^2` from a start drawn around (-1, 1);
    the minimum is 0 at (1, 1)."""

    def __init__(self, horizon: int = 10_000):
        self.horizon, self.name = horizon, "rosenbrock"

    def sample(self, seed: int) -> Task:
        g = torch.Generator().manual_seed(seed)
        start = torch.tensor([-1.0, 1.0]) + 0.5 * torch.randn(2, generator=g)
        return Task(model=_Point(start), sample_batch=lambda step: (None, None),
                    loss_fn=_rosenbrock)

