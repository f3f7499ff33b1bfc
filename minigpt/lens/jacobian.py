"""The Jacobian lens (J-lens): one averaged Jacobian per layer, then the model's own ln_f and unembedding.

Gurnee et al. 2026, "Verbalizable Representations Form a Global Workspace in Language Models"; the
estimator and the file format follow Anthropic's Apache-2.0 reference code, as TransformerLens 4.x
(`tools/analysis/jacobian_lens.py`) does. For each layer l it fits one (C, C) matrix

    J_l = E_prompt[ (1/|V|) Σ_{t∈V} Σ_{t'∈V, t'≥t} ∂h_final,t' / ∂h_l,t ]

where V is the set of valid positions (the first `skip_first` and the final one left out) and
h_final is the last block's output before ln_f. A row decodes as `ln_f(J_l h) @ W_Eᵀ`; the logit
lens is the case J = I.

Rows. The artifact's layer l is the output of block l, minigpt's row "h.l" = resid[l + 1]:

    J_l (0 <= l <= L - 2)   decodes  "h.l"
    no matrix               for      "embed" and any layer the file leaves out: decoded as the logit lens (J = I)
    no matrix               for      "h.{L-1}", the top row: the model's output, exactly

The file is a `.pt` dict {"J": {layer: (C, C) fp16}, "n_prompts", "source_layers", "d_model",
["metadata"]}, read only through `torch.load(weights_only=True)`, the restricted unpickler that
builds tensors and plain containers and refuses anything that would run code.

>>> lens = JacobianLens.load("gpt2", model)                 # neuronpedia/jacobian-lens, through the HF cache
>>> lens = JacobianLens.fit(model, texts, tokenizer=tok)     # or fit your own
>>> minigpt.logit_lens(model, ids, decoder=lens)
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from .. import distributed
from ..errors import CheckpointError, InputError, LensError
from ..files import atomic_write, load_pt
from ._frozen import frozen
from ..model import GPT, GPTConfig
from .rows import Row

if TYPE_CHECKING:
    import tiktoken

__all__ = ["JacobianLens", "HUB_LENSES"]

# Published artifacts, by model name: (hub repo, file in it).
_GPT2 = ("neuronpedia/jacobian-lens", "gpt2-small/jlens/Salesforce-wikitext/gpt2_jacobian_lens.pt")
HUB_LENSES: dict[str, tuple[str, str]] = {"gpt2": _GPT2, "openai-community/gpt2": _GPT2}
FILE_KEYS = ("J", "n_prompts", "source_layers", "d_model")  # the reference format; "metadata" is optional


class JacobianLens:
    """A decoder named "jacobian": row h.l decodes as ln_f(J_l h), read by the tied unembedding.

    Make one with `JacobianLens.load` (a file or a hub id), `JacobianLens.fit`, or
    `JacobianLens.identity` (J = I: the logit lens, exactly).
    """

    name: ClassVar[str] = "jacobian"

    def __init__(self, J: Mapping[int, Tensor], *, d_model: int, n_prompts: int, metadata: dict[str, Any] | None = None) -> None:
        if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model < 1:
            raise LensError(f"d_model must be a positive integer, got {d_model!r}")
        if not J:
            raise LensError("a Jacobian lens needs at least one layer's matrix")
        for layer, m in J.items():
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise LensError(f"J-lens layers are block indices 0, 1, ...; got {layer!r}")
            if not isinstance(m, Tensor) or tuple(m.shape) != (d_model, d_model) or not m.dtype.is_floating_point:
                got = f"{tuple(m.shape)} {m.dtype}" if isinstance(m, Tensor) else type(m).__name__
                raise LensError(f"J[{layer}] must be a floating-point ({d_model}, {d_model}) matrix, got {got}")
        self.J: dict[int, Tensor] = {int(l): J[l].detach().float() for l in sorted(J)}  # layer -> (C, C) float32
        self.d_model = d_model
        self.n_prompts = int(n_prompts)
        self.metadata: dict[str, Any] = dict(metadata or {})

    @classmethod
    def identity(cls, model: GPT) -> JacobianLens:
        """J_l = I for every layer 0 .. L-2: decodes exactly as the logit lens does."""
        C, L = model.config.n_embd, model.config.n_layer
        eye = torch.eye(C, device=model.device)
        return cls({l: eye for l in range(L - 1)}, d_model=C, n_prompts=0)

    # -- what it is

    @property
    def source_layers(self) -> list[int]:
        return list(self.J)

    @property
    def params(self) -> dict[str, Any]:
        """What tells two J-lenses apart, JSON-able; "covers" names the rows with a matrix."""
        return {"d_model": self.d_model, "n_prompts": self.n_prompts, "source_layers": self.source_layers,
                "covers": [f"h.{l}" for l in self.J], "others": "logit lens (J = I); the top row is the model's output"}  # fmt: skip

    @property
    def title(self) -> str:
        layers = self.source_layers
        span = f"h.{layers[0]}" if len(layers) == 1 else f"h.{layers[0]}..h.{layers[-1]}"
        return f"the Jacobian lens, ln_f(J h) for {span} (other rows: the logit lens)"

    def __repr__(self) -> str:
        return f"JacobianLens(d_model={self.d_model}, layers={self.source_layers}, n_prompts={self.n_prompts})"

    def check(self, config: GPTConfig | GPT) -> None:
        """Raise LensError unless every matrix fits a model of this width and depth."""
        c = config.config if isinstance(config, GPT) else config
        if c.n_embd != self.d_model:
            raise LensError(
                f"this J-lens was fitted for width d_model = {self.d_model}, but the model has n_embd {c.n_embd}: "
                "load the lens made for this model, or fit one (JacobianLens.fit)"
            )
        top = max(self.J)
        if top > c.n_layer - 2:
            raise LensError(
                f"this J-lens has a matrix for layer {top}, but a model of {c.n_layer} blocks has J-lens layers "
                f"0..{c.n_layer - 2} (layer {c.n_layer - 1} is the top row, the model's output): it was made for a deeper model"
            )

    # -- decoding

    def matrix(self, row: Row) -> Tensor | None:
        """The matrix that decodes `row`, (C, C); None where the lens decodes as the logit lens."""
        if row.site == "resid_mid":
            raise LensError(
                f"the J-lens has no matrix for the sub-block row {row.label}: it is fitted on block outputs; "
                "use sub_blocks=False, or a built-in decoder"
            )
        if row.site not in ("embed", "resid_post"):
            raise LensError(f"the J-lens decodes the residual stream (embed, h.l); it cannot decode {row.label!r}")
        return self.J.get(row.block) if row.site == "resid_post" else None

    def decode(self, model: GPT, h: Tensor, row: Row) -> Tensor:
        """h (..., T, C) at `row` -> ln_f(J h) (..., T, C), what the tied unembedding reads."""
        J = self.matrix(row)
        if J is not None:
            h = h @ J.to(device=h.device, dtype=h.dtype).T  # (..., C) @ (C, C) -> (..., C): J h for each vector
        return model.ln_f(h)  # (..., T, C)

    def logits(self, model: GPT, h: Tensor, row: Row | int) -> Tensor:
        """decode, then the tied unembedding: h (..., T, C) -> (..., T, V)."""
        from .decoders import decoder_logits

        return decoder_logits(model, self, h, row)

    # -- files

    def save(self, path: str | os.PathLike, *, dtype: torch.dtype = torch.float16) -> Path:
        """Write the reference format (fp16 by default, as the reference does), which TransformerLens'
        `JacobianLens.load` and Anthropic's code read: {"J", "n_prompts", "source_layers", "d_model", ["metadata"]}."""
        _check_plain(self.metadata, "metadata")
        payload: dict[str, Any] = {
            "J": {l: m.detach().to("cpu", dtype).contiguous() for l, m in self.J.items()},
            "n_prompts": self.n_prompts, "source_layers": self.source_layers, "d_model": self.d_model,
        }  # fmt: skip
        if self.metadata:
            payload["metadata"] = self.metadata
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: torch.save(payload, tmp))  # an interrupted save leaves the old file whole
        except OSError as e:
            raise LensError(f"cannot write the J-lens to {path}: {e}; choose another path") from e
        return path

    @classmethod
    def load(cls, path_or_id: str | os.PathLike, model: GPT, *, filename: str | None = None,
             revision: str | None = None) -> JacobianLens:  # fmt: skip
        """Read a J-lens for `model`: a local `.pt` file, a hub repo with `filename=`, a hub id with the
        file in it ("neuronpedia/jacobian-lens/gpt2-small/jlens/…/gpt2_jacobian_lens.pt"), or a model
        name with a published lens ("gpt2"). An existing path always wins. Checked against the model,
        and placed on its device."""
        lens = cls.read(resolve_lens_file(path_or_id, filename=filename, revision=revision))
        lens.check(model)
        return lens.to(model.device)

    def to(self, device: str | torch.device) -> JacobianLens:
        """The matrices on `device` (in place; returns the lens)."""
        self.J = {l: m.to(device) for l, m in self.J.items()}
        return self

    @classmethod
    def read(cls, path: str | os.PathLike) -> JacobianLens:
        """The lens in a local J-lens file, on the CPU, checked against nothing (`load` checks it against a
        model; `check(config)` against a model's shape before its weights load)."""
        path = Path(path)
        return cls._from_payload(read_lens_file(path), path)

    @classmethod
    def _from_payload(cls, payload: dict[str, Any], path: Path) -> JacobianLens:
        missing = [k for k in FILE_KEYS if k not in payload]
        if missing:
            raise CheckpointError(
                f"{path} is not a J-lens file: it lacks {', '.join(missing)} (the format holds "
                f"{', '.join(FILE_KEYS)} and an optional metadata)"
            )
        J, d_model, layers = payload["J"], payload["d_model"], payload["source_layers"]
        if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model < 1:
            raise CheckpointError(f"{path}: d_model must be a positive integer, got {d_model!r}")
        if not isinstance(J, dict) or not J:
            raise CheckpointError(f"{path}: J must be a non-empty dict {{layer: (d_model, d_model) tensor}}, got {type(J).__name__}")
        matrices: dict[int, Tensor] = {}
        for key, m in J.items():
            layer = int(key) if isinstance(key, str) and key.isdigit() else key
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise CheckpointError(f"{path}: J has the key {key!r}; its keys are layer indices 0, 1, ...")
            if not isinstance(m, Tensor) or tuple(m.shape) != (d_model, d_model) or not m.dtype.is_floating_point:
                got = f"{tuple(m.shape)} {m.dtype}" if isinstance(m, Tensor) else type(m).__name__
                raise CheckpointError(f"{path}: J[{layer}] must be a floating-point ({d_model}, {d_model}) matrix (d_model = {d_model}), got {got}")
            matrices[layer] = m
        if not isinstance(layers, (list, tuple)) or sorted(int(l) for l in layers) != sorted(matrices):
            raise CheckpointError(f"{path}: source_layers {layers!r} does not list the layers of J ({sorted(matrices)})")
        metadata = payload.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise CheckpointError(f"{path}: metadata must be a dict, got {type(metadata).__name__}")
        return cls(matrices, d_model=d_model, n_prompts=int(payload["n_prompts"]), metadata=metadata)

    # -- fitting

    @classmethod
    def fit(
        cls,
        model: GPT,
        corpus: str | Sequence[str] | Sequence[Sequence[int]] | Tensor,
        *,
        tokenizer: tiktoken.Encoding | None = None,
        n_prompts: int = 100,
        seq_len: int = 128,
        skip_first: int = 16,
        seed: int = 0,
        dim_batch: int = 32,
        progress: bool | None = None,
    ) -> JacobianLens:
        """The reference estimator of J_l for every layer 0 .. L-2, on up to `n_prompts` prompts.

        corpus: a list of texts (one prompt each), a list of token-id lists (or a (P, T) tensor), used
          verbatim, one prompt per list, or one long text, cut into consecutive windows of which
          `n_prompts` are drawn at random (`seed`). Texts are tokenised with <|endoftext|> first, as
          TransformerLens' `to_tokens` does for the reference; token ids get nothing added. Every
          prompt is truncated to `seq_len` tokens; one with no valid position (<= skip_first + 1
          tokens) is skipped with a warning and not counted.
        Per prompt: one forward pass (the prompt replicated `dim_batch` times), then C / dim_batch
        backward passes, each with one-hot cotangents for dim_batch output dimensions at every valid
        target position at once; causality makes the gradient at source t the sum over t' >= t. Rows
        are averaged over the valid source positions, then over prompts. `dim_batch` changes speed and
        memory, not the result. Under torchrun each rank takes its share of the prompts, and the sums
        are added with one all-reduce.
        """
        for name, value, lo in (("n_prompts", n_prompts, 1), ("seq_len", seq_len, 2), ("skip_first", skip_first, 0),
                                ("dim_batch", dim_batch, 1)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise LensError(f"{name} must be an integer >= {lo}, got {value!r}")
        C, L = model.config.n_embd, model.config.n_layer
        if L < 2:
            raise LensError("a J-lens needs a model of at least 2 blocks: its layers are 0 .. L-2")
        seq_len = min(seq_len, model.config.n_positions)
        prompts = [p for p in _prompts(corpus, tokenizer, seq_len, seed) if _long_enough(p, skip_first)][:n_prompts]
        if not prompts:
            raise InputError(
                f"no prompt of the corpus has more than skip_first + 1 = {skip_first + 1} tokens, so nothing can be "
                "fitted; give longer prompts or a smaller skip_first"
            )
        layers = list(range(L - 1))
        mine = prompts[distributed.shard(len(prompts))]
        total = torch.zeros(len(layers), C, C, dtype=torch.float64, device=model.device)
        for ids in _progress(mine, progress):
            ids = ids.to(model.device)
            model.check_ids(ids[None])
            J = _prompt_jacobians(model, ids, layers, skip_first, dim_batch)  # (L - 1, C, C)
            total += J.double()
        distributed.all_reduce_sum(total)  # every rank's prompts together (nothing to do in one process)
        mean = (total / len(prompts)).float()
        metadata = {"fitted_by": "minigpt", "n_prompts": len(prompts), "seq_len": seq_len, "skip_first": skip_first,
                    "dim_batch": dim_batch, "hook_convention": "block l output = minigpt resid[l + 1]"}  # fmt: skip
        return cls({l: mean[i] for i, l in enumerate(layers)}, d_model=C, n_prompts=len(prompts), metadata=metadata)


# ----------------------------------------------------------------------------
# The estimator


def _prompt_jacobians(model: GPT, ids: Tensor, layers: list[int], skip_first: int, dim_batch: int) -> Tensor:
    """One prompt's J_l for each layer: ids (T,) -> (len(layers), C, C), rows = output dims of h_final.

    J[d, :] = (1/|V|) Σ_{t∈V} Σ_{t'∈V} ∂h_final[t', d] / ∂h_l[t, :]; causality keeps only t' >= t.
    """
    T, C = len(ids), model.config.n_embd
    valid = torch.arange(skip_first, T - 1, device=ids.device)  # (|V|,)
    first = min(layers)
    with frozen(model):
        with torch.no_grad():  # below the lowest source no gradient is needed
            x = model.embed(ids[None])  # (1, T, C)
            for block, parts in enumerate(model.walk(x)):
                x = parts.out
                if block == first:
                    break
        with torch.inference_mode(False), torch.enable_grad():
            root = x.detach().expand(dim_batch, T, C).clone().requires_grad_(True)  # (B, T, C): h_first, B copies
            sources, h = [root], root
            for block, parts in enumerate(model.walk(root, start=first + 1), start=first + 1):
                h = parts.out  # (B, T, C): the output of `block`
                if block in layers:
                    sources.append(h)
            # h: the last block's output, before ln_f (h_final)
            out = torch.zeros(len(layers), C, C, device=ids.device)
            cotangent = torch.zeros_like(h)  # (B, T, C)
            b = torch.arange(dim_batch, device=ids.device)
            n_passes = -(-C // dim_batch)
            for p in range(n_passes):
                d0, n = p * dim_batch, min(dim_batch, C - p * dim_batch)
                cotangent.zero_()
                cotangent[b[:n, None], valid[None, :], d0 + b[:n, None]] = 1.0  # copy i: dim d0+i at every valid t'
                grads = torch.autograd.grad(h, sources, cotangent, retain_graph=p < n_passes - 1)
                for i, g in enumerate(grads):  # (B, T, C): row d0+i of every source's J, per source position
                    out[i, d0 : d0 + n] = g[:n, valid].mean(dim=1)  # the mean over valid source positions
    return out


def _long_enough(ids: Tensor, skip_first: int) -> bool:
    if len(ids) > skip_first + 1:
        return True
    warnings.warn(f"skipping a prompt of {len(ids)} tokens: the J-lens needs more than skip_first + 1 = "
                  f"{skip_first + 1} tokens", stacklevel=3)  # fmt: skip
    return False


def _prompts(corpus: Any, tokenizer: tiktoken.Encoding | None, seq_len: int, seed: int) -> list[Tensor]:
    """The prompts (T,) int64, each at most seq_len tokens."""

    def encode(text: str) -> Tensor:
        if tokenizer is None:
            raise LensError("a text corpus needs a tokenizer: JacobianLens.fit(model, texts, tokenizer=minigpt.load_tokenizer(...))")
        # <|endoftext|> first, as TransformerLens' to_tokens prepends it for the reference fits.
        return torch.tensor([tokenizer.eot_token, *tokenizer.encode_ordinary(text)], dtype=torch.int64)

    if isinstance(corpus, str):  # one long text: consecutive windows, drawn at random
        ids = encode(corpus)[1:]
        n = seq_len - 1  # each window gets <|endoftext|> first
        windows = [ids[i : i + n] for i in range(0, len(ids) - n + 1, n)] or [ids]
        order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed)).tolist()
        eot = torch.tensor([tokenizer.eot_token])
        return [torch.cat([eot, windows[i]]) for i in order]
    if isinstance(corpus, Tensor):
        if corpus.dim() != 2 or corpus.dtype.is_floating_point or corpus.dtype == torch.bool:
            raise InputError(f"a tensor corpus holds one prompt per row, (P, T) integer ids; got {tuple(corpus.shape)} {corpus.dtype}")
        return [row[:seq_len].to(torch.int64) for row in corpus]
    if not isinstance(corpus, Sequence) or not corpus:
        raise InputError(f"a J-lens corpus is a text, a list of texts or a list of token-id lists; got {type(corpus).__name__}")
    out = []
    for i, item in enumerate(corpus):
        if isinstance(item, str):
            out.append(encode(item)[:seq_len])
        elif isinstance(item, (Tensor, list, tuple)):
            ids = torch.as_tensor(item, dtype=torch.int64) if not isinstance(item, Tensor) else item.to(torch.int64)
            if ids.dim() != 1:
                raise InputError(f"prompt {i} of the corpus has shape {tuple(ids.shape)}; each prompt is one list of token ids")
            out.append(ids[:seq_len])
        else:
            raise InputError(f"prompt {i} of the corpus is a {type(item).__name__}; give texts or lists of token ids")
    return out


