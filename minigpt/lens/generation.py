"""The lens during generation: watch the model decide each token as it samples it.

`generate_lens` samples with the KV cache, exactly as `generate` does (the same loop,
`generate.sampling_steps`), and decodes each new position's stream as it is produced, under one or
more decoders; the prefix is never run again. At the end one statistics pass per decoder turns the
decoded vectors into a `LensResult` over the generated steps:

    step s (0 <= s < n) is position p = T0 - 1 + s of the final sequence (T0 = the prompt's length);
    its rows predict token p + 1, and its "next" token (next_ids, rank_next, ...) is the one sampled there.

So `run.lens["logit"]` equals `logit_lens(model, run.ids, positions=slice(T0 - 1, T0 - 1 + n))` (to
float rounding: the cached stream is computed one position at a time).

>>> run = minigpt.generate_lens(model, "ROMEO:", 40, tokenizer=tok, decoders=["logit", jlens])
>>> run.lens["jacobian"].rank_next     # (rows, steps): each row's rank of the token sampled at that step
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, LensError
from ..generate import _prompt_ids, sampling_steps
from ..model import GPT
from ..tokenizer import token_text
from . import _stream
from ._matmul import Matmul, resolve_matmul
from .decoders import Decoder, LastBlocks, labelled
from .result import LensResult
from .rows import lens_rows
from .sequence import decode_row, lens_statistics

if TYPE_CHECKING:
    import tiktoken

__all__ = ["generate_lens", "GenerationLens"]


@dataclass(eq=False, repr=False)
class GenerationLens:
    """What `generate_lens` returns: the ids, and the lens of every generated step under each decoder."""

    ids: np.ndarray  # (T0 + n,) int64: the prompt, then the n generated tokens
    prompt_len: int  # T0
    lens: dict[str, LensResult]  # decoder label -> the lens over the n steps (R rows, n positions from T0 - 1)
    id_text: dict[int, str] = field(default_factory=dict)  # token id -> its text, for the ids above

    @property
    def n(self) -> int:
        """The number of generated tokens."""
        return len(self.ids) - self.prompt_len

    @property
    def generated(self) -> np.ndarray:
        """(n,) int64: the sampled tokens; step s's "next" token."""
        return self.ids[self.prompt_len :]

    @property
    def depth(self) -> dict[str, np.ndarray]:
        """Per decoder label, (n,) int64 prediction depth of each step (see `LensResult.depth`)."""
        return {label: result.depth for label, result in self.lens.items()}

    def text(self, token_id: int) -> str:
        return self.id_text.get(int(token_id), f"<{int(token_id)}>")

    def __repr__(self) -> str:
        return f"GenerationLens({self.prompt_len} prompt tokens + {self.n} generated, decoders {list(self.lens)})"

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the ids and their texts, each lens's `to_dict()`, and the depths."""
        return {
            "ids": self.ids.tolist(), "prompt_len": self.prompt_len, "tokens": [self.text(i) for i in self.ids],
            "lens": {label: result.to_dict() for label, result in self.lens.items()},
            "depth": {label: d.tolist() for label, d in self.depth.items()},
        }  # fmt: skip

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


@torch.inference_mode()
def generate_lens(
    model: GPT,
    prompt: Tensor | Sequence[int] | str,
    n: int,
    *,
    tokenizer: tiktoken.Encoding | None = None,
    decoders: Sequence[Decoder | str] | Mapping[str, Decoder | str] | Decoder | str = ("logit",),
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    k: int = 10,
    matmul: Matmul = "exact",
) -> GenerationLens:
    """Sample n tokens after `prompt` and decode, at every step, the stream of the position that predicts it.

    prompt: token ids (T0,) or a text with `tokenizer=`. decoders: names or decoder objects, as for
      `evaluate_lens` (labels from a dict; a repeated name is numbered). Each new position is decoded
      alone, so a decoder that reads the whole sequence ("last_blocks") is refused.
    temperature, top_k, generator: as for `generate` (temperature=0 is greedy).
    k: top tokens kept per row and step.
    """
    # -- check
    pairs = labelled(decoders)
    for label, dec in pairs:
        dec.check(model.config)
        if isinstance(dec, LastBlocks):
            raise LensError(
                f"the {label!r} decoder runs blocks over the whole sequence, but generate_lens decodes each new "
                "position alone; use logit_lens(model, run.ids, decoder=...) on the result's ids instead"
            )
    V, L = model.config.vocab_size, model.config.n_layer
    if isinstance(k, bool) or not (isinstance(k, int) and 1 <= k <= V):
        raise LensError(f"k must be between 1 and the vocabulary size {V}, got {k!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive number of tokens to generate, got {n!r}")
    mode = resolve_matmul(matmul, model)
    ids = _prompt_ids(prompt, tokenizer)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise InputError(f"generate_lens takes one prompt, token ids (T,); got shape {tuple(ids.shape)}")
    rows = lens_rows(L)  # embed, h.0 .. h.{L-1}: row r is resid[r]

    # -- sample, decoding each new position's stream as it comes
    finals: list[Tensor] = []  # n x (1, C): the model's own output at each step
    inputs: list[Tensor] = []  # n x (1, C): the input token's embedding, decoded with ln_f
    vectors: dict[str, list[list[Tensor]]] = {label: [[] for _ in rows] for label, _ in pairs}  # R x n x (1, C)
    sampled = []
    for out, step in sampling_steps(model, ids[None], n, temperature=temperature, top_k=top_k, generator=generator):
        h = out.resid[:, 0, -1:]  # (L + 1, 1, C): every row at the newest position
        finals.append(model.ln_f(h[-1]))
        inputs.append(model.ln_f(h[0]))
        for label, dec in pairs:
            for r, row in enumerate(rows):
                vectors[label][r].append(decode_row(model, dec, row, h[r], slice(0, 1)))  # (1, C)
        sampled.append(step[0])  # (1,)

    # -- statistics, once per decoder over the n steps
    T0 = len(ids)
    all_ids = torch.cat([ids.to(model.device), *sampled])  # (T0 + n,)
    targets = _stream.Targets(all_ids[T0 - 1 : T0 - 1 + n], all_ids[T0:])  # step s: position T0-1+s, next = sampled
    refs = [torch.cat(finals), torch.cat(inputs)]  # 2 x (n, C)
    lens = {
        label: lens_statistics(model, dec, rows, refs, [torch.cat(v) for v in vectors[label]], targets, start=T0 - 1,
                               k=k, mode=mode, chunk_size=None, keep_logits=False, tokenizer=tokenizer)
        for label, dec in pairs
    }  # fmt: skip
    id_text = {}
    if tokenizer is not None:
        id_text = {int(i): token_text(tokenizer, int(i)) for i in all_ids.unique().tolist() if 0 <= i < tokenizer.n_vocab}
    return GenerationLens(ids=all_ids.cpu().numpy(), prompt_len=T0, lens=lens, id_text=id_text)
