"""The logit lens: decode the residual stream after every block into next-token predictions.

GPT-2 predicts with `softmax(ln_f(h_L) @ W_E^T)`. The lens applies the same decoder to
the stream `h_l` after any block l, giving a distribution over the vocabulary for every
row (layer) and position. `logit_lens` computes the statistics the logit-lens post plots,
streaming one chunk of positions at a time: one matmul decodes every row of the chunk, then
the statistics are taken row by row. Its extra memory is about `(rows + 8) * chunk * V`
floats (0.4 GB by default, whatever the model), never `rows * T * V` (unless `keep_logits=True`).

Two reference distributions, both decoded with the full `ln_f` whatever the decoder:
  - final: the model's own output distribution (the last block's row);
  - input: the `embed` row, h_0 = wte + wpe (the post's "compare to the inputs" addendum).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple, Sequence

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError, LensError
from .model import GPT
from .tokenizer import token_text

DECODERS = ("ln_f", "ln_f_no_bias", "norm_only", "last_blocks")
# The views a figure of a LensResult can show (minigpt.plot draws them; defined here so that
# the CLI can list them without importing matplotlib).
Metric = Literal["logits", "probs", "ranks", "kl", "input_ranks", "input_kl"]
METRICS: tuple[Metric, ...] = ("logits", "probs", "ranks", "kl", "input_ranks", "input_kl")
# Rows of the one unembedding matmul per chunk (all rows x chunk_size positions): big enough
# for the matmul to run at full speed, small enough to keep memory bounded whatever the model.
ROWS_PER_MATMUL = 1536
DECODER_DOC = {
    "ln_f": "ln_f (the model's own decoder)",
    "ln_f_no_bias": "ln_f without its bias β",
    "norm_only": "normalisation only (no γ, no β)",
    "last_blocks": "the last {k} block(s), then ln_f",
}


# ----------------------------------------------------------------------------
# The residual stream and its parts


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


# ----------------------------------------------------------------------------
# The result


@dataclass
class LensResult:
    """The logit lens over R rows and T positions. All arrays are numpy; all logs are natural (nats).

    Rows (`labels`, bottom to top): optionally "prior" (β @ W_E^T, the same at every position),
    "embed" (h_0), then per block l optionally "h.l.resid_mid" (after attention, before the MLP)
    and "h.l" (the block's output). The last row is the last block; with the default decoder
    it decodes to exactly the model's logits.

    Per position t: `token_ids[t]` is the input token, `next_ids[t]` the true next token
    (-1 at the last position), `final_ids[t]` the model's top-1 prediction.

    Fields of shape (R, T, k): `top_ids` (int64), `top_logits`, `top_probs` (float32), best first.
    Fields of shape (R, T), one triple per target, target ∈ {final, next, input}:
      `logit_<target>`, `prob_<target>` (float32) and `rank_<target>` (int64, 1 + the number of
      tokens with a strictly greater logit) of the target token in the row's distribution.
      The "next" triple is NaN / -1 at the last position, which has no next token.
    Divergences (R, T) float32, p_row being the row's distribution:
      `kl_final` = KL(p_final ‖ p_row), `kl_final_rev` = KL(p_row ‖ p_final),
      `kl_input` = KL(p_embed ‖ p_row), `kl_input_rev` = KL(p_row ‖ p_embed),
      `entropy` = H(p_row), `cross_entropy` = -log p_row(next token) (NaN at the last position).
    `logits` is (R, T, V) float32 only when asked for (`keep_logits=True`), else None.
    `start` is the index of the first position in the whole sequence (non-zero after slicing).
    """

    labels: list[str]
    decoder: str
    token_ids: np.ndarray
    next_ids: np.ndarray
    final_ids: np.ndarray
    top_ids: np.ndarray
    top_logits: np.ndarray
    top_probs: np.ndarray
    logit_final: np.ndarray
    prob_final: np.ndarray
    rank_final: np.ndarray
    logit_next: np.ndarray
    prob_next: np.ndarray
    rank_next: np.ndarray
    logit_input: np.ndarray
    prob_input: np.ndarray
    rank_input: np.ndarray
    kl_final: np.ndarray
    kl_final_rev: np.ndarray
    kl_input: np.ndarray
    kl_input_rev: np.ndarray
    entropy: np.ndarray
    cross_entropy: np.ndarray
    id_text: dict[int, str] = field(default_factory=dict)
    logits: np.ndarray | None = None
    start: int = 0

    # -- reading it

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

    def row(self, label: str) -> int:
        """The index of the row with this label."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise LensError(f"no row {label!r}; the rows are {', '.join(self.labels)}") from None

    def __len__(self) -> int:
        return len(self.token_ids)

    def positions(self, start: int | None = None, end: int | None = None) -> LensResult:
        """The result restricted to positions [start, end) of this result (negative indices count from the end)."""
        lo, hi = position_range(start, end, len(self))
        sliced = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                sliced[f.name] = value[lo:hi] if value.ndim == 1 else value[:, lo:hi]
            else:
                sliced[f.name] = value
        sliced["start"] = self.start + lo
        return LensResult(**sliced)

    def __getitem__(self, positions: slice) -> LensResult:
        if not isinstance(positions, slice) or positions.step not in (None, 1):
            raise LensError("index a LensResult with a contiguous positions slice such as result[10:20]")
        return self.positions(positions.start, positions.stop)

    # -- saving it

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}

    def save(self, path: str | os.PathLike) -> None:
        """Save as `.npz` (no pickles inside; `LensResult.load` reads it back)."""
        # Token texts go in as one JSON string: numpy's fixed-width strings drop trailing "\x00".
        id_text = json.dumps({str(k): v for k, v in sorted(self.id_text.items())})
        np.savez_compressed(
            path, **self.arrays(), labels=np.array(self.labels), decoder=np.array(self.decoder),
            start=np.array(self.start), id_text_json=np.array(id_text),
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike) -> LensResult:
        """Read a result written by `save`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise LensError(f"cannot read a lens result from {path}: {e}") from e
        names = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in names}
        kwargs["labels"] = [str(s) for s in data["labels"]]
        kwargs["decoder"] = str(data["decoder"])
        kwargs["start"] = int(data["start"])
        kwargs["id_text"] = {int(i): t for i, t in json.loads(str(data["id_text_json"])).items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (lists, numbers, strings); NaN and infinities become None."""
        out: dict[str, Any] = {
            "labels": self.labels, "decoder": self.decoder, "start": self.start,
            "tokens": self.tokens, "next_tokens": self.next_tokens,
        }  # fmt: skip
        for name, value in self.arrays().items():
            out[name] = _json_safe(value)
        out["id_text"] = {str(k): v for k, v in sorted(self.id_text.items())}
        return out

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The result as JSON (NaN/inf written as null); also written to `path` when given."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


