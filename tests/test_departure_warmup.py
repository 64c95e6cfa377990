"""benchmarks/departure_warmup.py: a copy of a bundle whose learned departure ramps up over the
first N steps, with the same tensors and the source's provenance kept."""

import torch

from benchmark_scripts import load_benchmark
from learned_optim import LearnedLSTMOptim
from learned_optim.weights import load_weights, resolve_weights

script = load_benchmark("departure_warmup")


def _nineteenth_round_default():
    """The bundled default with its warmup off: the nineteenth round's weights, which the
    fortieth round's default was made from."""
    shipped = resolve_weights("default")
    provenance = {k: v for k, v in shipped.provenance.items() if k != "departure_warmup"}
    return shipped.with_net_config(departure_warmup=0, provenance=provenance)


def _steps(weights, grads):
    param = torch.zeros(5, requires_grad=True)
    optimizer = LearnedLSTMOptim([param], weights=weights)
    changes = []
    for grad in grads:
        before = param.detach().clone()
        param.grad = grad.clone()
        optimizer.step()
        changes.append(param.detach() - before)
    return changes


def test_default_with_a_warmup_writes_a_bundle_that_loads_with_its_record(tmp_path):
    default = _nineteenth_round_default()
    copy = script.with_departure_warmup(default, 100, command="python x")
    folder = copy.save_pretrained(tmp_path / "warmup-100")
    loaded = load_weights(folder)
    assert loaded.name == "default-warmup100"
    assert loaded.nets["fc"].config.departure_warmup == 100
    assert default.nets["fc"].config.departure_warmup == 0  # the source is not changed
    assert loaded.fingerprint() != default.fingerprint()
    for name, tensor in default.nets["fc"].state_dict().items():
        assert torch.equal(loaded.nets["fc"].state_dict()[name], tensor)
    assert loaded.provenance["seed"] == default.provenance["seed"]
    assert loaded.provenance["departure_warmup"] == {
        "script": "benchmarks/departure_warmup.py", "steps": 100, "source": "default",
        "source_fingerprint": default.fingerprint(), "command": "python x"}


def test_a_warmup_of_one_step_changes_nothing_and_a_long_one_starts_like_adam():
    # the nets see the same gradients; only the step differs, by (1 - min(1, t/N)) x departure
    default = _nineteenth_round_default()
    grads = [torch.tensor([0.3, -2.0, 1e-3, -5e-4, 7.0]) * (1 + t) for t in range(4)]
    plain = _steps(default, grads)
    one = _steps(script.with_departure_warmup(default, 1), grads)
    assert all(torch.equal(a, b) for a, b in zip(plain, one))
    # default's own first step is far from Adam's, +-0.01 on every coordinate (the step
    # scale is 1 on a first step) ...
    assert (torch.abs(plain[0]) - 0.01).abs().max() > 0.01
    # ... and with N = 1000 it is Adam's plus a thousandth of that departure
    slow = _steps(script.with_departure_warmup(default, 1000), grads)
    adam = -0.01 * torch.sign(grads[0])
    torch.testing.assert_close(slow[0], adam + (plain[0] - adam) / 1000, rtol=1e-4, atol=1e-7)


def test_the_script_makes_the_shipped_default_from_the_nineteenth_rounds_weights():
    made = script.with_departure_warmup(_nineteenth_round_default(), 300, name="default")
    assert _nineteenth_round_default().fingerprint() == "ed02343c9b0a1989"
    assert made.fingerprint() == resolve_weights("default").fingerprint() == "6ce868e7e1b951d6"
