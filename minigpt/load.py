"""From a name or a path to a loaded `GPT`: find the files, read them, check them strictly.

Accepted forms, tried in this order so that every name has one meaning:
  1. an existing path: a directory (config.json + model.safetensors [+ vocab.json, merges.txt])
     or a single `.safetensors` file (with the config.json beside it if there is one, else the
     config is inferred from the tensor shapes);
  2. "shakespeare": the small model shipped inside the package (offline, never asks the hub);
  3. a preset name ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2") or an
     `owner/name` hub id: fetched through `huggingface_hub` into the standard HF cache;
  4. anything else is an error that lists the presets (and the nearest one, for a typo).

A name shaped like a path whose folder does not exist (`weights/gpt2` when `weights/` is
here, `./x`, `~/x`, `x.safetensors`) is reported as a missing folder, not tried on the hub.

Weights are read from safetensors only. Pickle files (`.bin`, `.pt`) can run arbitrary
code when loaded, so minigpt refuses them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from . import sources
from .errors import CheckpointError, ConfigError, PickleCheckpointError
from .files import read_json_object, state_problems
from .model import GPT, GPTConfig
from .sources import BUNDLED, HUB_REPOS, PICKLE_SUFFIXES, Bundled, Hub, Local
from .tokenizer import write_tokenizer_files

# Official files store the causal mask as a buffer per layer (`h.{i}.attn.bias`,
# [1, 1, n_positions, n_positions]: "not really a bias, more of a mask") and some
# also `attn.masked_bias`. They are constants, not parameters; minigpt builds the mask itself.
MASK_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
# Reading a checkpoint that needs a dtype conversion goes this many bytes of the file at a time.
CONVERT_CHUNK_BYTES = 16 * 2**20


@dataclass(frozen=True)
class CheckpointFiles:
    """Where a checkpoint's files are. Only `weights` is required."""

    weights: Path
    config: Path | None = None
    vocab: Path | None = None
    merges: Path | None = None


# ----------------------------------------------------------------------------
# Names and paths to files


def resolve(name_or_path: str | os.PathLike, *, downloading: bool = False) -> CheckpointFiles:
    """Turn a preset, hub id, directory or `.safetensors` path into local files (downloading if needed).

    Which of them a name is, `sources.where` decides (the one rule for every kind of file).
    `downloading`: the caller is `minigpt download`, whose hints differ when the hub is out of reach.
    """
    source = sources.where(name_or_path)
    if isinstance(source, Local):
        return local_files(source.path)
    if isinstance(source, Bundled):
        return bundled_files(source.name)
    return hub_files(source.repo_id, downloading=downloading, revision=source.revision)


def bundled_files(name: str) -> CheckpointFiles:
    """The files of a model shipped inside the package (never the hub)."""
    folder = sources.asset_path(BUNDLED[name])
    files = CheckpointFiles(folder / "model.safetensors", folder / "config.json")
    if not (files.weights.is_file() and files.config.is_file()):
        raise CheckpointError(
            f"the shipped model {name!r} is missing from {folder}: minigpt was installed without its package "
            "data; reinstall it (pip install .)"
        )
    return files


