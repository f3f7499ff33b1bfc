"""Decoders: how a row of the residual stream becomes what the tied unembedding reads.

A decoder is a value with four things: a `name`, its `params` (JSON-able), `check(config)` and
`decode(model, h, row)`, which maps the stream at a row, (..., T, C), to the vectors (..., T, C)
that the unembedding turns into logits. The unembedding itself is applied in one shared place
(the lens's streaming kernel, or `decoder_logits` here), never by a decoder. `check` takes a
`GPTConfig`, so a caller (the CLI) can check a decoder against a checkpoint before loading its
weights. A decoder has one JSON shape, `DecoderSpec.of(decoder).to_dict()`:
{"name": ..., "params": {...}, "title": ...}.

The built-in four are parameter-free specs, applied to whatever model they are given:

| name             | class            | decodes h as                                                  |
|------------------|------------------|---------------------------------------------------------------|
| "logit" ("ln_f") | `LnF()`          | ln_f(h), with γ and β: the model's own decoder                |
| "ln_f_no_bias"   | `LnFNoBias()`    | ln_f without β (drops the input-independent prior β @ W_E^T)  |
| "norm_only"      | `NormOnly()`     | normalisation only, no γ, no β                                |
| "last_blocks"    | `LastBlocks(k)`  | the last k blocks, then ln_f (the 2021 variant)               |

Learned decoders ("tuned", "probe": `minigpt.TunedLens`) carry weights and check in `check(config)`
that they were fitted for this model's width and depth.

>>> LnF().logits(model, model(ids).resid[3], 3)      # resid[3] decoded: (B, T, V)
>>> logit_lens(model, ids, decoder=LastBlocks(2))    # the same as decoder="last_blocks", last_blocks=2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping, Protocol, runtime_checkable

import torch.nn.functional as F
from torch import Tensor

from ..errors import LensError
from ..model import GPT, GPTConfig
from .rows import Row

__all__ = [
    "Decoder", "LnF", "LnFNoBias", "NormOnly", "LastBlocks", "DecoderSpec",
    "as_decoder", "labelled", "decoder_logits", "unembed", "DECODERS", "ALIASES",
]  # fmt: skip


@runtime_checkable
class Decoder(Protocol):
    """What the lens needs of a decoder (the built-in ones below, or a learned one such as `minigpt.TunedLens`)."""

    name: str  # what it is; also the default label of its numbers in `evaluate_lens(...).to_dict()["metrics"]`

    @property
    def params(self) -> dict[str, Any]:
        """What tells two decoders of one name apart, JSON-able (not weights: those live in files)."""
        ...

    def check(self, config: GPTConfig) -> None:
        """Raise LensError if this decoder cannot decode a model of this shape (e.g. it was fitted for another width)."""
        ...

    def decode(self, model: GPT, h: Tensor, row: Row) -> Tensor:
        """h (..., T, C): the stream at `row`, positions 0..T-1 of each sequence -> (..., T, C), what
        the tied unembedding reads: logits = model.unembed(decode(model, h, row))."""
        ...


def config_of(model_or_config: GPT | GPTConfig) -> GPTConfig:
    """A decoder's `check` takes a config; a model is accepted too (the 0.2 protocol passed one)."""
    return model_or_config.config if isinstance(model_or_config, GPT) else model_or_config


def unembed(model: GPT, vectors: Tensor) -> Tensor:
    """The tied unembedding: (..., C) @ (C, V) -> (..., V) (`model.unembed`)."""
    return model.unembed(vectors)


def as_row(model: GPT, row: Row | int) -> Row:
    if isinstance(row, Row):
        return row
    return Row.of_resid(row, model.config.n_layer)


def check_width(model: GPT, h: Tensor, who: str) -> None:
    C = model.config.n_embd
    if not isinstance(h, Tensor) or h.dim() < 1 or h.shape[-1] != C:
        got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
        raise LensError(f"{who}: the vectors must end in this model's width n_embd = {C}, got {got}")


def decoder_logits(model: GPT, decoder: Decoder, h: Tensor, row: Row | int) -> Tensor:
    """Check, decode, then the tied unembedding: h (..., T, C) at `row` -> logits (..., T, V).

    An int row is an index into `model(ids).resid`. This is what every decoder's `.logits` calls.
    """
    decoder.check(model.config)
    check_width(model, h, f"the {decoder.name} decoder")
    return model.unembed(decoder.decode(model, h, as_row(model, row)))


# ----------------------------------------------------------------------------
# The built-in decoders


