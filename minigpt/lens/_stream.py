"""The streaming statistics kernel behind `logit_lens` and `evaluate_lens` (private).

For each chunk of positions, one matmul unembeds every source (the references first, then each
row that is not a reference); then each row's distribution is compared with the references in
a work space reused across rows, and a sink keeps what it needs (every number per position for
`logit_lens`, running sums for `evaluate_lens`). Nothing of size rows x positions x V is held.

Shape legend:
    S sources: the vectors unembedded at each position (the M references, then the other rows)
    M references: 1 (the final distribution) or 2 (final, then input)
    R rows, N positions in all (one sequence, or the windows of a batch side by side),
    n positions of one chunk, C n_embd, V vocab, k top tokens kept
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from ._matmul import Unembedding

# Rows of the one unembedding matmul per chunk (sources x positions): big enough for the matmul
# to run at full speed, small enough to keep memory bounded whatever the model.
ROWS_PER_MATMUL = 1536


class Targets(NamedTuple):
    ids: Tensor  # (N,) the input token at each position
    next_ids: Tensor  # (N,) the true next token; -1 where there is none (the end of a sequence or window)


class RowChunk(NamedTuple):
    """One row's statistics over one chunk of n positions (natural logs)."""

    z: Tensor  # (n, V) its raw logits (a view into the chunk's buffer: copy it to keep it)
    top_ids: Tensor  # (n, k) int64, best first
    top_logits: Tensor  # (n, k)
    top_logp: Tensor  # (n, k) log-probabilities
    target_logits: Tensor  # (n, 3) of the targets: the final top-1, the next token, the input token
    target_logp: Tensor  # (n, 3) (the next token's is meaningless where there is none)
    ranks: Tensor | None  # (n, 3) int64: 1 + the number of strictly greater logits (when asked for)
    entropy: Tensor  # (n,)
    kl: Tensor  # (n, M) KL(ref ‖ row)
    kl_rev: Tensor  # (n, M) KL(row ‖ ref)
    final_logp_top1: Tensor  # (n,) log p_final(this row's top-1): minus the patchscope paper's surprisal


class Sink(Protocol):
    def add(self, dst: slice, targets: Tensor, has_next: Tensor, refs: list[RowChunk], rows: list[RowChunk]) -> None:
        """Take the statistics of the positions `dst`: the references' and every row's. targets (n, 3):
        the final top-1, the next token (0 where there is none: see has_next (n,)) and the input token."""


def assemble(refs: list[Tensor], rows: list[Tensor]) -> tuple[list[Tensor], list[int]]:
    """The sources to unembed, S x (N, C): the references, then every row that is not, bit for bit,
    one of them. Returns them and each row's source index.

    A row equal to a reference (the top row under the model's own decoder, say) then shares the
    reference's very numbers: its KL to the final distribution is exactly 0, its ranks exactly 1.
    """
    own: list[Tensor] = []
    row_source = []
    for v in rows:
        same = next((j for j, ref in enumerate(refs) if v.shape == ref.shape and torch.equal(v, ref)), None)
        if same is None:
            row_source.append(len(refs) + len(own))
            own.append(v)
        else:
            row_source.append(same)
    return refs + own, row_source


