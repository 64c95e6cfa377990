"""benchmarks/learned_part_probe.py: a bundle whose learned departure from the nominal Adam
step is multiplied by alpha steps like alpha x the departure plus Adam(lr=0.01), and writes
a bundle the optimizer loads."""

import pytest
import torch

from benchmark_scripts import load_benchmark
from learned_optim import LearnedLSTMOptim
from learned_optim.network import LSTMOptimizerConfig, LSTMOptimizerNet
from learned_optim.weights import WeightsBundle, load_weights, resolve_weights

probe = load_benchmark("learned_part_probe")
GRAD = torch.tensor([0.3, -2.0, 1e-3, -5e-4, 7.0])


def _first_step(weights) -> torch.Tensor:
    """The change of a parameter of 5 coordinates after one step on GRAD (the step scale is
    1 on a first step)."""
    param = torch.zeros(5, requires_grad=True)
    optimizer = LearnedLSTMOptim([param], weights=weights)
    param.grad = GRAD.clone()
    optimizer.step()
    return param.detach().clone()


def test_alpha_zero_is_adams_first_step_and_alpha_mixes_linearly():
    default = resolve_weights("default")
    full, none, some = (_first_step(probe.with_departure_scaled(default, alpha))
                        for alpha in (1.0, 0.0, 0.3))
    assert torch.equal(full, _first_step(default))
    # Adam's first step is lr * g / (|g| + eps): -0.01 sign(g) up to eps
    adam_param = torch.zeros(5, requires_grad=True)
    adam = torch.optim.Adam([adam_param], lr=0.01)
    adam_param.grad = GRAD.clone()
    adam.step()
    assert torch.allclose(none, adam_param.detach(), rtol=1e-3, atol=1e-7)
    assert not torch.allclose(full, none, rtol=1e-2)  # the departure is not negligible
    assert torch.allclose(some, none + 0.3 * (full - none), rtol=1e-5, atol=1e-9)


def test_written_bundle_loads_with_its_record(tmp_path):
    source = resolve_weights("default")
    bundle = probe.with_departure_scaled(source, 0.3)
    loaded = load_weights(bundle.save_pretrained(tmp_path / "alpha"))
    assert loaded.fingerprint() == bundle.fingerprint() != source.fingerprint()
    assert loaded.provenance["departure_multiplier"] == 0.3
    assert loaded.provenance["source_fingerprint"] == source.fingerprint()


def test_nets_without_a_nominal_step_are_refused():
    plain = WeightsBundle({"fc": LSTMOptimizerNet(LSTMOptimizerConfig(), seed=0)})
    with pytest.raises(ValueError, match="nominal_step=True"):
        probe.with_departure_scaled(plain, 0.5)
