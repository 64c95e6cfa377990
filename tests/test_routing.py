"""Routing parameters to the conv and fc LSTMs (paper Section 3.3, CIFAR)."""

import torch
from torch import nn

from learned_optim import LearnedLSTMOptim, route_param_groups
from nets import two_route_bundle


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 10))


def test_route_param_groups_splits_conv_and_fc():
    model = small_cnn()
    groups = route_param_groups(model, lr=0.5)
    assert [g["route"] for g in groups] == ["conv", "fc"]
    conv, fc = ({id(p) for p in g["params"]} for g in groups)
    assert conv == {id(model[0].weight), id(model[0].bias)}
    assert fc == {id(p) for p in [model[1].weight, model[1].bias, model[4].weight, model[4].bias]}
    assert all(g["lr"] == 0.5 for g in groups)
    assert LearnedLSTMOptim.route_param_groups is route_param_groups


def step_once(params, weights, groups=None, start=None):
    """One step from ``start`` (default: the current values); returns the new values."""
    if start is not None:
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
    opt = LearnedLSTMOptim(groups if groups is not None else params, weights=weights)
    for k, p in enumerate(params):
        p.grad = torch.full_like(p, 0.01 * (k + 1))
    opt.step()
    return [p.detach().clone() for p in params]


def route_runs(groups_of):
    """Step a small CNN with the two-route bundle, and with each route's net alone."""
    bundle = two_route_bundle()
    model = small_cnn()
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    routed = step_once(params, bundle, groups_of(model), start)
    conv_only = step_once(params, bundle.nets["conv"], None, start)
    fc_only = step_once(params, bundle.nets["fc"], None, start)
    return routed, conv_only, fc_only


def test_each_route_uses_its_own_net():
    routed, conv_only, fc_only = route_runs(route_param_groups)
    # conv weight and bias follow the conv net, the rest the fc net
    for index, after in enumerate(routed):
        expected = conv_only[index] if index in (0, 1) else fc_only[index]
        assert torch.equal(after, expected), index


def test_auto_routing_by_shape():
    auto, conv_only, fc_only = route_runs(lambda model: None)  # plain parameters: "auto"
    # only the 4-d conv kernel is recognisable by shape; the conv bias goes to fc
    assert torch.equal(auto[0], conv_only[0])
    assert all(torch.equal(auto[i], fc_only[i]) for i in range(1, len(auto)))
