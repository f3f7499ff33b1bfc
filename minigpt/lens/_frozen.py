"""Fitting a lens reads the model but never trains it: its parameters take no gradient meanwhile."""

from __future__ import annotations

import contextlib
from typing import Iterator

from ..model import GPT


@contextlib.contextmanager
def frozen(model: GPT) -> Iterator[None]:
    """Within the block the model's parameters take no gradient (then they are as they were), so a
    backward pass reaches only the lens's own weights, or the stream it starts from."""
    before = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), before):
            p.requires_grad_(flag)
