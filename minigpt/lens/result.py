"""`LensResult`: the logit lens of one sequence, as numpy arrays, with its structure as data."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import LensError
from .decoders import ALIASES, DecoderSpec
from .rows import Row, resolve_positions, row_index

# The views a figure of a LensResult can show (minigpt.plot draws them; defined here so that
# the CLI can list them without importing matplotlib).
Metric = Literal["logits", "probs", "ranks", "kl", "input_ranks", "input_kl", "depth"]
METRICS: tuple[Metric, ...] = ("logits", "probs", "ranks", "kl", "input_ranks", "input_kl", "depth")


def _axes(axes: str) -> Any:
    """A field's axes, R rows, T positions, k top tokens, V vocab: `positions()` cuts T and nothing else."""
    return field(metadata={"axes": axes})


@dataclass(eq=False, repr=False)
class LensResult:
    """The logit lens over R rows and T positions. All arrays are numpy; all logs are natural (nats).

    Rows, bottom to top: optionally "prior" (β @ W_E^T, the same at every position), "embed" (h_0),
    then per block l optionally "h.l.resid_mid" (after attention, before the MLP) and "h.l" (the
    block's output). The top row is the model's output under every built-in decoder; with the
    default decoder its logits are bit for bit the model's. Per position t, the targets are the
    model's final top-1, the true next token, and the input token.
    """

    labels: list[str]  # (R,) row labels, bottom to top (for display; structure is in blocks and sites)
    decoder: DecoderSpec  # the decoder as data: .name, .params, .title
    token_ids: np.ndarray = _axes("T")  # (T,) int64: the input tokens
    next_ids: np.ndarray = _axes("T")  # (T,) int64: the true next tokens, -1 at the sequence's last position
    final_ids: np.ndarray = _axes("T")  # (T,) int64: the model's top-1 prediction
    top_ids: np.ndarray = _axes("RTk")  # (R, T, k) int64: each row's top-k tokens, best first
    top_logits: np.ndarray = _axes("RTk")  # (R, T, k) float32
    top_probs: np.ndarray = _axes("RTk")  # (R, T, k) float32
    logit_final: np.ndarray = _axes("RT")  # (R, T) float32: each row's logit of the final top-1
    prob_final: np.ndarray = _axes("RT")  # (R, T) float32: ... its probability
    rank_final: np.ndarray = _axes("RT")  # (R, T) int64: ... its rank, 1 + the number of strictly greater logits
    logit_next: np.ndarray = _axes("RT")  # (R, T) float32: the same for the true next token (NaN at the end)
    prob_next: np.ndarray = _axes("RT")  # (R, T) float32 (NaN at the end)
    rank_next: np.ndarray = _axes("RT")  # (R, T) int64 (-1 at the end)
    logit_input: np.ndarray = _axes("RT")  # (R, T) float32: the same for the input token
    prob_input: np.ndarray = _axes("RT")  # (R, T) float32
    rank_input: np.ndarray = _axes("RT")  # (R, T) int64
    kl_final: np.ndarray = _axes("RT")  # (R, T) float32: KL(p_final ‖ p_row)
    kl_final_rev: np.ndarray = _axes("RT")  # (R, T) float32: KL(p_row ‖ p_final)
    kl_input: np.ndarray = _axes("RT")  # (R, T) float32: KL(p_embed ‖ p_row), p_embed decoded with ln_f
    kl_input_rev: np.ndarray = _axes("RT")  # (R, T) float32: KL(p_row ‖ p_embed)
    entropy: np.ndarray = _axes("RT")  # (R, T) float32: H(p_row)
    cross_entropy: np.ndarray = _axes("RT")  # (R, T) float32: -log p_row(next token), NaN at the end
    blocks: np.ndarray | None = field(default=None, metadata={"axes": "R"})  # (R,) int64: -1 for prior and embed
    sites: np.ndarray | None = field(default=None, metadata={"axes": "R"})  # (R,) str: prior | embed | resid_mid | resid_post
    id_text: dict[int, str] = field(default_factory=dict)  # token id -> its text, for every id above
    logits: np.ndarray | None = field(default=None, metadata={"axes": "RTV"})  # (R, T, V) float32, only when asked for
    start: int = 0  # the index of the first position in the whole sequence (non-zero after slicing)

    def __post_init__(self) -> None:
        # Structure is data: a hand-built result gives each row's block and site, and its decoder as
        # a DecoderSpec (or a built-in's bare name). Only `load` reads 0.1 files, whose structure is in strings.
        if isinstance(self.decoder, str):
            if ":" in self.decoder:
                raise LensError(
                    f"decoder={self.decoder!r} is minigpt 0.1's file format; pass a DecoderSpec, "
                    "e.g. DecoderSpec('last_blocks', {'k': 2})"
                )
            self.decoder = DecoderSpec.from_dict({"name": self.decoder})
        if self.blocks is None or self.sites is None:
            raise LensError(
                "a LensResult needs blocks= and sites=, (R,) arrays saying where each row sits "
                "(from rows: blocks=[r.block for r in rows], sites=[r.site for r in rows])"
            )

    # -- reading it

    @property
    def rows(self) -> list[Row]:
        """Each row's place in the model, bottom to top."""
        return [Row(label, str(site), int(block)) for label, site, block in zip(self.labels, self.sites, self.blocks)]

    @property
    def tokens(self) -> list[str]:
        """The input tokens' text, one per position."""
        return [self.text(i) for i in self.token_ids]

    @property
    def next_tokens(self) -> list[str | None]:
        """The true next tokens' text (None at the last position of the sequence)."""
        return [None if i < 0 else self.text(i) for i in self.next_ids]

    def text(self, token_id: int) -> str:
        """A token's text (its id in angle brackets when no tokenizer was given)."""
        return self.id_text.get(int(token_id), f"<{int(token_id)}>")

    def row(self, row: Row | tuple[str, int] | str) -> int:
        """The index of a row: a `Row`, a (site, block) pair such as ("resid_post", 3), or the label
        shown on the figures ("h.3")."""
        return row_index(self.rows, row)

    @property
    def depth(self) -> np.ndarray:
        """(T,) int64 prediction depth: the first row (0 = the bottom row) from which every row's top-1
        is the model's final top-1; R (len(labels)) where even the top row disagrees. The prior row never counts."""
        return self._depths()[0]

    @property
    def first_hit(self) -> np.ndarray:
        """(T,) int64: the first row whose top-1 is the final top-1 at all (R where none is); <= depth."""
        return self._depths()[1]

    def _depths(self) -> tuple[np.ndarray, np.ndarray]:
        agree = torch.from_numpy(self.top_ids[:, :, 0] == self.final_ids[None, :])  # (R, T)
        agree[torch.from_numpy(self.sites == "prior")] = False
        depth, first_hit = prediction_depth(agree)
        return depth.numpy(), first_hit.numpy()

    def __len__(self) -> int:
        return len(self.token_ids)

    def positions(self, start: int | slice | None = None, end: int | None = None) -> LensResult:
        """The result at positions `start:end` of this result (or a slice), clamped like a Python slice."""
        span = resolve_positions(start if isinstance(start, slice) else slice(start, end), len(self))
        cut = {}
        for f in fields(self):
            value, axes = getattr(self, f.name), f.metadata.get("axes", "")
            if isinstance(value, np.ndarray) and "T" in axes:
                value = value[span] if axes[0] == "T" else value[:, span]
            cut[f.name] = value
        cut["start"] = self.start + span.start
        return LensResult(**cut)

    def __getitem__(self, positions: slice) -> LensResult:
        if not isinstance(positions, slice) or positions.step not in (None, 1):
            raise LensError("index a LensResult with a contiguous positions slice such as result[10:20]")
        return self.positions(positions)

    def __repr__(self) -> str:
        labels = self.labels
        rows = ", ".join(labels) if len(labels) <= 3 else f"{labels[0]} … {labels[-1]}"
        text = "".join(self.tokens)
        text = text if len(text) <= 40 else text[:39] + "…"
        k = self.top_ids.shape[-1]
        span = f"{self.start}:{self.start + len(self)}"
        return f"LensResult({len(labels)} rows [{rows}] × positions {span} {text!r}, decoder {self.decoder.name!r}, k={k})"

    def _repr_html_(self) -> str:
        """The interactive report inline in Jupyter (its last 64 positions, in a sandboxed iframe).
        Jupyter runs the report's script only in trusted notebooks; elsewhere the grid shows without it."""
        from ..report import notebook_html  # the report is imported only when a notebook asks

        return notebook_html(self)

    # -- saving it

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array field by name (blocks and sites included)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}

    def save(self, path: str | os.PathLike) -> None:
        """Save as `.npz` (no pickles inside; `LensResult.load` reads it back)."""
        # Token texts go in as one JSON string: numpy's fixed-width strings drop trailing "\x00".
        id_text = json.dumps({str(k): v for k, v in sorted(self.id_text.items())})
        np.savez_compressed(
            path, **self.arrays(), labels=np.array(self.labels), start=np.array(self.start),
            decoder_json=np.array(json.dumps(self.decoder.to_dict())), id_text_json=np.array(id_text),
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike) -> LensResult:
        """Read a result written by `save` (also by minigpt 0.1)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise LensError(f"cannot read a lens result from {path}: {e}") from e
        names = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in names}
        kwargs["labels"] = [str(s) for s in data["labels"]]
        if "decoder_json" in data:
            kwargs["decoder"] = DecoderSpec.from_dict(json.loads(str(data["decoder_json"])))
        else:  # 0.1: the decoder as a string such as "last_blocks:2"
            kwargs["decoder"] = _legacy_decoder(str(data["decoder"]))
        if "blocks" not in data or "sites" not in data:  # 0.1: the rows' places only in their labels
            rows = [_legacy_row(label) for label in kwargs["labels"]]
            kwargs["blocks"] = np.array([r.block for r in rows], dtype=np.int64)
            kwargs["sites"] = np.array([r.site for r in rows])
        kwargs["start"] = int(data["start"])
        kwargs["id_text"] = {int(i): t for i, t in json.loads(str(data["id_text_json"])).items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (lists, numbers, strings); NaN and infinities become None."""
        out: dict[str, Any] = {
            "labels": self.labels, "decoder": self.decoder.to_dict(), "start": self.start,
            "tokens": self.tokens, "next_tokens": self.next_tokens,
        }  # fmt: skip
        for name, value in self.arrays().items():
            out[name] = json_safe(value)
        out["depth"], out["first_hit"] = self.depth.tolist(), self.first_hit.tolist()
        out["id_text"] = {str(k): v for k, v in sorted(self.id_text.items())}
        return out

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The result as JSON (NaN/inf written as null); also written to `path` when given."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


