"""Weights bundles: safetensors + JSON config round trips, strict validation, clear errors."""

import hashlib
import json
import os
import pathlib
import re

import pytest
import torch
from safetensors.torch import save_file

from learned_optim import (ConfigError, LearnedLSTMOptim, WeightsBundle, WeightsFormatError,
                           WeightsNotFoundError, list_pretrained, load_weights, resolve_weights)
from learned_optim.errors import StateDictError
from nets import random_net, two_route_bundle


def steps_of(weights, steps=3):
    p = torch.nn.Parameter(torch.zeros(40))
    opt = LearnedLSTMOptim([p], weights=weights)
    for k in range(steps):
        p.grad = torch.linspace(-1, 1, 40) * (k + 1)
        opt.step()
    return p.detach().clone()


def test_save_and_load_round_trip(tmp_path):
    bundle = two_route_bundle()
    bundle.provenance = {"task": "unit-test", "seed": 3}
    bundle.save_pretrained(tmp_path / "b")
    assert sorted(os.listdir(tmp_path / "b")) == ["README.md", "config.json", "model.safetensors"]
    loaded = load_weights(tmp_path / "b")
    assert loaded.routes == ("conv", "fc")
    assert loaded.fingerprint() == bundle.fingerprint()
    assert loaded.provenance == {"task": "unit-test", "seed": 3}
    assert loaded.name == "test-two-route"
    assert torch.equal(steps_of(loaded), steps_of(bundle))
    # the safetensors file alone is a complete bundle (config in its metadata)
    alone = load_weights(tmp_path / "b" / "model.safetensors")
    assert alone.fingerprint() == bundle.fingerprint()
    # and the optimizer accepts the directory, the file and the bundle alike
    assert torch.equal(steps_of(str(tmp_path / "b")), steps_of(bundle))


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    WeightsBundle({"fc": random_net(0)}).save_pretrained(tmp_path)
    WeightsBundle({"fc": random_net(1)}).save_pretrained(tmp_path)  # overwrite
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert load_weights(tmp_path).fingerprint() == WeightsBundle(
        {"fc": random_net(1)}).fingerprint()


def test_fingerprint_changes_with_any_weight():
    net = random_net()
    before = WeightsBundle({"fc": net}).fingerprint()
    with torch.no_grad():
        net.head.bias.add_(1e-7)
    assert WeightsBundle({"fc": net}).fingerprint() != before


def test_fingerprint_is_the_one_the_model_card_recorded_when_the_weights_were_made():
    """Options added to the config since (parameter_feature, tensor_feature, ...) are left out
    while unused, so each bundled optimizer keeps the fingerprint of its card and of the
    README, which were written when it was trained."""
    root = pathlib.Path(__file__).resolve().parents[1] / "pretrained"
    for name in list_pretrained():
        card = (root / name / "README.md").read_text()
        recorded = re.search(r"Weights fingerprint: `([0-9a-f]{16})`", card).group(1)
        assert resolve_weights(name).fingerprint() == recorded, name
    # the fortieth round's default: the nineteenth round's tensors (ed02343c9b0a1989) with
    # departure_warmup=300
    default = resolve_weights("default")
    assert default.fingerprint() == "6ce868e7e1b951d6"
    assert default.nets["fc"].config.departure_warmup == 300
    assert default.with_net_config(departure_warmup=0).fingerprint() == "ed02343c9b0a1989"


