"""Does a net with ``progress_feature`` anneal? (issue 10, twelfth round)

For each weights argument, 3 seeds of a 1,000-step ReLU digits MLP (batch 8, the digits
*training* split, so nothing held out is touched), once told ``total_steps=1000`` and once not
(the progress then stays 0). Prints the final loss (mean over the last 10% of steps) and the
mean |step| per coordinate over the same steps. Nets without the progress input print the same
line twice.

Usage: ``python benchmarks/progress_probe.py WEIGHTS [WEIGHTS ...]`` (bundle folders or
bundled names).
"""

from __future__ import annotations

import sys

import torch

from learned_optim import LearnedLSTMOptim
from learned_optim.tasks.digits import DigitsMLPFamily

STEPS, SEEDS = 1000, (0, 1, 2)


def tail_figures(weights: str, total_steps: int | None) -> tuple[float, float]:
    """(final loss, mean |step| per coordinate) over the last 10% of steps, averaged over seeds."""
    family = DigitsMLPFamily(activation="relu", batch_size=8, horizon=STEPS)
    tail = STEPS - STEPS // 10
    finals, steps = [], []
    for seed in SEEDS:
        task = family.sample(seed)
        leaves = {k: v.detach().clone().requires_grad_() for k, v in task.params.items()}
        optimizer = LearnedLSTMOptim(list(leaves.values()), weights=weights,
                                     total_steps=total_steps)
        count = sum(p.numel() for p in leaves.values())
        losses, sizes = [], []
        for t in range(STEPS):
            loss = task.loss(leaves, t)
            before = [p.detach().clone() for p in leaves.values()]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if t >= tail:
                losses.append(float(loss.detach()))
                sizes.append(float(sum((p.detach() - b).abs().sum()
                                       for p, b in zip(leaves.values(), before))) / count)
        finals.append(sum(losses) / len(losses))
        steps.append(sum(sizes) / len(sizes))
    return sum(finals) / len(finals), sum(steps) / len(steps)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    for weights in argv:
        for total in (STEPS, None):
            final, step = tail_figures(weights, total)
            print(f"{weights} total_steps={total}: final {final:.4g}, "
                  f"mean |step| last 10% {step:.3g}")


if __name__ == "__main__":
    main(sys.argv[1:])
