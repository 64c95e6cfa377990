"""Every bad input gets an error of a specific type whose message names the problem and the fix,
and leaves parameters, optimizer state and files untouched.

Each case below is one bad input. A case passes only if the error has the expected type, its
message matches both the *problem* pattern and the *fix* pattern, and nothing the user owns was
changed: the files in the folder (byte for byte), the parameters, the optimizer's state_dict, or
the MetaTrainer's φ and progress.
"""

import copy
import json
import math
import pickle
import socket
import struct

import pytest
import torch
from safetensors.torch import save, save_file
from torch import nn

from learned_optim import (CheckpointError, ConfigError, LearnedLSTMOptim, StateDictError,
                           TaskError, WeightsBundle, WeightsFormatError, WeightsNotFoundError,
                           load_weights)
from learned_optim.meta import MetaTrainConfig, MetaTrainer
from learned_optim.tasks import FunctionTaskFamily, QuadraticFamily, Task
from nets import random_net


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster and much steadier on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def snapshot_files(folder):
    """``{relative path: bytes}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def raises_clearly(error, problem, fix):
    """pytest.raises for ``error`` whose message names the problem and, after it, the fix."""
    return pytest.raises(error, match=f"(?s){problem}.*{fix}")


def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("learned_optim tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# =============================================================================================
# Weights: files, configs, pickles, Hub ids


def saved_bundle(folder):
    bundle = WeightsBundle({"fc": random_net(0)}, name="good")
    bundle.save_pretrained(folder)
    return bundle


def edit_config(folder, edit):
    """Save a good bundle, then rewrite its config.json with ``edit(config) -> text | None``."""
    saved_bundle(folder)
    config = json.loads((folder / "config.json").read_text())
    text = edit(config)
    data = text if isinstance(text, (str, bytes)) else json.dumps(config)
    (folder / "config.json").write_bytes(data.encode() if isinstance(data, str) else data)
    # the weights file carries no config of its own, so config.json is the one that counts
    save_file(WeightsBundle({"fc": random_net(0)}).tensors(), folder / "model.safetensors")
    return folder


def edit_tensors(folder, edit):
    """Save a good bundle, then rewrite model.safetensors with ``edit(tensors)`` (config kept)."""
    bundle = saved_bundle(folder)
    tensors = bundle.tensors()
    edit(tensors)
    metadata = {"config": json.dumps(bundle.config_dict())}
    (folder / "model.safetensors").write_bytes(save(tensors, metadata))
    return folder


def embedded_config(folder, edit):
    """A lone .safetensors file whose embedded config is ``edit``ed."""
    bundle = saved_bundle(folder)
    config = bundle.config_dict()
    edit(config)
    path = folder / "lone.safetensors"
    path.write_bytes(save(bundle.tensors(), {"config": json.dumps(config)}))
    return path


def write(folder, name, data):
    (folder / name).write_bytes(data)
    return folder / name


def good_bytes(folder):
    saved_bundle(folder / "src")
    return (folder / "src" / "model.safetensors").read_bytes()


class _Payload:
    """Unpickling this would create the file ``UNPICKLED`` (a stand-in for arbitrary code)."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def pickle_payload(folder, name, protocol=pickle.HIGHEST_PROTOCOL):
    return write(folder, name, pickle.dumps(_Payload(str(folder / "UNPICKLED")), protocol))


def torch_save(folder, name):
    path = folder / name
    torch.save({"fc.head.bias": torch.zeros(1), "payload": _Payload(str(folder / "UNPICKLED"))},
               path)
    return path


NOT_SAFETENSORS = ("not a readable safetensors file", "re-download or re-export")
PICKLE = ("never unpickles", "safetensors file written by WeightsBundle.save_pretrained")
NOT_FOUND = ("no learned optimizer weights named", "Pass one of those")

