"""Hub: load by repo id from a real huggingface_hub cache, publish with a model card, the CLI.

No test reaches the network. The cache folders are written here by hand in huggingface_hub's
layout (``models--org--name/{refs/<ref>, snapshots/<sha>/...}``, ``refs`` files holding the sha
with no trailing newline), and loaded through the public API, so the real ``hf_hub_download``
code resolves refs and snapshots. huggingface_hub reads its environment variables at import, so
in-process tests pass ``cache_dir=`` or patch ``huggingface_hub.constants``; subprocess tests
set the environment variables before the import.
"""

import ast
import hashlib
import http.server
import json
import os
import pathlib
import subprocess
import sys
import threading

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

import learned_optim
from learned_optim import (ConfigError, LearnedLSTMOptim, LSTMOptimizerNet, StateDictError,
                           WeightsBundle, WeightsFormatError, WeightsNotFoundError,
                           list_pretrained, load_weights, resolve_weights)
from learned_optim import hub
from learned_optim.__main__ import COMMANDS, main
from learned_optim.model_card import NOT_RECORDED, model_card_text

REPO = "org/name"
SHA_A = hashlib.sha1(b"commit a").hexdigest()
SHA_B = hashlib.sha1(b"commit b").hexdigest()
PACKAGE_DIR = pathlib.Path(learned_optim.__file__).resolve().parent
PROVENANCE = {
    "task": "quadratic",
    "command": "python -m learned_optim meta-train --task quadratic --seed 3",
    "seed": 3,
    "epochs": 5,
    "metrics": {"validation_meta_loss": 0.125},
}


# ---------------------------------------------------------------------------------------------
# Helpers


def make_bundle(seed=0, *, conv=False, provenance=None, name="toy"):
    """A small bundle of seeded (untrained) nets."""
    nets = {"fc": LSTMOptimizerNet(seed=seed)}
    if conv:
        nets["conv"] = LSTMOptimizerNet(
            learned_optim.LSTMOptimizerConfig(hidden_size=8, preprocessing="clamped", p=5.0,
                                              output_scale=0.01), seed=seed + 100)
    return WeightsBundle(nets, name=name, provenance=provenance)


def repo_folder(cache_dir, repo_id=REPO):
    return pathlib.Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def write_snapshot(cache_dir, sha, bundle, *, repo_id=REPO, refs=("main",), blobs=False):
    """Write ``bundle`` as snapshot ``sha`` of ``repo_id`` in a huggingface_hub cache.

    ``refs`` files get the sha with no trailing newline. With ``blobs=True`` the files live in
    ``blobs/<sha256>`` and the snapshot holds relative symlinks, as huggingface_hub writes them.
    """
    root = repo_folder(cache_dir, repo_id)
    snapshot = root / "snapshots" / sha
    bundle.save_pretrained(snapshot)
    if blobs:
        (root / "blobs").mkdir(exist_ok=True)
        for path in sorted(snapshot.iterdir()):
            data = path.read_bytes()
            blob = root / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            path.unlink()
            path.symlink_to(os.path.relpath(blob, snapshot))
    for ref in refs:
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(sha)
    return snapshot


def run_steps(weights, steps=4, **options):
    """Parameters after ``steps`` steps with fixed gradients (two tensors, one a conv kernel)."""
    params = [torch.nn.Parameter(torch.zeros(37)), torch.nn.Parameter(torch.zeros(4, 3, 3, 3))]
    opt = LearnedLSTMOptim(params, weights=weights, **options)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        opt.step()
    return opt, [p.detach().clone() for p in params]


def assert_same_updates(weights_a, weights_b, **options_b):
    _, after_a = run_steps(weights_a)
    _, after_b = run_steps(weights_b, **options_b)
    for a, b in zip(after_a, after_b):
        assert torch.equal(a, b)


def assert_same_bundle(loaded, original):
    assert loaded.routes == original.routes
    assert loaded.fingerprint() == original.fingerprint()
    assert loaded.provenance == original.provenance
    for key, value in original.tensors().items():
        assert torch.equal(loaded.tensors()[key], value), key


@pytest.fixture
def cache(tmp_path):
    return (tmp_path / "hub-cache").resolve()


