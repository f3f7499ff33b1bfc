"""The patchscope (Ghandeharioun et al. 2024): let the model itself finish a row's computation.

A row's vector replaces the stream of a target prompt at its last position, at the same row
(resid index); the blocks above that row run, and ln_f and the unembedding read out the last
position. With the paper's token-identity prompt, "cat -> cat\\n1135 -> 1135\\nhello -> hello\\n?",
the model is asked to repeat whatever the patched vector stands for.

    row "embed"      patches resid[0] and runs every block
    row "h.l"        patches resid[l + 1] and runs blocks l+1 .. L-1
    row "h.l.resid_mid"  patches inside block l: the rest of block l (its MLP), then the blocks above
    the top row      runs nothing: ln_f of the vector itself, the model's output exactly

Cost. The target prompt's own stream before its last position never changes, so its keys and
values are computed once per model (the first time the patchscope decodes for it) and every
patched vector is one position through the blocks above its row, reading that fixed prefix.
Vectors are batched: `chunk_size` positions run through the blocks at once.

>>> scope = Patchscope(tokenizer=tok)
>>> minigpt.logit_lens(model, "The Eiffel Tower is in", tokenizer=tok, decoder=scope)
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch
from torch import Tensor

from ..errors import InputError, LensError
from ..model import GPT, GPTConfig, KVCache
from .rows import Row

if TYPE_CHECKING:
    import tiktoken

__all__ = ["Patchscope", "TOKEN_IDENTITY"]

TOKEN_IDENTITY = "cat -> cat\n1135 -> 1135\nhello -> hello\n?"  # the paper's token-identity target prompt


class Patchscope:
    """A decoder named "patchscope": the row's vector at the last position of a target prompt, the
    blocks above the row, then ln_f. Its spec (`params`) carries the prompt and its token ids.

    prompt: the target prompt, a text (with `tokenizer=`) or token ids; encoded without a leading
      <|endoftext|>, as the paper's notebook does for GPT-2.
    """

    name: ClassVar[str] = "patchscope"

    def __init__(self, prompt: str | Sequence[int] = TOKEN_IDENTITY, *, tokenizer: tiktoken.Encoding | None = None,
                 chunk_size: int = 256) -> None:  # fmt: skip
        if isinstance(prompt, str):
            if tokenizer is None:
                raise LensError("a patchscope's text prompt needs a tokenizer: Patchscope(prompt, tokenizer=minigpt.load_tokenizer(...))")
            ids = tokenizer.encode_ordinary(prompt)
            self.prompt: str | None = prompt
        else:
            ids = [int(i) for i in prompt]
            self.prompt = tokenizer.decode(ids) if tokenizer is not None else None
        if not ids:
            raise InputError("the patchscope's target prompt has no tokens: give it at least one (the patched position is its last)")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise LensError(f"chunk_size must be a positive number of positions, got {chunk_size!r}")
        self.ids: tuple[int, ...] = tuple(ids)
        self.chunk_size = chunk_size
        self._prefixes: weakref.WeakKeyDictionary[GPT, _Prefix] = weakref.WeakKeyDictionary()

    @property
    def params(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "ids": list(self.ids)}

    @property
    def title(self) -> str:
        shown = repr(self.prompt) if self.prompt is not None else f"{len(self.ids)} token ids"
        return f"patchscope: the row at the last position of {shown}, the blocks above it, then ln_f"

    def __repr__(self) -> str:
        return f"Patchscope(prompt={self.prompt!r}, {len(self.ids)} tokens)"

    def check(self, config: GPTConfig | GPT) -> None:
        c = config.config if isinstance(config, GPT) else config
        if max(self.ids) >= c.vocab_size or min(self.ids) < 0:
            raise LensError(f"the patchscope's prompt has token ids outside this model's vocabulary [0, {c.vocab_size})")
        if len(self.ids) > c.n_positions:
            raise LensError(f"the patchscope's prompt has {len(self.ids)} tokens, more than the context of {c.n_positions}")

    # -- decoding

    def decode(self, model: GPT, h: Tensor, row: Row) -> Tensor:
        """h (..., T, C) at `row` -> (..., T, C): ln_f of the target's last position after each vector is patched in."""
        if row.site == "prior":
            raise LensError("the patchscope patches the residual stream; it cannot decode the prior row")
        L, C = model.config.n_layer, model.config.n_embd
        start = row.block + 1 if row.site in ("resid_post", "resid_mid") else 0  # the first block to run
        if start == L:
            return model.ln_f(h)  # the top row: no block above it, the model's output exactly
        prefix = self._prefix(model)
        flat = h.reshape(-1, C)  # (N, C)
        out = []
        for chunk in flat.split(self.chunk_size):
            x = chunk[:, None, :]  # (n, 1, C): the patched last position, once per vector
            if row.site == "resid_mid":
                x = model.h[row.block].finish(x)  # (n, 1, C): the rest of block l; its MLP reads one position
            for parts in model.walk(x, start=start, cache=prefix.cache(len(chunk))):
                x = parts.out  # (n, 1, C)
            out.append(x[:, 0])
        return model.ln_f(torch.cat(out)).view(h.shape)  # (N, C) -> (..., T, C)

    def logits(self, model: GPT, h: Tensor, row: Row | int) -> Tensor:
        """decode, then the tied unembedding: h (..., T, C) -> (..., T, V)."""
        from .decoders import decoder_logits

        return decoder_logits(model, self, h, row)

    def _prefix(self, model: GPT) -> _Prefix:
        """The target prompt's keys and values before its last position, computed once per model (and device, dtype)."""
        prefix = self._prefixes.get(model)
        if prefix is None or (prefix.device, prefix.dtype) != (model.device, model.dtype):
            prefix = _Prefix.of(model, torch.tensor([self.ids[:-1]], device=model.device))
            self._prefixes[model] = prefix
        return prefix