# (id, make(folder) -> the weights= argument, error type, problem pattern, fix pattern)
WEIGHTS_CASES = [
    # missing
    ("missing-file", lambda d: str(d / "nope" / "model.safetensors"), WeightsNotFoundError,
     *NOT_FOUND),
    ("unknown-name", lambda d: "no-such-optimizer", WeightsNotFoundError,
     "not a bundled name \\(bundled: \\[", "Pass one of those"),
    ("folder-without-weights", lambda d: write(d, "notes.txt", b"hi").parent,
     WeightsNotFoundError, "has no model.safetensors", "as written by save_pretrained"),
    # corrupted or foreign safetensors
    ("empty-file", lambda d: write(d, "w.safetensors", b""), WeightsFormatError, *NOT_SAFETENSORS),
    ("garbage", lambda d: write(d, "w.safetensors", b"garbage" * 100), WeightsFormatError,
     *NOT_SAFETENSORS),
    ("truncated", lambda d: write(d, "w.safetensors", good_bytes(d)[:3000]), WeightsFormatError,
     *NOT_SAFETENSORS),
    ("truncated-header", lambda d: write(d, "w.safetensors", good_bytes(d)[:40]),
     WeightsFormatError, *NOT_SAFETENSORS),
    ("header-length-bomb", lambda d: write(d, "w.safetensors", struct.pack("<Q", 1 << 60) + b"{}"),
     WeightsFormatError, *NOT_SAFETENSORS),
    ("header-not-json", lambda d: write(d, "w.safetensors", struct.pack("<Q", 4) + b"{{{{"),
     WeightsFormatError, *NOT_SAFETENSORS),
    ("foreign-model", lambda d: write(d, "w.safetensors", save({"encoder.weight": torch.ones(3)})),
     WeightsFormatError, "not a learned_optim weights file", "save_pretrained"),
    ("foreign-model-with-config",
     lambda d: edit_tensors(d, lambda t: (t.clear(), t.update({"encoder.weight": torch.ones(3)}))),
     WeightsFormatError, "missing keys \\['fc.cells.0.bias_hh'.*unexpected keys "
     "\\['encoder.weight'\\]", "Load weights written by WeightsBundle.save_pretrained"),
    ("missing-key", lambda d: edit_tensors(d, lambda t: t.pop("fc.head.bias")),
     WeightsFormatError, "missing keys \\['fc.head.bias'\\], unexpected keys \\[\\]",
     "save_pretrained"),
    ("unexpected-key", lambda d: edit_tensors(d, lambda t: t.update({"fc.extra": torch.ones(2)})),
     WeightsFormatError, "missing keys \\[\\], unexpected keys \\['fc.extra'\\]",
     "save_pretrained"),
    ("wrong-shape", lambda d: edit_tensors(d, lambda t: t.update({"fc.head.bias": torch.ones(2)})),
     WeightsFormatError, "'fc.head.bias' has shape \\(2,\\)", "expected \\(1,\\).*re-export"),
    ("wrong-dtype", lambda d: edit_tensors(
        d, lambda t: t.update({"fc.head.bias": torch.ones(1, dtype=torch.float16)})),
     WeightsFormatError, "dtype torch.float16", "expected \\(1,\\) and torch.float32"),
    ("nan-weights", lambda d: edit_tensors(
        d, lambda t: t["fc.cells.0.weight_ih"].__setitem__((0, 0), math.nan)),
     WeightsFormatError, "'fc.cells.0.weight_ih' contains NaN or inf", "re-download or re-export"),
    ("inf-weights", lambda d: edit_tensors(
        d, lambda t: t["fc.head.weight"].__setitem__((0, 3), -math.inf)),
     WeightsFormatError, "'fc.head.weight' contains NaN or inf", "re-download or re-export"),
    # config.json
    ("config-not-json", lambda d: edit_config(d, lambda c: "{not json"), ConfigError,
     "not valid JSON", "re-export"),
    ("config-not-utf8", lambda d: edit_config(d, lambda c: b"\xff\xfe{}"), ConfigError,
     "not valid JSON", "re-export"),
    ("config-array", lambda d: edit_config(d, lambda c: "[1, 2]"), ConfigError,
     "must be a JSON object, got list", "re-export the weights"),
    ("config-unknown-field", lambda d: edit_config(d, lambda c: c.update(extra=1)), ConfigError,
     "unknown fields \\['extra'\\]", "expected \\['format'.*re-export.*or upgrade"),
    ("config-missing-field", lambda d: edit_config(d, lambda c: c.pop("routes")), ConfigError,
     "missing fields \\['routes'\\]", "expected \\['format'.*re-export.*or upgrade"),
    ("config-other-format", lambda d: edit_config(d, lambda c: c.update(format="x.y")),
     ConfigError, "format 'x.y'.*not a learned_optim weights config", "folder written by"),
    ("config-newer-version", lambda d: edit_config(d, lambda c: c.update(format_version=2)),
     ConfigError, "format_version 2, newer than", "upgrade learned_optim"),
    ("config-version-string", lambda d: edit_config(d, lambda c: c.update(format_version="1")),
     ConfigError, "invalid format_version '1'", "positive integer; re-export"),
    ("config-version-bool", lambda d: edit_config(d, lambda c: c.update(format_version=True)),
     ConfigError, "invalid format_version True", "positive integer; re-export"),
    ("config-name-type", lambda d: edit_config(d, lambda c: c.update(name=3)), ConfigError,
     "non-string name 3", "re-export the weights"),
    ("config-provenance-type", lambda d: edit_config(d, lambda c: c.update(provenance=[])),
     ConfigError, "provenance must be a JSON object", "re-export the weights"),
    ("config-no-routes", lambda d: edit_config(d, lambda c: c.update(routes={})), ConfigError,
     "routes must be a non-empty object", "re-export the weights"),
    ("config-bad-route-name", lambda d: edit_config(
        d, lambda c: c["routes"].update({"FC!": c["routes"]["fc"]})), ConfigError,
     "invalid route name 'FC!'", "use lowercase letters"),
    ("net-field-type", lambda d: edit_config(d, lambda c: c["routes"]["fc"].update(
        hidden_size="20")), ConfigError, "hidden_size='20'", "expected an integer"),
    ("net-field-value", lambda d: edit_config(d, lambda c: c["routes"]["fc"].update(
        output_scale=-1.0)), ConfigError, "output_scale=-1.0", "expected a finite positive"),
    ("net-field-nan", lambda d: edit_config(d, lambda c: c["routes"]["fc"].update(p=math.nan)),
     ConfigError, "p=nan", "expected a number in \\(0, 80\\]"),
    ("net-unknown-mode", lambda d: edit_config(d, lambda c: c["routes"]["fc"].update(
        preprocessing="magic")), ConfigError, "preprocessing='magic'", "one of \\['log_sign'"),
    ("net-missing-field", lambda d: edit_config(d, lambda c: c["routes"]["fc"].pop("p")),
     ConfigError, "missing \\['p'\\]", "upgrade learned_optim"),
    ("net-unknown-field", lambda d: edit_config(d, lambda c: c["routes"]["fc"].update(
        dropout=0.1)), ConfigError, "unknown \\['dropout'\\]", "upgrade learned_optim"),
    ("net-not-object", lambda d: edit_config(d, lambda c: c["routes"].update(fc=[20, 2])),
     ConfigError, "net config must be a JSON object of fields, got list", "re-export"),
    ("config-oversized", lambda d: edit_config(d, lambda c: c["provenance"].update(
        blob="x" * (2 << 20))), ConfigError, "bytes; a weights config is at most", "right file"),
    ("config-deeply-nested", lambda d: edit_config(d, lambda c: "[" * 200_000 + "]" * 200_000),
     ConfigError, "not valid JSON", "re-export"),
    ("embedded-config-newer", lambda d: embedded_config(d, lambda c: c.update(format_version=9)),
     ConfigError, "format_version 9, newer than", "upgrade learned_optim"),
    ("embedded-config-garbage", lambda d: write(d, "w.safetensors", save(
        random_net().state_dict(), {"config": "{]"})), ConfigError, "not valid JSON",
     "re-export"),
    # pickles: refused before anything reads them
    ("pickle-pt", lambda d: torch_save(d, "w.pt"), WeightsFormatError, *PICKLE),
    ("pickle-pth", lambda d: torch_save(d, "w.pth"), WeightsFormatError, *PICKLE),
    ("pickle-bin", lambda d: pickle_payload(d, "pytorch_model.bin"), WeightsFormatError, *PICKLE),
    ("pickle-pkl", lambda d: pickle_payload(d, "w.pkl"), WeightsFormatError, *PICKLE),
    ("pickle-ckpt", lambda d: torch_save(d, "w.ckpt"), WeightsFormatError, *PICKLE),
    ("pickle-as-safetensors", lambda d: pickle_payload(d, "w.safetensors", protocol=2),
     WeightsFormatError, *PICKLE),
    ("torch-zip-as-safetensors", lambda d: torch_save(d, "w.safetensors"), WeightsFormatError,
     *PICKLE),
    ("pickle-in-bundle-folder", lambda d: (torch_save(d, "model.safetensors"), d)[1],
     WeightsFormatError, *PICKLE),
    # objects
    ("weights-of-wrong-type", lambda d: 3, TypeError, "weights must be a name, path, repo id",
     "WeightsBundle, got int"),
    ("bundle-without-fc", lambda d: {"conv": random_net()}, WeightsFormatError,
     "needs an 'fc' net", "got routes \\['conv'\\]: add a net for 'fc'"),
    ("net-with-nan", lambda d: _net_with(math.nan), WeightsFormatError,
     "has NaN or inf in \\['head.bias'\\]", "Use finite weights"),
]


