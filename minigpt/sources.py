"""Where files come from: the one place that turns a name into files on disk.

Checkpoints, tokenizers, tuned lenses and Jacobian-lens files are all found here, by one rule:

  1. an existing path is local;
  2. a name shipped inside the package ("shakespeare") is a bundled asset, never the hub;
  3. a preset ("gpt2", ...) or an `owner/name` id (optionally `@revision`) is a hub repo;
  4. a name shaped like a path that does not exist is a missing path, named as such;
  5. anything else is an unknown name, with the nearest preset suggested.

`hub_file` is the one function that fetches from the Hugging Face hub, and it carries the offline
messages: HF_HUB_OFFLINE, HF_ENDPOINT and HF_HOME are honoured, and when the hub does not answer
a quick probe only the cache is read, so an offline answer comes in seconds, not after retries.
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import HubError, ModelNameError

# The hub repositories behind the preset names.
HUB_REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}
# Models shipped inside the package: preset name -> folder under minigpt/assets/.
BUNDLED = {"shakespeare": "shakespeare"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Local:
    """An existing file or folder."""

    path: Path


@dataclass(frozen=True)
class Bundled:
    """A model shipped inside the package."""

    name: str
    folder: Path


@dataclass(frozen=True)
class Hub:
    """A repo on the Hugging Face hub, at a revision (None: the default branch)."""

    repo_id: str
    revision: str | None = None


Source = Local | Bundled | Hub


def presets_hint() -> str:
    return ", ".join([*HUB_REPOS, *(f"{name} (shipped with minigpt, offline)" for name in BUNDLED)])


def split_revision(name: str) -> tuple[str, str | None]:
    """'owner/name@rev' -> ('owner/name', 'rev'); a name without '@' has no revision."""
    base, at, revision = name.partition("@")
    if at and (not base or not revision):
        raise ModelNameError(f"{name!r} has an empty name or revision around '@'; write NAME@REVISION, e.g. gpt2@main")
    return base, (revision or None)


def where(name_or_path: str | os.PathLike) -> Source:
    """Where a checkpoint name points: a local path, a bundled model, or a hub repo (see the module docstring)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return Local(path)
    name = str(name_or_path)
    if name in BUNDLED:
        return Bundled(name, asset_path(BUNDLED[name]))
    base, revision = split_revision(name) if "@" in name and not looks_like_a_path(name) else (name, None)
    if base in HUB_REPOS:
        return Hub(HUB_REPOS[base], revision)
    if looks_like_a_path(name):
        raise ModelNameError(missing_path_message(name))
    if HUB_ID.match(base) and not base.endswith((".safetensors",) + PICKLE_SUFFIXES):
        return Hub(base, revision)
    nearest = difflib.get_close_matches(name.lower(), [*HUB_REPOS, *BUNDLED], n=1, cutoff=0.6)
    did_you_mean = f"did you mean {nearest[0]!r}? " if nearest else ""
    raise ModelNameError(
        f"unknown model {name!r}: {did_you_mean}it is not an existing path, a preset ({presets_hint()}), "
        "or a hub id like 'openai-community/gpt2'"
    )


def looks_like_a_path(name: str) -> bool:
    """Whether a name that exists nowhere was meant as a local path rather than a hub id.

    `owner/name` is also the shape of a hub id, so `weights/gpt2` counts as a path only when
    its parent folder (`weights/`) is here: then the user is pointing into it.
    """
    if name.startswith((".", "~", "/", "\\")) or "\\" in name:
        return True
    if name.endswith((".safetensors", ".json") + PICKLE_SUFFIXES):
        return True
    return "/" in name and Path(name).parent.is_dir()


