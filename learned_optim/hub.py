"""Hugging Face Hub: load learned optimizers by repo id, publish them with a model card.

This is the only module of learned_optim that imports huggingface_hub, and nothing imports it
until a Hub repo id is used (``weights="org/name"``) or :func:`push_to_hub` is called.

A Hub repo of learned optimizer weights holds the folder :meth:`WeightsBundle.save_pretrained`
writes: ``model.safetensors``, ``config.json`` and a model card ``README.md``. Downloads go
through huggingface_hub's cache (``cache_dir``, default ``HF_HUB_CACHE``), so a repo loaded
once loads again offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.utils import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from . import __version__
from .errors import WeightsNotFoundError
from .model_card import MODEL_CARD_FILE, write_model_card
from .weights import CONFIG_FILE, WEIGHTS_FILE, list_pretrained, load_weights

if TYPE_CHECKING:
    from .weights import WeightsBundle

__all__ = ["load_from_hub", "push_to_hub", "prepare_upload_folder", "write_model_card",
           "split_revision", "UPLOAD_FILES"]

#: The files a Hub repo of learned optimizer weights holds (and the only ones uploaded).
UPLOAD_FILES = (WEIGHTS_FILE, CONFIG_FILE, MODEL_CARD_FILE)
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


# ---------------------------------------------------------------------------------------------
# Loading


def load_from_hub(repo_id: str, *, revision: str | None = None,
                  cache_dir: str | os.PathLike | None = None,
                  local_files_only: bool | None = None) -> "WeightsBundle":
    """Download (or find in the cache) a weights bundle on the Hub and load it strictly.

    Args:
        repo_id: ``"org/name"``, optionally ``"org/name@revision"``.
        revision: a branch, tag or commit sha (default ``"main"``).
        cache_dir: the huggingface_hub cache folder (default ``HF_HUB_CACHE``).
        local_files_only: never touch the network; also implied by ``HF_HUB_OFFLINE=1``.

    Returns:
        The bundle, named ``"org/name@<commit sha>"``: the name pins the exact commit, so an
        optimizer ``state_dict`` says which revision made it, and the name loads it again.

    Raises:
        WeightsNotFoundError: the repo, revision or a file is missing, the Hub cannot be
            reached, or the machine is offline and the repo is not cached.
        WeightsFormatError, ConfigError: the files are corrupted, foreign or invalid (exactly
            as for a local folder, see :func:`learned_optim.load_weights`).
    """
    repo_id, revision = split_revision(repo_id, revision)
    offline = bool(local_files_only) or bool(constants.HF_HUB_OFFLINE)
    options = dict(cache_dir=cache_dir, local_files_only=offline,
                   library_name="learned_optim", library_version=__version__)
    weights_path = _download(repo_id, WEIGHTS_FILE, revision, offline, options)
    commit = _commit_of(weights_path)
    # Fetch the config at the commit the weights came from, so both files match even if the
    # branch moves between the two calls.
    config_path = _download(repo_id, CONFIG_FILE, commit or revision, offline, options)
    directory = Path(weights_path).parent
    if Path(config_path).parent != directory:  # only with a cache laid out by hand
        raise WeightsNotFoundError(
            f"Hub repo {repo_id!r}: {WEIGHTS_FILE} and {CONFIG_FILE} resolved to different "
            f"folders ({str(directory)!r}, {str(Path(config_path).parent)!r}); delete the "
            f"cached repo under {cache_dir or constants.HF_HUB_CACHE!r} and download it again")
    return load_weights(directory, name=f"{repo_id}@{commit}" if commit else repo_id)


def split_revision(repo_id: str, revision: str | None = None) -> tuple[str, str | None]:
    """Split ``"org/name@rev"`` into ``("org/name", "rev")``; ``revision`` must agree."""
    name, sep, pinned = repo_id.partition("@")
    if not sep:
        return repo_id, revision
    if not pinned:
        raise ValueError(f"{repo_id!r} ends with '@' but names no revision; write "
                         "'org/name@<branch, tag or commit sha>' or drop the '@'")
    if revision is not None and revision != pinned:
        raise ValueError(f"{repo_id!r} pins revision {pinned!r} but revision={revision!r} was "
                         "also given; pass only one of them")
    return name, pinned


def _download(repo_id: str, filename: str, revision: str | None, offline: bool,
              options: dict[str, Any]) -> str:
    """``hf_hub_download`` one file, turning huggingface_hub errors into ours."""
    try:
        return hf_hub_download(repo_id, filename, revision=revision, **options)
    except Exception as exc:  # noqa: BLE001 - every branch below re-raises
        _raise_translated(exc, repo_id=repo_id, filename=filename, revision=revision,
                          offline=offline)


def _commit_of(path: str) -> str | None:
    """The commit sha of a file in the cache: ``.../snapshots/<sha>/<file>``."""
    folder = Path(path).parent
    if folder.parent.name == "snapshots" and _COMMIT_SHA.match(folder.name):
        return folder.name
    return None


def _raise_translated(exc: Exception, *, repo_id: str, filename: str, revision: str | None,
                      offline: bool) -> NoReturn:
    """Re-raise a huggingface_hub error as a :class:`WeightsNotFoundError` saying what to do."""
    at = f" at revision {revision!r}" if revision else ""
    if isinstance(exc, LocalEntryNotFoundError):  # before EntryNotFoundError, its base class
        if offline:
            raise WeightsNotFoundError(_offline_message(repo_id, filename, revision)) from None
        raise WeightsNotFoundError(
            f"cannot reach the Hugging Face Hub to download {filename} of {repo_id!r}{at}, and "
            f"it is not in the local cache ({exc}). Check the network connection, or "
            f"{_alternatives()}") from exc
    if isinstance(exc, RevisionNotFoundError):
        raise WeightsNotFoundError(
            f"Hub repo {repo_id!r} has no revision {revision!r}; pass an existing branch, tag "
            "or commit sha as revision=, or leave it out for 'main'") from None
    if isinstance(exc, GatedRepoError):
        raise WeightsNotFoundError(
            f"Hub repo {repo_id!r} is gated: accept its conditions on huggingface.co and log "
            "in (`hf auth login` or the HF_TOKEN environment variable)") from None
    if isinstance(exc, RepositoryNotFoundError):
        raise WeightsNotFoundError(
            f"no Hub repo {repo_id!r}: it does not exist, or it is private and you are not "
            f"logged in (`hf auth login` or HF_TOKEN). Check the spelling, or "
            f"{_alternatives()}") from None
    if isinstance(exc, EntryNotFoundError):
        raise WeightsNotFoundError(
            f"Hub repo {repo_id!r}{at} has no {filename}: it is not a learned_optim weights "
            f"repo, which holds {', '.join(UPLOAD_FILES)} as written by "
            "WeightsBundle.save_pretrained() / push_to_hub()") from None
    if isinstance(exc, HFValidationError):
        raise WeightsNotFoundError(
            f"{repo_id!r} is not a valid Hub repo id or revision ({exc}); a repo id looks "
            "like 'org/name'") from None
    if isinstance(exc, (HfHubHTTPError, ConnectionError, TimeoutError)):
        raise WeightsNotFoundError(
            f"downloading {filename} of Hub repo {repo_id!r}{at} failed "
            f"({type(exc).__name__}: {exc}). Retry later, or {_alternatives()}") from exc
    raise exc


def _offline_message(repo_id: str, filename: str, revision: str | None) -> str:
    wanted = f"revision {revision!r}" if revision else "its 'main' revision"
    if filename != WEIGHTS_FILE:  # the weights were found, so the repo is cached but partly
        return (
            f"the cached snapshot {wanted} of Hub repo {repo_id!r} has {WEIGHTS_FILE} but no "
            f"{filename} (an interrupted or partial download), and the machine is offline "
            "(HF_HUB_OFFLINE=1 or local_files_only=True): download the repo again with network "
            f"access, or {_alternatives()}")
    return (
        f"cannot load Hub repo {repo_id!r}: the machine is offline (HF_HUB_OFFLINE=1 or "
        f"local_files_only=True) or the repo is not cached: {filename} of {wanted} is not in "
        f"the huggingface_hub cache. What works: {_alternatives(download=True)}")


def _alternatives(download: bool = False) -> str:
    bundled = list_pretrained()
    options = [f"a bundled name ({', '.join(map(repr, bundled)) if bundled else 'none yet'})",
               "a local path to a folder written by save_pretrained() or to a .safetensors file"]
    if download:
        options.append("downloading the repo first with network access (unset HF_HUB_OFFLINE "
                       "and pass local_files_only=False), or pass the cache_dir= that holds it")
    return "use " + "; ".join(options)


# ---------------------------------------------------------------------------------------------
# Publishing


def prepare_upload_folder(bundle: "WeightsBundle", directory: str | os.PathLike, *,
                          repo_id: str | None = None) -> Path:
    """Write the Hub-ready folder: ``model.safetensors``, ``config.json`` and ``README.md``.

    This is exactly what :func:`push_to_hub` uploads; ``repo_id`` goes into the card's usage.
    """
    directory = bundle.save_pretrained(directory)
    write_model_card(bundle, directory, repo_id=repo_id)
    return directory


def push_to_hub(bundle: "WeightsBundle", repo_id: str, *, private: bool | None = None,
                token: str | None = None, revision: str | None = None,
                commit_message: str | None = None, create_pr: bool = False) -> Any:
    """Create the Hub repo if needed and upload the bundle with its model card.

    Args:
        bundle: the weights to publish.
        repo_id: ``"org/name"``.
        private: make a newly created repo private (an existing repo keeps its visibility).
        token: a Hub token; default: the logged-in one (``hf auth login`` or ``HF_TOKEN``).
        revision: the branch to push to (default ``"main"``).
        commit_message: default ``"Upload learned optimizer <fingerprint>"``.
        create_pr: open a pull request instead of committing to the branch.

    Returns:
        huggingface_hub's ``CommitInfo`` (its ``.commit_url`` points at the new commit).

    The upload itself is huggingface_hub's code (``HfApi.create_repo`` + ``upload_folder``);
    the folder it sends is built by :func:`prepare_upload_folder`.
    """
    if "@" in repo_id:
        raise ValueError(f"push_to_hub takes a plain repo id 'org/name', got {repo_id!r}; pass "
                         "the branch as revision=")
    api = HfApi(token=token, library_name="learned_optim", library_version=__version__)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="learned_optim-upload-") as folder:
        prepare_upload_folder(bundle, folder, repo_id=repo_id)
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision,
            commit_message=commit_message or f"Upload learned optimizer {bundle.fingerprint()}",
            allow_patterns=list(UPLOAD_FILES), create_pr=create_pr)
