"""A tuned lens's files and where to find them: its config, its two formats, and the tuned-lens Space.

minigpt writes `lens.safetensors` + `config.json` (tuned-lens' keys plus "kind" and "format":
"minigpt"). It also reads and writes tuned-lens' own `config.json` + `params.pt`, which is the one
exception to "weights load only from safetensors": `params.pt` is a pickle, so it is read with
`torch.load(weights_only=True)` only, the restricted unpickler that builds tensors and plain
containers and refuses anything that would run code.

The lens itself (`TunedLens`) is in tuned.py, its training in tuned_train.py; both read their files
through here, so neither imports the other.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from .errors import CheckpointError, LensError
from .files import load_pt, read_json_object
from .sources import split_revision

if TYPE_CHECKING:
    from .model import GPT

Kind = Literal["tuned", "probe"]
KINDS: tuple[Kind, ...] = ("tuned", "probe")
LENS_FILE = "lens.safetensors"  # minigpt's format
PARAMS_FILE = "params.pt"  # tuned-lens' format (a torch.save pickle)
CONFIG_FILE = "config.json"
# tuned-lens' TunedLensConfig fields, in its order; minigpt adds "kind" and "format".
TUNED_LENS_KEYS = ("base_model_name_or_path", "d_model", "num_hidden_layers", "bias",
                   "base_model_revision", "unembed_hash", "lens_type")  # fmt: skip
LENS_TYPE = "linear_tuned_lens"

# The published lenses: the Hugging Face *Space* AlignmentResearch/tuned-lens, folder lens/<model id>/
# (e.g. lens/gpt2/config.json + params.pt). TUNED_LENS_REPO_ID and TUNED_LENS_REPO_TYPE override
# the repo, as in tuned-lens' own loader.
SPACE_REPO_ID = "AlignmentResearch/tuned-lens"
SPACE_REPO_TYPE = "space"
SPACE_FOLDER = "lens"
# Names that the Space files under another id: the OpenAI checkpoints predate the
# openai-community/ organisation, so their lenses sit under the bare names.
LENS_IDS = {
    "openai-community/gpt2": "gpt2", "openai-community/gpt2-medium": "gpt2-medium",
    "openai-community/gpt2-large": "gpt2-large", "openai-community/gpt2-xl": "gpt2-xl",
    "distilbert/distilgpt2": "distilgpt2",
}  # fmt: skip
LENS_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# ----------------------------------------------------------------------------
# The config


@dataclass(frozen=True)
class TunedLensConfig:
    """A lens's config.json: tuned-lens' `TunedLensConfig` keys, in its order, plus minigpt's `kind`."""

    base_model_name_or_path: str | None
    d_model: int
    num_hidden_layers: int
    bias: bool = True
    base_model_revision: str | None = None
    unembed_hash: str | None = None  # tuned-lens' hash of W_E (see `unembed_hash`); None: not recorded
    lens_type: str = LENS_TYPE
    kind: Kind = "tuned"  # minigpt's: "probe" files hold L + 1 maps and exist in minigpt's format only

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LensError(f"unknown lens kind {self.kind!r}; choose 'tuned' or 'probe'")
        for key in ("d_model", "num_hidden_layers"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LensError(f"{key} must be a positive integer, got {value!r}")
        if not isinstance(self.bias, bool):
            raise LensError(f"bias must be true or false, got {self.bias!r}")
        if self.lens_type != LENS_TYPE:
            raise LensError(f"lens_type {self.lens_type!r} is not supported; minigpt reads {LENS_TYPE!r} lenses")

    def to_dict(self, format: Literal["minigpt", "tuned-lens"] = "minigpt") -> dict[str, Any]:
        """config.json's content: tuned-lens' keys, plus "kind" and "format" in minigpt's format."""
        config = {key: getattr(self, key) for key in TUNED_LENS_KEYS}
        if format == "minigpt":
            config.update(kind=self.kind, format="minigpt")
        return config

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | str = "config.json") -> TunedLensConfig:
        """Read a parsed config.json (either format), naming the file in every error."""
        base = data.get("base_model_name_or_path")
        fields = {key: data[key] for key in TUNED_LENS_KEYS[1:] if data.get(key) is not None}
        try:
            return cls(base if isinstance(base, str) else None, **{"d_model": None, "num_hidden_layers": None, **fields},
                       kind=data.get("kind", "tuned"))  # fmt: skip
        except (LensError, TypeError) as e:
            raise CheckpointError(f"{path}: {e}; is this a tuned lens config?") from e