def prediction_depth(agree: Tensor) -> tuple[Tensor, Tensor]:
    """Prediction depth from agree (R, N) bool: row r's top-1 is the final top-1 at position t (False
    for rows that do not count). Returns depth and first_hit, (N,) int64 row indices, R for "never".

    depth: the first row from which every row agrees; first_hit: the first row that agrees at all.
    """
    R = agree.shape[0]
    settled = agree.flip(0).long().cumprod(dim=0).sum(dim=0)  # (N,): agreeing rows from the top down, unbroken
    first_hit = torch.where(agree.any(dim=0), agree.long().argmax(dim=0), R)  # argmax: the first maximum
    return R - settled, first_hit


def json_safe(a: np.ndarray) -> Any:
    if a.dtype.kind == "f":
        obj = a.astype(object)
        obj[~np.isfinite(a)] = None
        return obj.tolist()
    return a.tolist()


def _legacy_decoder(name: str) -> DecoderSpec:
    """0.1 wrote the decoder as a string: "ln_f", "norm_only", "last_blocks:2"."""
    base, _, k = name.partition(":")
    params = {"k": int(k)} if base == "last_blocks" and k.isdigit() else {}
    return DecoderSpec.from_dict({"name": ALIASES.get(base, base), "params": params})


def _legacy_row(label: str) -> Row:
    """0.1 results carry only labels; they follow `lens_rows`'s naming exactly."""
    if label in ("prior", "embed"):
        return Row(label, label, -1)  # type: ignore[arg-type]
    parts = label.split(".")
    if parts[0] == "h" and parts[1].isdigit() and len(parts) in (2, 3):
        return Row.post(int(parts[1])) if len(parts) == 2 else Row.mid(int(parts[1]))
    raise LensError(f"cannot tell where the row {label!r} of this 0.1 file sits; it was not written by minigpt")