def row_labels(n_layer: int, sub_blocks: bool = False, prior: bool = False) -> list[str]:
    """The lens's row labels, bottom to top: ["prior"], "embed", then per block ["h.l.resid_mid"], "h.l"."""
    labels = ["prior"] if prior else []
    labels.append("embed")
    for layer in range(n_layer):
        labels += [f"h.{layer}.resid_mid", f"h.{layer}"] if sub_blocks else [f"h.{layer}"]
    return labels


def position_range(start: int | None, end: int | None, T: int) -> tuple[int, int]:
    """Resolve a positions slice start:end (negative counts from the end) to 0 <= lo < hi <= T, or raise."""
    lo = 0 if start is None else (start + T if start < 0 else start)
    hi = T if end is None else (end + T if end < 0 else end)
    if not 0 <= lo < hi <= T:
        raise LensError(f"positions {start}:{end} are out of range for {T} positions; use a non-empty slice of 0:{T}")
    return lo, hi


def _json_safe(a: np.ndarray) -> Any:
    if a.dtype.kind == "f":
        obj = a.astype(object)
        obj[~np.isfinite(a)] = None
        return obj.tolist()
    return a.tolist()


# ----------------------------------------------------------------------------
# Decoding and statistics


def _as_ids(model: GPT, tokens: Tensor | Sequence[int] | str, tokenizer: tiktoken.Encoding | None) -> Tensor:
    if isinstance(tokens, str):
        if tokenizer is None:
            raise LensError("a text needs a tokenizer: logit_lens(model, text, tokenizer=minigpt.load_tokenizer(...))")
        if not tokens:
            raise InputError("the text is empty: give the lens at least one token")
        tokens = tokenizer.encode_ordinary(tokens)  # "<|endoftext|>" in the text stays ordinary text
    ids = torch.as_tensor(tokens, dtype=torch.int64) if isinstance(tokens, (list, tuple)) else torch.as_tensor(tokens)
    if ids.numel() == 0:
        raise InputError("the sequence is empty: give the lens at least one token")
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise InputError(f"the lens takes one sequence of token ids (T,), got shape {tuple(ids.shape)}")
    return ids.to(model.device)