class _Builtin:
    """What the built-in decoders share: nothing to check by default, no parameters, `.logits`."""

    name: ClassVar[str]

    def check(self, config: GPTConfig) -> None:
        pass

    def decode(self, model: GPT, h: Tensor, row: Row) -> Tensor:
        raise NotImplementedError

    def logits(self, model: GPT, h: Tensor, row: Row | int) -> Tensor:
        """decode, then unembed: (..., T, C) -> (..., T, V). An int row is an index into `model(ids).resid`."""
        return decoder_logits(model, self, h, row)

    @property
    def params(self) -> dict[str, Any]:
        return {}

    @property
    def title(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class LnF(_Builtin):
    """The model's own decoder, ln_f with γ and β. Its top row is exactly the model's logits."""

    name: ClassVar[str] = "logit"
    title: ClassVar[str] = "ln_f (the model's own decoder)"

    def decode(self, model: GPT, h: Tensor, row: Row) -> Tensor:
        return model.ln_f(h)  # (..., C)


@dataclass(frozen=True)
class LnFNoBias(_Builtin):
    """ln_f without its bias β: logits differ from LnF's by the input-independent prior β @ W_E^T."""

    name: ClassVar[str] = "ln_f_no_bias"
    title: ClassVar[str] = "ln_f without its bias β"

    def decode(self, model: GPT, h: Tensor, row: Row) -> Tensor:
        ln = model.ln_f
        return F.layer_norm(h, ln.normalized_shape, ln.weight, None, ln.eps)  # (..., C)


@dataclass(frozen=True)
class NormOnly(_Builtin):
    """Normalisation only (the post's "after layer norm, before the learned point-wise transformation")."""

    name: ClassVar[str] = "norm_only"
    title: ClassVar[str] = "normalisation only (no γ, no β)"

    def decode(self, model: GPT, h: Tensor, row: Row) -> Tensor:
        return F.layer_norm(h, model.ln_f.normalized_shape, None, None, model.ln_f.eps)  # (..., C)


@dataclass(frozen=True)
class LastBlocks(_Builtin):
    """The last k blocks, then ln_f (the 2021 variant of the lens).

    A row below block L - k runs blocks L-k .. L-1. A row at or above it runs only what is left
    of the model above it (for `h.l.resid_mid`, the rest of block l first), so the top row is the
    model's output and the decoder never runs a block twice. Attention reads the whole sequence,
    so `h` must be the stream at positions 0..T-1, not a lone vector.
    """

    k: int = 1
    name: ClassVar[str] = "last_blocks"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int):
            raise LensError(f"last_blocks takes a whole number of blocks k, got {self.k!r}")

    @property
    def params(self) -> dict[str, Any]:
        return {"k": self.k}

    @property
    def title(self) -> str:
        return "the last block, then ln_f" if self.k == 1 else f"the last {self.k} blocks, then ln_f"

    def check(self, config: GPTConfig) -> None:
        L = config_of(config).n_layer
        if not 1 <= self.k <= L:
            raise LensError(f"last_blocks must be between 1 and the number of blocks ({L}), got {self.k!r}")

    def decode(self, model: GPT, h: Tensor, row: Row) -> Tensor:
        if h.dim() < 2:
            raise LensError(
                "the last_blocks decoder cannot decode a lone vector: its attention needs the sequence, "
                "so pass the stream at positions 0..T-1 as (T, C) or (B, T, C)"
            )
        first = model.config.n_layer - self.k  # the first block this decoder runs
        x = h.reshape(-1, *h.shape[-2:])  # (..., T, C) -> (B, T, C)
        if row.site == "resid_mid" and row.block >= first:
            x = model.h[row.block].finish(x)  # (B, T, C): the rest of this block, as Block.parts does it
            first = row.block + 1
        elif row.site == "resid_post":
            first = max(first, row.block + 1)
        for parts in model.walk(x, start=first):
            x = parts.out  # (B, T, C)
        return model.ln_f(x).reshape(h.shape)  # (..., T, C)


BUILTINS: dict[str, type[_Builtin]] = {d.name: d for d in (LnF, LnFNoBias, NormOnly, LastBlocks)}
DECODERS: tuple[str, ...] = tuple(BUILTINS)  # the built-in names
ALIASES = {"ln_f": "logit"}  # permanent: "ln_f" was the default's name in 0.1
LEARNED = ("tuned", "probe")  # names of decoders with weights (minigpt.TunedLens): built, not named


