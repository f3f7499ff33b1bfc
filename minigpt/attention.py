"""Attention patterns as data: which earlier tokens each position reads, per head, in a few blocks.

`CausalSelfAttention.pattern` gives a block's softmax weights as a float tensor (B, H, T, T).
The HTML report shows them next to the lens, and a report is a file to send around, so the
patterns travel small: a few blocks (one by default), a window of at most `MAX_POSITIONS`
positions (queries and keys alike), and each weight quantised to one byte (round(255 × w), a
resolution of 1/255). One gpt2-xl block over 256 positions is then 25 × 256² bytes (1.6 MB, half
of it the zeros above the diagonal, which the report leaves out).

Shape legend: A blocks, H heads, T positions in the window, C n_embd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import InputError, LensError
from .model import GPT

__all__ = ["attention_patterns", "AttentionPatterns", "MAX_POSITIONS"]

MAX_POSITIONS = 256  # the default cap on the window: 256² weights per head
SCALE = 255  # a weight w is stored as round(SCALE * w)


@dataclass(frozen=True)
class AttentionPatterns:
    """Quantised attention weights of some blocks over a window of positions.

    A weight is stored as round(255 × w), so `pattern / 255` recovers it to within 1/510.
    """

    blocks: np.ndarray  # (A,) int64: the block of each pattern
    start: int  # absolute position of the window's first token (a query and a key)
    token_ids: np.ndarray  # (T,) int64: the tokens at positions start .. start + T - 1
    pattern: np.ndarray  # (A, H, T, T) uint8: query t reads key s (s <= t); 0 above the diagonal
    before: np.ndarray  # (A, H, T) uint8: what query t reads from all the keys before `start`, together

    @property
    def n_head(self) -> int:
        return self.pattern.shape[1]

    def __len__(self) -> int:
        return len(self.token_ids)

    def weights(self, block: int, head: int) -> np.ndarray:
        """The (T, T) float32 weights of one head of one of these blocks (rows sum to 1 with `before`, ± rounding)."""
        where = np.flatnonzero(self.blocks == block)
        if where.size == 0:
            raise LensError(f"no block {block} in these patterns; they hold blocks {self.blocks.tolist()}")
        if not 0 <= head < self.n_head:
            raise LensError(f"no head {head}: the heads are 0..{self.n_head - 1}")
        return self.pattern[where[0], head].astype(np.float32) / SCALE

    def __repr__(self) -> str:
        A, H, T, _ = self.pattern.shape
        span = f"{self.start}:{self.start + T}"
        return f"AttentionPatterns(blocks={self.blocks.tolist()}, heads={H}, positions={span}, uint8 {A}x{H}x{T}x{T})"


def _as_ids(tokens: Tensor | Sequence[int]) -> Tensor:
    ids = torch.as_tensor(tokens, dtype=torch.int64) if isinstance(tokens, (list, tuple)) else torch.as_tensor(tokens)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1 or ids.numel() == 0:
        raise InputError(f"attention_patterns takes one non-empty sequence of token ids (T,), got shape {tuple(ids.shape)}")
    return ids


@torch.inference_mode()
def attention_patterns(
    model: GPT,
    tokens: Tensor | Sequence[int],
    *,
    blocks: Sequence[int] | None = None,
    positions: slice | None = None,
    max_positions: int = MAX_POSITIONS,
) -> AttentionPatterns:
    """The attention weights of every head of `blocks` (default: the last block) on one sequence.

    tokens: token ids (T,) or (1, T). positions: the window, a contiguous slice (default: the whole
    sequence); both the queries and the keys shown come from it, and what a query reads from
    before the window is kept as one number (`before`). The window may hold at most
    `max_positions` positions. Pass the result to `minigpt.report.lens_html(..., attention=...)`.

    >>> att = attention_patterns(model, ids, blocks=[5], positions=slice(10, 40))
    >>> att.weights(5, 0).shape   # (T, T) for block 5, head 0
    """
    L = model.config.n_layer
    ids = _as_ids(tokens).to(model.device)  # (T_all,)
    model.check_ids(ids[None])
    wanted = [L - 1] if blocks is None else list(blocks)
    if not wanted or not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in wanted):
        raise LensError(f"blocks must be a non-empty list of block numbers 0..{L - 1}, got {blocks!r}")
    bad = [int(b) for b in wanted if not 0 <= b < L]
    if bad:
        raise LensError(f"no block {', '.join(map(str, bad))}: this model's blocks are 0..{L - 1}")
    wanted = sorted({int(b) for b in wanted})
    if isinstance(max_positions, bool) or not isinstance(max_positions, (int, np.integer)) or max_positions < 1:
        raise LensError(f"max_positions must be a positive integer, got {max_positions!r}")
    positions = slice(None) if positions is None else positions
    if not isinstance(positions, slice) or positions.step not in (None, 1):
        raise LensError(f"positions must be a contiguous slice such as slice(10, 20), got {positions!r}")
    lo, hi, _ = positions.indices(len(ids))
    if lo >= hi:
        raise LensError(f"positions {positions.start}:{positions.stop} select nothing of {len(ids)} positions")
    if hi - lo > max_positions:
        raise LensError(
            f"a window of {hi - lo} positions is more than max_positions={max_positions} (the file would hold "
            f"{hi - lo}² weights per head); pass positions=slice({hi - max_positions}, {hi}) or a larger max_positions"
        )

    # The blocks up to the last one wanted, as in GPT.forward, and nothing after it: no logits
    # are needed, and causality means the positions after `hi` change nothing before it.
    inside, before = [], []
    for l, parts in enumerate(model.walk(model.embed(ids[None, :hi]))):  # (1, hi, C) through each block
        if l in wanted:
            p = model.h[l].attn.pattern(parts.ln_1)[0, :, lo:hi].float()  # (H, T, hi): the window's queries
            inside.append(p[:, :, lo:hi])  # (H, T, T)
            before.append(p[:, :, :lo].sum(-1))  # (H, T)
        if l == wanted[-1]:
            break
    quantise = lambda w: torch.round(torch.stack(w) * SCALE).to(torch.uint8).cpu().numpy()  # noqa: E731
    return AttentionPatterns(
        blocks=np.array(wanted, dtype=np.int64), start=lo, token_ids=ids[lo:hi].cpu().numpy(),
        pattern=quantise(inside), before=quantise(before),
    )  # fmt: skip
