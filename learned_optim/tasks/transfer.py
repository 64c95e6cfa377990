"""Evaluation-only task families: data and architectures no bundled optimizer was trained on.

Meta-training uses only quadratics, digits, the sample images and synthetic data. The
families here exist to measure transfer, and none of them is in a meta-training preset:

* :class:`IrisFamily`: scikit-learn's iris (150 flowers, 4 features, 3 classes), a tanh MLP.
* :class:`LinnerudFamily`: scikit-learn's linnerud (20 people, 3 exercises -> 3 body
  measurements), multi-output linear regression on standardised data.
* :class:`SyntheticClassificationFamily`: ``make_classification`` problems (20 features,
  2 classes), a ReLU MLP.
* :class:`SyntheticRegressionFamily`: ``make_regression`` problems (10 features, noisy),
  an MLP regressor with squared error.
* :class:`SequenceAttentionFamily`: a one-head self-attention model on synthetic sequences
  (not an image model; no convolution, no MLP-only structure).

Every family here samples tasks that differ only in parameters, buffers and batches
(``batched_seeds = True``), so the evaluator can run many seeds side by side.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .base import Task, TaskFamily
from .digits import DigitsMLP

__all__ = ["IrisFamily", "LinnerudFamily", "SyntheticClassificationFamily",
           "SyntheticRegressionFamily", "SequenceAttentionFamily"]


def _sklearn():
    try:
        import sklearn.datasets as datasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("transfer tasks need scikit-learn: pip install 'learned_optim[examples]'"
                          ) from exc
    return datasets


def _standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)


def _minibatches(x: torch.Tensor, y: torch.Tensor, batch_size: int | None, seed: int):
    """``step -> (inputs, targets)``: the full batch, or seeded random minibatches."""
    if batch_size is None or batch_size >= len(x):
        return lambda step: (x, y)

    def sample(step: int):
        g = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
        index = torch.randint(0, len(x), (batch_size,), generator=g)
        return x[index], y[index]
    return sample


def _mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs - targets).square().mean()


def _seeded(seed: int, make):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


class _EvaluationFamily(TaskFamily):
    batched_seeds = True

    def describe(self):
        return {**super().describe(), "evaluation_only": True}


@lru_cache(maxsize=None)
def _iris() -> tuple[torch.Tensor, torch.Tensor]:
    data = _sklearn().load_iris()
    return (_standardise(torch.tensor(data.data, dtype=torch.float32)),
            torch.tensor(data.target, dtype=torch.long))


class IrisFamily(_EvaluationFamily):
    """Iris classification: MLP 4-16-3 (tanh), cross-entropy, minibatches of 32."""

    def __init__(self, hidden: int = 16, batch_size: int = 32, horizon: int = 200):
        self.hidden, self.batch_size, self.horizon, self.name = hidden, batch_size, horizon, "iris"

    def sample(self, seed: int) -> Task:
        x, y = _iris()
        model = _seeded(seed, lambda: DigitsMLP(self.hidden, 1, "tanh", classes=3, inputs=4))
        return Task(model=model, sample_batch=_minibatches(x, y, self.batch_size, seed),
                    loss_fn=F.cross_entropy)


@lru_cache(maxsize=None)
def _linnerud() -> tuple[torch.Tensor, torch.Tensor]:
    data = _sklearn().load_linnerud()
    return (_standardise(torch.tensor(data.data, dtype=torch.float32)),
            _standardise(torch.tensor(data.target, dtype=torch.float32)))


class LinnerudFamily(_EvaluationFamily):
    """Linnerud: linear regression 3 -> 3 on standardised data, full batch (20 samples)."""

    def __init__(self, horizon: int = 200):
        self.horizon, self.name = horizon, "linnerud"

    def sample(self, seed: int) -> Task:
        x, y = _linnerud()
        model = _seeded(seed, lambda: nn.Linear(3, 3))
        return Task(model=model, sample_batch=_minibatches(x, y, None, seed), loss_fn=_mse)


class SyntheticClassificationFamily(_EvaluationFamily):
    """``make_classification`` (1,000 samples, 20 features, 10 informative, 2 classes, one
    problem per seed); ReLU MLP 20-32-2, cross-entropy, minibatches of 64."""

    def __init__(self, hidden: int = 32, batch_size: int = 64, horizon: int = 200):
        self.hidden, self.batch_size, self.horizon = hidden, batch_size, horizon
        self.name = "make-classification"

    def sample(self, seed: int) -> Task:
        x, y = _sklearn().make_classification(n_samples=1000, n_features=20, n_informative=10,
                                              n_redundant=5, random_state=seed)
        x = _standardise(torch.tensor(x, dtype=torch.float32))
        y = torch.tensor(y, dtype=torch.long)
        model = _seeded(seed, lambda: DigitsMLP(self.hidden, 1, "relu", classes=2, inputs=20))
        return Task(model=model, sample_batch=_minibatches(x, y, self.batch_size, seed),
                    loss_fn=F.cross_entropy)


class SyntheticRegressionFamily(_EvaluationFamily):
    """``make_regression`` (500 samples, 10 features, noise 10, one problem per seed), targets
    standardised; tanh MLP 10-32-1, squared error, minibatches of 64."""

    def __init__(self, hidden: int = 32, batch_size: int = 64, horizon: int = 200):
        self.hidden, self.batch_size, self.horizon = hidden, batch_size, horizon
        self.name = "make-regression"

    def sample(self, seed: int) -> Task:
        x, y = _sklearn().make_regression(n_samples=500, n_features=10, n_informative=8,
                                          noise=10.0, random_state=seed)
        x = _standardise(torch.tensor(x, dtype=torch.float32))
        y = _standardise(torch.tensor(y, dtype=torch.float32).unsqueeze(1))
        model = _seeded(seed, lambda: DigitsMLP(self.hidden, 1, "tanh", classes=1, inputs=10))
        return Task(model=model, sample_batch=_minibatches(x, y, self.batch_size, seed),
                    loss_fn=_mse)


class SelfAttentionRegressor(nn.Module):
    """Embed, one head of scaled dot-product self-attention with a residual, mean-pool, linear."""

    def __init__(self, features: int = 4, width: int = 16):
        super().__init__()
        self.embed = nn.Linear(features, width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.readout = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.embed(x))
        scores = self.query(h) @ self.key(h).transpose(-1, -2) / h.shape[-1] ** 0.5
        h = h + torch.softmax(scores, dim=-1) @ self.value(h)
        return self.readout(h.mean(-2))


class SequenceAttentionFamily(_EvaluationFamily):
    r"""Synthetic sequences: 12 steps of 4 features; the target is
    :math:`\frac{1}{T}\sum_t x_{t,0} x_{t,1} + \max_t x_{t,2}` (needs pairwise features and
    attention to one position). A fresh minibatch of 64 sequences every step."""

    def __init__(self, length: int = 12, batch_size: int = 64, horizon: int = 200):
        self.length, self.batch_size, self.horizon = length, batch_size, horizon
        self.name = "sequence-attention"

    def sample(self, seed: int) -> Task:
        model = _seeded(seed, SelfAttentionRegressor)
        length, batch_size = self.length, self.batch_size

        def sample_batch(step: int):
            g = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
            x = torch.randn(batch_size, length, 4, generator=g)
            y = (x[..., 0] * x[..., 1]).mean(-1) + x[..., 2].amax(-1)
            return x, y.unsqueeze(-1)
        return Task(model=model, sample_batch=sample_batch, loss_fn=_mse)
