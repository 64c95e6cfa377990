"""Nothing unsafe is ever loaded: the package never unpickles or evaluates user data."""

import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "learned_optim"
UNSAFE = re.compile(r"torch\.load\(|pickle\.loads?\(|^\s*import pickle|\beval\(|\bexec\(",
                    re.MULTILINE)


def test_no_unpickling_or_eval_in_the_package():
    hits = [f"{path.relative_to(PACKAGE)}: {match.group(0)}"
            for path in PACKAGE.rglob("*.py")
            for match in UNSAFE.finditer(path.read_text())]
    assert not hits, hits


# More ways to run code from data than the scan above names; each is refused by name.
UNSAFE_CALLS = [
    ("torch.load", r"\btorch\.load\b|from torch import[^\n]*\bload\b"),
    ("weights_only=False", r"weights_only\s*=\s*False"),
    ("pickle", r"\bimport pickle\b|\bfrom pickle\b|\bcPickle\b|\bdill\b|\bjoblib\b"),
    ("marshal", r"\bmarshal\.loads?\("),
    ("shelve", r"\bimport shelve\b"),
    ("numpy allow_pickle", r"allow_pickle\s*=\s*True"),
    ("yaml.load", r"\byaml\.(unsafe_)?load\("),
    ("eval/exec", r"(?<![.\w])(eval|exec)\("),
    ("__import__ / compile", r"\b__import__\(|(?<![.\w])compile\("),
]


@pytest.mark.parametrize("name,pattern", UNSAFE_CALLS, ids=[u[0] for u in UNSAFE_CALLS])
def test_no_unsafe_loader_anywhere_in_the_package(name, pattern):
    hits = [f"{path.relative_to(PACKAGE)}:{text[:match.start()].count(chr(10)) + 1}"
            for path in sorted(PACKAGE.rglob("*.py"))
            for text in [path.read_text()]
            for match in re.finditer(pattern, text)]
    assert not hits, f"{name} in {hits}"


def _refuse_network(monkeypatch):
    import socket

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("learned_optim opened a network connection")
    for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                        (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, refuse)
    return calls


def _sources(tmp_path):
    """Every way to name weights that is not a Hub repo id."""
    from learned_optim import LSTMOptimizerNet, WeightsBundle, list_pretrained

    bundle = WeightsBundle({"fc": LSTMOptimizerNet(seed=0)}, name="local")
    bundle.save_pretrained(tmp_path / "folder")
    return ([(name, name) for name in list_pretrained()] + [
        ("folder", str(tmp_path / "folder")),
        ("folder-pathlike", tmp_path / "folder"),
        ("safetensors-file", str(tmp_path / "folder" / "model.safetensors")),
        ("net", LSTMOptimizerNet(seed=1)),
        ("bundle", bundle),
    ])


def test_nothing_touches_the_network_without_a_hub_repo_id(tmp_path, monkeypatch):
    import torch

    from learned_optim import LearnedLSTMOptim, WeightsBundle, load_weights
    from learned_optim.__main__ import main

    calls = _refuse_network(monkeypatch)
    sources = _sources(tmp_path)
    assert len(sources) >= 6
    for label, source in sources:
        param = torch.nn.Parameter(torch.ones(5))
        opt = LearnedLSTMOptim([param], weights=source)
        param.grad = torch.ones(5)
        opt.step()
        if isinstance(source, str):
            WeightsBundle.from_pretrained(source)
        opt.weights.save_pretrained(tmp_path / "saved" / label)
        load_weights(tmp_path / "saved" / label)
    assert main(["list"]) == 0
    assert main(["export", "default", str(tmp_path / "exported")]) == 0
    assert calls == []


def test_a_missing_local_path_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    """A path that does not exist (``./runs/x``, ``/abs/x``, ``x.safetensors``) is reported as
    missing, never looked up on the Hub."""
    from learned_optim import WeightsNotFoundError, resolve_weights

    calls = _refuse_network(monkeypatch)
    for text in ("./runs/my-optim", str(tmp_path / "gone"), "../x/y", "model.safetensors"):
        with pytest.raises(WeightsNotFoundError, match="not an existing path"):
            resolve_weights(text)
    assert calls == []
