"""Random GPT-2 checkpoints in the exact official file layouts, for tests, benchmarks and CI.

The official weights cannot be downloaded everywhere (CI has no network), so the loader,
the lens and the examples are exercised on random weights written exactly as the hub
stores them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import save_file

from .model import GPT, GPTConfig

Layout = Literal["official", "hf"]


def random_state(config: GPTConfig, seed: int = 0, scale: float = 0.02) -> dict[str, torch.Tensor]:
    """A state dict with every parameter random, LayerNorm γ near 1 and biases non-zero,
    so that a model that ignored any parameter would give different numbers."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in GPT(config).state_dict().items()}
    state = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=g)
        if key.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            state[key] = 1.0 + 0.1 * noise
        elif key.endswith(".bias"):
            state[key] = 0.1 * noise
        else:
            state[key] = scale * noise
    return state


def write_checkpoint(
    directory: str | os.PathLike,
    state: dict[str, torch.Tensor],
    config: GPTConfig,
    layout: Layout = "official",
    tokenizer_dir: str | os.PathLike | None = None,
    lm_head: bool = False,
) -> Path:
    """Write `state` as `directory/model.safetensors` + `config.json`.

    layout="official": the keys of openai-community/gpt2: no prefix, plus one causal-mask buffer
    `h.{i}.attn.bias` of shape [1, 1, n_positions, n_positions] per layer.
    layout="hf": what `save_pretrained` writes: the `transformer.` prefix and no mask buffers.
    tokenizer_dir: a folder with GPT-2's `encoder.json` + `vocab.bpe` (or `vocab.json` + `merges.txt`),
    copied in as `vocab.json` + `merges.txt`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in state.items()}
    if layout == "official":
        n = config.n_positions
        mask = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        for i in range(config.n_layer):
            tensors[f"h.{i}.attn.bias"] = mask.clone()
        metadata = {"format": "pt"}
    elif layout == "hf":
        tensors = {f"transformer.{k}": v for k, v in tensors.items()}
        metadata = {"format": "pt"}
    else:
        raise ValueError(f"unknown layout {layout!r}; use 'official' or 'hf'")
    if lm_head:
        tensors["lm_head.weight"] = state["wte.weight"].clone()
    save_file(tensors, directory / "model.safetensors", metadata=metadata)
    fields = {
        "activation_function": config.activation_function, "architectures": ["GPT2LMHeadModel"],
        "layer_norm_epsilon": config.layer_norm_epsilon, "model_type": "gpt2", "n_ctx": config.n_positions,
        "n_embd": config.n_embd, "n_head": config.n_head, "n_inner": config.n_inner, "n_layer": config.n_layer,
        "n_positions": config.n_positions, "vocab_size": config.vocab_size, "resid_pdrop": 0.1,
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(fields, indent=2))
    if tokenizer_dir is not None:
        copy_tokenizer(tokenizer_dir, directory)
    return directory


def copy_tokenizer(source: str | os.PathLike, directory: str | os.PathLike) -> None:
    """Copy GPT-2's tokenizer files into a checkpoint directory under the HF names."""
    source, directory = Path(source), Path(directory)
    for hf_name, openai_name in (("vocab.json", "encoder.json"), ("merges.txt", "vocab.bpe")):
        src = source / hf_name if (source / hf_name).exists() else source / openai_name
        shutil.copyfile(src, directory / hf_name)


def random_checkpoint(
    directory: str | os.PathLike,
    config: GPTConfig,
    seed: int = 0,
    layout: Layout = "official",
    tokenizer_dir: str | os.PathLike | None = None,
) -> Path:
    """Write a random checkpoint (see `random_state`, `write_checkpoint`); return its directory."""
    return write_checkpoint(directory, random_state(config, seed), config, layout, tokenizer_dir)


def random_model(config: GPTConfig, seed: int = 0, scale: float = 0.02) -> GPT:
    """A GPT in eval mode with `random_state`'s weights: no parameter at its trivial init."""
    model = GPT(config)
    model.load_state_dict(random_state(config, seed=seed, scale=scale))
    return model.eval()


def row_structure(labels: list[str]) -> dict[str, np.ndarray]:
    """blocks= and sites= for a hand-built LensResult whose rows carry the standard labels
    ("prior", "embed", "h.l.resid_mid", "h.l"): looked up among `lens_rows`, never parsed."""
    from .lens.rows import lens_rows

    known = {r.label: r for r in lens_rows(len(labels), sub_blocks=True, prior=True)}
    missing = [label for label in labels if label not in known]
    if missing:
        raise ValueError(f"no standard row is labelled {missing}")
    rows = [known[label] for label in labels]
    return {"blocks": np.array([r.block for r in rows], dtype=np.int64), "sites": np.array([r.site for r in rows])}