class _Stats:
    """Preallocated (R, T, ...) outputs, filled one row and chunk at a time."""

    def __init__(self, R: int, T: int, k: int, V: int | None) -> None:
        f32 = lambda *s: torch.full(s, float("nan"), dtype=torch.float32)  # noqa: E731
        self.top_ids = torch.zeros(R, T, k, dtype=torch.int64)
        self.top_logits, self.top_probs = f32(R, T, k), f32(R, T, k)
        self.floats = {n: f32(R, T) for n in (
            "logit_final", "prob_final", "logit_next", "prob_next", "logit_input", "prob_input",
            "kl_final", "kl_final_rev", "kl_input", "kl_input_rev", "entropy", "cross_entropy")}  # fmt: skip
        self.ranks = {n: torch.full((R, T), -1, dtype=torch.int64) for n in ("rank_final", "rank_next", "rank_input")}
        self.logits = torch.empty(R, T, V, dtype=torch.float32) if V else None


class _Dist(NamedTuple):
    """One row's distribution over a chunk of n positions, in the forms the statistics need.

    Dot products are taken on logits shifted by their maximum (zs = z - max z), which softmax
    ignores: real GPT-2 logits sit near -100, and E_p[z] - logsumexp(z) computed from raw
    logits would lose |z| * 1e-7 to rounding. Ranks and top-k use the raw logits.
    """

    top: Any  # torch.topk of the raw logits: values and indices, (n, k), best first
    zt: Tensor  # (n, 3) raw logits of the targets: final top-1, next token, input token
    ranks: Tensor  # (n, 3) ranks of the targets
    zs: Tensor  # (n, V) shifted logits z - max z (<= 0), in the work space
    p: Tensor  # (n, V) probabilities, in the work space
    lse: Tensor  # (n,) log-sum-exp of zs, so that log p = zs - lse

    @property
    def shift(self) -> Tensor:
        return self.top.values[:, 0]  # (n,): max z


class _Work(NamedTuple):
    """Work space for one chunk of n positions, reused across rows: six (n, V) slots.

    0: the current row's probabilities, 1: its zs, 2 and 3: the final and input references' zs,
    4 and 5: their probabilities. Laid out this way, one batched product gives a row's dot
    products with itself and with both references, reading each slot once.
    """

    slots: Tensor  # (6, n, V)
    greater: Tensor  # (n, V): rank counts

    ROW_P, ROW_ZS, ZS, P = 0, 1, (2, 3), (4, 5)

    @classmethod
    def empty(cls, n: int, V: int, device: torch.device) -> _Work:
        return cls(torch.empty(6, n, V, device=device), torch.empty(n, V, device=device))

    def view(self, n: int) -> _Work:
        """The same buffers for a last, shorter chunk of n positions."""
        return _Work(self.slots[:, :n], self.greater[:n])