def _net_with(value):
    net = random_net()
    with torch.no_grad():
        net.head.bias.fill_(value)
    return net


@pytest.mark.parametrize("make,error,problem,fix", [c[1:] for c in WEIGHTS_CASES],
                         ids=[c[0] for c in WEIGHTS_CASES])
def test_bad_weights(tmp_path, monkeypatch, make, error, problem, fix):
    weights = make(tmp_path)
    before = snapshot_files(tmp_path)
    params = [nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(2, 3))]
    values = [p.detach().clone() for p in params]

    def refuse(*args, **kwargs):
        raise AssertionError("learned_optim tried to unpickle a file")
    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"),
                         (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    no_network(monkeypatch)
    with raises_clearly(error, problem, fix):
        LearnedLSTMOptim(params, weights=weights)
    assert snapshot_files(tmp_path) == before  # nothing written, renamed or deleted
    assert all(torch.equal(p, v) for p, v in zip(params, values))
    assert not (tmp_path / "UNPICKLED").exists()


def test_load_weights_names_a_missing_path(tmp_path):
    with raises_clearly(WeightsNotFoundError, "no weights at .*nope", "does not exist"):
        load_weights(tmp_path / "nope")


@pytest.mark.parametrize("how", ["local_files_only", "HF_HUB_OFFLINE"])
def test_repo_id_not_cached_while_offline(tmp_path, monkeypatch, how):
    from huggingface_hub import constants

    no_network(monkeypatch)
    options = {"cache_dir": str(tmp_path)}
    if how == "local_files_only":
        options["local_files_only"] = True
    else:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    params = [nn.Parameter(torch.randn(4))]
    with raises_clearly(WeightsNotFoundError, "cannot load Hub repo 'someone/not-cached'.*offline",
                        "What works: use a bundled name"):
        LearnedLSTMOptim(params, weights="someone/not-cached", **options)
    assert snapshot_files(tmp_path) == {}


# =============================================================================================
# Optimizer: gradients, state_dicts, hyperparameters, routes


def make_params(seed=0, shapes=((6, 5), (5,), (2, 3, 4))):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def set_grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def trained_optimizer(params=None, weights=None, steps=2):
    params = params if params is not None else make_params()
    opt = LearnedLSTMOptim(params, weights=weights if weights is not None else random_net(0))
    for k in range(steps):
        set_grads(params, k)
        opt.step()
    return opt, params


def assert_same_state_dict(a, b):
    assert a.keys() == b.keys()
    assert a["param_groups"] == b["param_groups"]
    assert a["learned_optim"] == b["learned_optim"]
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        for name, value in a["state"][key].items():
            assert torch.equal(value, b["state"][key][name]), (key, name)


def frozen(opt, params):
    """What a failed call must leave alone: parameter values and the optimizer's state."""
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())


def assert_unchanged(opt, params, snapshot):
    values, state = snapshot
    assert all(torch.equal(p, v) for p, v in zip(params, values))
    assert_same_state_dict(opt.state_dict(), state)


def adam_state(params):
    adam = torch.optim.Adam(params)
    set_grads(params, 0)
    adam.step()
    return adam.state_dict()


def sgd_state(params):
    sgd = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    set_grads(params, 0)
    sgd.step()
    return sgd.state_dict()


def own_state(edit, params=None):
    """This optimizer's own state_dict (a deep copy) after ``edit``."""
    def make(opt, _params):
        state = copy.deepcopy(opt.state_dict())
        edit(state)
        return state
    return make


def state_entry(state, index=0):
    return state["state"][index]


def other_weights_state(opt, params):
    other, _ = trained_optimizer([nn.Parameter(p.detach().clone()) for p in params],
                                 weights=random_net(1))
    return other.state_dict()


def fewer_params_state(opt, params):
    other, _ = trained_optimizer([nn.Parameter(p.detach().clone()) for p in params[:2]])
    return other.state_dict()


def other_shapes_state(opt, params):
    other, _ = trained_optimizer(make_params(shapes=((5, 5), (5,), (2, 3, 4))))
    return other.state_dict()


def two_groups_state(opt, params):
    copies = [nn.Parameter(p.detach().clone()) for p in params]
    other = LearnedLSTMOptim([{"params": copies[:1]}, {"params": copies[1:]}],
                             weights=random_net(0))
    return other.state_dict()