def missing_path_message(name: str) -> str:
    """What to say about a checkpoint path that does not exist, and how to make it."""
    path = Path(name).expanduser()
    missing = f"{name} does not exist (nothing at {path.absolute()})"
    shipped = "or use the model shipped with minigpt, 'shakespeare'"
    if path.suffix in (".safetensors",) + PICKLE_SUFFIXES:
        return f"{missing}; check the file name, {shipped}"
    nearest = difflib.get_close_matches(path.name.lower(), list(HUB_REPOS), n=1, cutoff=0.6)
    preset = path.name if path.name in HUB_REPOS else nearest[0] if nearest else None
    default = Path("weights") / preset if preset else None  # where `minigpt download` puts it anyway
    command = f"minigpt download {preset or 'gpt2'}" + ("" if path == default else f" --dir {name}")
    for_example = "" if preset else "e.g. "
    return f"{missing}: make that folder with {for_example}`{command}` (on a machine with network), {shipped}"


def asset_path(*parts: str) -> Path:
    """A file shipped inside the minigpt package (located with importlib.resources, so any install works)."""
    return Path(str(importlib.resources.files("minigpt").joinpath("assets", *parts)))


# ----------------------------------------------------------------------------
# The hub


def http_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a server answers an HTTP HEAD request for `url` within `timeout` seconds.

    A TCP connect is not enough: a stalled proxy accepts connections, and huggingface_hub then
    retries for minutes. Any HTTP answer, an error status included, means the server is there.
    """
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def hub_reachable() -> bool:
    """Whether the hub answers within a few seconds.

    `huggingface_hub` retries an unreachable host for about 25 s (a stalled one for minutes) and
    logs each retry; asking first lets minigpt fail (or fall back to the cache) at once and quietly.
    """
    from huggingface_hub import constants

    return http_reachable(constants.ENDPOINT.rstrip("/") + "/api/models/openai-community/gpt2")


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (read by huggingface_hub at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cache_only() -> bool:
    """Whether to read only the Hugging Face cache: HF_HUB_OFFLINE is set, or the hub does not answer
    a quick probe. Ask once for all of a name's files: each probe can take seconds."""
    return hub_offline() or not hub_reachable()


def hub_file(
    repo_id: str,
    filename: str,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    subfolder: str | None = None,
    optional: bool = False,
    cache_only: bool | None = None,
    offline_hint: str = "pass a local folder instead of the name",
    missing_hint: str = "check the name",
) -> Path | None:
    """One file of a hub repo, fetched into the standard HF cache (shared with `transformers`) or found there.

    optional: return None when the repo has no such file (or it is not cached while offline).
    cache_only: read only the cache (default: when HF_HUB_OFFLINE is set or the hub does not answer).
    offline_hint: what to do without network (", or set HF_ENDPOINT to a mirror" is added unless
      HF_HUB_OFFLINE is set: then the user chose no hub). missing_hint: what to do when the file is not there.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = bool(constants.HF_HUB_OFFLINE)
    if cache_only is None:
        cache_only = offline or not hub_reachable()  # cache_only(), with HF_HUB_OFFLINE read once
    kind = "repo" if repo_type == "model" else repo_type
    what = f"{subfolder}/ of the {kind} {repo_id}" if subfolder else f"{repo_id}"
    if revision:
        what += f" at revision {revision}"
    no_network = offline_hint if offline else offline_hint + ", or set HF_ENDPOINT to a mirror"
    try:
        return Path(hf_hub_download(repo_id, filename, subfolder=subfolder, repo_type=repo_type, revision=revision,
                                    local_files_only=cache_only))  # fmt: skip
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise HubError(f"the hub has no accessible {kind} {repo_id!r} ({type(e).__name__}); {missing_hint}") from e
    except RevisionNotFoundError as e:
        raise HubError(f"{kind} {repo_id!r} has no revision {revision or 'main'!r}; {missing_hint}") from e
    except LocalEntryNotFoundError as e:  # not cached, and the hub may not (or cannot) be asked
        if optional:
            return None
        why = "HF_HUB_OFFLINE is set" if offline else f"the hub ({constants.ENDPOINT}) cannot be reached"
        raise HubError(f"cannot get {filename} of {what}: {why} and it is not in the cache; {no_network}") from e
    except EntryNotFoundError as e:
        if optional:
            return None
        raise HubError(f"{what} has no {filename}; {missing_hint}") from e
    except OSError as e:  # a network error mid-download, a full disk, ...
        raise HubError(f"downloading {filename} of {what} failed: {e}; try again, or {no_network}") from e