def _dist(z: Tensor, k: int, targets: Tensor, work: _Work, ref: int | None = None) -> _Dist:
    """Everything about raw logits z (n, V), which stay unchanged. ref: None for a row, or
    0 / 1 for the final / input reference. targets (n, 3); column 0 may be -1, meaning this
    row's own top-1 (for the final reference, whose top-1 defines that target)."""
    top = torch.topk(z, k, dim=-1)  # (n, k)
    if (targets[:, 0] < 0).any():
        targets = torch.cat([top.indices[:, :1], targets[:, 1:]], dim=1)
    zt = z.gather(1, targets)  # (n, 3)
    ranks = _ranks(z, top.values, zt, work)  # (n, 3)
    zs_slot, p_slot = (work.ROW_ZS, work.ROW_P) if ref is None else (work.ZS[ref], work.P[ref])
    zs = torch.sub(z, top.values[:, :1], out=work.slots[zs_slot])  # (n, V)
    p = torch.softmax(zs, dim=-1, out=work.slots[p_slot])  # (n, V)
    # The top token has zs = 0 and p = exp(-lse) >= 1/V, so its log is well-conditioned:
    # this gives the log-sum-exp without another pass over the vocabulary.
    lse = -p.gather(1, top.indices[:, :1])[:, 0].log()  # (n,)
    return _Dist(top, zt, ranks, zs, p, lse)


class _RowDots(NamedTuple):
    """A row's expectations: p_row.zs_row (n,), p_row.zs_ref (n, 2), p_ref.zs_row (n, 2)."""

    self_dot: Tensor
    row_dot_ref: Tensor
    ref_dot_row: Tensor


def _row_dots(row: _Dist, work: _Work) -> _RowDots:
    """All of a row's dot products in one batched product, each slot read once:
    [p_row, zs_row] (n, 2, V) @ [zs_row, zs_final, zs_input, p_final, p_input] (n, V, 5) -> (n, 2, 5)."""
    slots = work.slots
    d = torch.bmm(slots[0:2].permute(1, 0, 2), slots[1:6].permute(1, 2, 0))  # (n, 2, 5)
    return _RowDots(d[:, 0, 0], d[:, 0, 1:3], d[:, 1, 3:5])


def _reference_dots(work: _Work) -> tuple[_RowDots, _RowDots]:
    """The dot products of the two references, as rows of their own (once per chunk)."""
    zs_f, zs_i = work.slots[work.ZS[0]], work.slots[work.ZS[1]]
    p_f, p_i = work.slots[work.P[0]], work.slots[work.P[1]]
    dot = torch.linalg.vecdot  # (n, V), (n, V) -> (n,)
    ff, ii, fi, if_ = dot(p_f, zs_f), dot(p_i, zs_i), dot(p_f, zs_i), dot(p_i, zs_f)
    final = _RowDots(ff, torch.stack([ff, fi], 1), torch.stack([ff, if_], 1))
    inp = _RowDots(ii, torch.stack([if_, ii], 1), torch.stack([fi, ii], 1))
    return final, inp


def _ranks(z: Tensor, top_values: Tensor, zt: Tensor, work: _Work) -> Tensor:
    """1 + the number of strictly greater logits: z (n, V), targets' logits zt (n, m) -> (n, m)."""
    # A target at least as large as the k-th logit has all its strictly greater rivals in the top k.
    ranks = 1 + (top_values[:, None, :] > zt[:, :, None]).sum(-1)  # (n, m)
    for j in range(zt.shape[1]):
        far = zt[:, j] < top_values[:, -1]  # (n,): these need a count over the whole vocabulary
        if far.any():
            # Comparing into a float buffer avoids the (n, V) int64 copy that `(z > t).sum()`
            # makes; sums of 0s and 1s below 2^24 are exact in float32.
            torch.gt(z, zt[:, j : j + 1], out=work.greater)  # (n, V): 1.0 where strictly greater
            counts = work.greater.sum(dim=-1).long()  # (n,)
            ranks[:, j] = torch.where(far, 1 + counts, ranks[:, j])
    return ranks