# (id, make(opt, params) -> state_dict, problem pattern, fix pattern); all raise StateDictError
STATE_DICT_CASES = [
    ("from-adam", lambda o, p: adam_state([nn.Parameter(x.detach().clone()) for x in p]),
     "not made by LearnedLSTMOptim .*'exp_avg'", "Load the state_dict of a LearnedLSTMOptim"),
    ("from-sgd", lambda o, p: sgd_state([nn.Parameter(x.detach().clone()) for x in p]),
     "not made by LearnedLSTMOptim .*'momentum_buffer'", "start this optimizer fresh"),
    ("other-weights", other_weights_state, "made with weights .*fingerprint",
     "construct the optimizer with weights="),
    ("fewer-params", fewer_params_state, "param groups of sizes \\[2\\].*has \\[3\\]",
     "same parameters, in the same order"),
    ("other-shapes", other_shapes_state, "hidden state of parameter 0 has shape \\(25, 4, 20\\)",
     "belongs to other parameters"),
    ("other-group-split", two_groups_state, "param groups of sizes \\[1, 2\\]",
     "same parameters, in the same order"),
    ("not-a-dict", lambda o, p: [1, 2], "expected an optimizer state_dict",
     "from LearnedLSTMOptim.state_dict"),
    ("no-param-groups", own_state(lambda s: s.pop("param_groups")),
     "expected an optimizer state_dict", "from LearnedLSTMOptim.state_dict"),
    ("newer-format", own_state(lambda s: s["learned_optim"].update(format_version=3)),
     "state format_version 3", "upgrade learned_optim"),
    ("nan-hidden", own_state(lambda s: state_entry(s)["hidden"].__setitem__((0, 0, 0), math.nan)),
     "hidden state of parameter 0 contains NaN or inf", "start this optimizer fresh"),
    ("inf-hidden", own_state(lambda s: state_entry(s, 2)["hidden"].__setitem__((1, 1, 1),
                                                                              math.inf)),
     "hidden state of parameter 2 contains NaN or inf", "Load an earlier state_dict"),
    ("hidden-not-a-tensor", own_state(lambda s: state_entry(s).update(hidden=[[0.0]])),
     "'hidden', 'step' must all be floating point tensors", "corrupted"),
    ("accumulators-for-a-net-without", own_state(lambda s: state_entry(s).update(
        accumulators=torch.zeros(35, 1, 20))),
     "has 'accumulators', but the net of weights", "belongs to other weights"),
    ("integer-hidden", own_state(lambda s: state_entry(s).update(
        hidden=state_entry(s)["hidden"].long())),
     "must all be floating point tensors, got hidden: a torch.int64 tensor", "corrupted"),
    ("missing-step", own_state(lambda s: state_entry(s).pop("step")),
     "state of parameter 0 has keys \\['hidden'\\]", "expected \\['hidden', 'step'\\]"),
    ("unknown-param-id", own_state(lambda s: s["state"].update({7: state_entry(s)})),
     "state for parameter ids \\[7\\]", "save it again"),
    ("invalid-lr", own_state(lambda s: s["param_groups"][0].update(lr=-1.0)),
     "param group 0 of this state_dict is invalid: Invalid learning rate", "must be finite"),
    ("invalid-chunk-size", own_state(lambda s: s["param_groups"][0].update(chunk_size=0)),
     "Invalid chunk_size: 0", "positive integer"),
    ("invalid-state-dtype", own_state(lambda s: s["param_groups"][0].update(
        state_dtype=torch.int8)), "Invalid state_dtype", "use None or one of"),
    ("unknown-route", own_state(lambda s: s["param_groups"][0].update(route="conv")),
     "routes a group to 'conv'", "built with the weights that saved it"),
]


@pytest.mark.parametrize("make,problem,fix", [c[1:] for c in STATE_DICT_CASES],
                         ids=[c[0] for c in STATE_DICT_CASES])
def test_bad_state_dict_is_refused_and_changes_nothing(make, problem, fix):
    opt, params = trained_optimizer()
    state_dict = make(opt, params)
    snapshot = frozen(opt, params)
    with raises_clearly(StateDictError, problem, fix):
        opt.load_state_dict(state_dict)
    assert_unchanged(opt, params, snapshot)
    set_grads(params, 5)  # and the optimizer still steps as before
    opt.step()


# (id, constructor kwargs, error, problem, fix)
ARGUMENT_CASES = [
    ("lr-negative", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0", "finite and >= 0"),
    ("lr-nan", {"lr": math.nan}, ValueError, "Invalid learning rate: nan", "finite and >= 0"),
    ("lr-inf", {"lr": math.inf}, ValueError, "Invalid learning rate: inf", "finite and >= 0"),
    ("lr-string", {"lr": "1e-3"}, TypeError, "Invalid learning rate: '1e-3'",
     "must be a real number"),
    ("lr-bool", {"lr": True}, TypeError, "Invalid learning rate: True", "must be a real number"),
    ("lr-tensor", {"lr": torch.tensor(1.0)}, TypeError, "Invalid learning rate",
     "must be a real number"),
    ("chunk-zero", {"chunk_size": 0}, ValueError, "Invalid chunk_size: 0", "positive integer"),
    ("chunk-negative", {"chunk_size": -8}, ValueError, "Invalid chunk_size: -8",
     "positive integer"),
    ("chunk-float", {"chunk_size": 2.5}, ValueError, "Invalid chunk_size: 2.5",
     "positive integer"),
    ("chunk-string", {"chunk_size": "4096"}, ValueError, "Invalid chunk_size: '4096'",
     "positive integer"),
    ("chunk-bool", {"chunk_size": True}, ValueError, "Invalid chunk_size: True",
     "positive integer"),
    ("state-dtype-int", {"state_dtype": torch.int32}, ValueError, "Invalid state_dtype",
     "use None or one of"),
    ("state-dtype-complex", {"state_dtype": torch.complex64}, ValueError, "Invalid state_dtype",
     "use None or one of"),
    ("state-dtype-string", {"state_dtype": "float32"}, ValueError,
     "Invalid state_dtype: 'float32'", "use None or one of"),
    ("maximize-string", {"maximize": "yes"}, TypeError, "maximize must be a bool", "got str"),
]


@pytest.mark.parametrize("kwargs,error,problem,fix", [c[1:] for c in ARGUMENT_CASES],
                         ids=[c[0] for c in ARGUMENT_CASES])
def test_invalid_constructor_arguments(kwargs, error, problem, fix):
    params = make_params()
    values = [p.detach().clone() for p in params]
    with raises_clearly(error, problem, fix):
        LearnedLSTMOptim(params, weights=random_net(), **kwargs)
    assert all(torch.equal(p, v) for p, v in zip(params, values))


# (id, make the param groups, error, problem, fix)
PARAM_GROUP_CASES = [
    ("unknown-route", lambda: [{"params": make_params(), "route": "conv"}], ValueError,
     "route 'conv' is not in the weights .*\\['fc'\\]", "use one of those or 'auto'"),
    ("integer-param", lambda: [torch.zeros(3, dtype=torch.long)], ValueError,
     "floating point or complex parameters, got dtype torch.int64", "convert it"),
    ("sparse-param", lambda: [torch.zeros(4, 4).to_sparse().requires_grad_()], ValueError,
     "only dense \\(strided\\) parameters, got layout torch.sparse_coo", "SparseAdam"),
    ("group-lr-invalid", lambda: [{"params": make_params(), "lr": -0.5}], ValueError,
     "Invalid learning rate: -0.5", "finite and >= 0"),
    ("group-chunk-invalid", lambda: [{"params": make_params(), "chunk_size": 0}], ValueError,
     "Invalid chunk_size: 0", "positive integer"),
    ("no-params", lambda: [], ValueError, "empty parameter list", "model.parameters\\(\\)"),
]


@pytest.mark.parametrize("groups,error,problem,fix", [c[1:] for c in PARAM_GROUP_CASES],
                         ids=[c[0] for c in PARAM_GROUP_CASES])
def test_invalid_param_groups(groups, error, problem, fix):
    with raises_clearly(error, problem, fix):
        LearnedLSTMOptim(groups(), weights=random_net())


def test_add_param_group_with_an_unknown_route_leaves_the_groups_alone():
    opt, params = trained_optimizer()
    snapshot = frozen(opt, params)
    with raises_clearly(ValueError, "route 'conv' is not in the weights", "'auto'"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(3))], "route": "conv"})
    assert len(opt.param_groups) == 1
    assert_unchanged(opt, params, snapshot)