def auto_chunk_size(n_sources: int) -> int:
    return max(1, ROWS_PER_MATMUL // n_sources)


def run(
    sources: list[Tensor], row_source: list[int], targets: Targets, unembed: Unembedding, sink: Sink,
    *, n_refs: int, k: int, ranks: bool, chunk_size: int,
) -> None:  # fmt: skip
    """Stream the statistics of every row over all N positions of the sources, S x (N, C), into `sink`."""
    S, (N, C), V = len(sources), sources[0].shape, unembed.V
    work = _Work.empty(min(chunk_size, N), V, n_refs, ranks, sources[0].device)
    for c0 in range(0, N, chunk_size):
        c1 = min(c0 + chunk_size, N)
        n, sl = c1 - c0, slice(c0, c1)
        # Every source's logits for these n positions in one matmul, which is as fast as one of N rows,
        # while a small n keeps each (n, V) slab, and the references, in the CPU's cache.
        h = torch.cat([source[sl] for source in sources])  # (S * n, C)
        z_all = unembed(h, n_refs * n).view(S, n, V)  # (S, n, V) float32
        w = work.view(n)
        next_ids = targets.next_ids[sl]
        refs = _references([_dist(z_all[j], k, w, w.zs_slot(j), w.p_slot(j)) for j in range(n_refs)])
        final_ids = refs.dists[0].top.indices[:, 0]  # (n,): the model's top-1, the "final" target of every row
        tgt = torch.stack([final_ids, next_ids.clamp(min=0), targets.ids[sl]], dim=1)  # (n, 3)
        ref_chunks = _reference_chunks(refs, z_all, tgt, w, ranks)
        chunks = []
        for s in row_source:
            if s < n_refs:  # a row that is a reference: its numbers are already there
                chunks.append(ref_chunks[s])
                continue
            row = _dist(z_all[s], k, w, w.ROW_ZS, w.ROW_P)
            chunks.append(_row_chunk(row, z_all[s], tgt, refs, w, ranks))
        sink.add(sl, tgt, next_ids >= 0, ref_chunks, chunks)


# ----------------------------------------------------------------------------
# One distribution, and its comparisons with the references


class _Work(NamedTuple):
    """Work space for one chunk of n positions, reused across rows: 2 + 2M slots of (n, V).

    0: the current row's probabilities, 1: its shifted logits zs, 2 .. 2+M: the references' zs,
    2+M .. 2+2M: their probabilities. Laid out this way, one batched product gives a row's dot
    products with itself and with every reference, reading each slot once.
    """

    slots: Tensor  # (2 + 2M, n, V)
    greater: Tensor | None  # (n, V): rank counts

    ROW_P, ROW_ZS = 0, 1

    @classmethod
    def empty(cls, n: int, V: int, M: int, ranks: bool, device: torch.device) -> _Work:
        greater = torch.empty(n, V, device=device) if ranks else None
        return cls(torch.empty(2 + 2 * M, n, V, device=device), greater)

    @property
    def M(self) -> int:
        return (self.slots.shape[0] - 2) // 2

    def zs_slot(self, j: int) -> int:
        return 2 + j

    def p_slot(self, j: int) -> int:
        return 2 + self.M + j

    def view(self, n: int) -> _Work:
        """The same buffers for a last, shorter chunk of n positions."""
        return _Work(self.slots[:, :n], None if self.greater is None else self.greater[:n])


class _Dist(NamedTuple):
    """One distribution over a chunk of n positions, in the forms the statistics need.

    Dot products are taken on logits shifted by their maximum (zs = z - max z), which softmax
    ignores: real GPT-2 logits sit near -100, and E_p[z] - logsumexp(z) computed from raw
    logits would lose |z| * 1e-7 to rounding. Ranks and top-k use the raw logits.
    """

    top: torch.return_types.topk  # values and indices, (n, k), best first
    zs: Tensor  # (n, V) z - max z (<= 0), in the work space
    p: Tensor  # (n, V) probabilities, in the work space
    lse: Tensor  # (n,) log-sum-exp of zs, so that log p = zs - lse

    @property
    def shift(self) -> Tensor:
        return self.top.values[:, 0]  # (n,): max z


def _dist(z: Tensor, k: int, work: _Work, zs_slot: int, p_slot: int) -> _Dist:
    """Raw logits z (n, V), left unchanged, as a distribution in the given work slots."""
    top = torch.topk(z, k, dim=-1)  # (n, k)
    zs = torch.sub(z, top.values[:, :1], out=work.slots[zs_slot])  # (n, V)
    p = torch.softmax(zs, dim=-1, out=work.slots[p_slot])  # (n, V)
    # The top token has zs = 0 and p = exp(-lse) >= 1/V, so its log is well-conditioned:
    # this gives the log-sum-exp without another pass over the vocabulary.
    lse = -p.gather(1, top.indices[:, :1])[:, 0].log()  # (n,)
    return _Dist(top, zs, p, lse)


class _Refs(NamedTuple):
    """The references of one chunk, with the dot products every row's statistics reuse."""

    dists: list[_Dist]  # M distributions
    lse: Tensor  # (n, M)
    self_dot: Tensor  # (n, M): p_ref_j . zs_ref_j
    D: list[list[Tensor]]  # M x M x (n,): D[j][i] = p_ref_j . zs_ref_i


def _references(dists: list[_Dist]) -> _Refs:
    D = [[torch.linalg.vecdot(a.p, b.zs) for b in dists] for a in dists]  # (n, V), (n, V) -> (n,)
    self_dot = torch.stack([D[j][j] for j in range(len(dists))], dim=1)  # (n, M)
    return _Refs(dists, torch.stack([d.lse for d in dists], dim=1), self_dot, D)


def _chunk(d: _Dist, z: Tensor, tgt: Tensor, refs: _Refs, work: _Work, ranks: bool,
           self_dot: Tensor, row_dot_ref: Tensor, ref_dot_row: Tensor) -> RowChunk:  # fmt: skip
    """A row's statistics from its dot products: self_dot = p_row.zs_row (n,), row_dot_ref[:, j] =
    p_row.zs_ref_j and ref_dot_row[:, j] = p_ref_j.zs_row (n, M).

    With log p = zs - lse, each expectation of a log-probability is a dot product:
    E_a[log p_b] = a.zs_b - lse_b. So KL(a ‖ b) = (a.zs_a - lse_a) - (a.zs_b - lse_b) and
    H(a) = lse_a - a.zs_a. A row that is a reference has the reference's very numbers, so its
    KL to itself is exactly 0.
    """
    kl = (refs.self_dot - refs.lse) - (ref_dot_row - d.lse[:, None])  # (n, M): KL(ref ‖ row)
    kl_rev = (self_dot - d.lse)[:, None] - (row_dot_ref - refs.lse)  # (n, M): KL(row ‖ ref)
    zt = z.gather(1, tgt)  # (n, 3)
    top_logp = (d.top.values - d.shift[:, None]) - d.lse[:, None]  # (n, k)
    target_logp = (zt - d.shift[:, None]) - d.lse[:, None]  # (n, 3)
    rk = _ranks(z, d.top.values, zt, work) if ranks else None
    final = refs.dists[0]
    final_logp_top1 = final.zs.gather(1, d.top.indices[:, :1])[:, 0] - final.lse  # (n,): log p_final at the row's top-1
    return RowChunk(z, d.top.indices, d.top.values, top_logp, zt, target_logp, rk, d.lse - self_dot, kl, kl_rev,
                    final_logp_top1)  # fmt: skip


def _row_chunk(row: _Dist, z: Tensor, tgt: Tensor, refs: _Refs, work: _Work, ranks: bool) -> RowChunk:
    """All of a row's dot products in one batched product, each slot read once:
    [p_row, zs_row] (n, 2, V) @ [zs_row, zs_ref..., p_ref...] (n, V, 1 + 2M) -> (n, 2, 1 + 2M)."""
    M, slots = len(refs.dists), work.slots
    d = torch.bmm(slots[0:2].permute(1, 0, 2), slots[1 : 2 + 2 * M].permute(1, 2, 0))  # (n, 2, 1 + 2M)
    return _chunk(row, z, tgt, refs, work, ranks, d[:, 0, 0], d[:, 0, 1 : 1 + M], d[:, 1, 1 + M :])


def _reference_chunks(refs: _Refs, z_all: Tensor, tgt: Tensor, work: _Work, ranks: bool) -> list[RowChunk]:
    """The references' statistics, as rows of their own (once per chunk)."""
    out = []
    for j, ref in enumerate(refs.dists):
        row_dot_ref = torch.stack(refs.D[j], dim=1)  # (n, M): p_ref_j . zs_ref_i
        ref_dot_row = torch.stack([D_i[j] for D_i in refs.D], dim=1)  # (n, M): p_ref_i . zs_ref_j
        out.append(_chunk(ref, z_all[j], tgt, refs, work, ranks, refs.D[j][j], row_dot_ref, ref_dot_row))
    return out


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