def _hash_of(bundle, configs):
    """The fingerprint as documented: SHA-256 of the routes' JSON config, then each tensor's
    name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(configs, sort_keys=True).encode())
    for key, value in sorted(bundle.tensors().items()):
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def test_state_dict_saved_under_an_earlier_fingerprint_still_loads():
    """Versions before identity_dict hashed every config field they knew: a state_dict that
    records such a fingerprint belongs to the same weights; one of other weights does not."""
    bundle = WeightsBundle({"fc": random_net(0)})
    # the fields of the last version that hashed every field (nominal_step, hypergradient_rate,
    # step_scale_bound, hypergradient_shrink and departure_warmup came after it)
    later = ("nominal_step", "hypergradient_rate", "step_scale_bound", "hypergradient_shrink",
             "departure_warmup")
    every_field = {"fc": {k: v for k, v in bundle.nets["fc"].config.to_dict().items()
                          if k not in later}}
    before_tensor_statistic = {"fc": {k: v for k, v in every_field["fc"].items()
                                      if k != "tensor_statistic"}}
    p = torch.nn.Parameter(torch.zeros(40))
    opt = LearnedLSTMOptim([p], weights=bundle)
    p.grad = torch.linspace(-1, 1, 40)
    opt.step()
    for configs in (every_field, before_tensor_statistic):
        saved = opt.state_dict()
        saved["learned_optim"]["weights_fingerprint"] = _hash_of(bundle, configs)
        assert saved["learned_optim"]["weights_fingerprint"] != bundle.fingerprint()
        resumed = LearnedLSTMOptim([torch.nn.Parameter(p.detach().clone())], weights=bundle)
        resumed.load_state_dict(saved)
        assert torch.equal(resumed.state_dict()["state"][0]["hidden"],
                           opt.state_dict()["state"][0]["hidden"])
    saved["learned_optim"]["weights_fingerprint"] = _hash_of(
        WeightsBundle({"fc": random_net(1)}), every_field)
    with pytest.raises(StateDictError, match="made with weights"):
        LearnedLSTMOptim([p], weights=bundle).load_state_dict(saved)


def test_missing_path_and_unknown_name():
    with pytest.raises(WeightsNotFoundError, match="no learned optimizer weights named"):
        resolve_weights("no-such-optimizer")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_weights("/nonexistent/dir")


def test_default_weights_load_or_fail_clearly():
    if "default" in list_pretrained():
        bundle = resolve_weights("default")
        assert bundle.provenance.get("command")
    else:
        with pytest.raises(WeightsNotFoundError, match="bundled: "):
            LearnedLSTMOptim([torch.nn.Parameter(torch.zeros(2))])


def test_every_bundled_optimizer_loads_with_provenance():
    for name in list_pretrained():
        bundle = resolve_weights(name)
        assert bundle.name == name and "fc" in bundle.routes
        for field in ("task", "seed", "command", "metrics"):
            assert field in bundle.provenance, (name, field)


def test_directory_without_weights(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(WeightsNotFoundError, match="has no model.safetensors"):
        load_weights(tmp_path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_corrupted_files(tmp_path, content):
    path = tmp_path / "w.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsFormatError, match="not a readable safetensors file"):
        load_weights(path)


def test_truncated_file(tmp_path):
    WeightsBundle({"fc": random_net()}).save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightsFormatError, match="truncated or corrupted"):
        load_weights(tmp_path)


def test_pickle_files_are_refused(tmp_path):
    torch.save(random_net().state_dict(), tmp_path / "w.pt")
    with pytest.raises(WeightsFormatError, match="never unpickles"):
        load_weights(tmp_path / "w.pt")
    os.replace(tmp_path / "w.pt", tmp_path / "disguised.safetensors")
    with pytest.raises(WeightsFormatError, match="never unpickles"):
        load_weights(tmp_path / "disguised.safetensors")


def test_foreign_safetensors(tmp_path):
    save_file({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.safetensors")
    with pytest.raises(WeightsFormatError, match="not a learned_optim weights file"):
        load_weights(tmp_path / "other.safetensors")
    WeightsBundle({"fc": random_net()}).save_pretrained(tmp_path / "d")
    save_file({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "d" / "model.safetensors")
    with pytest.raises(WeightsFormatError, match="missing keys.*unexpected keys.*encoder"):
        load_weights(tmp_path / "d")


def test_wrong_shape_dtype_and_nan(tmp_path):
    bundle = WeightsBundle({"fc": random_net()})
    bundle.save_pretrained(tmp_path)
    tensors = bundle.tensors()
    for key, value, phrase in [("fc.head.bias", torch.zeros(2), "has shape \\(2,\\)"),
                               ("fc.head.bias", torch.zeros(1, dtype=torch.float64), "float64"),
                               ("fc.head.bias", torch.full((1,), float("nan")), "NaN")]:
        save_file({**tensors, key: value}, tmp_path / "model.safetensors")
        with pytest.raises(WeightsFormatError, match=phrase):
            load_weights(tmp_path)


def edit_config(tmp_path, edit):
    WeightsBundle({"fc": random_net()}).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    text = edit(config)
    (tmp_path / "config.json").write_text(text if isinstance(text, str) else json.dumps(config))


@pytest.mark.parametrize("edit,phrase", [
    (lambda c: "{not json", "not valid JSON"),
    (lambda c: "[1, 2]", "must be a JSON object"),
    (lambda c: c.update(extra=1), "unknown fields \\['extra'\\]"),
    (lambda c: c.pop("routes"), "missing fields \\['routes'\\]"),
    (lambda c: c.update(format="something.else"), "not a learned_optim weights config"),
    (lambda c: c.update(format_version=99), "newer than this.*upgrade learned_optim"),
    (lambda c: c.update(format_version="1"), "invalid format_version"),
    (lambda c: c["routes"]["fc"].update(hidden_size="20"), "hidden_size='20'"),
    (lambda c: c["routes"]["fc"].update(preprocessing="magic"), "preprocessing='magic'"),
    (lambda c: c["routes"]["fc"].pop("p"), "missing \\['p'\\]"),
    (lambda c: c["routes"]["fc"].update(p=1.0, dropout=0.1), "unknown \\['dropout'\\]"),
    (lambda c: c.update(provenance=[]), "provenance must be a JSON object"),
])
def test_invalid_configs(tmp_path, edit, phrase):
    edit_config(tmp_path, edit)
    with pytest.raises(ConfigError, match=phrase):
        load_weights(tmp_path)


def test_config_shape_mismatch_with_tensors(tmp_path):
    edit_config(tmp_path, lambda c: c["routes"]["fc"].update(hidden_size=21))
    # tensors with no config inside: config.json is the only config, and it does not fit them
    save_file(WeightsBundle({"fc": random_net()}).tensors(), tmp_path / "model.safetensors")
    with pytest.raises(WeightsFormatError, match="has shape"):
        load_weights(tmp_path)


def test_config_json_that_disagrees_with_the_weights_file_loses_with_a_warning(tmp_path):
    """The config inside model.safetensors was written atomically with the tensors; a stale
    config.json (an interrupted save) must not make the folder unloadable."""
    edit_config(tmp_path, lambda c: c["routes"]["fc"].update(hidden_size=21))
    with pytest.warns(RuntimeWarning, match="does not match the config stored inside"):
        bundle = load_weights(tmp_path)
    assert bundle.nets["fc"].config.hidden_size == 20


def test_oversized_config_is_refused(tmp_path):
    edit_config(tmp_path, lambda c: c["provenance"].update(blob="x" * (2 << 20)))
    with pytest.raises(ConfigError, match="at most"):
        load_weights(tmp_path)


def test_bundle_needs_an_fc_route():
    with pytest.raises(WeightsFormatError, match="needs an 'fc' net"):
        WeightsBundle({"conv": random_net()})


def test_with_net_config_copies_the_tensors_under_a_changed_config():
    bundle = WeightsBundle({"fc": random_net(0, features="adaptive", update="direction_magnitude",
                                             nominal_step=True)}, name="n", provenance={"a": 1})
    warm = bundle.with_net_config(departure_warmup=50)
    assert warm.nets["fc"].config.departure_warmup == 50
    assert bundle.nets["fc"].config.departure_warmup == 0
    assert (warm.name, warm.provenance) == ("n", {"a": 1})
    assert warm.fingerprint() != bundle.fingerprint()
    assert warm.tensors().keys() == bundle.tensors().keys()
    assert all(torch.equal(warm.tensors()[k], v) for k, v in bundle.tensors().items())
    # switched off again it is the same weights, fingerprint included
    assert warm.with_net_config(departure_warmup=0).fingerprint() == bundle.fingerprint()
    renamed = bundle.with_net_config(name="m", provenance={}, departure_warmup=1)
    assert (renamed.name, renamed.provenance) == ("m", {})
    with pytest.raises(ConfigError, match="departure_warmup"):
        bundle.with_net_config(departure_warmup=-3)


def test_a_state_dict_of_the_same_weights_without_a_warmup_loads_into_them_with_one():
    plain = WeightsBundle({"fc": random_net(0, features="adaptive", update="direction_magnitude",
                                            nominal_step=True)})
    warm = plain.with_net_config(departure_warmup=300)
    p = torch.nn.Parameter(torch.zeros(40))
    before = LearnedLSTMOptim([p], weights=plain)
    p.grad = torch.linspace(-1, 1, 40)
    before.step()
    after = LearnedLSTMOptim([torch.nn.Parameter(p.detach().clone())], weights=warm)
    after.load_state_dict(before.state_dict())
    assert torch.equal(after.state_dict()["state"][0]["hidden"],
                       before.state_dict()["state"][0]["hidden"])
    # not the other way: weights without the warmup do not know the warmed-up fingerprint
    with pytest.raises(StateDictError, match="made with weights"):
        LearnedLSTMOptim([p], weights=plain).load_state_dict(after.state_dict())
    # nor other tensors under the same warmup
    other = WeightsBundle({"fc": random_net(1, features="adaptive", update="direction_magnitude",
                                            nominal_step=True)})
    with pytest.raises(StateDictError, match="made with weights"):
        LearnedLSTMOptim([p], weights=warm).load_state_dict(
            LearnedLSTMOptim([p], weights=other).state_dict())