@pytest.mark.parametrize("option,value,error,problem,fix", [
    ("lr", -1.0, ValueError, "Invalid learning rate: -1.0", "finite and >= 0"),
    ("lr", "fast", TypeError, "Invalid learning rate: 'fast'", "must be a real number"),
    ("chunk_size", 0, ValueError, "Invalid chunk_size: 0", "positive integer"),
    ("state_dtype", torch.int8, ValueError, "Invalid state_dtype: torch.int8", "use None or"),
    ("total_steps", 0, ValueError, "Invalid total_steps: 0", "positive integer")])
def test_add_param_group_with_a_bad_option_leaves_the_groups_alone(option, value, error,
                                                                   problem, fix):
    opt, params = trained_optimizer()
    snapshot = frozen(opt, params)
    with raises_clearly(error, problem, fix):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(3))], option: value})
    assert len(opt.param_groups) == 1
    assert_unchanged(opt, params, snapshot)


def sparse_grad(opt, params):
    params[1].grad = torch.zeros(5).to_sparse()


def scheduler_negative_lr(opt, params):
    opt.param_groups[0]["lr"] = -1.0


def overflowing_lr(opt, params):
    opt.param_groups[0]["lr"] = 1e308


def nan_weights_after_loading(opt, params):
    with torch.no_grad():
        opt.weights.nets["fc"].cells[1].weight_hh[3, 4] = math.nan


# (id, break(opt, params), error, problem, fix): step() raises and writes nothing
STEP_ERROR_CASES = [
    ("sparse-gradient", sparse_grad, RuntimeError, "does not support sparse gradients",
     "torch.optim.SparseAdam"),
    ("lr-set-negative-by-a-scheduler", scheduler_negative_lr, ValueError,
     "Invalid learning rate: -1.0", "finite and >= 0"),
    ("lr-so-large-the-step-overflows", overflowing_lr, ValueError,
     "lr times the largest step of the weights .* overflows", "multiplier near 1.0"),
    ("weights-turned-nan", nan_weights_after_loading, WeightsFormatError,
     "contain NaN or inf in \\['cells.1.weight_hh'\\]", "reload them"),
]


@pytest.mark.parametrize("make_bad,error,problem,fix", [c[1:] for c in STEP_ERROR_CASES],
                         ids=[c[0] for c in STEP_ERROR_CASES])
def test_step_errors_write_nothing(make_bad, error, problem, fix):
    opt, params = trained_optimizer()
    set_grads(params, 9)
    make_bad(opt, params)
    snapshot = frozen(opt, params)
    with raises_clearly(error, problem, fix):
        opt.step()
    assert_unchanged(opt, params, snapshot)


# (id, index of the parameter, where to put the value, the value): the parameter is skipped
NON_FINITE_GRADIENTS = [
    ("nan", 0, (0, 0), math.nan),
    ("plus-inf", 1, (3,), math.inf),
    ("minus-inf", 2, (1, 2, 3), -math.inf),
]


@pytest.mark.parametrize("index,where,value", [c[1:] for c in NON_FINITE_GRADIENTS],
                         ids=[c[0] for c in NON_FINITE_GRADIENTS])
def test_non_finite_gradient_skips_that_parameter_and_its_state(index, where, value):
    opt, params = trained_optimizer()
    before = [p.detach().clone() for p in params]
    hidden = [opt.state[p]["hidden"].clone() for p in params]
    set_grads(params, 3)
    params[index].grad[where] = value
    with pytest.warns(RuntimeWarning, match="skipped 1 parameter.*gradient contains NaN or inf"
                                            ".*left unchanged.*clip gradients"):
        opt.step()
    for k, p in enumerate(params):
        assert torch.isfinite(p).all()
        assert torch.equal(p, before[k]) == (k == index)
        assert torch.equal(opt.state[p]["hidden"], hidden[k]) == (k == index)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_hidden_state_skips_that_parameter(value):
    """The guard against a misbehaving learned update: with finite weights and gradients, only
    a non-finite state can make the update non-finite, and such a parameter is left alone."""
    opt, params = trained_optimizer()
    opt.state[params[2]]["hidden"][4, 1, 7] = value  # set by hand
    before = [p.detach().clone() for p in params]
    hidden = opt.state[params[2]]["hidden"].clone()
    set_grads(params, 3)
    with pytest.warns(RuntimeWarning, match="skipped 1 parameter.*hidden state contains NaN or "
                                            "inf.*optimizer.state\\[param\\].clear\\(\\)"):
        opt.step()
    assert torch.equal(params[2], before[2])
    torch.testing.assert_close(opt.state[params[2]]["hidden"], hidden, rtol=0, atol=0,
                               equal_nan=True)
    assert not torch.equal(params[0], before[0]) and not torch.equal(params[1], before[1])
    assert all(torch.isfinite(p).all() for p in params)
    opt.state[params[2]].clear()  # the documented fix
    opt.step()
    assert not torch.equal(params[2], before[2]) and torch.isfinite(params[2]).all()