def unembed_hash(model: GPT) -> str:
    """tuned-lens' `Unembed.unembedding_hash`: sha256 of W_E (V, C) as float32, printed by numpy to 1 decimal.

    numpy prints a large array as its corners only, so this is cheap. It is the same for minigpt's
    `wte.weight` and transformers' `lm_head.weight` (tied). The print options are pinned to numpy's
    defaults, which tuned-lens relies on.
    """
    W = model.wte.weight.detach().to("cpu", torch.float32).numpy()
    with np.printoptions(precision=1, threshold=1000, edgeitems=3, linewidth=75, suppress=False,
                         floatmode="maxprec", sign="-", legacy=False):  # fmt: skip
        return hashlib.sha256(np.array_str(W, precision=1).encode()).hexdigest()


# ----------------------------------------------------------------------------
# Reading the files


@dataclass(frozen=True)
class LensFiles:
    """Where a lens's two files are: config.json and lens.safetensors or params.pt."""

    config: Path
    weights: Path


def lens_files_in(folder: Path) -> LensFiles | None:
    """The lens files a folder holds, in whichever format; None if it holds no lens at all."""
    ours, theirs, config = folder / LENS_FILE, folder / PARAMS_FILE, folder / CONFIG_FILE
    if ours.is_file() and theirs.is_file():
        raise CheckpointError(
            f"{folder} holds both {LENS_FILE} and {PARAMS_FILE}; keep one lens per folder (the format is told by its file)"
        )
    weights = ours if ours.is_file() else theirs if theirs.is_file() else None
    if weights is None:
        return None
    if not config.is_file():
        raise CheckpointError(f"{folder} has {weights.name} but no {CONFIG_FILE}; a lens needs both (copy its config.json beside it)")
    return LensFiles(config, weights)


def no_lens_message(folder: Path) -> str:
    return (
        f"{folder} holds no lens: expected {LENS_FILE} + {CONFIG_FILE} (minigpt's format, written by lens.save) "
        f"or {CONFIG_FILE} + {PARAMS_FILE} (tuned-lens' format); train one with `minigpt tune` or give a hub name like 'gpt2'"
    )


def read_lens_config(path: Path) -> dict[str, Any]:
    return read_json_object(path, "the lens's JSON config", CheckpointError)


def read_safetensors_lens(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise CheckpointError(f"{path} is not a valid safetensors file ({e}); it may be truncated: save or copy it again") from e
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def read_params_pt(path: Path) -> dict[str, Any]:
    """tuned-lens' params.pt, through torch's restricted unpickler only (`files.load_pt`)."""
    state = load_pt(path, "params.pt")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not the state dict tuned-lens saves "
            "({'0.weight': tensor, '0.bias': tensor, ...}); is it a tuned-lens params.pt?"
        )
    return state


# ----------------------------------------------------------------------------
# Names on the hub


def lens_id(name: str) -> str:
    """The folder name of a model's lens on the tuned-lens Space: minigpt's presets and their hub ids map
    to the bare OpenAI names ("openai-community/gpt2" -> "gpt2"); other ids are used as they are."""
    return LENS_IDS.get(name, name)


def space_repo() -> tuple[str, str]:
    """The repo holding the published lenses: (repo_id, repo_type), honouring tuned-lens' two variables."""
    return (os.environ.get("TUNED_LENS_REPO_ID") or SPACE_REPO_ID, os.environ.get("TUNED_LENS_REPO_TYPE") or SPACE_REPO_TYPE)