def local_files(path: Path) -> CheckpointFiles:
    """The files of a local directory or single file, checked for presence and format.

    A single `.safetensors` file also uses the config.json and tokenizer files beside it, if any.
    """
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            raise PickleCheckpointError(pickle_message(path))
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path} is not a .safetensors file; minigpt loads weights from safetensors only")
        weights, folder = path, path.parent
    else:
        weights, folder = path / "model.safetensors", path
        if not weights.is_file():
            pickles = [p.name for p in sorted(path.iterdir()) if p.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise PickleCheckpointError(pickle_message(path / pickles[0]))
            if (path / "model.safetensors.index.json").exists():
                raise CheckpointError(f"{path} holds a sharded checkpoint; minigpt expects one model.safetensors file")
            raise CheckpointError(
                f"{path} has no model.safetensors; point minigpt at a directory with config.json and "
                "model.safetensors, or at a .safetensors file"
            )
    beside = lambda name: (folder / name) if (folder / name).is_file() else None  # noqa: E731
    return CheckpointFiles(weights, beside("config.json"), beside("vocab.json"), beside("merges.txt"))


def pickle_message(path: Path) -> str:
    return (
        f"refusing to load {path}: pickle checkpoints can run arbitrary code when opened. "
        "Convert it to safetensors (e.g. safetensors.torch.save_file(torch.load(path, weights_only=True), "
        "'model.safetensors')) or download the model's model.safetensors"
    )


# ----------------------------------------------------------------------------
# The hub


def offline_hint(repo_id: str, offline: bool, downloading: bool) -> str:
    """How to get a checkpoint without network (`sources.hub_file` adds the mirror, unless HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    name = next((preset for preset, repo in HUB_REPOS.items() if repo == repo_id), repo_id)
    fetch = f"run `minigpt download {name}` on a machine with network"
    if downloading:
        return f"{fetch} and copy the folder it writes to this machine"
    cached = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return (
        f"without network, use the model shipped with minigpt ('shakespeare', or --model shakespeare), "
        f"or {fetch} and pass its directory here instead of the name, or pass a directory from "
        f"transformers' cache (e.g. {cached}/<commit>)"
    )


def hub_download(
    repo_id: str, required: tuple[str, ...], optional: tuple[str, ...] = (), *, downloading: bool = False,
    revision: str | None = None,
) -> dict[str, Path | None]:
    """A checkpoint's files from a hub repo, through `sources.hub_file` (the hub is probed once for all of them)."""
    hint = offline_hint(repo_id, sources.hub_offline(), downloading)
    cache_only = sources.cache_only()
    missing = "minigpt needs config.json and model.safetensors"
    return {
        name: sources.hub_file(repo_id, name, revision=revision, optional=name in optional, cache_only=cache_only,
                               offline_hint=hint, missing_hint=missing)  # fmt: skip
        for name in required + optional
    }


def hub_files(repo_id: str, *, downloading: bool = False, revision: str | None = None) -> CheckpointFiles:
    """A hub repo's checkpoint files, fetched into the HF cache."""
    required, optional = ("config.json", "model.safetensors"), ("vocab.json", "merges.txt")
    got = hub_download(repo_id, required, optional, downloading=downloading, revision=revision)
    return CheckpointFiles(got["model.safetensors"], got["config.json"], got["vocab.json"], got["merges.txt"])


def download(name: str, directory: str | os.PathLike | None = None) -> Path:
    """Fetch a checkpoint (through the HF cache) and copy its files into `directory` (default `weights/NAME`).

    `vocab.json` + `merges.txt` come with it: the checkpoint's own, or for a shipped model GPT-2's
    (bundled with minigpt), so the folder is the official layout that transformers reads.
    """
    files = resolve(name, downloading=True)
    target = Path(directory) if directory is not None else Path("weights") / Path(name).name
    try:
        target.mkdir(parents=True, exist_ok=True)
        for src, dst in (
            (files.weights, "model.safetensors"),
            (files.config, "config.json"),
            (files.vocab, "vocab.json"),
            (files.merges, "merges.txt"),
        ):
            if src is not None and Path(src).resolve() != (target / dst).resolve():
                shutil.copyfile(src, target / dst)
        if name in BUNDLED:  # the shipped models use GPT-2's tokenizer, bundled with minigpt
            write_tokenizer_files(target)
    except OSError as e:
        raise CheckpointError(f"cannot write the checkpoint into {target}: {e}; choose another --dir") from e
    return target


# ----------------------------------------------------------------------------
# Reading the files


def read_config(path: Path) -> GPTConfig:
    """Parse a `config.json`."""
    fields = read_json_object(path, "the checkpoint's JSON config", ConfigError)
    try:
        return GPTConfig.from_dict(fields)
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from e


def open_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file except the mask buffers, keyed without the `transformer.` prefix.

    The tensors are memory-mapped, not copied: with `assign=True` they become the model's
    parameters, so loading needs about one file's worth of memory.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            stripped = [k.removeprefix("transformer.") for k in keys]
            if len(set(stripped)) != len(stripped):
                raise CheckpointError(f"{path} stores some tensors both with and without the 'transformer.' prefix")
            return {s: f.get_tensor(k) for k, s in zip(keys, stripped) if not MASK_BUFFER.match(s)}
    except SafetensorError as e:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({e}); it may be truncated or corrupt: download it again"
        ) from e
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def infer_config(tensors: dict[str, Tensor]) -> GPTConfig:
    """A config read off the tensor shapes, for a bare `.safetensors` file.

    The shapes fix everything except the number of heads. head_dim is 64 in every
    official GPT-2, so n_head = n_embd / 64; for any other head size pass a config.
    """
    for key in ("wte.weight", "wpe.weight"):
        if key not in tensors:
            raise CheckpointError(f"cannot infer a config: the file has no {key!r}; is it a GPT-2 checkpoint?")
    vocab_size, n_embd = tensors["wte.weight"].shape
    n_positions = tensors["wpe.weight"].shape[0]
    layers = {int(m.group(1)) for k in tensors if (m := re.match(r"^h\.(\d+)\.", k))}
    if not layers:
        raise CheckpointError("cannot infer a config: the file has no blocks (no 'h.0.*' tensors)")
    if n_embd % 64:
        raise CheckpointError(
            f"cannot infer n_head: n_embd={n_embd} is not a multiple of the official head size 64; "
            "put a config.json beside the file or pass config=GPTConfig(...)"
        )
    c_fc = tensors.get("h.0.mlp.c_fc.weight")
    n_inner = c_fc.shape[1] if c_fc is not None and c_fc.shape[1] != 4 * n_embd else None
    return GPTConfig(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd,
        n_layer=max(layers) + 1, n_head=n_embd // 64, n_inner=n_inner,
    )  # fmt: skip