@pytest.fixture
def online(monkeypatch):
    """Make sure huggingface_hub is not in offline mode, whatever the environment says."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


# ---------------------------------------------------------------------------------------------
# Loading a repo id from the cache


def test_repo_id_loads_from_cache_with_local_files_only(cache, online):
    bundle = make_bundle(0, conv=True, provenance=PROVENANCE)
    write_snapshot(cache, SHA_A, bundle)
    opt, _ = run_steps(REPO, cache_dir=str(cache), local_files_only=True)
    assert opt.weights.name == f"{REPO}@{SHA_A}"
    assert_same_bundle(opt.weights, bundle)
    assert_same_updates(bundle, REPO, cache_dir=cache, local_files_only=True)


def test_repo_id_loads_with_hf_hub_offline(cache, monkeypatch):
    """HF_HUB_OFFLINE is read at call time from huggingface_hub.constants; default cache dir."""
    bundle = make_bundle(1, provenance=PROVENANCE)
    write_snapshot(cache, SHA_A, bundle, blobs=True)  # the symlink layout of a real download
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert_same_updates(bundle, REPO)  # no cache_dir, no local_files_only
    assert resolve_weights(REPO, local_files_only=False).fingerprint() == bundle.fingerprint()
    assert WeightsBundle.from_pretrained(REPO).name == f"{REPO}@{SHA_A}"


def test_revision_pinning_picks_the_right_snapshot(cache, online):
    bundle_a, bundle_b = make_bundle(0), make_bundle(1, conv=True)
    assert bundle_a.fingerprint() != bundle_b.fingerprint()
    write_snapshot(cache, SHA_A, bundle_a, refs=("main",))
    write_snapshot(cache, SHA_B, bundle_b, refs=("v2",), blobs=True)
    assert (repo_folder(cache) / "refs" / "main").read_bytes() == SHA_A.encode()

    def load(weights=REPO, **options):
        return resolve_weights(weights, cache_dir=cache, local_files_only=True, **options)

    assert load().fingerprint() == bundle_a.fingerprint()
    assert load(revision="main").fingerprint() == bundle_a.fingerprint()
    assert load(revision=SHA_B).fingerprint() == bundle_b.fingerprint()
    assert load(revision="v2").name == f"{REPO}@{SHA_B}"
    assert load(f"{REPO}@{SHA_B}").fingerprint() == bundle_b.fingerprint()
    assert load(f"{REPO}@{SHA_A}", revision=SHA_A).fingerprint() == bundle_a.fingerprint()
    with pytest.raises(ValueError, match="pass only one of them"):
        load(f"{REPO}@{SHA_A}", revision=SHA_B)
    assert_same_updates(bundle_b, REPO, revision=SHA_B, cache_dir=cache, local_files_only=True)


def test_state_dict_names_the_commit_and_that_name_loads_it(cache, online):
    write_snapshot(cache, SHA_A, make_bundle(0), refs=("main",))
    write_snapshot(cache, SHA_B, make_bundle(1), refs=())
    opt, _ = run_steps(REPO, cache_dir=cache, local_files_only=True)
    state = opt.state_dict()
    assert state["learned_optim"]["weights_name"] == f"{REPO}@{SHA_A}"
    other, _ = run_steps(REPO, revision=SHA_B, cache_dir=cache, local_files_only=True, steps=0)
    with pytest.raises(StateDictError, match=f"{REPO}@{SHA_A}"):
        other.load_state_dict(state)
    # the name in the error message is itself a valid weights= argument
    same, _ = run_steps(f"{REPO}@{SHA_A}", cache_dir=cache, local_files_only=True, steps=0)
    same.load_state_dict(state)


def test_save_pretrained_from_pretrained_round_trip(tmp_path):
    bundles = [make_bundle(0), make_bundle(2, conv=True, provenance=PROVENANCE)]
    bundles += [resolve_weights(name) for name in list_pretrained()]  # may be none yet
    for index, bundle in enumerate(bundles):
        directory = bundle.save_pretrained(tmp_path / f"bundle-{index}")
        assert {"model.safetensors", "config.json", "README.md"} <= set(os.listdir(directory))
        loaded = WeightsBundle.from_pretrained(directory)
        assert_same_bundle(loaded, bundle)
        assert loaded.name == bundle.name
        assert_same_updates(bundle, loaded)


# ---------------------------------------------------------------------------------------------
# Errors while offline: each by type and message


def test_missing_repo_offline_names_repo_and_what_works(cache, monkeypatch):
    write_snapshot(cache, SHA_A, make_bundle(0))  # another repo is cached; this one is not
    for options in ({"local_files_only": True}, {}):
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", not options)
        with pytest.raises(WeightsNotFoundError) as info:
            LearnedLSTMOptim([torch.nn.Parameter(torch.zeros(2))], weights="org/missing",
                             cache_dir=cache, **options)
        message = str(info.value)
        for phrase in ("'org/missing'", "offline", "not cached", "bundled name",
                       "local path", "downloading the repo first"):
            assert phrase in message, (phrase, message)
        assert isinstance(info.value, FileNotFoundError)
        assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_revision_offline(cache, online):
    write_snapshot(cache, SHA_A, make_bundle(0))
    with pytest.raises(WeightsNotFoundError, match=r"revision 'v9'.*not in the huggingface_hub"):
        resolve_weights(REPO, revision="v9", cache_dir=cache, local_files_only=True)


def test_cached_snapshot_without_config_offline(cache, online):
    snapshot = write_snapshot(cache, SHA_A, make_bundle(0))
    (snapshot / "config.json").unlink()
    with pytest.raises(WeightsNotFoundError, match="has model.safetensors but no config.json"):
        resolve_weights(REPO, cache_dir=cache, local_files_only=True)


def _truncate(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def _garbage(folder):
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)


def _foreign(folder):
    save_file({"encoder.weight": torch.ones(3, 3)}, str(folder / "model.safetensors"))


def _pickle(folder):
    torch.save({"fc.head.weight": torch.ones(1)}, str(folder / "model.safetensors"))


def _not_json(folder):
    (folder / "config.json").write_text("{not json")


def _unknown_field(folder):
    config = json.loads((folder / "config.json").read_text())
    config["extra"] = 1
    (folder / "config.json").write_text(json.dumps(config))


def _newer_version(folder):
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = 99
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("damage, error, phrase", [
    (_truncate, WeightsFormatError, "not a readable safetensors file"),
    (_garbage, WeightsFormatError, "not a readable safetensors file"),
    (_foreign, WeightsFormatError, "Is it the safetensors of some other model?"),
    (_pickle, WeightsFormatError, "never unpickles"),
    (_not_json, ConfigError, "is not valid JSON"),
    (_unknown_field, ConfigError, "unknown fields ['extra']"),
    (_newer_version, ConfigError, "upgrade learned_optim"),
])
def test_damaged_cache_gives_the_same_errors_as_local_files(cache, tmp_path, online, damage,
                                                             error, phrase):
    bundle = make_bundle(0)
    snapshot = write_snapshot(cache, SHA_A, bundle)
    local = bundle.save_pretrained(tmp_path / "local").resolve()
    damage(snapshot)
    damage(local)
    with pytest.raises(error) as from_local:
        resolve_weights(str(local))
    with pytest.raises(error) as from_hub:
        LearnedLSTMOptim([torch.nn.Parameter(torch.zeros(2))], weights=REPO, cache_dir=cache,
                         local_files_only=True)
    assert phrase in str(from_hub.value)
    assert str(from_hub.value).replace(str(snapshot), "<DIR>") == \
        str(from_local.value).replace(str(local), "<DIR>")


def test_safetensors_whose_header_length_looks_like_a_pickle_still_loads(tmp_path):
    """The u64 header length of a safetensors file may start with 0x80 (pickle's magic)."""
    for padding in range(256):
        bundle = make_bundle(0, provenance={"note": "x" * padding})
        folder = bundle.save_pretrained(tmp_path / "b")
        if (folder / "model.safetensors").read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no padding gave a header length starting with 0x80")
    assert load_weights(folder / "model.safetensors").fingerprint() == bundle.fingerprint()


# ---------------------------------------------------------------------------------------------
# Errors from the Hub itself, raised by huggingface_hub's real code against a local fake Hub


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers every request with 404 and the ``X-Error-Code`` the path asks for."""

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        code = next((c for c in ("RepoNotFound", "RevisionNotFound", "EntryNotFound", "GatedRepo")
                     if c.lower() in self.path.lower()), "RepoNotFound")
        self.send_response(403 if code == "GatedRepo" else 404)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(monkeypatch, online):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    huggingface_hub.close_session()  # a client made earlier may hold other proxy settings
    yield endpoint
    server.shutdown()
    server.server_close()
    huggingface_hub.close_session()


@pytest.mark.parametrize("repo_id, revision, phrase", [
    ("org/reponotfound", None, "no Hub repo 'org/reponotfound'"),
    ("org/name", "revisionnotfound", "has no revision 'revisionnotfound'"),
    ("org/entrynotfound", None, "has no model.safetensors: it is not a learned_optim"),
    ("org/gatedrepo", None, "is gated"),
])
def test_hub_errors_become_clear_weights_errors(fake_hub, cache, repo_id, revision, phrase):
    with pytest.raises(WeightsNotFoundError, match=phrase.replace("(", r"\(")):
        resolve_weights(repo_id, revision=revision, cache_dir=cache)


def test_unreachable_hub_error_says_what_works():
    error = huggingface_hub.utils.LocalEntryNotFoundError("connection refused")
    with pytest.raises(WeightsNotFoundError, match="cannot reach the Hugging Face Hub.*bundled"):
        hub._raise_translated(error, repo_id=REPO, filename="model.safetensors",
                              revision=None, offline=False)


# ---------------------------------------------------------------------------------------------
# Publishing: everything up to the upload


def test_upload_folder_holds_weights_config_and_card(tmp_path):
    bundle = make_bundle(3, conv=True, provenance=PROVENANCE)
    folder = hub.prepare_upload_folder(bundle, tmp_path / "upload", repo_id="me/my-optim")
    assert sorted(os.listdir(folder)) == sorted(hub.UPLOAD_FILES)
    assert_same_bundle(load_weights(folder), bundle)
    card = huggingface_hub.ModelCard.load(folder / "README.md")  # the Hub's own parser
    assert card.data.library_name == "learned_optim"
    assert {"learned-optimizer", "pytorch", "optimizer"} <= set(card.data.tags)
    text = card.text
    assert "arXiv:1606.04474" in text and "Andrychowicz" in text
    assert "from learned_optim import LearnedLSTMOptim\n" \
           "optimizer = LearnedLSTMOptim(model.parameters(), weights=\"me/my-optim\")" in text
    for value in ("`quadratic`", PROVENANCE["command"], "- Seeds: `3`", "validation_meta_loss",
                  "`0.125`", bundle.fingerprint(), "| `conv` | 8 | 2 | `clamped` gradient, p=5 | additive | 0.01 |"):
        assert value in text, value


def test_model_card_says_not_recorded_when_provenance_is_missing():
    text = model_card_text(make_bundle(0, provenance={"task": "digits-mlp"}))
    assert "- Task: `digits-mlp`" in text
    for field in ("Seeds", "Epochs"):
        assert f"- {field}: {NOT_RECORDED}" in text
    assert f"Command:\n\n{NOT_RECORDED}" in text and f"Metrics:\n\n{NOT_RECORDED}" in text
    # the MetaTrainer's layout: the task as {"name", **settings}, a description, a version
    trainer = model_card_text(make_bundle(0, provenance={
        "task": {"name": "quadratic", "dim": 10}, "description": "random 10-d quadratics",
        "learned_optim_version": "0.1.0", "seed": 0}))
    assert '- Task: `quadratic` with `{"dim": 10}`' in trainer
    assert "- Description: `random 10-d quadratics`" in trainer
    assert "- learned_optim version: `0.1.0`" in trainer and "- Seeds: `0`" in trainer
    empty = model_card_text(WeightsBundle({"fc": LSTMOptimizerNet(seed=0)}))
    assert "weights=\"path/to/this/folder\"" in empty and "# learned_optim weights" in empty
    assert f"Provenance: {NOT_RECORDED}" in empty


def test_model_card_architecture_names_the_inputs_of_each_net():
    from learned_optim import LSTMOptimizerConfig

    paper = model_card_text(WeightsBundle({"fc": LSTMOptimizerNet(seed=0)}))
    assert "| `fc` | 20 | 2 | `log_sign` gradient, p=10 | additive | 0.1 |" in paper
    config = LSTMOptimizerConfig(features="adaptive", update="direction_magnitude",
                                 output_scale=0.01, parameter_feature=True)
    text = model_card_text(WeightsBundle({"fc": LSTMOptimizerNet(config, seed=0)}))
    assert ("| `fc` | 20 | 2 | adaptive (gradient and 3 momenta over RMS) and the parameter "
            "value | direction x exp(1 * magnitude) | 0.01 |") in text


def test_push_to_hub_goes_through_huggingface_hub(monkeypatch):
    """Offline, the first request (create_repo) is refused by huggingface_hub itself."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="offline mode is enabled"):
        make_bundle(0).push_to_hub("me/my-optim")
    with pytest.raises(ValueError, match="plain repo id"):
        make_bundle(0).push_to_hub("me/my-optim@main")


# ---------------------------------------------------------------------------------------------
# Only hub.py imports huggingface_hub


def _imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            yield from (arg.value for arg in node.args if isinstance(arg, ast.Constant))


def test_only_hub_module_imports_huggingface_hub():
    offenders = [str(path.relative_to(PACKAGE_DIR)) for path in sorted(PACKAGE_DIR.rglob("*.py"))
                 if path.name != "hub.py" or path.parent != PACKAGE_DIR
                 if any(str(name).split(".")[0] == "huggingface_hub"
                        for name in _imported_modules(path))]
    assert offenders == []
    assert "huggingface_hub" in set(_imported_modules(PACKAGE_DIR / "hub.py"))


def test_import_and_save_do_not_import_huggingface_hub(tmp_path):
    code = (
        "import sys, learned_optim, learned_optim.__main__\n"
        "from learned_optim import LSTMOptimizerNet, WeightsBundle, load_weights\n"
        f"WeightsBundle({{'fc': LSTMOptimizerNet(seed=0)}}).save_pretrained({str(tmp_path)!r})\n"
        f"load_weights({str(tmp_path)!r})\n"
        "assert 'huggingface_hub' not in sys.modules, 'huggingface_hub was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# CLI


def run_cli(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "learned_optim", *map(str, args)],
                          capture_output=True, text=True, env=full_env, timeout=120)


def test_cli_registry_is_extensible():
    assert {"list", "export"} <= set(COMMANDS)
    assert all(callable(entry.run) and callable(entry.configure) for entry in COMMANDS.values())


def test_cli_list_empty_and_with_a_bundle(tmp_path, monkeypatch, capsys):
    bundled = list_pretrained()
    assert main(["list"]) == 0
    output = capsys.readouterr().out
    if bundled:
        assert all(name in output for name in bundled)
    else:
        assert "no bundled learned optimizers" in output
    # a package whose pretrained/ holds one bundle
    make_bundle(0, conv=True, provenance=PROVENANCE).save_pretrained(tmp_path / "toy")
    monkeypatch.setattr(learned_optim.weights, "_pretrained_root", lambda: tmp_path)
    assert main(["list"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("toy") and "routes conv,fc" in line
    assert "task quadratic" in line and "seed 3," in line and "validation_meta_loss=0.125" in line


def test_cli_export_then_load_back_identically(tmp_path):
    bundle = make_bundle(4, conv=True, provenance=PROVENANCE)
    source = bundle.save_pretrained(tmp_path / "source")
    result = run_cli("export", source, tmp_path / "out", "--repo-id", "me/my-optim")
    assert result.returncode == 0, result.stderr
    assert bundle.fingerprint() in result.stdout
    assert sorted(os.listdir(tmp_path / "out")) == sorted(hub.UPLOAD_FILES)
    assert_same_bundle(load_weights(tmp_path / "out"), bundle)
    assert 'weights="me/my-optim"' in (tmp_path / "out" / "README.md").read_text()


def test_cli_export_every_bundled_optimizer(tmp_path, capsys):
    for name in list_pretrained():  # none yet is fine: nothing to export
        assert main(["export", name, str(tmp_path / name)]) == 0
        assert_same_bundle(WeightsBundle.from_pretrained(tmp_path / name), resolve_weights(name))


def test_cli_export_repo_id_offline_via_environment(cache, tmp_path):
    bundle = make_bundle(5, provenance=PROVENANCE)
    write_snapshot(cache, SHA_A, bundle, blobs=True)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    result = run_cli("export", REPO, tmp_path / "out", env=env)
    assert result.returncode == 0, result.stderr
    loaded = load_weights(tmp_path / "out")
    assert loaded.fingerprint() == bundle.fingerprint() and loaded.name == f"{REPO}@{SHA_A}"
    missing = run_cli("export", "org/missing", tmp_path / "none", env=env)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: cannot load Hub repo 'org/missing'")
    assert "Traceback" not in missing.stderr and not (tmp_path / "none").exists()