def resolve_lens(path_or_id: str | os.PathLike) -> LensFiles:
    """A lens's files: a local folder (or one of its files) that holds a lens, else a name on the tuned-lens Space.

    As in tuned-lens, a local folder wins only if it holds the lens files: a folder named like a
    hub name that holds something else (a `./gpt2` checkpoint, say) is passed over for the hub.
    A name shaped like a path (`./lenses/x`, `/tmp/x`, `~/x`, `x.pt`) that does not exist is named as such.
    """
    path = Path(path_or_id).expanduser()
    name = str(path_or_id)
    if path.is_file():
        if path.name not in (LENS_FILE, PARAMS_FILE, CONFIG_FILE):
            raise LensError(
                f"{name} is a file, not a lens: pass the folder that holds {CONFIG_FILE} and {LENS_FILE} "
                f"(or {PARAMS_FILE}), or a hub name like 'gpt2'"
            )
        path = path.parent
    if path.is_dir():
        files = lens_files_in(path)
        if files is not None:
            return files
        if path_shaped(name) or not LENS_NAME.match(name):
            raise CheckpointError(no_lens_message(path))
    elif path_shaped(name):
        raise LensError(f"{name} does not exist (nothing at {path.absolute()}); give the folder of a lens "
                        "(written by `minigpt tune` or lens.save), or a hub name like 'gpt2'")  # fmt: skip
    base, revision = split_revision(name) if "@" in name else (name, None)
    if not LENS_NAME.match(base):
        raise LensError(
            f"no lens at {name!r}: it is not an existing folder, nor a name on the tuned-lens Space "
            "(e.g. 'gpt2', 'gpt2-xl', 'openai-community/gpt2'); train one with `minigpt tune` and pass its folder"
        )
    return hub_lens_files(base, revision)


def path_shaped(name: str) -> bool:
    """Whether a lens name was meant as a local path (a hub name never starts with '.', '/' or '~')."""
    return name.startswith((".", "/", "~", "\\")) or "\\" in name or name.endswith((".pt", ".safetensors", ".json"))


def hub_lens_files(name: str, revision: str | None = None) -> LensFiles:
    """Fetch `lens/<name>/` of the tuned-lens Space into the standard HF cache, or find it there.

    The name goes to the hub as given, except minigpt's preset hub ids, which the Space files under
    the bare OpenAI names (`lens_id`); a missing folder says so. config.json comes first: its
    "format" says which weights file to fetch.
    """
    from .sources import cache_only, hub_file

    repo_id, repo_type = space_repo()
    resource = lens_id(name)
    folder = f"{SPACE_FOLDER}/{resource}"
    mapped = f" (minigpt looks for {name!r} under {folder}/, the Space's folder for that model)" if resource != name else ""
    only_cache = cache_only()
    offline_hint = (
        f"{mapped.strip() + '; ' if mapped else ''}on a machine with network, download https://huggingface.co/spaces/{SPACE_REPO_ID}/tree/main/{folder} "
        "(config.json and params.pt) and pass their folder instead of the name"
    )
    missing_hint = (
        f"there is no lens {name!r}{mapped}; see https://huggingface.co/spaces/{SPACE_REPO_ID}/tree/main/{SPACE_FOLDER} "
        "for the published ones, or train one with `minigpt tune` (check TUNED_LENS_REPO_ID if you set it)"
    )

    def fetch(filename: str) -> Path:
        return hub_file(repo_id, filename, repo_type=repo_type, revision=revision, subfolder=folder,
                        cache_only=only_cache, offline_hint=offline_hint, missing_hint=missing_hint)  # type: ignore[return-value]

    config = fetch(CONFIG_FILE)
    weights_name = LENS_FILE if read_lens_config(config).get("format") == "minigpt" else PARAMS_FILE
    return LensFiles(config, fetch(weights_name))