# ----------------------------------------------------------------------------
# The fixed prefix


class _Prefix:
    """Per block, the keys and values (1, H, P, D) of the target prompt's first P positions."""

    def __init__(self, kv: list[tuple[Tensor, Tensor]] | None, device: torch.device, dtype: torch.dtype) -> None:
        self.kv, self.device, self.dtype = kv, device, dtype

    @classmethod
    def of(cls, model: GPT, idx: Tensor) -> _Prefix:
        if idx.shape[1] == 0:  # a one-token prompt: the patched position reads only itself
            return cls(None, model.device, model.dtype)
        cache = KVCache(model.config.n_layer)
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable in and out of inference mode
            model.stream(idx, cache)  # fills the cache: (1, H, P, D) per block
        return cls([(kv.k, kv.v) for kv in cache.layers], model.device, model.dtype)

    def cache(self, n: int) -> _FixedCache | None:
        """What `GPT.walk` reads as its cache for n patched positions: the prefix, never extended."""
        return None if self.kv is None else _FixedCache([_FixedKV(k, v, n) for k, v in self.kv])


class _FixedKV:
    """A `LayerKV` that does not grow: each call sees the prefix, then the n new positions (one per vector)."""

    def __init__(self, k: Tensor, v: Tensor, n: int) -> None:
        self.k, self.v, self.n = k, v, n  # (1, H, P, D)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k, v (n, H, 1, D) -> (n, H, P + 1, D): the prefix, shared by every vector, then its own position."""
        shape = (self.n, -1, -1, -1)
        return torch.cat([self.k.expand(shape), k], dim=2), torch.cat([self.v.expand(shape), v], dim=2)


class _FixedCache:
    """The `layers` that `GPT.walk` reads, in the shape of a `KVCache`."""

    def __init__(self, layers: list[_FixedKV]) -> None:
        self.layers = layers
