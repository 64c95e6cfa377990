"""Tune the baselines, run every optimizer on the test seeds, and summarise one row.

Protocol per row (Andrychowicz et al. 2016, Section 3: "learning rate tuned per problem"):

1. For SGD, Nesterov, RMSprop and Adam, run every learning rate of the grid on the *tuning*
   seeds and keep the one with the lowest mean final loss (diverged runs count as infinite).
2. Run the tuned baselines, Adam at its default ``lr=1e-3`` ("untuned") and each learned
   optimizer (``lr=1``, no tuning) on the *test* seeds, disjoint from the tuning seeds.
3. Per optimizer: final loss (mean of the last 10% of steps) and mean loss over the run, as
   mean ± 95% CI over test seeds; time per step of one ordinary run. Each learned optimizer is
   compared with tuned Adam seed by seed (paired 95% CI of the difference in final loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .baselines import BASELINE_LABELS
from .runner import OptimizerSpec, final_loss, mean_loss, run_losses, time_per_step
from .stats import mean_ci, paired_difference, verdict
from .suites import Protocol, Row

__all__ = ["OptimizerResult", "RowResult", "evaluate_row", "tune_lr", "peak_loss",
           "peak_over_start", "blown_up", "TUNED_ADAM", "UNTUNED_ADAM"]

TUNED_ADAM = "Adam (tuned)"
UNTUNED_ADAM = "Adam (lr=1e-3)"


def peak_loss(curves: torch.Tensor) -> torch.Tensor:
    """Each seed's largest loss over the run (``curves``: ``(seeds, steps)``), inf where the
    run went non-finite."""
    return torch.where(torch.isfinite(curves), curves,
                       torch.full_like(curves, math.inf)).amax(-1)


def peak_over_start(curves: torch.Tensor) -> list[float]:
    """Per seed of ``curves`` ``(seeds, steps)``, its largest loss over the run divided by its
    initial loss (``inf`` where the run went non-finite): how far it climbed."""
    return (peak_loss(curves) / curves[:, 0].abs()).tolist()


def blown_up(curves: torch.Tensor) -> torch.Tensor:
    """Per seed, whether its loss ever exceeded 10x its initial loss (or went non-finite)."""
    return peak_loss(curves) > 10 * curves[:, 0].abs()


@dataclass
class OptimizerResult:
    """One optimizer on one row's test seeds."""

    label: str
    lr: float
    curves: torch.Tensor  # (seeds, steps)
    seconds_per_step: float
    tuning_scores: dict[float, float] = field(default_factory=dict)

    @property
    def finals(self) -> list[float]:
        return final_loss(self.curves).tolist()

    @property
    def means(self) -> list[float]:
        return mean_loss(self.curves).tolist()

    @property
    def diverged(self) -> int:
        return sum(not math.isfinite(v) for v in self.finals)

    @property
    def blow_ups(self) -> int:
        """Seeds whose loss ever exceeded 10x their initial loss (or went non-finite)."""
        return int(blown_up(self.curves).sum())

    @property
    def lr_at_grid_edge(self) -> bool:
        grid = sorted(self.tuning_scores)
        return bool(grid) and self.lr in (grid[0], grid[-1])

    def summary(self) -> dict[str, Any]:
        final, final_ci = mean_ci(self.finals)
        mean, mean_ci_ = mean_ci(self.means)
        return {"label": self.label, "lr": self.lr, "final_loss": final, "final_ci": final_ci,
                "mean_loss": mean, "mean_ci": mean_ci_, "diverged_seeds": self.diverged, "blow_up_seeds": self.blow_ups,
                "seconds_per_step": self.seconds_per_step,
                "lr_at_grid_edge": self.lr_at_grid_edge,
                "tuning_final_loss": {str(k): v for k, v in self.tuning_scores.items()}}


@dataclass
class RowResult:
    """Every optimizer of one row, and the learned-vs-tuned-Adam comparisons."""

    row: Row
    results: list[OptimizerResult]
    seconds: float = 0.0

    def by_label(self, label: str) -> OptimizerResult:
        return next(r for r in self.results if r.label == label)

    @property
    def winner(self) -> str:
        return min(self.results, key=lambda r: mean_ci(r.finals)[0]).label

    def against_tuned_adam(self) -> dict[str, dict[str, Any]]:
        """For each learned optimizer: paired difference in final loss vs tuned Adam."""
        adam = self.by_label(TUNED_ADAM)
        out = {}
        for spec in self.row.learned:
            mine = self.by_label(spec.label)
            difference = paired_difference(mine.finals, adam.finals)
            out[spec.label] = {"difference": difference[0], "ci": difference[1],
                               "verdict": verdict(difference)}
        return out

    def summary(self) -> dict[str, Any]:
        return {"row": self.row.name, "description": self.row.description,
                "horizon": self.row.horizon, "expectation": self.row.expectation,
                "winner": self.winner, "seconds": round(self.seconds, 1),
                "optimizers": [r.summary() for r in self.results],
                "learned_vs_tuned_adam": self.against_tuned_adam()}


def tune_lr(family, horizon: int, protocol: Protocol, kind: str
            ) -> tuple[float, dict[float, float]]:
    """Step 1 of the protocol for baseline ``kind`` on runs of ``horizon`` steps: ``(the lr of
    the grid with the lowest mean final loss on the tuning seeds, {lr: that mean})``; ties go
    to the larger lr."""
    curves = run_losses(family, protocol.tuning_seeds, horizon, OptimizerSpec(kind, kind),
                        protocol.lr_grid)
    scores = final_loss(curves).mean(-1).tolist()  # inf if any tuning seed diverged
    best = min(range(len(scores)), key=lambda i: (scores[i], -protocol.lr_grid[i]))
    return protocol.lr_grid[best], dict(zip(protocol.lr_grid, scores))


def evaluate_row(row: Row, protocol: Protocol,
                 on_progress: Callable[[str], None] = lambda label: None) -> RowResult:
    """Run the whole protocol on one row; ``on_progress(label)`` after each optimizer."""
    import time

    started = time.perf_counter()
    family = row.family()
    timing_steps = min(protocol.timing_steps, row.horizon)
    timing_seed = protocol.test_seeds[0]
    plan: list[tuple[OptimizerSpec, float, dict[float, float]]] = []
    for kind in protocol.baselines:
        lr, scores = tune_lr(family, row.horizon, protocol, kind)
        on_progress(f"tuned {BASELINE_LABELS[kind]}")
        plan.append((OptimizerSpec(f"{BASELINE_LABELS[kind]} (tuned)", kind), lr, scores))
    plan.append((OptimizerSpec(UNTUNED_ADAM, "adam"), 1e-3, {}))
    plan += [(spec, 1.0, {}) for spec in row.learned]
    results = []
    for spec, lr, scores in plan:
        curves = run_losses(family, protocol.test_seeds, row.horizon, spec, (lr,))[0]
        seconds = time_per_step(family, timing_seed, timing_steps, spec, lr)
        results.append(OptimizerResult(spec.label, lr, curves, seconds, scores))
        on_progress(spec.label)
    return RowResult(row, results, time.perf_counter() - started)
