"""Meta-train the LSTM optimizer on your own nn.Module, then use it like any optimizer.

Any module works: the MetaTrainer unrolls it with torch.func.functional_call. Here the task
family is "fit a random linear map with a small tanh network" on synthetic data.

    pip install torch==2.13.0 -e . && python examples/meta_train_custom_task.py
"""

import torch
from torch import nn

from learned_optim import LearnedLSTMOptim
from learned_optim.meta import MetaTrainConfig, MetaTrainer
from learned_optim.tasks import FunctionTaskFamily, Task


class TinyRegressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x):
        return self.body(x).squeeze(1)


def make_task(seed: int) -> Task:
    """One optimizee: a fresh network and a fresh random regression problem."""
    g = torch.Generator().manual_seed(seed)
    true_map = torch.randn(5, generator=g)

    def sample_batch(step: int):
        batch = torch.Generator().manual_seed(seed * 7919 + step)
        x = torch.randn(32, 5, generator=batch)
        return x, x @ true_map

    torch.manual_seed(seed)
    return Task(model=TinyRegressor(), sample_batch=sample_batch, loss_fn=nn.functional.mse_loss)


def main() -> None:
    family = FunctionTaskFamily("tiny-regression", make_task, horizon=100)
    config = MetaTrainConfig(epochs=5, tasks_per_epoch=10, validation_tasks=4, meta_lr=3e-3)
    bundle = MetaTrainer(family, config, name="tiny-regression").train()
    metrics = bundle.provenance["metrics"]
    print(f"validation final loss: untrained {metrics['untrained_validation_final_loss']:.4f}"
          f" -> meta-trained {metrics['validation_final_loss']:.4f}")
    bundle.save_pretrained("runs/tiny-regression")

    # The result is an ordinary optimizer for a new model of the same kind.
    task = make_task(seed=12345)
    model = task.model
    optimizer = LearnedLSTMOptim(model.parameters(), weights="runs/tiny-regression")
    for step in range(100):
        x, y = task.sample_batch(step)
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"new task, loss after 100 learned steps: {loss.item():.4f}")


if __name__ == "__main__":
    main()