# =============================================================================================
# MetaTrainer: tasks, configs, checkpoints


def tiny_config(**overrides):
    base = dict(epochs=1, tasks_per_epoch=1, horizon=4, unroll=2, validation_tasks=1, seed=0)
    return MetaTrainConfig(**{**base, **overrides})


def linear_task(loss_fn, model=None, **task_kwargs):
    def make(seed):
        torch.manual_seed(seed)
        return Task(model=model or nn.Linear(3, 2), sample_batch=lambda step: (torch.ones(4, 3),
                                                                              None),
                    loss_fn=loss_fn, **task_kwargs)
    return FunctionTaskFamily("bad-task", make, horizon=4)


def frozen_model():
    model = nn.Linear(3, 2)
    model.requires_grad_(False)
    return model


class _ReturnsModule:
    name, horizon = "not-a-task", 4

    def sample(self, seed):
        return nn.Linear(2, 2)


def conv_routed_family():
    def make(seed):
        return Task(model=nn.Linear(3, 2), sample_batch=lambda step: (torch.ones(4, 3), None),
                    loss_fn=lambda out, _: out.square().mean(),
                    routes={"weight": "conv", "bias": "fc"})
    return FunctionTaskFamily("conv-routed", make, horizon=4)


# (id, make the trainer and run it, error, problem, fix)
TASK_CASES = [
    ("loss-not-scalar", lambda: linear_task(lambda out, _: out), TaskError,
     "must be a scalar, real-valued tensor, got Tensor of shape torch.Size\\(\\[4, 2\\]\\)",
     "reduce it in loss_fn"),
    ("loss-a-float", lambda: linear_task(lambda out, _: 1.0), TaskError,
     "must be a scalar, real-valued tensor, got float", "return a tensor"),
    ("loss-complex", lambda: linear_task(lambda out, _: out.sum() * 1j), TaskError,
     "dtype torch.complex64", "reduce it in loss_fn"),
    ("loss-nan", lambda: linear_task(lambda out, _: out.sum() * math.nan), TaskError,
     "loss at the initial parameters is nan", "Check the task's data"),
    ("loss-inf", lambda: linear_task(lambda out, _: out.sum() + math.inf), TaskError,
     "loss at the initial parameters is inf", "Check the task's data"),
    ("loss-detached", lambda: linear_task(lambda out, _: out.sum().detach()), TaskError,
     "does not depend on its parameters", "without .detach\\(\\)"),
    ("no-trainable-parameters", lambda: linear_task(lambda out, _: out.sum(), frozen_model()),
     TaskError, "no trainable parameters", "unfreeze the parameters"),
    ("integer-parameters", lambda: linear_task(
        lambda out, _: out.sum(), params={"weight": torch.zeros(2, 3, dtype=torch.long)}),
     TaskError, "\\['weight'\\] are not floating point", "real-valued parameters"),
    ("sample-returns-a-module", _ReturnsModule, TaskError,
     "returned a Linear", "expected a learned_optim.tasks.Task"),
    ("family-is-a-function", lambda: (lambda seed: None), TypeError,
     "task_family must be a TaskFamily", "FunctionTaskFamily\\(name, make_task\\)"),
]


def build_and_train(make_family, **trainer_kwargs):
    trainer = MetaTrainer(make_family(), tiny_config(), **trainer_kwargs)
    trainer.train(progress=False)


@pytest.mark.parametrize("make_family,error,problem,fix", [c[1:] for c in TASK_CASES],
                         ids=[c[0] for c in TASK_CASES])
def test_bad_tasks(make_family, error, problem, fix):
    with raises_clearly(error, problem, fix):
        build_and_train(make_family)


def test_a_bad_task_mid_run_leaves_phi_and_progress_untouched(tmp_path):
    """The first tasks are fine; a later one has a NaN loss: the error names the seed, and φ,
    Adam's state and the checkpoint are those of the last good meta-update / epoch."""
    bad_from = {"seed": None}

    def make(seed):
        torch.manual_seed(seed)
        scale = math.nan if bad_from["seed"] == seed else 1.0
        return Task(model=nn.Linear(3, 1), sample_batch=lambda step: (torch.ones(4, 3), None),
                    loss_fn=lambda out, _: out.square().mean() * scale)

    trainer = MetaTrainer(FunctionTaskFamily("sometimes-nan", make, horizon=4),
                          tiny_config(epochs=2, tasks_per_epoch=2), checkpoint_dir=tmp_path)
    trainer.train(progress=False)
    files = snapshot_files(tmp_path)
    phi, epoch, history = trainer._net_state(), trainer.epoch, copy.deepcopy(trainer.history)
    trainer.config.epochs = 3
    from learned_optim.meta.trainer import _task_seed
    bad_from["seed"] = _task_seed(0, 3, 0)
    with raises_clearly(TaskError, f"sample\\(seed={bad_from['seed']}\\).*is nan",
                        "Check the task's data"):
        trainer.train(progress=False)
    assert trainer.epoch == epoch and trainer.history == history
    assert all(torch.equal(v, trainer._net_state()[k]) for k, v in phi.items())
    assert snapshot_files(tmp_path) == files


@pytest.mark.parametrize("kwargs,error,problem,fix", [
    ({"routes": ["conv"]}, ConfigError, "routes=\\['conv'\\]", "include 'fc'"),
    ({"routes": ["FC"]}, ConfigError, "routes=\\['FC'\\]", "lowercase letters"),
    ({"config": {"epochs": 1}}, TypeError, "config must be a MetaTrainConfig, got dict",
     "MetaTrainConfig.from_dict"),
    ({"validation_family": "quadratic"}, TypeError, "validation_family must be a TaskFamily",
     "FunctionTaskFamily"),
], ids=["routes-without-fc", "route-name", "config-a-dict", "validation-family-a-string"])
def test_bad_trainer_arguments(kwargs, error, problem, fix):
    config = kwargs.pop("config", tiny_config())
    with raises_clearly(error, problem, fix):
        MetaTrainer(QuadraticFamily(horizon=4), config, **kwargs)


