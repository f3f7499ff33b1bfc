"""`logit_lens`: every statistic of the lens, per row and position, for one sequence.

It reads as its stages: check → stream → decode → statistics → result. The statistics are
streamed by the private kernel (`_stream.py`), one chunk of positions at a time.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tiktoken
import torch
from torch import Tensor

from ..errors import InputError, LensError, MinigptError
from ..model import GPT
from ..tokenizer import token_text
from . import _stream
from ._matmul import Matmul, Unembedding, resolve_matmul
from .decoders import Decoder, DecoderSpec, LnF, as_decoder
from .residual import row_streams
from .result import LensResult
from .rows import Row, lens_rows, resolve_positions


@torch.inference_mode()
def logit_lens(
    model: GPT,
    tokens: Tensor | Sequence[int] | str,
    *,
    tokenizer: tiktoken.Encoding | None = None,
    decoder: Decoder | str = "logit",
    last_blocks: int | None = None,
    k: int = 5,
    sub_blocks: bool = False,
    prior: bool = False,
    positions: slice | None = None,
    keep_logits: bool = False,
    resid: Tensor | None = None,
    matmul: Matmul = "exact",
    chunk_size: int | None = None,
) -> LensResult:
    """Decode the residual stream after every block of `model` on one sequence.

    tokens: token ids (T,) (or (1, T), or a list), or a text with `tokenizer=`.
    decoder: a decoder object (`minigpt.lens.LnF()`, `LastBlocks(2)`, a `minigpt.TunedLens`, ...) or a
      built-in's name: "logit" (default; the model's own ln_f; "ln_f" is an alias), "ln_f_no_bias",
      "norm_only", or "last_blocks" (with `last_blocks=k`, default 1). The two references, the final
      and the input distribution, always use the full ln_f.
    k: how many top tokens to keep per row and position.
    sub_blocks: add an "h.l.resid_mid" row before each block's row (after attention, before the MLP).
    prior: add a "prior" row, β @ W_E^T, at the bottom.
    positions: a slice of the positions to decode, clamped like Python slicing (the model still reads
      the whole sequence); an error only if it selects nothing.
    keep_logits: also return every row's logits, (R, T, V) float32.
    resid: `model(ids).resid` ((L + 1, 1, T, C) or (L + 1, T, C)) when you already have it, to skip
      the forward pass (not used with sub_blocks, which needs each block's parts).
    matmul: how the unembedding matmuls run: "exact" (default; the top row is bit for bit the
      model's logits), "onednn" (oneDNN's fp32 GEMM; faster on some CPUs, float rounding), or "bf16"
      (bf16 matmuls for the rows, float32 statistics, fp32 references; fast only with bf16 units).
    chunk_size: positions decoded at once (default: about 1536 / rows, so each chunk's matmul has
      about 1536 rows); extra memory is about (rows + 8) * chunk_size * V floats, 0.4 GB by default.

    >>> lens = logit_lens(model, "The dog", tokenizer=tok)
    >>> lens.top_ids.shape   # (rows, positions, k)
    """
    # -- check
    dec = as_decoder(decoder, last_blocks)
    dec.check(model.config)
    mode = resolve_matmul(matmul, model)
    L, V = model.config.n_layer, model.config.vocab_size
    if isinstance(k, bool) or not (isinstance(k, int) and 1 <= k <= V):
        raise LensError(f"k must be between 1 and the vocabulary size {V}, got {k!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not (isinstance(chunk_size, int) and chunk_size >= 1)):
        raise LensError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    ids = sequence_ids(model, tokens, tokenizer)  # (T,)
    model.check_ids(ids[None])
    span = resolve_positions(positions, len(ids))
    rows = lens_rows(L, sub_blocks, prior)

    # -- stream: the residual stream (T, C) at each row
    streams = _streams(model, ids, rows, None if sub_blocks else resid)

    # -- decode: what the unembedding reads at each row, for the positions asked for
    embed = next(i for i, row in enumerate(rows) if row.site == "embed")
    refs = [_full(model, rows[-1], streams[-1], span), _full(model, rows[embed], streams[embed], span)]  # final, input
    vectors = [
        model.ln_f.bias.expand(span.stop - span.start, -1) if row.site == "prior" else decode_row(model, dec, row, h, span)
        for row, h in zip(rows, streams)
    ]  # fmt: skip  # R x (n, C); the prior row is ln_f's input-independent part, β, whatever the decoder

    # -- statistics, then the result
    next_ids = torch.full_like(ids, -1)
    next_ids[:-1] = ids[1:]
    targets = _stream.Targets(ids[span], next_ids[span])
    return lens_statistics(model, dec, rows, refs, vectors, targets, start=span.start, k=k, mode=mode,
                           chunk_size=chunk_size, keep_logits=keep_logits, tokenizer=tokenizer)  # fmt: skip


def lens_statistics(
    model: GPT, dec: Decoder, rows: list[Row], refs: list[Tensor], vectors: list[Tensor], targets: _stream.Targets,
    *, start: int, k: int, mode: Matmul, chunk_size: int | None, keep_logits: bool, tokenizer: tiktoken.Encoding | None,
) -> LensResult:  # fmt: skip
    """The statistics and result stages of the lens, from what the unembedding reads: refs [final, input]
    2 x (n, C), vectors R x (n, C) (one per row), and the targets of those n positions. `generate_lens`
    calls it with the vectors it decoded step by step."""
    sources, row_source = _stream.assemble(refs, vectors)  # S x (n, C)
    n, V = len(targets.ids), model.config.vocab_size
    chunk = chunk_size or _stream.auto_chunk_size(len(sources))
    sink = _Positions(len(rows), n, k, V if keep_logits else None)
    unembedding = Unembedding(model, mode, len(sources) * min(chunk, n))
    _stream.run(sources, row_source, targets, unembedding, sink, n_refs=2, k=k, ranks=True, chunk_size=chunk)

    id_text: dict[int, str] = {}
    if tokenizer is not None:
        used = torch.cat([targets.ids.cpu(), targets.next_ids.cpu(), sink.final_ids, sink.top_ids.flatten()]).unique()
        id_text = {int(i): token_text(tokenizer, int(i)) for i in used if 0 <= i < tokenizer.n_vocab}
    return LensResult(
        labels=[r.label for r in rows], decoder=DecoderSpec.of(dec),
        blocks=np.array([r.block for r in rows], dtype=np.int64), sites=np.array([r.site for r in rows]),
        token_ids=targets.ids.cpu().numpy(), next_ids=targets.next_ids.cpu().numpy(),
        final_ids=sink.final_ids.numpy(), top_ids=sink.top_ids.numpy(),
        top_logits=sink.top_logits.numpy(), top_probs=sink.top_probs.numpy(),
        **{name: v.numpy() for name, v in sink.floats.items()}, **{name: v.numpy() for name, v in sink.ranks.items()},
        id_text=id_text, logits=None if sink.logits is None else sink.logits.numpy(), start=start,
    )  # fmt: skip


# ----------------------------------------------------------------------------
# The stages' parts


def sequence_ids(model: GPT, tokens: Tensor | Sequence[int] | str, tokenizer: tiktoken.Encoding | None,
                 who: str = "logit_lens", error: type[MinigptError] = LensError) -> Tensor:  # fmt: skip
    """One sequence of token ids (T,) on the model's device, from ids (T,), (1, T), a list, or a text with
    `tokenizer` ("<|endoftext|>" in a text stays ordinary text). `who` names the caller in errors."""
    if isinstance(tokens, str):
        if tokenizer is None:
            raise error(f"a text needs a tokenizer: {who}(model, text, tokenizer=minigpt.load_tokenizer(...))")
        if not tokens:
            raise InputError(f"the text is empty: give {who} at least one token")
        tokens = tokenizer.encode_ordinary(tokens)
    ids = torch.as_tensor(tokens, dtype=torch.int64) if isinstance(tokens, (list, tuple)) else torch.as_tensor(tokens)
    if ids.numel() == 0:
        raise InputError(f"the sequence is empty: give {who} at least one token")
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise InputError(f"{who} takes one sequence of token ids (T,), got shape {tuple(ids.shape)}")
    return ids.to(model.device)


def _streams(model: GPT, ids: Tensor, rows: list[Row], resid: Tensor | None) -> list[Tensor | None]:
    """The stream (T, C) at each row (None for the prior row), from `resid` when given."""
    if resid is None:
        return [None if s is None else s[0] for s in row_streams(model, ids[None], rows)]
    L, T, C = model.config.n_layer, len(ids), model.config.n_embd
    resid = resid[:, 0] if resid.dim() == 4 and resid.shape[1] == 1 else resid
    if tuple(resid.shape) != (L + 1, T, C):
        raise LensError(f"resid has shape {tuple(resid.shape)}, expected {(L + 1, T, C)} for these tokens: pass model(ids).resid")
    resid = resid.to(model.device)
    return [None if r.resid_index is None else resid[r.resid_index] for r in rows]


def _full(model: GPT, row: Row, h: Tensor, span: slice) -> Tensor:
    """A reference's vectors (n, C): the full ln_f, whatever the decoder."""
    return LnF().decode(model, h[span], row)


def decode_row(model: GPT, decoder: Decoder, row: Row, h: Tensor, span: slice) -> Tensor:
    """The decoder's vectors for positions `span` of the stream h (..., T, C) at `row`. A decoder sees
    positions 0..span.stop - 1 (attention in `last_blocks` needs everything before a position)."""
    out = decoder.decode(model, h[..., : span.stop, :], row)
    expected = (*h.shape[:-2], span.stop, model.config.n_embd)
    if not isinstance(out, Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise LensError(f"the {decoder.name!r} decoder returned {got} for row {row.label}, expected {expected}")
    return out[..., span.start :, :]


class _Positions:
    """A sink that keeps every statistic per row and position: (R, T, ...) outputs, filled a chunk at a time."""

    def __init__(self, R: int, T: int, k: int, V: int | None) -> None:
        f32 = lambda *s: torch.full(s, float("nan"), dtype=torch.float32)  # noqa: E731
        self.final_ids = torch.empty(T, dtype=torch.int64)
        self.top_ids = torch.zeros(R, T, k, dtype=torch.int64)
        self.top_logits, self.top_probs = f32(R, T, k), f32(R, T, k)
        self.floats = {n: f32(R, T) for n in (
            "logit_final", "prob_final", "logit_next", "prob_next", "logit_input", "prob_input",
            "kl_final", "kl_final_rev", "kl_input", "kl_input_rev", "entropy", "cross_entropy")}  # fmt: skip
        self.ranks = {n: torch.full((R, T), -1, dtype=torch.int64) for n in ("rank_final", "rank_next", "rank_input")}
        self.logits = torch.empty(R, T, V, dtype=torch.float32) if V else None

    def add(self, dst: slice, targets: Tensor, has_next: Tensor, refs: list, rows: list[_stream.RowChunk]) -> None:
        self.final_ids[dst] = targets[:, 0].cpu()
        nan = torch.tensor(float("nan"), device=targets.device)
        for r, c in enumerate(rows):
            self.top_ids[r, dst] = c.top_ids.cpu()
            self.top_logits[r, dst] = c.top_logits.cpu()
            self.top_probs[r, dst] = c.top_logp.exp().cpu()
            prob = c.target_logp.exp()  # (n, 3)
            values = {
                "entropy": c.entropy,
                "kl_final": c.kl[:, 0], "kl_final_rev": c.kl_rev[:, 0],
                "kl_input": c.kl[:, 1], "kl_input_rev": c.kl_rev[:, 1],
                "logit_final": c.target_logits[:, 0], "prob_final": prob[:, 0],
                "logit_input": c.target_logits[:, 2], "prob_input": prob[:, 2],
                "logit_next": torch.where(has_next, c.target_logits[:, 1], nan),
                "prob_next": torch.where(has_next, prob[:, 1], nan),
                "cross_entropy": torch.where(has_next, -c.target_logp[:, 1], nan),
            }  # fmt: skip
            for name, v in values.items():
                self.floats[name][r, dst] = v.float().cpu()
            self.ranks["rank_final"][r, dst] = c.ranks[:, 0].cpu()
            self.ranks["rank_next"][r, dst] = torch.where(has_next, c.ranks[:, 1], -1).cpu()
            self.ranks["rank_input"][r, dst] = c.ranks[:, 2].cpu()
            if self.logits is not None:
                self.logits[r, dst] = c.z.cpu()