@torch.inference_mode()
def logit_lens(
    model: GPT,
    tokens: Tensor | Sequence[int] | str,
    *,
    tokenizer: tiktoken.Encoding | None = None,
    decoder: str = "ln_f",
    last_blocks: int = 1,
    k: int = 5,
    sub_blocks: bool = False,
    prior: bool = False,
    positions: slice | None = None,
    chunk_size: int | None = None,
    keep_logits: bool = False,
    resid: Tensor | None = None,
    onednn: bool = False,
) -> LensResult:
    """Decode the residual stream after every block of `model` on one sequence.

    tokens: token ids (T,) (or (1, T), or a list), or a text with `tokenizer=`.
    decoder: "ln_f" (default; the model's own), "ln_f_no_bias" (drops the input-independent
      prior β @ W_E^T), "norm_only" (normalisation without γ and β), or "last_blocks"
      (the last `last_blocks` blocks, then ln_f: the 2021 variant).
    k: how many top tokens to keep per row and position.
    sub_blocks: add an "h.l.resid_mid" row before each block's row (after attention, before the MLP).
    prior: add a "prior" row, β @ W_E^T, at the bottom.
    positions: compute only these positions (the model still reads the whole sequence).
    chunk_size: positions decoded at once (default: about 1536 / R, so that each chunk's one matmul
      has about 1536 rows). Extra memory is about (R + 8) * chunk_size * V floats: 0.4 GB by default.
    keep_logits: also return every row's logits, (R, T, V) float32.
    resid: the residual stream `model(ids).resid` ((L + 1, 1, T, C) or (L + 1, T, C)) when you
      already have it, to skip the forward pass (not used with sub_blocks, which needs its parts).
    onednn: do the unembedding matmuls with oneDNN's fp32 GEMM (through torch's public mkldnn
      tensors) instead of torch's default BLAS: on CPUs where that BLAS is slow (AMD), about
      1.15x faster. Float32 CPU models only. The logits then differ from the model's own by
      float rounding (~1e-5), so the last row is no longer bit-identical to them.

    >>> lens = logit_lens(model, "The dog", tokenizer=tok)
    >>> lens.top_ids.shape   # (rows, positions, k)
    """
    if decoder not in DECODERS:
        raise LensError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    L, V = model.config.n_layer, model.config.vocab_size
    if decoder == "last_blocks" and not (isinstance(last_blocks, int) and 1 <= last_blocks <= L):
        raise LensError(f"last_blocks must be between 1 and the number of blocks ({L}), got {last_blocks!r}")
    if not (isinstance(k, int) and 1 <= k <= V):
        raise LensError(f"k must be between 1 and the vocabulary size {V}, got {k!r}")
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise LensError(f"chunk_size must be a positive integer, got {chunk_size!r}")

    ids = _as_ids(model, tokens, tokenizer)  # (T,)
    T_all = ids.shape[0]
    model.check_ids(ids[None])
    if positions is None:
        positions = slice(None)
    if not isinstance(positions, slice) or positions.step not in (None, 1):
        raise LensError(f"positions must be a contiguous slice such as slice(10, 20), got {positions!r}")
    lo, hi = position_range(positions.start, positions.stop, T_all)

    # The stream: (L + 1, T, C) after each block, plus the sub-block rows when asked.
    if sub_blocks:
        parts = residual_parts(model, ids[None])
        resid = torch.cat([parts.resid_pre[:1], parts.resid_post])[:, 0]  # (L + 1, T, C)
    elif resid is not None:
        expected = (L + 1, T_all, model.config.n_embd)
        resid = resid[:, 0] if resid.dim() == 4 and resid.shape[1] == 1 else resid
        if tuple(resid.shape) != expected:
            raise LensError(f"resid has shape {tuple(resid.shape)}, expected {expected} for these tokens: pass model(ids).resid")
        resid = resid.to(model.device)
    else:
        resid = model(ids[None]).resid[:, 0]  # (L + 1, T, C)
    labels = row_labels(L, sub_blocks, prior)
    rows: list[Tensor | None] = [None] if prior else []  # the prior row is decoded below, to β
    rows.append(resid[0])
    for l in range(L):
        if sub_blocks:
            rows.append(parts.resid_mid[l, 0])
        rows.append(resid[l + 1])
    R, T = len(rows), hi - lo

    # Decoders turn a row (T, C) into normalised vectors; the unembedding is shared.
    ln = model.ln_f
    C, eps = model.config.n_embd, ln.eps
    full = lambda h: F.layer_norm(h, (C,), ln.weight, ln.bias, eps)  # noqa: E731  (T, C) -> (T, C)
    if decoder == "ln_f":
        decode = full
    elif decoder == "ln_f_no_bias":
        decode = lambda h: F.layer_norm(h, (C,), ln.weight, None, eps)  # noqa: E731
    elif decoder == "norm_only":
        decode = lambda h: F.layer_norm(h, (C,), None, None, eps)  # noqa: E731
    else:
        tail = model.h[L - last_blocks :]

        def decode(h: Tensor) -> Tensor:
            x = h[None]  # (1, T, C)
            for block in tail:
                x = block(x)  # (1, T, C)
            return full(x[0])  # (T, C)

    # The prior row is the input-independent part of the full decoder: ln_f's bias β, whatever `decoder` is.
    normed = [ln.bias.expand(T_all, C) if row is None else decode(row) for row in rows]  # R x (T, C)
    # With the default decoder the two references are rows of their own; otherwise they are decoded
    # apart, always with the full ln_f. `sources[i]` is what gets unembedded into slab i of a chunk.
    reuse = {R - 1: 0, labels.index("embed"): 1} if decoder == "ln_f" else {}
    own = [r for r in range(R) if r not in reuse]  # rows that are not a reference
    sources = torch.stack([full(resid[L]), full(resid[0])] + [normed[r] for r in own])  # (2 + len(own), T, C)
    slab = {**reuse, **{r: 2 + i for i, r in enumerate(own)}}  # row -> its slab
    W = model.wte.weight  # (V, C): the tied unembedding
    if chunk_size is None:
        chunk_size = max(1, ROWS_PER_MATMUL // len(sources))
    if onednn:
        if model.device.type != "cpu" or W.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
            raise LensError("onednn=True needs a float32 model on the CPU, and a torch built with oneDNN")
        W_onednn = W.detach().to_mkldnn()  # oneDNN's own layout, made once per call

    next_ids = torch.full((T_all,), -1, dtype=torch.int64, device=ids.device)
    next_ids[:-1] = ids[1:]
    out = _Stats(R, T, k, V if keep_logits else None)
    final_ids = torch.empty(T, dtype=torch.int64)
    n_max = min(chunk_size, T)
    work = _Work.empty(n_max, V, ids.device)
    z_buf = None if onednn else torch.empty(len(sources) * n_max, V, device=ids.device, dtype=W.dtype)
    for c0 in range(lo, hi, chunk_size):
        c1 = min(c0 + chunk_size, hi)
        n, sl, dst = c1 - c0, slice(c0, c1), slice(c0 - lo, c1 - lo)
        # Every row's logits for these n positions in one matmul, which is as fast as one of T rows,
        # while a small n keeps each (n, V) slab, and the references, in the CPU's cache.
        h = sources[:, sl].reshape(-1, C)  # (S * n, C)
        if onednn:
            z_flat = F.linear(h.contiguous().to_mkldnn(), W_onednn).to_dense()  # (S * n, V)
        else:
            z_flat = torch.mm(h, W.T, out=z_buf[: len(h)])  # (S * n, C) @ (C, V) -> (S * n, V)
        z_all = z_flat.float().view(len(sources), n, V)  # (S, n, V): statistics in float32
        if out.logits is not None:
            for r in range(R):
                out.logits[r, dst] = z_all[slab[r]].cpu()
        chunk_work = work.view(n)
        targets = torch.stack([torch.full_like(ids[sl], -1), next_ids[sl].clamp(min=0), ids[sl]], dim=1)  # (n, 3)
        has_next = next_ids[sl] >= 0  # (n,)
        final = _dist(z_all[0], k, targets, chunk_work, ref=0)
        targets[:, 0] = final.top.indices[:, 0]  # the model's top-1: the "final" target of every row
        final_ids[dst] = targets[:, 0].cpu()
        inp = _dist(z_all[1], k, targets, chunk_work, ref=1)
        refs = (final, inp)
        ref_dots = _reference_dots(chunk_work)
        for r in range(R):
            i = slab[r]
            if i < 2:  # a row that is a reference: its numbers are already there
                row, dots = refs[i], ref_dots[i]
            else:
                row = _dist(z_all[i], k, targets, chunk_work)
                dots = _row_dots(row, chunk_work)
            _row_stats(out, r, dst, row, dots, refs, ref_dots, has_next)

    # Token texts for every id the result mentions.
    id_text: dict[int, str] = {}
    if tokenizer is not None:
        used = torch.cat([ids[lo:hi].cpu(), next_ids[lo:hi].cpu(), final_ids, out.top_ids.flatten()]).unique()
        id_text = {int(i): token_text(tokenizer, int(i)) for i in used if 0 <= i < tokenizer.n_vocab}
    np_ = lambda t: t.numpy()  # noqa: E731
    return LensResult(
        labels=labels, decoder=decoder if decoder != "last_blocks" else f"last_blocks:{last_blocks}",
        token_ids=np_(ids[lo:hi].cpu()), next_ids=np_(next_ids[lo:hi].cpu()), final_ids=np_(final_ids),
        top_ids=np_(out.top_ids), top_logits=np_(out.top_logits), top_probs=np_(out.top_probs),
        **{n: np_(v) for n, v in out.floats.items()}, **{n: np_(v) for n, v in out.ranks.items()},
        id_text=id_text, logits=None if out.logits is None else np_(out.logits), start=lo,
    )  # fmt: skip


def _row_stats(
    out: _Stats, r: int, dst: slice, row: _Dist, dots: _RowDots, refs: tuple[_Dist, _Dist],
    ref_dots: tuple[_RowDots, _RowDots], has_next: Tensor,
) -> None:
    """Every statistic of one row over one chunk of n positions.

    With log p = zs - lse, each expectation of a log-probability is a dot product:
    E_a[log p_b] = a.zs_b - lse_b. So KL(a || b) = (a.zs_a - lse_a) - (a.zs_b - lse_b) and
    H(a) = lse_a - a.zs_a. A row that is a reference has the reference's very numbers, so its
    KL to itself is exactly 0.
    """
    kl_forward, kl_reverse = [], []
    for j, (ref, ref_self) in enumerate(zip(refs, (d.self_dot for d in ref_dots))):
        kl_forward.append((ref_self - ref.lse) - (dots.ref_dot_row[:, j] - row.lse))  # KL(ref || row)
        kl_reverse.append((dots.self_dot - row.lse) - (dots.row_dot_ref[:, j] - ref.lse))  # KL(row || ref)
    logpt = (row.zt - row.shift[:, None]) - row.lse[:, None]  # (n, 3): log-probabilities of the targets
    nan = torch.tensor(float("nan"), device=row.zs.device)

    out.top_ids[r, dst] = row.top.indices.cpu()
    out.top_logits[r, dst] = row.top.values.cpu()
    out.top_probs[r, dst] = ((row.top.values - row.shift[:, None]) - row.lse[:, None]).exp().cpu()
    values = {
        "entropy": row.lse - dots.self_dot,
        "kl_final": kl_forward[0], "kl_final_rev": kl_reverse[0],
        "kl_input": kl_forward[1], "kl_input_rev": kl_reverse[1],
        "logit_final": row.zt[:, 0], "prob_final": logpt[:, 0].exp(),
        "logit_input": row.zt[:, 2], "prob_input": logpt[:, 2].exp(),
        "logit_next": torch.where(has_next, row.zt[:, 1], nan),
        "prob_next": torch.where(has_next, logpt[:, 1].exp(), nan),
        "cross_entropy": torch.where(has_next, -logpt[:, 1], nan),
    }  # fmt: skip
    for name, v in values.items():
        out.floats[name][r, dst] = v.float().cpu()
    out.ranks["rank_final"][r, dst] = row.ranks[:, 0].cpu()
    out.ranks["rank_next"][r, dst] = torch.where(has_next, row.ranks[:, 1], -1).cpu()
    out.ranks["rank_input"][r, dst] = row.ranks[:, 2].cpu()