def test_task_routed_to_a_net_the_trainer_does_not_have():
    trainer = MetaTrainer(conv_routed_family(), tiny_config(), routes=["fc"])
    before = trainer._net_state()
    with raises_clearly(TaskError, "routes parameters to \\['conv'\\].*nets for \\['fc'\\]",
                        "pass routes=\\[...\\]"):
        trainer.train(progress=False)
    assert all(torch.equal(v, trainer._net_state()[k]) for k, v in before.items())


CONFIG_CASES = [
    ("epochs", 0), ("epochs", 1.5), ("epochs", True), ("epochs", "3"), ("tasks_per_epoch", 0),
    ("horizon", -1), ("unroll", 0), ("validation_tasks", 0), ("max_bad_updates", 0),
    ("chunk_size", 0), ("seed", -1), ("seed", 1.0), ("meta_lr", 0.0), ("meta_lr", -1e-3),
    ("meta_lr", math.nan), ("meta_lr", math.inf), ("grad_clip", -1.0), ("grad_clip", math.nan),
    ("loss_weights", "late"),
]


@pytest.mark.parametrize("field,value", CONFIG_CASES,
                         ids=[f"{f}={v!r}" for f, v in CONFIG_CASES])
def test_invalid_meta_train_config_values(field, value):
    with raises_clearly(ConfigError, f"MetaTrainConfig.{field} must be", "got"):
        MetaTrainConfig(**{field: value})


@pytest.mark.parametrize("make,problem,fix", [
    (lambda: MetaTrainConfig(net={"hidden_size": 3}), "missing \\['num_layers'",
     "Expected exactly"),
    (lambda: MetaTrainConfig(net={**MetaTrainConfig().net, "hidden_size": 0}),
     "hidden_size=0", "expected an integer in \\[1, 4096\\]"),
    (lambda: MetaTrainConfig(net={**MetaTrainConfig().net, "dropout": 0.1}),
     "unknown \\['dropout'\\]", "upgrade learned_optim"),
    (lambda: MetaTrainConfig.from_dict({"epochs": 2, "epoch": 3}),
     "unknown MetaTrainConfig fields \\['epoch'\\]", "known: \\["),
    (lambda: MetaTrainConfig.from_dict([("epochs", 2)]), "built from a JSON object", "got list"),
], ids=["net-missing-fields", "net-bad-value", "net-unknown-field", "unknown-field",
        "not-a-mapping"])
def test_invalid_meta_train_configs(make, problem, fix):
    with raises_clearly(ConfigError, problem, fix):
        make()


def good_checkpoint(folder):
    MetaTrainer(QuadraticFamily(horizon=4), tiny_config(), checkpoint_dir=folder).train(
        progress=False)


def rewrite_checkpoint(folder, edit):
    from safetensors import safe_open

    good_checkpoint(folder)
    path = folder / "checkpoint.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    edit(tensors, metadata)
    path.write_bytes(save(tensors, metadata))


def edit_progress(edit):
    def apply(tensors, metadata):
        progress = json.loads(metadata["progress"])
        edit(progress)
        metadata["progress"] = json.dumps(progress)
    return apply


# (id, make(folder), problem, fix): all raise CheckpointError and leave the trainer untouched
CHECKPOINT_CASES = [
    ("missing", lambda d: None, "no checkpoint at", "start without resuming"),
    ("garbage", lambda d: write(d, "checkpoint.safetensors", b"\x00" * 64),
     "cannot read checkpoint", "delete it to start over"),
    ("truncated", lambda d: (good_checkpoint(d), write(d, "checkpoint.safetensors", (
        d / "checkpoint.safetensors").read_bytes()[:500])), "cannot read checkpoint",
     "delete it to start over"),
    ("weights-file-not-checkpoint", lambda d: write(d, "checkpoint.safetensors", save(
        WeightsBundle({"fc": random_net()}).tensors(), {"format": "learned_optim.weights"})),
     "not a MetaTrainer checkpoint", "'learned_optim.weights'"),
    ("other-config", lambda d: rewrite_checkpoint(d, edit_progress(
        lambda p: p["config"].update(seed=5))), "made with another config",
     "resume with the same config"),
    ("other-routes", lambda d: rewrite_checkpoint(d, edit_progress(
        lambda p: p.update(routes=["conv", "fc"]))), "holds nets for routes \\['conv', 'fc'\\]",
     "pass the same routes"),
    ("progress-not-json", lambda d: rewrite_checkpoint(
        d, lambda t, m: m.update(progress="{oops")), "unreadable progress metadata",
     "delete it to start over"),
    ("progress-missing-field", lambda d: rewrite_checkpoint(d, edit_progress(
        lambda p: p.pop("epoch"))), "unreadable progress metadata \\(KeyError",
     "delete it to start over"),
    ("nan-weights", lambda d: rewrite_checkpoint(
        d, lambda t, m: t["current.fc.head.bias"].fill_(math.nan)),
     "the current weights do not match .* or are not finite", "delete it to start over"),
    ("missing-best", lambda d: rewrite_checkpoint(
        d, lambda t, m: t.pop("best.fc.head.weight")),
     "the best weights do not match", "delete it to start over"),
    ("adam-state-mismatch", lambda d: rewrite_checkpoint(
        d, lambda t, m: t.update({"adam.0.exp_avg": torch.zeros(2)})),
     "meta-optimizer state does not match", "delete it to start over"),
]


@pytest.mark.parametrize("make,problem,fix", [c[1:] for c in CHECKPOINT_CASES],
                         ids=[c[0] for c in CHECKPOINT_CASES])
