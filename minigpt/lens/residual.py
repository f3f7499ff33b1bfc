"""The residual stream, row by row: what the lens reads.

`residual_parts` keeps what attention and the MLP of each block add; `row_streams` runs the
blocks once for a batch of sequences and returns the stream at each of the lens's rows, without
the final unembedding (the lens decodes the top row itself, so no (B, T, V) logits are made).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..model import GPT
from .rows import Row


class ResidualParts(NamedTuple):
    """What each block reads and writes, per block: every field is (L, B, T, C).

    resid_post = resid_pre + attn_out + mlp_out, and resid_mid = resid_pre + attn_out.
    """

    resid_pre: Tensor
    attn_out: Tensor
    resid_mid: Tensor
    mlp_out: Tensor
    resid_post: Tensor


@torch.inference_mode()
def residual_parts(model: GPT, idx: Tensor) -> ResidualParts:
    """Run `model` on idx (B, T), keeping what attention and the MLP of each block add to the stream."""
    model.check_ids(idx)
    pos = torch.arange(idx.shape[1], device=idx.device)
    x = model.wte(idx) + model.wpe(pos)  # (B, T, C)
    parts: list[list[Tensor]] = [[], [], [], [], []]
    for block in model.h:  # the two lines of Block.forward, with their terms kept apart
        attn_out = block.attn(block.ln_1(x))  # (B, T, C)
        mid = x + attn_out  # (B, T, C)
        mlp_out = block.mlp(block.ln_2(mid))  # (B, T, C)
        for store, t in zip(parts, (x, attn_out, mid, mlp_out, mid + mlp_out)):
            store.append(t)
        x = mid + mlp_out
    return ResidualParts(*(torch.stack(p) for p in parts))


@torch.inference_mode()
def row_streams(model: GPT, idx: Tensor, rows: list[Row]) -> list[Tensor | None]:
    """The stream (B, T, C) at each row for token ids idx (B, T); None for the prior row.

    The embed and block rows are exactly `model(idx).resid[i]` (the same operations, in the same
    order); `resid_mid` rows come from `residual_parts`, which keeps each block's terms apart.
    """
    model.check_ids(idx)
    if any(row.site == "resid_mid" for row in rows):
        parts = residual_parts(model, idx)
        at = {"resid_mid": parts.resid_mid, "resid_post": parts.resid_post}
        return [None if r.site == "prior" else parts.resid_pre[0] if r.site == "embed" else at[r.site][r.block] for r in rows]
    pos = torch.arange(idx.shape[1], device=idx.device)
    x = model.wte(idx) + model.wpe(pos)  # (B, T, C): as GPT.forward, without the final unembedding
    resid = [x]
    for block in model.h:
        x = block(x)  # (B, T, C)
        resid.append(x)
    return [None if r.site == "prior" else resid[r.resid_index] for r in rows]
