"""Nets with known behaviour for tests. None of them is a trained optimizer.

* :func:`random_net`: seeded random weights, for properties that hold for any φ
  (coordinatewise, chunking, state round trips).
* :func:`sign_descent_net`: weights set by hand so that the step is
  ``-output_scale * sign(grad)`` (for |grad| >= e^-p), for tests that need a known direction.
"""

import torch

from learned_optim import LSTMOptimizerConfig, LSTMOptimizerNet, WeightsBundle


def random_net(seed: int = 0, **config) -> LSTMOptimizerNet:
    net = LSTMOptimizerNet(LSTMOptimizerConfig(**config), seed=seed)
    net.requires_grad_(False)
    return net


def sign_descent_net(step: float = 0.01) -> LSTMOptimizerNet:
    """Unit 0 of each layer copies sign(grad) through (i, o open, f shut); head reads it."""
    net = LSTMOptimizerNet(LSTMOptimizerConfig(output_scale=step), seed=0)
    hidden = net.config.hidden_size
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for layer, cell in enumerate(net.cells):
            cell.bias_ih[0] = 10.0                 # input gate open
            cell.bias_ih[hidden] = -10.0           # forget gate shut: no memory
            cell.bias_ih[3 * hidden] = 10.0        # output gate open
            source = 1 if layer == 0 else 0        # the sign input, then unit 0 of layer 1
            cell.weight_ih[2 * hidden, source] = 5.0
        net.head.weight[0, 0] = -1.0 / float(torch.tanh(torch.tensor(1.0)))
    net.requires_grad_(False)
    return net


def two_route_bundle() -> WeightsBundle:
    return WeightsBundle({"fc": random_net(1), "conv": random_net(2)}, name="test-two-route")