def test_bad_checkpoint_is_refused_and_changes_nothing(tmp_path, make, problem, fix):
    make(tmp_path)
    files = snapshot_files(tmp_path)
    trainer = MetaTrainer(QuadraticFamily(horizon=4), tiny_config())
    phi, adam = trainer._net_state(), copy.deepcopy(trainer.meta_optimizer.state_dict())
    with raises_clearly(CheckpointError, problem, fix):
        trainer.load_checkpoint(tmp_path)
    assert trainer.epoch == 0 and trainer.history == [] and trainer.bad_updates == 0
    assert all(torch.equal(v, trainer._net_state()[k]) for k, v in phi.items())
    assert all(torch.equal(v, trainer.best_state[k]) for k, v in phi.items())
    assert trainer.meta_optimizer.state_dict()["state"] == adam["state"] == {}
    assert snapshot_files(tmp_path) == files


def test_cli_resume_without_a_checkpoint_says_so(tmp_path, capsys):
    from learned_optim.__main__ import main

    status = main(["meta-train", "--task", "quadratic", "--out", str(tmp_path / "out"),
                   "--epochs", "1", "--checkpoint-dir", str(tmp_path / "ckpt"), "--resume",
                   "--no-progress"])
    assert status == 1
    assert "error: no checkpoint at" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag,value", [("--meta-lr", "1e-3"), ("--epochs", "1"),
                                        ("--validation-task", "quadratic"),
                                        ("--weight-average-decay", "0.9"),
                                        ("--horizon-min", "10"),
                                        ("--validation-score", "log_final_loss"),
                                        ("--stability-penalty", "1"),
                                        ("--stability-tolerance", "10")])
def test_cli_preset_refuses_config_flags_instead_of_ignoring_them(tmp_path, capsys, flag, value):
    from learned_optim.__main__ import main

    status = main(["meta-train", "--preset", "l2l-quadratic", flag, value,
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert status == 2
    assert f"error: {flag} cannot be combined with --preset" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_task_flags_reach_the_config(tmp_path):
    from learned_optim import WeightsBundle
    from learned_optim.__main__ import main

    status = main(["meta-train", "--task", "quadratic", "--out", str(tmp_path / "out"),
                   "--epochs", "1", "--tasks-per-epoch", "2", "--horizon", "4", "--unroll", "2",
                   "--validation-tasks", "1", "--meta-lr", "0.002", "--meta-batch-size", "2",
                   "--weight-average-decay", "0.5", "--horizon-min", "2",
                   "--validation-score", "log_final_loss", "--stability-penalty", "2.5",
                   "--stability-tolerance", "4", "--keep-epochs",
                   str(tmp_path / "epochs"), "--device", "cpu", "--no-progress"])
    assert status == 0
    provenance = WeightsBundle.from_pretrained(tmp_path / "out").provenance
    assert provenance["device"] == "cpu"
    config = provenance["config"]
    assert {k: config[k] for k in ("epochs", "tasks_per_epoch", "horizon", "unroll",
                                   "validation_tasks", "meta_lr", "meta_batch_size",
                                   "weight_average_decay", "horizon_min",
                                   "validation_score", "stability_penalty",
                                   "stability_tolerance")} == dict(
        epochs=1, tasks_per_epoch=2, horizon=4, unroll=2, validation_tasks=1, meta_lr=0.002,
        meta_batch_size=2, weight_average_decay=0.5, horizon_min=2,
        validation_score="log_final_loss", stability_penalty=2.5, stability_tolerance=4.0)
    kept = WeightsBundle.from_pretrained(tmp_path / "epochs" / "epoch-01")
    assert kept.provenance["epoch_kept"] == 1


@pytest.mark.parametrize("device,problem", [
    ("gpu0", "is not a torch device"),
    pytest.param("cuda", "sees no CUDA GPU", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has a CUDA GPU, so cuda is valid")),
])
def test_cli_meta_train_on_a_device_it_cannot_use_is_one_error_line(tmp_path, capsys, device,
                                                                    problem):
    from learned_optim.__main__ import main

    status = main(["meta-train", "--task", "quadratic", "--out", str(tmp_path / "out"),
                   "--epochs", "1", "--device", device, "--no-progress"])
    assert status != 0
    err = capsys.readouterr().err
    assert problem in err and "cpu" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_unknown_validation_score_is_one_error_line(tmp_path, capsys):
    from learned_optim.__main__ import main

    status = main(["meta-train", "--task", "quadratic", "--out", str(tmp_path / "out"),
                   "--validation-score", "median", "--no-progress"])
    assert status != 0
    assert "validation_score must be 'final_loss' or 'log_final_loss'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_init_weights_fine_tunes_that_bundle_and_refuses_what_cannot_be(tmp_path, capsys):
    """meta-train --task T --init-weights W starts from W's weights with W's net config and
    records it; with --preset it is refused, and weights whose routes the task does not have
    are one error line naming the routes."""
    from learned_optim import LSTMOptimizerConfig, LSTMOptimizerNet, WeightsBundle
    from learned_optim.__main__ import main

    config = LSTMOptimizerConfig(hidden_size=8, features="adaptive",
                                 update="direction_magnitude", output_scale=0.01)
    source = WeightsBundle({"fc": LSTMOptimizerNet(config, seed=3)}, name="small")
    folder = source.save_pretrained(tmp_path / "small")
    status = main(["meta-train", "--task", "quadratic", "--init-weights", str(folder),
                   "--out", str(tmp_path / "out"), "--epochs", "1", "--tasks-per-epoch", "1",
                   "--horizon", "4", "--unroll", "2", "--validation-tasks", "1",
                   "--no-progress"])
    assert status == 0
    tuned = WeightsBundle.from_pretrained(tmp_path / "out")
    assert tuned.provenance["initial_weights"]["fingerprint"] == source.fingerprint()
    assert tuned.nets["fc"].config == config
    assert tuned.fingerprint() != source.fingerprint()

    status = main(["meta-train", "--preset", "l2l-quadratic", "--init-weights", str(folder),
                   "--out", str(tmp_path / "preset"), "--no-progress"])
    assert status == 2
    assert "--init-weights cannot be combined with --preset" in capsys.readouterr().err

    status = main(["meta-train", "--task", "digits-cnn", "--init-weights", str(folder),
                   "--out", str(tmp_path / "cnn"), "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1 and "routes" in err and "['conv', 'fc']" in err
    assert not (tmp_path / "cnn").exists() and not (tmp_path / "preset").exists()
