"""Quickstart: LearnedLSTMOptim as a drop-in replacement for torch.optim.Adam.

Trains the same small MLP on scikit-learn's 8x8 digits twice, once with the bundled learned
optimizer and once with Adam (lr=1e-3, its default), and prints both loss curves side by side.

    pip install torch==2.13.0 -e ".[examples]" && python examples/quickstart.py
"""

import torch
from sklearn.datasets import load_digits
from torch import nn

from learned_optim import LearnedLSTMOptim


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 20), nn.Sigmoid(), nn.Linear(20, 10))


def train(make_optimizer, steps: int = 200, batch_size: int = 128, seed: int = 0) -> list[float]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    model = make_model(seed)
    optimizer = make_optimizer(model.parameters())  # the only line that differs
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        batch = torch.randint(0, len(x), (batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    learned = train(lambda params: LearnedLSTMOptim(params))
    adam = train(lambda params: torch.optim.Adam(params))
    print(f"{'step':>6} {'LearnedLSTMOptim':>18} {'Adam(lr=1e-3)':>15}")
    for step in (0, 10, 25, 50, 100, 150, 199):
        print(f"{step:>6} {learned[step]:>18.4f} {adam[step]:>15.4f}")
    print(f"{'mean':>6} {sum(learned) / len(learned):>18.4f} {sum(adam) / len(adam):>15.4f}")


if __name__ == "__main__":
    main()
