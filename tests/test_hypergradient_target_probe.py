"""benchmarks/hypergradient_target_probe.py: the probe's step-scale rule with a target cosine
c0, l <- clip(l - beta (c - c0), +-B), is that formula (the clip applied once, to the sum),
reaches the optimizer, and leaves the package's rule in place afterwards."""

import math

import pytest
import torch

import learned_optim.update as update_rule
from benchmark_scripts import load_benchmark
from learned_optim import LearnedLSTMOptim
from learned_optim.weights import resolve_weights

probe = load_benchmark("hypergradient_target_probe")
CONFIG = resolve_weights("default").nets["fc"].config


def _state(log_scale: float) -> torch.Tensor:
    """Three coordinates whose previous step is (1, 0, 0) and whose log scale is given."""
    hidden = torch.zeros(3, 2 * CONFIG.num_layers + 1, CONFIG.hidden_size)
    hidden[:, 2 * CONFIG.num_layers, CONFIG.step_scale_column + 1] = torch.tensor([1.0, 0, 0])
    hidden[0, 2 * CONFIG.num_layers, CONFIG.step_scale_column] = log_scale
    return hidden


@pytest.mark.parametrize("target", [0.05, -0.3, 0.9])
@pytest.mark.parametrize("log_scale", [0.0, 1.0, -CONFIG.step_scale_bound, CONFIG.step_scale_bound])
def test_rule_is_the_formula(target, log_scale):
    beta, bound = CONFIG.hypergradient_rate, CONFIG.step_scale_bound
    grad = torch.tensor([0.6, 0.8, 0.0])  # cosine with the previous step (1, 0, 0): 0.6
    hidden = _state(log_scale)
    before = hidden.clone()
    with probe.step_scale_target(target):
        value = float(update_rule.tensor_step_scale(update_rule.accumulator_row(hidden, CONFIG),
                                                        grad, CONFIG))
    assert value == pytest.approx(min(max(log_scale - beta * (0.6 - target), -bound), bound),
                                  abs=1e-6)
    assert torch.equal(hidden, before)  # the caller's state is not written by the probe


def test_rule_reaches_the_optimizer_and_is_restored():
    shipped = update_rule.tensor_step_scale
    target = 0.5
    logs = {}
    for name, context in (("shipped", None), ("probe", probe.step_scale_target(target))):
        param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        optimizer = LearnedLSTMOptim([param])
        param.grad = torch.tensor([0.1, -0.2, 0.3])
        if context is None:
            optimizer.step()
        else:
            with context:
                optimizer.step()
        logs[name] = math.log(optimizer.step_scale(param))
    # a fresh state has no previous step: the cosine reads 0, so only the target moves l
    assert logs["shipped"] == 0.0
    assert logs["probe"] == pytest.approx(CONFIG.hypergradient_rate * target, abs=1e-7)
    assert update_rule.tensor_step_scale is shipped
    with pytest.raises(RuntimeError), probe.step_scale_target(target):
        raise RuntimeError("a failing run inside the probe")
    assert update_rule.tensor_step_scale is shipped
