"""What does the gradient-change input read during a run? (issue 10, fifteenth round)

A net with ``tensor_feature=True, tensor_statistic="gradient_change"`` reads, per tensor,
:math:`\\rho = \\operatorname{clip}(\\log(\\lVert\\nabla_t - \\nabla_{t-1}\\rVert /
\\lVert\\nabla_{t-1}\\rVert), \\pm 10)` (:func:`learned_optim.update.tensor_gradient_change`).
This runs such a net for 1,000 steps on one task of three validation families (a tanh RNN, a
minibatch tanh MLP on digits, a 10-d quadratic; nothing held out is touched) and prints the
mean of :math:`\\rho` over the tensors and over steps 2-100, 100-500 and 500-1,000, with the
final loss. For reference, independent gradient noise alone gives
:math:`\\rho \\approx \\log\\sqrt 2 \\approx 0.35`.

Usage: ``python benchmarks/gradient_change_probe.py WEIGHTS [WEIGHTS ...]`` (bundle folders
whose nets read the gradient change).
"""

from __future__ import annotations

import sys

import torch

from learned_optim import LearnedLSTMOptim
from learned_optim.evaluation import select_rows
from learned_optim.network import TENSOR_FEATURE_COLUMN

STEPS, TASK_SEED = 1000, 2000
WINDOWS = ((2, 100), (100, 500), (500, 1000))
ROWS = ("val-teacher-rnn", "val-digits-tanh-wide", "val-quadratic-1000")


def families():
    """The validation suite's RNN, tanh-wide and quadratic families (1,000-step rows)."""
    return {row.name: row.family() for row in select_rows("validation", names=ROWS)}


def rho_trace(weights: str, family) -> tuple[list[float], float]:
    """Mean rho over the task's tensors after each step, and the last step's loss."""
    task = family.sample(TASK_SEED)
    model = task.model
    optimizer = LearnedLSTMOptim(model.parameters(), weights=weights)
    config = optimizer.weights.nets["fc"].config
    if not config.keeps_gradients:
        raise SystemExit(f"{weights}: its net does not read the gradient change "
                         "(tensor_statistic='gradient_change')")
    row = 2 * config.num_layers  # the accumulator row
    trace, loss = [], None
    for step in range(STEPS):
        optimizer.zero_grad()
        loss = task.loss(dict(model.named_parameters()), step)
        loss.backward()
        optimizer.step()
        values = [float(optimizer.state[p]["hidden"][0, row, TENSOR_FEATURE_COLUMN])
                  for p in model.parameters() if p in optimizer.state]
        trace.append(sum(values) / len(values))
    return trace, float(loss.detach())


def main() -> None:
    torch.set_num_threads(1)
    print("| weights | row | " + " | ".join(f"mean rho, steps {a}-{b}" for a, b in WINDOWS)
          + " | final loss |")
    print("|---|---|" + "---|" * len(WINDOWS) + "---|")
    for weights in sys.argv[1:]:
        for name, family in families().items():
            trace, final = rho_trace(weights, family)
            means = [sum(trace[a:b]) / (b - a) for a, b in WINDOWS]
            print(f"| {weights} | {name} | " + " | ".join(f"{m:.2f}" for m in means)
                  + f" | {final:.3g} |")


if __name__ == "__main__":
    main()
