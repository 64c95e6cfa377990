"""benchmarks/speedup_needed.py: Adam tuned for K times a row's horizon, compared seed by seed
with tuned Adam at the horizon by the suite's paired verdict."""

import json
import math

import pytest
import torch
from torch import nn

from benchmark_scripts import load_benchmark
from learned_optim.evaluation.suites import Protocol, Row
from learned_optim.tasks import QuadraticFamily
from learned_optim.tasks.base import FunctionTaskFamily, Task

probe = load_benchmark("speedup_needed")
PROTOCOL = Protocol(lr_grid=(1e-2, 1e-1), tuning_seeds=(1,), test_seeds=(2, 3, 4),
                    baselines=("adam",))


def _adam_final_loss(task: Task, lr: float, steps: int) -> float:
    """Mean loss over the last 10% of ``steps`` of an ordinary torch.optim.Adam loop."""
    params = {name: value.clone().requires_grad_(True) for name, value in task.params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    losses = []
    for step in range(steps):
        loss = task.loss(params, step)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tail = max(1, steps // 10)
    return sum(losses[-tail:]) / tail


def test_adam_with_three_times_the_steps_wins_a_quadratic_it_has_not_finished():
    row = Row("q", lambda: QuadraticFamily(horizon=50), 50, (), "10-d quadratic, 50 steps")
    report = probe.row_speedups(row, PROTOCOL, (3,))
    family = QuadraticFamily()
    # the base runs are tuned Adam's at the horizon, as a plain training loop computes them
    expected = [_adam_final_loss(family.sample(seed), report["lr"], 50) for seed in (2, 3, 4)]
    assert report["final_losses"] == pytest.approx(expected, rel=1e-4)
    longer = report["longer"][0]
    assert longer["factor"] == 3 and longer["lr"] in PROTOCOL.lr_grid
    assert longer["final_losses"] == pytest.approx(
        [_adam_final_loss(family.sample(seed), longer["lr"], 150) for seed in (2, 3, 4)],
        rel=1e-4)
    assert longer["verdict"] == "wins"
    assert longer["ratio"] == pytest.approx(sum(longer["final_losses"]) / sum(expected),
                                            rel=1e-4)
    assert longer["ratio"] < 1.0


class _Floor(nn.Module):
    """A loss no step can move: the parameter is multiplied by 0."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level
        self.theta = nn.Parameter(torch.ones(3))

    def forward(self, _inputs=None) -> torch.Tensor:
        return (self.theta * 0.0).sum() + self.level


def test_a_row_at_its_floor_is_a_tie_whatever_the_number_of_steps():
    family = FunctionTaskFamily("floor", lambda seed: Task(
        model=_Floor(1.0 + seed / 10), sample_batch=lambda step: (None, None),
        loss_fn=lambda output, _targets: output))
    report = probe.row_speedups(Row("floor", lambda: family, 10, (), "floor"), PROTOCOL, (3, 10))
    assert report["final_losses"] == pytest.approx([1.2, 1.3, 1.4])
    assert [e["verdict"] for e in report["longer"]] == ["tie", "tie"]
    assert [e["ratio"] for e in report["longer"]] == pytest.approx([1.0, 1.0])


def test_table_lines_show_each_factor_and_count_the_rows_won():
    def entry(factor, lr, ratio, verdict):
        return {"factor": factor, "lr": lr, "ratio": ratio, "verdict": verdict}

    report = [{"row": "a", "horizon": 300, "lr": 0.1,
               "longer": [entry(3, 1.0, 0.0, "tie"), entry(10, 0.316227766, 0.5, "wins")]},
              {"row": "b", "horizon": 1000, "lr": 0.01,
               "longer": [entry(3, 0.01, math.nan, "loses"), entry(10, 0.01, 0.25, "wins")]}]
    assert probe.table_lines(report) == [
        "| row | horizon | tuned Adam lr | 3x steps: lr, final loss / tuned Adam's, verdict | "
        "10x steps: lr, final loss / tuned Adam's, verdict |",
        "|---|---|---|---|---|",
        "| a | 300 | 0.1 | 1, 0, tie | 0.316, 0.5, wins |",
        "| b | 1000 | 0.01 | 0.01, nan, loses | 0.01, 0.25, wins |",
        "",
        "Adam with 3x the steps wins 0 / 2 rows",
        "Adam with 10x the steps wins 2 / 2 rows"]


def test_learned_lines_compare_a_learned_optimizer_with_adam_given_more_steps(tmp_path):
    report = [{"row": "a", "horizon": 100, "lr": 0.1, "final_losses": [0.2, 0.4],
               "longer": [{"factor": 3, "final_losses": [0.1, 0.1]},
                          {"factor": 10, "final_losses": [0.01, 0.03]}]},
              {"row": "not evaluated", "horizon": 100, "lr": 0.1, "final_losses": [1.0, 1.0],
               "longer": [{"factor": 3, "final_losses": [1.0, 1.0]},
                          {"factor": 10, "final_losses": [1.0, 1.0]}]}]
    results = {"rows": [{"row": "a", "learned_vs_tuned_adam": {"L": {"verdict": "wins"}},
                         "optimizers": [{"label": "Adam (tuned)", "final_loss": 0.3},
                                        {"label": "L", "final_loss": 0.06}]}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    # L's 0.06 against Adam's means: 0.3 at T, 0.1 at 3T, 0.02 at 10T
    assert probe.learned_lines(report, str(path))[2] == "| a | L | 0.2 | 0.6 | 3 |"
    assert len(probe.learned_lines(report, str(path))) == 3
    report[0]["longer"][1]["final_losses"] = [0.0, 0.0]  # Adam reached a loss of exactly 0
    assert probe.learned_lines(report, str(path))[2] == "| a | L | 0.2 | 0.6 | inf |"
    results["rows"][0]["optimizers"][0]["final_loss"] = 0.25  # another suite's tuned Adam
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match="tuned Adam's final loss on a is 0.25"):
        probe.learned_lines(report, str(path))