def _progress(prompts: list[Tensor], progress: bool | None) -> Iterator[Tensor]:
    from tqdm import tqdm  # comes with huggingface_hub

    show = (sys.stderr.isatty() if progress is None else progress) and distributed.is_main()
    yield from tqdm(prompts, desc="fitting the J-lens", unit="prompt", disable=not show, file=sys.stderr)


# ----------------------------------------------------------------------------
# Files


def resolve_lens_file(path_or_id: str | os.PathLike, *, filename: str | None = None, revision: str | None = None) -> Path:
    """An existing path; else a hub file: (repo, filename=), "owner/repo/path/in/repo.pt", or a name in HUB_LENSES."""
    path = Path(path_or_id).expanduser()
    if filename is None and path.is_file():
        return path
    if filename is None and path.is_dir():
        raise LensError(f"{path} is a folder; a J-lens is one .pt file: pass its path")
    name = str(path_or_id)
    if filename is None and name in HUB_LENSES:
        name, filename = HUB_LENSES[name]
    elif filename is None:
        parts = name.split("/")
        if len(parts) < 3 or not name.endswith(".pt"):
            known = ", ".join(sorted(HUB_LENSES))
            raise LensError(
                f"no J-lens at {name!r}: it is not an existing file, nor a hub file such as "
                f"'{_GPT2[0]}/{_GPT2[1]}' (or a repo with filename=), nor a model with a published lens ({known})"
            )
        name, filename = "/".join(parts[:2]), "/".join(parts[2:])
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        raise LensError(f"{name!r} is not a hub repo id (owner/name) and no such file exists")
    return _hub_file(name, filename, revision)


def _hub_file(repo_id: str, filename: str, revision: str | None) -> Path:
    """One file of a hub repo, through minigpt's one file finder (HF cache, offline messages)."""
    from ..sources import hub_file

    found = hub_file(repo_id, filename, revision=revision, offline_hint="download the .pt file and pass its path",
                     missing_hint="check the repo and the file name")  # fmt: skip
    assert found is not None  # not optional: hub_file raises HubError instead
    return found


def read_lens_file(path: Path) -> dict[str, Any]:
    """The file's dict, through torch's restricted unpickler only (`files.load_pt`, weights_only=True)."""
    payload = load_pt(path, "J-lens files")
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not the J-lens dict {{'J': ..., 'd_model': ..., ...}}")
    return payload


def _check_plain(value: Any, where: str) -> None:
    """Metadata must be plain data, or `torch.load(weights_only=True)` could not read the file back."""
    if value is None or type(value) in (bool, int, float, str):
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if type(value) is dict and all(type(k) is str for k in value):
        for k, v in value.items():
            _check_plain(v, f"{where}.{k}")
        return
    raise LensError(f"{where} is a {type(value).__name__}; J-lens metadata holds only None, bool, int, float, str, lists and str-keyed dicts")
