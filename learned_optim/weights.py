"""Weights bundles: one LSTM optimizer net per route, saved as safetensors plus a JSON config.

A bundle directory holds

* ``model.safetensors``: every tensor of every route's net, keys prefixed by route
  (``fc.cells.0.weight_ih``, ``conv.head.bias``, ...). Its metadata repeats the JSON config, so
  the file alone is also a complete bundle.
* ``config.json``: ``{"format", "format_version", "name", "routes": {route: net config},
  "provenance": {...}}``, validated field by field on load.

Nothing is ever unpickled: weights load only through safetensors, configs only through ``json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_dumps

from . import __version__
from .errors import ConfigError, WeightsFormatError, WeightsNotFoundError
from .network import LSTMOptimizerConfig, LSTMOptimizerNet
from .routing import FC_ROUTE

__all__ = [
    "WeightsBundle",
    "load_weights",
    "list_pretrained",
    "resolve_weights",
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "learned_optim.weights"
FORMAT_VERSION = 1
_MAX_CONFIG_BYTES = 1 << 20
_CONFIG_FIELDS = ("format", "format_version", "name", "routes", "provenance")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
_REEXPORT = "re-export the weights with WeightsBundle.save_pretrained()"
_ROUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}(@[\w./-]{1,255})?$")


class WeightsBundle:
    """The nets of a learned optimizer, one per route, with a name and provenance.

    Args:
        nets: ``{route: LSTMOptimizerNet}``; must contain ``"fc"``.
        name: a human-readable name (bundled name, repo id or path).
        provenance: JSON-serialisable record of how the weights were made.

    Example:
        >>> bundle = WeightsBundle({"fc": LSTMOptimizerNet(seed=0)}, name="scratch")
        >>> bundle.routes
        ('fc',)
    """

    def __init__(self, nets: Mapping[str, LSTMOptimizerNet], *, name: str = "<in-memory>",
                 provenance: Mapping[str, Any] | None = None):
        if not isinstance(nets, Mapping) or not nets:
            raise WeightsFormatError("a weights bundle needs a non-empty {route: net} mapping")
        for route, net in nets.items():
            if not isinstance(route, str) or not _ROUTE_NAME.match(route):
                raise WeightsFormatError(
                    f"invalid route name {route!r}: use lowercase letters, digits and '_'")
            if not isinstance(net, LSTMOptimizerNet):
                raise TypeError(f"route {route!r} must map to an LSTMOptimizerNet, "
                                f"got {type(net).__name__}")
            broken = [key for key, value in net.named_parameters()
                      if not torch.isfinite(value).all()]
            if broken:
                raise WeightsFormatError(
                    f"the net of route {route!r} has NaN or inf in {broken}: every update "
                    "would be non-finite. Use finite weights (e.g. a checkpoint from before "
                    "training diverged)")
        if FC_ROUTE not in nets:
            raise WeightsFormatError(
                f"a weights bundle needs an {FC_ROUTE!r} net (the fallback route); "
                f"got routes {sorted(nets)}: add a net for {FC_ROUTE!r}")
        self.nets = dict(nets)
        self.name = str(name)
        self.provenance = dict(provenance or {})

    @property
    def routes(self) -> tuple[str, ...]:
        return tuple(sorted(self.nets))

    def tensors(self) -> dict[str, torch.Tensor]:
        """All weights as ``{"route.param": tensor}`` (detached, contiguous, on CPU)."""
        return {f"{route}.{key}": value.detach().cpu().contiguous()
                for route in self.routes
                for key, value in self.nets[route].state_dict().items()}

    def fingerprint(self) -> str:
        """A short SHA-256 of every tensor (names, dtypes, shapes and bytes) and config (its
        :meth:`~learned_optim.LSTMOptimizerConfig.identity_dict`: options the nets do not use
        are left out, so a newer learned_optim gives the same weights the same fingerprint)."""
        return self._fingerprint({route: self.nets[route].config.identity_dict()
                                  for route in self.routes})

    def known_fingerprints(self) -> set[str]:
        """:meth:`fingerprint`, the fingerprints that earlier versions of learned_optim gave
        these weights (they hashed every config field they knew) and, for nets with a
        ``departure_warmup``, the fingerprint of the same nets without it; an optimizer
        state_dict that records any of them belongs to these weights."""
        known = {self.fingerprint()}
        configs = {route: self.nets[route].config.earlier_identity_dicts() for route in self.routes}
        for forms in zip(*configs.values()):  # one version's configs of every route
            known.add(self._fingerprint(dict(zip(configs, forms))))
        if any(net.config.departure_warmup for net in self.nets.values()):
            # the same weights without the warmup keep the same state, which the warmup only
            # reads (its step count): a state saved by them goes on here, ramped from its t
            known.add(self.with_net_config(departure_warmup=0).fingerprint())
        return known

    def _fingerprint(self, routes_config: dict[str, Any]) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps(routes_config, sort_keys=True).encode())
        for key, value in sorted(self.tensors().items()):
            digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
            digest.update(value.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def with_net_config(self, *, name: str | None = None,
                        provenance: Mapping[str, Any] | None = None,
                        **changes: Any) -> "WeightsBundle":
        """A copy whose every net has the config fields ``changes`` (validated as any config)
        and the same tensors, e.g. ``bundle.with_net_config(departure_warmup=300)``; named
        ``name`` and with ``provenance`` where given, else this bundle's."""
        nets = {}
        for route, net in self.nets.items():
            config = LSTMOptimizerConfig.from_dict({**net.config.to_dict(), **changes})
            clone = LSTMOptimizerNet(config).to(next(net.parameters()).dtype)
            clone.load_state_dict(net.state_dict())
            nets[route] = clone.requires_grad_(next(net.parameters()).requires_grad)
        return WeightsBundle(nets, name=self.name if name is None else name,
                             provenance=self.provenance if provenance is None else provenance)

    def config_dict(self) -> dict[str, Any]:
        """The JSON config written next to the weights."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "routes": self._routes_config(),
            "provenance": self.provenance,
        }

    def _routes_config(self) -> dict[str, Any]:
        return {route: self.nets[route].config.to_dict() for route in self.routes}

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors``, ``config.json`` and a model card ``README.md`` atomically.

        Each file is written to a temporary file in the same folder, flushed to disk and moved
        into place with ``os.replace``, so an interrupted save leaves the previous files intact.
        The folder is Hub-ready; the card is regenerated from the bundle on every save.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config_text = json.dumps(self.config_dict(), indent=2, sort_keys=True)
        metadata = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
                    "config": config_text, "learned_optim_version": __version__}
        atomic_write_bytes(directory / WEIGHTS_FILE, safetensors_dumps(self.tensors(), metadata))
        atomic_write_bytes(directory / CONFIG_FILE, (config_text + "\n").encode())
        from .model_card import write_model_card  # no huggingface_hub import

        write_model_card(self, directory)
        return directory

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **hub_options: Any) -> "WeightsBundle":
        """Load from a local path, a bundled name or a Hub repo id (see :func:`resolve_weights`)."""
        return resolve_weights(source, **hub_options)

    def push_to_hub(self, repo_id: str, **options: Any) -> Any:
        """Upload to the Hub repo ``repo_id`` with a model card (see :func:`hub.push_to_hub`)."""
        from . import hub  # the only module that imports huggingface_hub

        return hub.push_to_hub(self, repo_id, **options)

    def __repr__(self) -> str:
        return (f"WeightsBundle(name={self.name!r}, routes={list(self.routes)}, "
                f"fingerprint={self.fingerprint()!r})")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temporary file and ``os.replace``.

    The temporary file lives in the same folder (so ``os.replace`` is an atomic rename) and is
    flushed to disk before the rename; the folder is fsynced after it, so the new name survives
    a power cut. A process killed at any point leaves either the previous file or the new one,
    never a mix; at worst a hidden ``.<name>.*.tmp`` file remains.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Loading


def load_weights(path: str | os.PathLike, *, name: str | None = None) -> WeightsBundle:
    """Load a bundle from a directory (``model.safetensors`` + ``config.json``) or a file.

    Raises:
        WeightsNotFoundError: the path does not exist or the directory has no weights.
        WeightsFormatError: pickle files, corrupted or foreign safetensors, bad keys/shapes.
        ConfigError: a malformed config, unknown/missing fields, wrong types, newer version.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsNotFoundError(f"no weights at {str(path)!r}: the path does not exist")
    if path.is_dir():
        weights_file, config_file = path / WEIGHTS_FILE, path / CONFIG_FILE
        if not weights_file.is_file():
            found = sorted(p.name for p in path.iterdir())[:10]
            raise WeightsNotFoundError(
                f"{str(path)!r} has no {WEIGHTS_FILE} (found {found}); a weights directory "
                f"holds {WEIGHTS_FILE} and {CONFIG_FILE}, as written by save_pretrained()")
        config = read_config_file(config_file) if config_file.is_file() else None
    else:
        weights_file, config = path, None
    _refuse_pickle(weights_file)
    tensors, metadata = _read_safetensors(weights_file)
    if "config" in metadata:
        # The config inside the weights file was written with the tensors in one atomic
        # replace, so it is the one that matches them; config.json (written next) may be stale
        # after an interrupted save, or hand-edited.
        embedded = parse_config(metadata["config"], source=str(weights_file))
        if config is not None and config != embedded:
            warnings.warn(
                f"{str(config_file)!r} does not match the config stored inside "
                f"{str(weights_file)!r} (an interrupted save, or an edit): using the one inside "
                f"{WEIGHTS_FILE}, which was written together with the weights. Save the bundle "
                "again (save_pretrained) to make them agree", RuntimeWarning, stacklevel=2)
        config = embedded
    elif config is None:
        raise WeightsFormatError(
            f"{str(weights_file)!r} is a safetensors file but not a learned_optim weights "
            "file (its metadata has no 'config'); save weights with "
            "WeightsBundle.save_pretrained() or pass the directory with its config.json")
    return bundle_from_tensors(tensors, config, name=name or config["name"],
                               source=str(weights_file))


