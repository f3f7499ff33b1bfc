"""What the lens reads: its rows (where in the model each one sits) and its positions.

A row is a place in the residual stream, held as data: its site and its block. The label
("h.3.resid_mid") is for display only; nothing parses it back.

Positions are a Python `slice` everywhere (the lens, its result, the figures, the CLI), resolved
by one rule: `resolve_positions` clamps like Python slicing does, and raises only when nothing is left.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal

from ..errors import LensError

Site = Literal["prior", "embed", "resid_mid", "resid_post"]
SITES: tuple[Site, ...] = ("prior", "embed", "resid_mid", "resid_post")


@dataclass(frozen=True)
class Row:
    """One row of the lens: a place in the residual stream.

    label: "prior", "embed", "h.3.resid_mid" or "h.3" (display only; never parsed back)
    site:  "prior" (ln_f's bias β, the same at every position), "embed" (h_0 = wte + wpe),
           "resid_mid" (inside block `block`, after attention, before the MLP) or
           "resid_post" (the output of block `block`)
    block: -1 for prior and embed; l for h.l and h.l.resid_mid
    """

    label: str
    site: Site
    block: int

    @property
    def resid_index(self) -> int | None:
        """The index of this row in `model(ids).resid` (embed -> 0, h.l -> l + 1); None for prior and resid_mid.

        It is also tuned-lens' layer index, which reads Hugging Face's `hidden_states[i]`.
        """
        if self.site == "embed":
            return 0
        if self.site == "resid_post":
            return self.block + 1
        return None

    @classmethod
    def prior(cls) -> Row:
        return cls("prior", "prior", -1)

    @classmethod
    def embed(cls) -> Row:
        return cls("embed", "embed", -1)

    @classmethod
    def mid(cls, block: int) -> Row:
        return cls(f"h.{block}.resid_mid", "resid_mid", block)

    @classmethod
    def post(cls, block: int) -> Row:
        return cls(f"h.{block}", "resid_post", block)

    @classmethod
    def of_resid(cls, index: int, n_layer: int) -> Row:
        """The row of `resid[index]` (0 = embed, i = the output of block i - 1; negatives count from the end)."""
        if isinstance(index, bool) or not isinstance(index, int) or not -(n_layer + 1) <= index <= n_layer:
            raise LensError(f"resid index {index!r} is out of range: the stream has rows 0..{n_layer} (0 = embed)")
        index %= n_layer + 1
        return cls.embed() if index == 0 else cls.post(index - 1)


def lens_rows(n_layer: int, sub_blocks: bool = False, prior: bool = False) -> list[Row]:
    """The lens's rows, bottom to top: [prior], embed, then per block [h.l.resid_mid], h.l."""
    rows = [Row.prior()] if prior else []
    rows.append(Row.embed())
    for block in range(n_layer):
        rows += [Row.mid(block), Row.post(block)] if sub_blocks else [Row.post(block)]
    return rows


def row_labels(n_layer: int, sub_blocks: bool = False, prior: bool = False) -> list[str]:
    """The labels of `lens_rows(...)`."""
    return [row.label for row in lens_rows(n_layer, sub_blocks, prior)]


def row_index(rows: list[Row], row: Row | tuple[str, int] | str) -> int:
    """Where `row` is among `rows`: a Row, a (site, block) pair, or a row's displayed label."""
    if isinstance(row, Row):
        key = (row.site, row.block)
    elif isinstance(row, tuple) and len(row) == 2:
        key = row
    elif isinstance(row, str):
        match = [i for i, r in enumerate(rows) if r.label == row]
        if match:
            return match[0]
        raise LensError(f"no row {row!r}; the rows are {', '.join(r.label for r in rows)}")
    else:
        raise LensError(f"a row is a Row, a (site, block) pair such as ('resid_post', 3), or a label; got {row!r}")
    for i, r in enumerate(rows):
        if (r.site, r.block) == key:
            return i
    raise LensError(f"no row at {key!r}; the rows are {', '.join(r.label for r in rows)}")


def resolve_positions(positions: slice | None, T: int) -> slice:
    """A positions slice of T positions as slice(lo, hi) with 0 <= lo < hi <= T.

    Clamped like Python slicing (negatives count from the end, ends past T stop at T); raises
    LensError only when nothing is left, or for a step other than 1.
    """
    if positions is None:
        positions = slice(None)
    if not isinstance(positions, slice) or positions.step not in (None, 1):
        raise LensError(f"positions must be a contiguous slice such as slice(10, 20), got {positions!r}")
    for end in (positions.start, positions.stop):
        if end is not None and (isinstance(end, bool) or not isinstance(end, numbers.Integral)):
            raise LensError(f"positions must be a slice of integers such as slice(10, 20), got {positions!r}")
    lo, hi, _ = slice(positions.start, positions.stop).indices(T)
    if lo >= hi:
        shown = f"{'' if positions.start is None else positions.start}:{'' if positions.stop is None else positions.stop}"
        raise LensError(f"positions {shown} select nothing out of {T} positions; use a non-empty slice of 0:{T}")
    return slice(lo, hi)
