"""The update rule (learned_optim.update): reference check and coordinatewise properties."""

import math

import pytest
import torch
from torch import nn

from learned_optim import fuse_weights, lstm_step, lstm_update
from learned_optim.update import (StepWorkspace, iter_chunks, lstm_step_, preprocess_gradient,
                                  step_memory_bytes)
from nets import random_net


def mixed_gradients(n, dtype=torch.float32, seed=0):
    """Gradients over many magnitudes, with exact zeros and values below e^-10."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-16, 3, generator=g))
    values = torch.randn(n, generator=g, dtype=torch.float64) * scale
    values[::17] = 0.0
    return values.to(dtype)


def random_hidden(n, net, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2 * net.config.num_layers, net.config.hidden_size,
                       generator=g, dtype=torch.float64).to(dtype) * 0.5


def reference_step(grad, hidden, net):
    """Obviously-correct per-coordinate loop over nn.LSTMCell, straight from the paper."""
    cfg = net.config
    updates, states = [], []
    for k in range(grad.shape[0]):
        g = float(grad[k])
        if cfg.preprocessing == "log_sign":
            if abs(g) >= math.exp(-cfg.p):
                x = [math.log(abs(g)) / cfg.p, math.copysign(1.0, g) if g != 0 else 0.0]
            else:
                x = [-1.0, math.exp(cfg.p) * g]
        elif cfg.preprocessing == "clamped":
            x = [max(math.log(abs(g) + 1e-8) / cfg.p, -1.0),
                 min(max(g * math.exp(cfg.p), -1.0), 1.0)]
        else:
            x = [g]
        inp = torch.tensor([x], dtype=grad.dtype)
        new = []
        for layer, cell in enumerate(net.cells):
            h, c = cell(inp, (hidden[k:k + 1, 2 * layer], hidden[k:k + 1, 2 * layer + 1]))
            new += [h, c]
            inp = h
        updates.append(net.head(inp)[0, 0] * cfg.output_scale)
        states.append(torch.stack(new, dim=1)[0])
    return torch.stack(updates), torch.stack(states)


@pytest.mark.parametrize("preprocessing,p,scale", [("log_sign", 10.0, 0.1),
                                                   ("clamped", 5.0, 0.01),
                                                   ("none", 10.0, 1.0)])
def test_matches_per_coordinate_lstmcell_reference(preprocessing, p, scale):
    net = random_net(3, preprocessing=preprocessing, p=p, output_scale=scale).double()
    grad = mixed_gradients(37, torch.float64)
    hidden = random_hidden(37, net, torch.float64)
    update, new_hidden = lstm_step(grad, hidden, fuse_weights(net))
    with torch.no_grad():
        ref_update, ref_hidden = reference_step(grad, hidden, net)
    torch.testing.assert_close(update, ref_update, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(new_hidden, ref_hidden, rtol=1e-12, atol=1e-14)


def test_preprocessing_follows_the_paper():
    net = random_net()
    p = net.config.p
    grad = torch.tensor([1.0, -math.e, 0.5 * math.exp(-p), 0.0], dtype=torch.float64)
    x = preprocess_gradient(grad, net.config)
    expected = torch.tensor([[0.0, 1.0], [1.0 / p, -1.0], [-1.0, 0.5], [-1.0, 0.0]],
                            dtype=torch.float64)
    torch.testing.assert_close(x, expected)


def test_pure_function_does_not_modify_inputs():
    net = random_net()
    grad, hidden = mixed_gradients(20), random_hidden(20, net)
    grad0, hidden0 = grad.clone(), hidden.clone()
    lstm_step(grad, hidden, fuse_weights(net))
    assert torch.equal(grad, grad0) and torch.equal(hidden, hidden0)


def test_permuting_coordinates_permutes_updates():
    net = random_net()
    weights = fuse_weights(net)
    grad, hidden = mixed_gradients(301), random_hidden(301, net)
    perm = torch.randperm(301)
    update, new_hidden = lstm_step(grad, hidden, weights)
    p_update, p_hidden = lstm_step(grad[perm], hidden[perm], weights)
    assert torch.equal(p_update, update[perm])
    assert torch.equal(p_hidden, new_hidden[perm])


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 8, 64, 1000, None])
def test_bit_exact_across_chunk_sizes(chunk_size):
    net = random_net()
    weights = fuse_weights(net)
    grad, hidden = mixed_gradients(1003), random_hidden(1003, net)
    (full,), (full_hidden,) = lstm_update([grad], [hidden], weights)
    (chunked,), (chunked_hidden,) = lstm_update([grad], [hidden], weights,
                                                chunk_size=chunk_size)
    assert torch.equal(chunked, full)
    assert torch.equal(chunked_hidden, full_hidden)


@pytest.mark.parametrize("split", [[1003], [1, 1002], [500, 3, 500], [5] * 200 + [3]])
def test_bit_exact_across_tensor_splits(split):
    net = random_net()
    weights = fuse_weights(net)
    grad, hidden = mixed_gradients(1003), random_hidden(1003, net)
    (whole,), (whole_hidden,) = lstm_update([grad], [hidden], weights, chunk_size=256)
    updates, states = lstm_update(list(grad.split(split)), list(hidden.split(split)), weights,
                                  chunk_size=256)
    assert [u.shape[0] for u in updates] == split
    assert torch.equal(torch.cat(updates), whole)
    assert torch.equal(torch.cat(states), whole_hidden)


def test_iter_chunks_covers_every_coordinate_once():
    sizes = [0, 5, 13, 1, 0, 40]
    seen = []
    for pieces in iter_chunks(sizes, 16):
        assert sum(stop - start for _, start, stop in pieces) <= 16
        seen += [(i, k) for i, start, stop in pieces for k in range(start, stop)]
    assert seen == [(i, k) for i, n in enumerate(sizes) for k in range(n)]
    with pytest.raises(ValueError, match="chunk_size"):
        list(iter_chunks([3], 0))


def test_meta_gradient_flows_to_every_weight():
    net = random_net()
    net.requires_grad_(True)
    grad, hidden = mixed_gradients(50), random_hidden(50, net)
    updates, states = lstm_update([grad[:20], grad[20:]], [hidden[:20], hidden[20:]],
                                  fuse_weights(net), chunk_size=16)
    (sum(u.square().sum() for u in updates) + sum(s.sum() for s in states)).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_cells_are_registered_modules():
    net = random_net()
    names = {name for name, _ in net.named_parameters()}
    assert {"cells.0.weight_ih", "cells.1.weight_hh", "head.weight"} <= names
    assert isinstance(net.cells, nn.ModuleList)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("preprocessing", ["log_sign", "clamped", "none"])
@pytest.mark.parametrize("rows", [1, 7, 8, 37, 300])
def test_in_place_step_is_bit_identical_to_lstm_step(dtype, preprocessing, rows):
    net = random_net(preprocessing=preprocessing).to(dtype)
    weights = fuse_weights(net)
    grad, hidden = mixed_gradients(rows, dtype), random_hidden(rows, net, dtype)
    expected_update, expected_hidden = lstm_step(grad, hidden, weights)
    workspace = StepWorkspace(300, net.config, dtype=dtype)
    workspace.grad.fill_(float("nan"))      # leftovers of an earlier block must not matter
    workspace.hidden.fill_(float("nan"))
    workspace.grad[:rows] = grad
    workspace.hidden[:rows] = hidden
    update = lstm_step_(workspace, rows, weights)
    assert torch.equal(update, expected_update)
    assert torch.equal(workspace.hidden[:rows], expected_hidden)


def test_workspace_refuses_more_rows_than_it_holds():
    net = random_net()
    workspace = StepWorkspace(10, net.config)
    assert workspace.rows == 16  # rounded up to ROW_ALIGN
    with pytest.raises(ValueError, match=r"rows must be in \[1, 16\]"):
        lstm_step_(workspace, 17, fuse_weights(net))
    with pytest.raises(ValueError, match="at least one row"):
        StepWorkspace(0, net.config)


def test_step_memory_bound_covers_the_workspace():
    net = random_net()
    workspace = StepWorkspace(4096, net.config)
    assert workspace.nbytes <= step_memory_bytes(4096, net.config)
    assert step_memory_bytes(4096, net.config, torch.float64) == \
        2 * step_memory_bytes(4096, net.config)


def test_in_place_step_on_the_state_itself_matches_the_workspace_copy():
    net = random_net()
    weights = fuse_weights(net)
    grad, hidden = mixed_gradients(64), random_hidden(64, net)
    expected_update, expected_hidden = lstm_step(grad, hidden, weights)
    workspace = StepWorkspace(64, net.config)
    workspace.grad[:64] = grad
    state = hidden.clone()
    update = lstm_step_(workspace, 64, weights, hidden=state)
    assert torch.equal(update, expected_update) and torch.equal(state, expected_hidden)
    with pytest.raises(ValueError, match="multiple of 8"):
        lstm_step_(workspace, 63, weights, hidden=state[:63])
    with pytest.raises(ValueError, match="cannot be updated in place"):
        lstm_step_(workspace, 64, weights, hidden=state.to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_meta_gradient_stays_finite_when_gates_saturate(dtype):
    # Saturated gates (|pre-activation| in the hundreds) and a cell state far beyond tanh's
    # range are what a long unroll or a large meta-step produce; exp overflows there, and the
    # meta-gradient must still be a number.
    net = random_net().to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(300.0)
    net.requires_grad_(True)
    grad, hidden = mixed_gradients(64, dtype), random_hidden(64, net, dtype)
    hidden[:, 1] *= 400.0  # c of layer 1: |c| up to ~1000
    updates, states = lstm_update([grad], [hidden], fuse_weights(net))
    assert all(torch.isfinite(t).all() for t in updates + states)
    (updates[0].square().sum() + states[0].sum()).backward()
    for name, param in net.named_parameters():
        assert torch.isfinite(param.grad).all(), name