def read_config_file(path: Path) -> dict[str, Any]:
    """Read and validate a ``config.json`` (size-limited JSON, never pickle)."""
    size = path.stat().st_size
    if size > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{str(path)!r} is {size} bytes; a weights config is at most "
                          f"{_MAX_CONFIG_BYTES} bytes. Is it the right file?")
    return parse_config(path.read_bytes(), source=str(path))


def parse_config(text: str | bytes, *, source: str) -> dict[str, Any]:
    """Parse and validate the JSON config of a bundle, naming the first problem found."""
    if len(text) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"the config in {source!r} exceeds {_MAX_CONFIG_BYTES} bytes. Is it "
                          "the right file?")
    try:
        config = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"the config in {source!r} is not valid JSON ({exc}); re-export the "
                          "weights with WeightsBundle.save_pretrained()") from None
    if not isinstance(config, dict):
        raise ConfigError(f"the config in {source!r} must be a JSON object, got "
                          f"{type(config).__name__}; {_REEXPORT}")
    unknown = sorted(set(config) - set(_CONFIG_FIELDS))
    missing = sorted(set(_CONFIG_FIELDS) - set(config))
    if unknown or missing:
        raise ConfigError(f"the config in {source!r} has unknown fields {unknown} and missing "
                          f"fields {missing}; expected {list(_CONFIG_FIELDS)}. {_REEXPORT}, "
                          "or upgrade learned_optim if it was written by a newer version")
    if config["format"] != FORMAT_NAME:
        raise ConfigError(f"the config in {source!r} has format {config['format']!r}, "
                          f"expected {FORMAT_NAME!r}: this is not a learned_optim weights config; "
                          "pass a folder written by WeightsBundle.save_pretrained()")
    version = config["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"the config in {source!r} has an invalid format_version {version!r}: "
                          f"expected a positive integer; {_REEXPORT}")
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"the config in {source!r} has format_version {version}, newer than this "
            f"learned_optim {__version__} reads ({FORMAT_VERSION}); upgrade learned_optim")
    if not isinstance(config["name"], str):
        raise ConfigError(f"the config in {source!r} has a non-string name "
                          f"{config['name']!r}; {_REEXPORT}")
    if not isinstance(config["provenance"], dict):
        raise ConfigError(f"the config in {source!r}: provenance must be a JSON object; "
                          f"{_REEXPORT}")
    routes = config["routes"]
    if not isinstance(routes, dict) or not routes:
        raise ConfigError(f"the config in {source!r}: routes must be a non-empty object "
                          f"{{route: net config}}; {_REEXPORT}")
    parsed = {}
    for route, net_config in routes.items():
        if not _ROUTE_NAME.match(route):
            raise ConfigError(f"the config in {source!r} has an invalid route name {route!r}: "
                              "use lowercase letters, digits and '_'")
        try:
            parsed[route] = LSTMOptimizerConfig.from_dict(net_config)
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"the config in {source!r}, route {route!r}: {exc}") from None
    config["routes"] = parsed
    return config


