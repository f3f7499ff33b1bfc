"""`evaluate_lens`: the lens over a whole corpus, as per-row means in bits, for several decoders.

It reads as its stages: check → windows → for each batch: stream → decode → statistics (running
sums) → result. Memory is bounded by one batch whatever the corpus size: the blocks run for the
residual stream only (no (B, T, V) logits), the kernel decodes a chunk of positions at a time, and
only float64 sums per decoder and row are kept.

Windows: an ids corpus is cut into consecutive, non-overlapping windows of `window` tokens, nothing
inserted, a shorter last window kept. Texts are joined with <|endoftext|> between documents (none
before the first). `max_tokens` cuts the token stream before windowing. KL, entropy, top-1 agreement
and the input-token metrics count every position; cross-entropy and top-1 accuracy leave out each
window's last position, which has no next token within the window (as tuned-lens does).

Shape legend: B windows in a batch, T tokens per window, N = B * T positions, C n_embd, V vocab,
D decoders, R rows.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tiktoken
import torch
from torch import Tensor

from .. import distributed
from ..progress import progress_bar
from ..errors import InputError, LensError
from ..model import GPT
from . import _stream
from ._matmul import Matmul, Unembedding, resolve_matmul
from .decoders import Decoder, DecoderSpec, LnF, labelled
from .residual import row_streams
from .result import json_safe, prediction_depth
from .rows import Row, lens_rows
from .sequence import decode_row

LN2 = math.log(2)
POSITIONS_PER_BATCH = 2048  # the default batch: about this many positions per forward pass
# The per-row means, in bits per token (kl, entropy, ce, ce_input) or fractions (top1_*).
# surprisal is the patchscope paper's: -log p_final(the row's top-1), in bits here like the others.
MEANS = ("kl", "entropy", "ce", "ce_input", "surprisal", "top1_agreement", "top1_accuracy", "top1_input")
WITH_SE = ("kl", "entropy", "ce", "ce_input", "surprisal")
PAPER_NAMES = {"prec@1": "top1_agreement"}  # the patchscope paper's name for the same fraction
CURVE_METRICS = (*MEANS, *PAPER_NAMES)  # what a result holds per row (with the *_se), and a figure can draw

Corpus = str | Tensor | np.ndarray | Sequence[int] | Iterable[str]
Decoders = Sequence[Decoder | str] | Mapping[str, Decoder | str] | Decoder | str  # a dict gives the labels


@torch.inference_mode()
def evaluate_lens(
    model: GPT,
    corpus: Corpus,
    *,
    tokenizer: tiktoken.Encoding | None = None,
    decoders: Decoders = ("logit",),
    window: int | None = None,
    max_tokens: int | None = None,
    batch_size: int | None = None,
    sub_blocks: bool = False,
    matmul: Matmul = "exact",
    progress: bool | None = None,
) -> CorpusResult:
    """The lens over a corpus: for every decoder and row, the mean (and standard error over positions)
    of KL(final ‖ row), entropy, cross-entropy against the next token, -log p(input token), and the
    top-1 agreement with the final top-1, top-1 accuracy against the next token and against the input
    token, plus the histogram of prediction depths.

    corpus: one text (with `tokenizer=`), token ids (N,), or an iterable of texts (documents, e.g. the
      lines of a file), joined with <|endoftext|>.
    decoders: built-in names or decoder objects; each one's numbers are keyed by its name, or by the
      label you give it in a dict ({"gpt2-lens": lens_a, "mine": lens_b}). A name that comes twice in
      a list is numbered ("tuned", "tuned_2").
    window: tokens per window (default and maximum: the model's context).
    max_tokens: evaluate only the first max_tokens tokens of the corpus.
    batch_size: windows per forward pass (default: about 2048 positions' worth).
    matmul: "exact" (default), "onednn" or "bf16", as for `logit_lens`.
    progress: a progress bar on stderr (default: when stderr is a terminal).

    >>> result = evaluate_lens(model, open("corpus.txt"), tokenizer=tok, decoders=["logit", "norm_only"])
    >>> result.to_dict()["metrics"]["logit"]["kl"]   # bits per token, one value per row
    """
    # -- check
    pairs = _decoders(model, decoders)
    decs = [d for _, d in pairs]
    mode = resolve_matmul(matmul, model)
    n_ctx = model.config.n_positions
    window = n_ctx if window is None else window
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= n_ctx:
        raise LensError(f"window must be between 1 and the model's context of {n_ctx} tokens, got {window!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise LensError(f"max_tokens must be a positive number of tokens, got {max_tokens!r}; leave it out for the whole corpus")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise LensError(f"batch_size must be a positive number of windows, got {batch_size!r}")
    batch_size = batch_size or max(1, POSITIONS_PER_BATCH // window)
    pieces, total = _token_pieces(corpus, tokenizer)
    if total == 0:
        raise InputError("the corpus is empty: give evaluate_lens at least one token")
    if max_tokens is not None:
        total = max_tokens if total is None else min(total, max_tokens)
    rows = lens_rows(model.config.n_layer, sub_blocks)
    byte_lengths = _byte_lengths(tokenizer) if tokenizer is not None else None

    # -- windows, then per batch: stream, decode, statistics
    sums = _Sums(len(decs), len(rows), model.device)
    n_bytes, n_windows = 0, 0
    bar = progress_bar(total=total, desc="evaluate_lens", unit="token", unit_scale=True, show=progress)
    try:
        for batch in _batches(_my_windows(_windows(pieces, window, max_tokens)), batch_size):
            idx = batch.to(model.device)  # (B, T)
            _evaluate_batch(model, idx, rows, decs, mode, sums)
            n_windows += len(batch)
            if byte_lengths is not None:
                n_bytes += int(byte_lengths[batch.flatten().clamp(0, len(byte_lengths) - 1)].sum())
            bar.update(batch.numel())
    finally:
        bar.close()
    n_bytes, n_windows = sums.all_reduce(n_bytes, n_windows)  # under torchrun: every rank's windows together
    if sums.n == 0:
        raise InputError("the corpus is empty: give evaluate_lens at least one token")

    # -- result
    return CorpusResult(
        labels=[r.label for r in rows], blocks=np.array([r.block for r in rows], dtype=np.int64),
        sites=np.array([r.site for r in rows]), decoders=[DecoderSpec.of(d) for d in decs],
        metrics={label: sums.metrics(i) for i, (label, _) in enumerate(pairs)}, baseline=sums.baseline(),
        n_tokens=sums.n, n_bytes=n_bytes if byte_lengths is not None else None, window=window,
        n_windows=n_windows, matmul=mode,
    )  # fmt: skip


def _evaluate_batch(model: GPT, idx: Tensor, rows: list[Row], decs: list[Decoder], mode: Matmul, sums: _Sums) -> None:
    B, T = idx.shape
    C = model.config.n_embd
    streams = row_streams(model, idx, rows)  # R x (B, T, C): the blocks only, no (B, T, V) logits
    final = LnF().decode(model, streams[-1], rows[-1]).reshape(B * T, C)  # (N, C): the model's output
    vectors = [
        decode_row(model, dec, row, h, slice(0, T)).reshape(B * T, C) for dec in decs for row, h in zip(rows, streams)
    ]  # D * R x (N, C); the top row under the model's own decoder is `final` itself, bit for bit
    del streams
    sources, row_source = _stream.assemble([final], vectors)
    del vectors
    next_ids = torch.full_like(idx, -1)
    next_ids[:, :-1] = idx[:, 1:]  # within each window: its last position has no next token
    targets = _stream.Targets(idx.flatten(), next_ids.flatten())  # windows side by side: (N,) each
    chunk = _stream.auto_chunk_size(len(sources))
    unembedding = Unembedding(model, mode, len(sources) * min(chunk, B * T))
    _stream.run(sources, row_source, targets, unembedding, sums, n_refs=1, k=1, ranks=False, chunk_size=chunk)


def _decoders(model: GPT, decoders: Decoders) -> list[tuple[str, Decoder]]:
    """(label, decoder) pairs, each checked against the model."""
    pairs = labelled(decoders)
    for _, d in pairs:
        d.check(model.config)
    return pairs


# ----------------------------------------------------------------------------
# From a corpus to windows


def _token_pieces(corpus: Corpus, tokenizer: tiktoken.Encoding | None) -> tuple[Iterator[Tensor], int | None]:
    """The corpus as a stream of token-id pieces (each (n,) int64), and its length when known."""

    def encode(text: str) -> Tensor:
        if tokenizer is None:
            raise LensError("a text corpus needs a tokenizer: evaluate_lens(model, corpus, tokenizer=minigpt.load_tokenizer(...))")
        return torch.tensor(tokenizer.encode_ordinary(text), dtype=torch.int64)  # "<|endoftext|>" in a text stays text

    if isinstance(corpus, str):  # one text, never an iterable of characters
        ids = encode(corpus)
        return iter([ids]), len(ids)
    if isinstance(corpus, (Tensor, np.ndarray)):
        ids = torch.as_tensor(corpus)
        if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise InputError(f"a corpus of token ids is one integer sequence (N,), got {tuple(ids.shape)} {ids.dtype}")
        return iter([ids.to(torch.int64).cpu()]), len(ids)
    if isinstance(corpus, (bytes, bytearray)):
        raise InputError("the corpus is bytes: decode it to a str first (corpus.decode('utf-8'))")
    try:
        items = iter(corpus)
    except TypeError:
        raise InputError(f"a corpus is a text, token ids or an iterable of texts, got {type(corpus).__name__}") from None
    first = next(items, None)
    if first is None:
        return iter([]), 0
    items = itertools.chain([first], items)
    if isinstance(first, str):
        if tokenizer is None:
            encode("")  # raises the error that says a tokenizer is needed
        eot = torch.tensor([tokenizer.eot_token], dtype=torch.int64)

        def documents() -> Iterator[Tensor]:
            for i, doc in enumerate(items):
                if not isinstance(doc, str):
                    raise InputError(f"document {i} of the corpus is a {type(doc).__name__}, not a str")
                if i:
                    yield eot  # <|endoftext|> between documents, as GPT-2 was trained
                yield encode(doc)

        return documents(), None
    if isinstance(first, (int, np.integer)) or (isinstance(first, Tensor) and first.dim() == 0):
        ids = torch.tensor([int(i) for i in items], dtype=torch.int64)
        return iter([ids]), len(ids)
    raise InputError(f"a corpus is a text, token ids or an iterable of texts; its first item is a {type(first).__name__}")


def _windows(pieces: Iterator[Tensor], window: int, max_tokens: int | None) -> Iterator[Tensor]:
    """Consecutive, non-overlapping windows (T,) of `window` tokens; the last may be shorter."""
    carry = torch.empty(0, dtype=torch.int64)
    seen = 0
    for piece in pieces:
        if max_tokens is not None:
            piece = piece[: max_tokens - seen]
        seen += len(piece)
        if len(carry):
            piece = torch.cat([carry, piece])  # carry is shorter than a window
        n_full = len(piece) // window
        for i in range(n_full):
            yield piece[i * window : (i + 1) * window]
        carry = piece[n_full * window :]
        if max_tokens is not None and seen >= max_tokens:
            break
    if len(carry):
        yield carry


def _my_windows(windows: Iterator[Tensor]) -> Iterator[Tensor]:
    """This process's windows under torchrun: every world_size-th one, from its rank on (all of them
    in one process). Each window is read by one rank, and none is padded or repeated."""
    rank, world = distributed.rank(), distributed.world_size()
    return (w for i, w in enumerate(windows) if i % world == rank)


def _batches(windows: Iterator[Tensor], batch_size: int) -> Iterator[Tensor]:
    """Windows stacked into batches (B, T) of up to batch_size; a shorter last window goes alone."""
    batch: list[Tensor] = []
    for w in windows:
        if batch and len(w) != len(batch[0]):
            yield torch.stack(batch)
            batch = []
        batch.append(w)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def _byte_lengths(tokenizer: tiktoken.Encoding) -> Tensor:
    """(n_vocab,) int64: the length in UTF-8 bytes of each token (0 for ids the encoding lacks)."""
    lengths = []
    for i in range(tokenizer.n_vocab):
        try:
            lengths.append(len(tokenizer.decode_single_token_bytes(i)))
        except KeyError:
            lengths.append(0)
    return torch.tensor(lengths, dtype=torch.int64)


# ----------------------------------------------------------------------------
# Running sums


class _Sums:
    """A sink of the kernel: float64 sums per decoder and row, and the depth histograms."""

    def __init__(self, D: int, R: int, device: torch.device) -> None:
        zeros = lambda *s: torch.zeros(s, dtype=torch.float64, device=device)  # noqa: E731
        self.D, self.R = D, R
        self.sum = {name: zeros(D, R) for name in MEANS}
        self.sq = {name: zeros(D, R) for name in WITH_SE}
        self.depth_hist = torch.zeros(D, R + 1, dtype=torch.int64, device=device)
        self.final_sum, self.final_sq = zeros(2), zeros(2)  # the model's own entropy and cross-entropy
        self.n, self.n_next = 0, 0

    def add(self, dst: slice, targets: Tensor, has_next: Tensor, refs: list, rows: list[_stream.RowChunk]) -> None:
        D, R = self.D, self.R
        n = len(targets)
        f64 = lambda xs: torch.stack(xs).double().view(D, R, n)  # noqa: E731  D * R x (n,) -> (D, R, n)
        top1 = torch.stack([c.top_ids[:, 0] for c in rows]).view(D, R, n)
        nxt = has_next.double()  # (n,)
        values = {
            "kl": f64([c.kl[:, 0] for c in rows]),
            "entropy": f64([c.entropy for c in rows]),
            "ce": f64([-c.target_logp[:, 1] for c in rows]) * nxt,  # 0 where there is no next token
            "ce_input": f64([-c.target_logp[:, 2] for c in rows]),
            "surprisal": f64([-c.final_logp_top1 for c in rows]),
        }
        for name, v in values.items():
            self.sum[name] += v.sum(-1)
            self.sq[name] += (v * v).sum(-1)
        agree = top1 == targets[:, 0]  # (D, R, n)
        self.sum["top1_agreement"] += agree.sum(-1)
        self.sum["top1_accuracy"] += ((top1 == targets[:, 1]) & has_next).sum(-1)
        self.sum["top1_input"] += (top1 == targets[:, 2]).sum(-1)
        for d in range(D):
            depth, _ = prediction_depth(agree[d])  # (n,)
            self.depth_hist[d] += torch.bincount(depth, minlength=R + 1)
        final = torch.stack([refs[0].entropy, -refs[0].target_logp[:, 1] * nxt]).double()  # (2, n)
        self.final_sum += final.sum(-1)
        self.final_sq += (final * final).sum(-1)
        self.n += n
        self.n_next += int(has_next.sum())

    def all_reduce(self, n_bytes: int, n_windows: int) -> tuple[int, int]:
        """Under torchrun, add up every rank's sums (float64; the histograms int64) and counts, in place;
        return the summed (n_bytes, n_windows). Nothing to do in one process."""
        if not distributed.active():
            return n_bytes, n_windows
        for t in [*self.sum.values(), *self.sq.values(), self.depth_hist, self.final_sum, self.final_sq]:
            distributed.all_reduce_sum(t)
        counts = torch.tensor([self.n, self.n_next, n_bytes, n_windows], dtype=torch.int64, device=self.final_sum.device)
        self.n, self.n_next, n_bytes, n_windows = distributed.all_reduce_sum(counts).tolist()
        return n_bytes, n_windows

    def _count(self, name: str) -> int:
        return self.n_next if name in ("ce", "top1_accuracy") else self.n

    def metrics(self, d: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name in MEANS:
            n = self._count(name)
            mean = self.sum[name][d] / n if n else torch.full((self.R,), math.nan, dtype=torch.float64)
            if name in WITH_SE:
                var = (self.sq[name][d] / n - mean**2) * n / (n - 1) if n > 1 else torch.full_like(mean, math.nan)
                out[name] = (mean / LN2).cpu().numpy()  # nats -> bits
                out[f"{name}_se"] = (var.clamp(min=0).div(n).sqrt() / LN2).cpu().numpy()
            else:
                out[name] = mean.cpu().numpy()
        out.update({paper: out[ours].copy() for paper, ours in PAPER_NAMES.items()})
        out["depth_hist"] = self.depth_hist[d].cpu().numpy()
        return out

    def baseline(self) -> dict[str, float]:
        entropy = float(self.final_sum[0]) / self.n / LN2
        ce = float(self.final_sum[1]) / self.n_next / LN2 if self.n_next else math.nan
        return {"entropy": entropy, "ce": ce}


# ----------------------------------------------------------------------------
# The result


BITS_METRICS = ("kl", "entropy", "ce", "ce_input")  # the metrics in bits per token (the others are fractions or counts)


@dataclass(eq=False, repr=False)
class CorpusResult:
    """`evaluate_lens`'s answer: per decoder and row, means over the corpus' positions.

    Units: kl, entropy, ce, ce_input (and their *_se) in bits per token; top1_* are fractions.
    Bits per byte = bits per token × n_tokens / n_bytes (tuned-lens' unit; `bits_per_byte(...)`).
    """

    labels: list[str]  # (R,) row labels, bottom to top: embed, [h.l.resid_mid], h.l
    blocks: np.ndarray  # (R,) int64 block of each row (-1 for embed)
    sites: np.ndarray  # (R,) str site of each row: embed | resid_mid | resid_post
    decoders: list[DecoderSpec]  # the decoders, as data, in the order of `metrics`
    metrics: dict[str, dict[str, np.ndarray]]  # decoder label -> metric -> (R,) values; depth_hist (R + 1,) counts
    baseline: dict[str, float]  # the model's own entropy and ce, bits per token
    n_tokens: int  # positions evaluated
    n_bytes: int | None  # sum of the UTF-8 lengths of the evaluated tokens; None without a tokenizer
    window: int  # tokens per window
    n_windows: int
    matmul: str = "exact"

    @property
    def rows(self) -> list[Row]:
        return [Row(label, str(site), int(block)) for label, site, block in zip(self.labels, self.sites, self.blocks)]

    def metric(self, name: str, decoder: str = "logit") -> np.ndarray:
        """One metric's (R,) values for one decoder, by its label (e.g. `result.metric("kl", "norm_only")`)."""
        if decoder not in self.metrics:
            raise LensError(f"no decoder {decoder!r} in this result; it has {', '.join(self.metrics)}")
        if name not in self.metrics[decoder]:
            raise LensError(f"no metric {name!r}; choose one of {', '.join(self.metrics[decoder])}")
        return self.metrics[decoder][name]

    def bits_per_byte(self, bits_per_token: np.ndarray | float | str, decoder: str = "logit") -> np.ndarray | float:
        """bits per token × tokens / bytes (needs a tokenizer's byte counts).

        Takes values in bits per token (a number or an (R,) array), or the name of such a metric
        ("kl", "entropy", "ce", "ce_input", or their "_se"), read for `decoder` (its label):
        `result.bits_per_byte("kl", "tuned")`.
        """
        if not self.n_bytes:
            raise LensError("bits per byte need the corpus' byte count: evaluate with tokenizer=")
        if isinstance(bits_per_token, str):
            name = bits_per_token
            if name.removesuffix("_se") not in BITS_METRICS:
                raise LensError(f"{name!r} is not in bits per token; bits_per_byte takes one of "
                                f"{', '.join(BITS_METRICS)} (or their _se), or numbers in bits per token")  # fmt: skip
            bits_per_token = self.metric(name, decoder)
        elif not isinstance(bits_per_token, (int, float, np.ndarray, np.floating)) or isinstance(bits_per_token, bool):
            raise LensError(f"bits_per_byte takes a metric name such as 'kl' or numbers in bits per token, got {bits_per_token!r}")
        return bits_per_token * self.n_tokens / self.n_bytes

    def __repr__(self) -> str:
        labels = self.labels
        rows = ", ".join(labels) if len(labels) <= 3 else f"{labels[0]} … {labels[-1]}"
        names = list(self.metrics)
        return (f"CorpusResult({len(labels)} rows [{rows}], decoders {names}, {self.n_tokens} tokens "
                f"in {self.n_windows} windows of {self.window})")  # fmt: skip

    # -- saving it

    def to_dict(self) -> dict[str, Any]:
        """Plain data (NaN as None): the per-row metrics, and a tuned-lens-style aggregate in bits per byte."""
        out: dict[str, Any] = {
            "labels": list(self.labels), "n_tokens": self.n_tokens, "n_bytes": self.n_bytes, "window": self.window,
            "n_windows": self.n_windows, "blocks": self.blocks.tolist(), "sites": self.sites.tolist(),
            "decoders": {label: d.to_dict() for label, d in zip(self.metrics, self.decoders)}, "matmul": self.matmul,
            "metrics": {name: {m: json_safe(v) for m, v in ms.items()} for name, ms in self.metrics.items()},
            "baseline": {k: _json_number(v) for k, v in self.baseline.items()},
        }  # fmt: skip
        out["tuned_lens"] = self._tuned_lens() if self.n_bytes else None
        return out

    def _tuned_lens(self) -> dict[str, Any]:
        """tuned-lens' eval layout, in bits per byte: `layer_i` reads resid[i] (HF's hidden_states[i]),
        i < L; the top row (the model's output) is `baseline`/`final`; sub-block rows are left out."""
        L = int(self.blocks.max()) + 1
        layers = [(r.resid_index, i) for i, r in enumerate(self.rows) if r.resid_index is not None and r.resid_index < L]
        out: dict[str, Any] = {}
        for name, ms in self.metrics.items():
            out[name] = {m: {f"layer_{j}": _json_number(self.bits_per_byte(float(ms[m][i]))) for j, i in layers}
                         for m in ("kl", "ce", "entropy")}  # fmt: skip
        out["baseline"] = {m: {"final": _json_number(self.bits_per_byte(self.baseline[m]))} for m in ("ce", "entropy")}
        return out

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, indent=1)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def save(self, path: str | os.PathLike) -> None:
        """Save as JSON (`CorpusResult.load` reads it back)."""
        self.to_json(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CorpusResult:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LensError(f"cannot read a corpus lens result from {path}: {e}") from e
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorpusResult:
        try:
            metrics = {
                name: {m: np.array([math.nan if x is None else x for x in v], dtype=np.int64 if m == "depth_hist" else np.float64)
                       for m, v in ms.items()}
                for name, ms in data["metrics"].items()
            }  # fmt: skip
            return cls(
                labels=list(data["labels"]), blocks=np.array(data["blocks"], dtype=np.int64),
                sites=np.array(data["sites"]), decoders=[DecoderSpec.from_dict(d) for d in data["decoders"].values()],
                metrics=metrics, baseline={k: math.nan if v is None else float(v) for k, v in data["baseline"].items()},
                n_tokens=int(data["n_tokens"]), n_bytes=data["n_bytes"], window=int(data["window"]),
                n_windows=int(data["n_windows"]), matmul=data.get("matmul", "exact"),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise LensError(f"not a corpus lens result (written by CorpusResult.save): {e!r}") from e


def _json_number(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
