"""The residual stream, row by row: what the lens reads.

Both functions walk the blocks through `GPT.walk` (each block's `Block.parts`), so the model's
forward pass is written once, in `model.py`. `residual_parts` keeps what attention and the MLP of
each block add; `row_streams` returns the stream at each of the lens's rows, without the final
unembedding (the lens decodes the top row itself, so no (B, T, V) logits are made).
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
    walked = [(p.resid_pre, p.attn, p.resid_mid, p.mlp, p.out) for p in model.walk(model.embed(idx))]
    return ResidualParts(*(torch.stack(site) for site in zip(*walked)))  # each (L, B, T, C)


@torch.inference_mode()
def row_streams(model: GPT, idx: Tensor, rows: list[Row]) -> list[Tensor | None]:
    """The stream (B, T, C) at each row for token ids idx (B, T); None for the prior row.

    Every row is exactly what `model(idx)` computes there (the same walk through the blocks).
    Only the blocks up to the highest row asked for are run.
    """
    model.check_ids(idx)
    x = model.embed(idx)  # (B, T, C)
    sites: dict[tuple[str, int], Tensor] = {("embed", -1): x}
    top = max((r.block for r in rows), default=-1)
    for block, parts in enumerate(model.walk(x)):
        if block > top:
            break
        sites["resid_mid", block], sites["resid_post", block] = parts.resid_mid, parts.out
    return [None if r.site == "prior" else sites[r.site, r.block] for r in rows]