def _refuse_pickle(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(9)
    # A safetensors file starts with its header length (u64, little-endian) and then "{": that
    # length's first bytes can be 0x80 or "PK" by chance, so only other files are sniffed.
    sniffed = head[8:9] != b"{" and (head[:2] == b"PK" or head[:1] == b"\x80")
    if path.suffix.lower() in _PICKLE_SUFFIXES or sniffed:
        raise WeightsFormatError(
            f"{str(path)!r} looks like a pickle/torch.save checkpoint. learned_optim never "
            "unpickles files (they can run arbitrary code); load weights from a .safetensors "
            "file written by WeightsBundle.save_pretrained()")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises several types for bad headers/data
        raise WeightsFormatError(
            f"{str(path)!r} is not a readable safetensors file ({type(exc).__name__}: {exc}); "
            "it may be truncated or corrupted: re-download or re-export it") from None
    return tensors, metadata


def strip_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` whose key starts with ``prefix``, with the prefix removed."""
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


def bundle_from_tensors(tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any], *,
                        name: str, source: str) -> WeightsBundle:
    """Build nets from a validated config and load ``tensors`` into them strictly."""
    nets = {route: LSTMOptimizerNet(cfg) for route, cfg in config["routes"].items()}
    expected = {f"{route}.{key}": value for route, net in nets.items()
                for key, value in net.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise WeightsFormatError(
            f"{source!r} does not match its config (routes {sorted(nets)}): missing keys "
            f"{missing[:20]}, unexpected keys {unexpected[:20]}. Is it the safetensors of some "
            "other model? Load weights written by WeightsBundle.save_pretrained()")
    for key, value in tensors.items():
        want = expected[key]
        if value.shape != want.shape or value.dtype != want.dtype:
            raise WeightsFormatError(
                f"{source!r}: tensor {key!r} has shape {tuple(value.shape)} and dtype "
                f"{value.dtype}, expected {tuple(want.shape)} and {want.dtype} from the config; "
                f"{_REEXPORT}")
        if not torch.isfinite(value).all():
            raise WeightsFormatError(f"{source!r}: tensor {key!r} contains NaN or inf values; "
                                     "the weights are corrupted: re-download or re-export them")
    for route, net in nets.items():
        net.load_state_dict(strip_prefix(tensors, f"{route}."), strict=True)
        net.requires_grad_(False)
    return WeightsBundle(nets, name=name, provenance=config["provenance"])


# ---------------------------------------------------------------------------------------------
# Bundled weights and resolution


def _pretrained_root():
    try:
        return resources.files("learned_optim.pretrained")
    except ModuleNotFoundError:  # a source checkout on sys.path that was never pip-installed
        return Path(__file__).resolve().parent.parent / "pretrained"


def list_pretrained() -> list[str]:
    """Names of the weights bundles shipped inside the package (``pretrained/``)."""
    root = _pretrained_root()
    return sorted(entry.name for entry in root.iterdir()
                  if entry.is_dir() and entry.joinpath(WEIGHTS_FILE).is_file())


def _load_bundled(name: str) -> WeightsBundle:
    entry = _pretrained_root().joinpath(name)
    with resources.as_file(entry) as directory:
        return load_weights(directory, name=name)


def resolve_weights(weights: Any = "default", **hub_options: Any) -> WeightsBundle:
    """Turn the ``weights=`` argument of the optimizer into a :class:`WeightsBundle`.

    Accepted, in this order for strings: an existing local path (a bundle directory or a
    ``.safetensors`` file), a bundled name (:func:`list_pretrained`), then a Hugging Face Hub
    repo id ``"org/name"`` or ``"org/name@revision"`` (``hub_options``: ``revision``,
    ``cache_dir``, ``local_files_only``; see :func:`learned_optim.hub.load_from_hub`).
    Objects: a :class:`WeightsBundle`, an :class:`LSTMOptimizerNet` (used for every route) or
    a ``{route: net}`` mapping.
    """
    if isinstance(weights, WeightsBundle):
        return weights
    if isinstance(weights, LSTMOptimizerNet):
        return WeightsBundle({FC_ROUTE: weights})
    if isinstance(weights, Mapping):
        return WeightsBundle(weights)
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a name, path, repo id, LSTMOptimizerNet or "
                        f"WeightsBundle, got {type(weights).__name__}")
    text = os.fspath(weights)
    if Path(text).exists():
        return load_weights(text)
    bundled = list_pretrained()
    if text in bundled:
        return _load_bundled(text)
    if _REPO_ID.match(text) and not text.startswith((".", "/")):
        from . import hub  # the only module that imports huggingface_hub

        return hub.load_from_hub(text, **hub_options)
    raise WeightsNotFoundError(
        f"no learned optimizer weights named {text!r}: it is not an existing path, not a "
        f"bundled name (bundled: {bundled or 'none yet'}) and not a Hub repo id 'org/name'. "
        "Pass one of those, an LSTMOptimizerNet, or a WeightsBundle")
