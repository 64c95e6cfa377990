"""Does a learned optimizer find the step a problem wants? (issue 10, thirteenth round)

The same problem in rescaled coordinates, :math:`\\theta = \\alpha\\,\\theta'`
(:class:`learned_optim.tasks.ReparamTask`, one :math:`\\alpha` for every parameter), has the
same losses, but its best step in :math:`\\theta'` is :math:`1/\\alpha` times the original's.
An optimizer that infers its step from the dynamics ends at the same loss for every
:math:`\\alpha`; one that learned a fixed step size does not. Adam at a fixed lr is printed as
the reference that does not adapt (its step in :math:`\\theta` is :math:`\\alpha` lr).

For each weights argument and Adam(lr=0.01): 3 seeds of a 1,000-step tanh digits MLP (the
digits *training* split, a family the wide mixture trains on, so nothing held out is
touched) at :math:`\\alpha \\in \\{0.1, 0.3, 1, 3, 10\\}`; prints the final loss (mean over the last
10% of steps, averaged over seeds) per :math:`\\alpha`, and the largest over the smallest.

Usage: ``python benchmarks/scale_probe.py WEIGHTS [WEIGHTS ...]`` (bundle folders or bundled
names).
"""

from __future__ import annotations

import sys

import torch

from learned_optim import LearnedLSTMOptim
from learned_optim.tasks import ReparamTask
from learned_optim.tasks.digits import DigitsMLPFamily

STEPS, SEEDS, SCALES = 1000, (0, 1, 2), (0.1, 0.3, 1.0, 3.0, 10.0)


def final_loss(make_optimizer, scale: float) -> float:
    """Mean over seeds of the mean loss over the last 10% of steps, at ``alpha = scale``."""
    family = DigitsMLPFamily(activation="tanh", horizon=STEPS)
    tail = STEPS - STEPS // 10
    finals = []
    for seed in SEEDS:
        inner = family.sample(seed)
        task = ReparamTask(inner, {name: scale for name in inner.params})
        leaves = {k: v.detach().clone().requires_grad_() for k, v in task.params.items()}
        optimizer = make_optimizer(list(leaves.values()))
        losses = []
        for t in range(STEPS):
            loss = task.loss(leaves, t)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if t >= tail:
                losses.append(float(loss.detach()))
        finals.append(sum(losses) / len(losses))
    return sum(finals) / len(finals)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    makers = {"Adam(lr=0.01)": lambda params: torch.optim.Adam(params, lr=0.01)}
    for weights in argv:
        makers[weights] = lambda params, w=weights: LearnedLSTMOptim(params, weights=w)
    print("| optimizer | " + " | ".join(f"alpha={s:g}" for s in SCALES) + " | max / min |")
    print("|---|" + "---|" * (len(SCALES) + 1))
    for label, make in makers.items():
        finals = [final_loss(make, scale) for scale in SCALES]
        print(f"| {label} | " + " | ".join(f"{f:.4g}" for f in finals)
              + f" | {max(finals) / min(finals):.3g} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