def as_decoder(decoder: Decoder | str | dict[str, Any], last_blocks: int | None = None) -> Decoder:
    """A decoder object from a decoder, a built-in name ("logit", "ln_f", ...; `last_blocks` is k
    for "last_blocks"), or a built-in's JSON shape ({"name": "last_blocks", "params": {"k": 2}})."""
    if isinstance(decoder, str):
        name = ALIASES.get(decoder, decoder)
        if name == "last_blocks":
            return LastBlocks(1 if last_blocks is None else last_blocks)
        if last_blocks is not None:
            raise LensError(f"last_blocks= goes with decoder='last_blocks', not decoder={decoder!r}")
        if name in BUILTINS:
            return BUILTINS[name]()
        if name in LEARNED:
            raise LensError(
                f"the {name!r} decoder has weights: load or fit one (minigpt.TunedLens) and pass the object as decoder="
            )
        known = ", ".join([*DECODERS, *ALIASES])
        raise LensError(f"unknown decoder {decoder!r}; choose one of {known}, or pass a decoder object")
    if last_blocks is not None:
        raise LensError("last_blocks= goes with decoder='last_blocks'; a decoder object carries its own parameters")
    if isinstance(decoder, dict):
        return DecoderSpec.from_dict(decoder).build()
    if isinstance(decoder, DecoderSpec):
        return decoder.build()
    if isinstance(decoder, Decoder):
        return decoder
    raise LensError(
        f"a decoder is a name ({', '.join(DECODERS)}) or an object with name, params, check(config) and decode; "
        f"got {type(decoder).__name__}"
    )


def labelled(decoders: Mapping[str, Any] | Iterable[Any] | Decoder | str) -> list[tuple[str, Decoder]]:
    """(label, decoder) pairs: the label keys a decoder's numbers in a result.

    A mapping gives its own labels ({"gpt2-lens": a, "mine": b}); in a list each decoder is labelled
    by its name, and a name that comes again gets a number ("tuned", "tuned_2"), so two tuned lenses
    can be compared in one call.
    """
    if isinstance(decoders, (str, DecoderSpec)) or isinstance(decoders, Decoder):
        decoders = [decoders]
    if isinstance(decoders, Mapping):
        pairs = []
        for label, d in decoders.items():
            if not isinstance(label, str) or not label:
                raise LensError(f"a decoder's label is a non-empty string, got {label!r}")
            pairs.append((label, as_decoder(d)))
    elif isinstance(decoders, Iterable):
        pairs = [("", as_decoder(d)) for d in decoders]
    else:
        raise LensError(f"decoders is a list of decoders or names, e.g. ['logit', 'norm_only'], or a dict of them by label; got {decoders!r}")
    if not pairs:
        raise LensError("decoders is empty: give at least one, e.g. decoders=['logit']")
    seen: dict[str, int] = {}
    out = []
    for label, d in pairs:
        label = label or d.name
        seen[label] = seen.get(label, 0) + 1
        out.append((label if seen[label] == 1 else f"{label}_{seen[label]}", d))
    labels = [label for label, _ in out]
    if len(set(labels)) < len(labels):
        raise LensError(f"two decoders are labelled alike in {labels}; give each its own label in a dict")
    return out


# ----------------------------------------------------------------------------
# What a result records of its decoder


@dataclass(frozen=True, eq=True)
class DecoderSpec:
    """A decoder as data, saved with results: its name, its parameters and its title in words."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    title: str = ""

    __hash__ = None  # type: ignore[assignment]  # params is a dict

    @classmethod
    def of(cls, decoder: Decoder) -> DecoderSpec:
        return cls(name=decoder.name, params=dict(decoder.params), title=getattr(decoder, "title", None) or decoder.name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "title": self.title}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderSpec:
        name, params = data.get("name"), data.get("params") or {}
        extra = sorted(set(data) - {"name", "params", "title"})
        if not isinstance(name, str) or not isinstance(params, dict) or extra:
            raise LensError(
                f"a decoder's JSON shape is {{'name': ..., 'params': {{...}}}}, e.g. {{'name': 'last_blocks', "
                f"'params': {{'k': 2}}}}; got {data!r}"
            )
        name = ALIASES.get(name, name)
        title = data.get("title")
        if not title and name in BUILTINS:
            title = BUILTINS[name](**params).title if name == "last_blocks" else BUILTINS[name].title
        return cls(name=name, params=dict(params), title=title or name)

    def build(self) -> Decoder:
        """The built-in decoder this spec describes (a learned decoder must be loaded with its weights)."""
        if self.name not in BUILTINS:
            raise LensError(f"the {self.name!r} decoder has weights that a spec does not hold; load it and pass it instead")
        try:
            return BUILTINS[self.name](**self.params)
        except TypeError:
            raise LensError(f"the {self.name!r} decoder does not take the parameters {self.params!r}") from None