def check_tensors(tensors: dict[str, Tensor], model: GPT, path: Path) -> dict[str, Tensor]:
    """Match the checkpoint's tensors to the model's parameters, strictly; return the state dict."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    lm_head = tensors.pop("lm_head.weight", None)
    problems = state_problems(tensors, expected)
    if problems:
        raise CheckpointError(
            f"{path} does not match the GPT-2 config ({model.config.n_layer} layers, n_embd {model.config.n_embd}, "
            f"vocab {model.config.vocab_size}): " + " | ".join(problems)
            + ". Check that config.json belongs to these weights (or remove it to infer the config)"
        )
    if lm_head is not None and not (lm_head.shape == tensors["wte.weight"].shape and torch.equal(lm_head, tensors["wte.weight"])):
        raise CheckpointError(
            f"{path}: lm_head.weight differs from wte.weight, but GPT-2 ties them; this is not a GPT-2 "
            "checkpoint minigpt can load (remove lm_head.weight if it is a stale copy)"
        )
    for k, v in tensors.items():
        if not v.dtype.is_floating_point:
            raise CheckpointError(f"{path}: tensor {k} has dtype {v.dtype}; GPT-2 weights are floating point")
    return tensors


def load_model(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    config: GPTConfig | None = None,
) -> GPT:
    """Load a GPT-2 checkpoint; see the module docstring for the accepted names.

    dtype defaults to float32 (the official checkpoints' precision), whatever the file holds: a
    float16 or bfloat16 file is upcast. device defaults to the CPU.

    Memory: a file already in the wanted dtype is memory-mapped and its tensors become the
    parameters, so the peak is about the file's size. A file that needs converting (float16 read
    as float32, say) is read a block at a time into the new float32 copy, each block through its
    own short-lived mapping, so the narrow file never sits in memory beside the copy: the peak is
    at most 1.25x the float32 size either way.
    """
    files = resolve(name_or_path)
    return load_files(files, device=device, dtype=dtype, config=config)


def load_files(
    files: CheckpointFiles,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    config: GPTConfig | None = None,
) -> GPT:
    """Build a `GPT` from already-local files (the memory rule is in `load_model`)."""
    tensors = open_tensors(files.weights)
    if config is None:
        config = read_config(files.config) if files.config is not None else infer_config(tensors)
    dtype = dtype or torch.float32
    with skeleton():  # no memory for parameters: the file's tensors become them
        model = GPT(config)
    state = check_tensors(tensors, model, files.weights)
    try:
        stored = {k.removeprefix("transformer."): k for k in tensor_names(files.weights)}
        state = {k: place(v, stored[k], files.weights, device, dtype) for k, v in state.items()}
    except SafetensorError as e:  # the file changed or broke while it was being read
        raise CheckpointError(f"{files.weights} could not be read to the end ({e}); download it again") from e
    except (RuntimeError, TypeError, AssertionError) as e:  # AssertionError: "Torch not compiled with CUDA"
        raise CheckpointError(f"cannot move the weights to device={device!r}, dtype={dtype}: {e}") from e
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


@contextlib.contextmanager
def skeleton() -> Iterator[None]:
    """Build modules on the meta device (shapes, no memory) and skip their random initialisation.

    The file's tensors replace every parameter anyway, and `normal_` on a meta tensor runs a Python
    reference that imports torch._dynamo on first use: seconds of a first run, for numbers never used.
    (transformers skips initialisation the same way, by swapping out the torch.nn.init functions.)
    """
    normal = torch.nn.init.normal_
    torch.nn.init.normal_ = lambda tensor, *args, **kwargs: tensor
    try:
        with torch.device("meta"):
            yield
    finally:
        torch.nn.init.normal_ = normal


def place(tensor: Tensor, file_key: str, path: Path, device: str | torch.device | None, dtype: torch.dtype) -> Tensor:
    """One tensor of the file (stored under `file_key`) on `device` in `dtype`.

    In the wanted dtype already: `.to` (on the CPU, the memory-mapped view itself, no copy).
    Otherwise a new tensor filled CONVERT_CHUNK_BYTES of the file at a time, each chunk read
    through a fresh mapping that is closed before the next: a mapping's pages stay in memory until
    it is closed, so converting through one mapping would hold the whole narrow file as well.
    """
    if tensor.dtype == dtype or tensor.dim() == 0 or tensor.numel() == 0:
        return tensor.to(device=device, dtype=dtype)
    out = torch.empty(tensor.shape, dtype=dtype, device=device)
    rows = max(1, CONVERT_CHUNK_BYTES // (tensor[0].numel() * tensor.element_size()))
    for start in range(0, out.shape[0], rows):
        with safe_open(str(path), framework="pt") as f:
            out[start : start + rows].copy_(f.get_slice(file_key)[start : start + rows])
    return out


def tensor_names(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def checkpoint_config(name_or_path: str | os.PathLike) -> GPTConfig:
    """A checkpoint's config without loading its weights (for a hub name, only config.json is fetched).

    The CLI checks options that depend on the model's shape (`--last-blocks`, `--layers`, `--top-k`)
    against it before the weights are read.
    """
    source = sources.where(name_or_path)
    if isinstance(source, Hub):
        return read_config(hub_download(source.repo_id, ("config.json",), revision=source.revision)["config.json"])
    files = resolve(name_or_path)
    return read_config(files.config) if files.config is not None else infer_config(open_tensors(files.weights))
