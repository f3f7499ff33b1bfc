"""Direct logit attribution: which component of the model wrote a logit, exactly.

The logit of token t at a lens row is `W_E[t] · (γ ⊙ (x − μ(x)) / σ(x) + β)`, with x the row's full
residual and γ, β the parameters of ln_f. The residual is a sum of components (the token and position
embeddings, each block's attention and MLP, or finer: each head, each neuron, and their biases).
With σ frozen at the full residual's value, centring is linear, so

    logit = Σ_c  ū · c / σ  +  W_E[t] · β,       ū = (W_E[t] ⊙ γ) − mean(W_E[t] ⊙ γ)

holds exactly: `(W_E[t] ⊙ γ) · (c − μ(c)) = ū · c`. The constant `W_E[t] · β` is its own component,
`ln_bias`; GPT-2 has no unembedding bias, so the components sum to the logit and `Attribution.gap`
is float rounding only. Each lens row uses its own σ (using the top row's σ for every row was
TransformerLens' bug #1076).

Component order, bottom to top (the same for every `by`): embed, pos_embed, then per block its
attention (`attn`, or its heads h0..h(H-1) then `attn_bias`) and its MLP (`mlp`, or its neurons
n0..n(M-1) then `mlp_bias`), then `ln_bias` last. A `resid_mid` row stops after its block's attention.

Head values (by="head" or "neuron"). Head h writes `z_h @ W_O[h]`. Because every attention row sums
to 1, the part `c_h = b_V[h] + (β_1 @ W_V)[h]` of z_h reaches the stream whatever the head reads.
  heads="folded" (default): a head's value is its input-dependent part `(z_h − c_h) @ W_O[h]`, and the
    block's `attn_bias` is `b_O + Σ_h c_h @ W_O[h]`: TransformerLens' numbers after `fold_ln` and
    `fold_value_biases`.
  heads="raw": a head's value is `z_h @ W_O[h]`, and `attn_bias` is `b_O` alone.
Either way the heads and the bias sum to the block's `attn` component.

ln="per_component" is the linearised view instead: each component is normalised by its own σ(c)
(as if it were the whole residual). It does not sum to the logit; its `gap` says by how much.

Memory: by="neuron" never builds (T, M, C): each neuron's value is its activation times its output
row projected onto the target direction, `act ⊙ (ū @ W_out^T)`, (T, M) per block.
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError, LensError
from .lens.rows import SITES, Row, lens_rows, resolve_positions
from .lens.sequence import sequence_ids
from .model import GPT
from .tokenizer import token_text

if TYPE_CHECKING:
    import tiktoken

    from .lens import LensResult

__all__ = ["attribute", "Attribution", "Component", "report_attribution", "BY", "HEADS", "LN"]

By = Literal["component", "head", "neuron"]
Heads = Literal["folded", "raw"]
Ln = Literal["frozen", "per_component"]
BY: tuple[By, ...] = ("component", "head", "neuron")
HEADS: tuple[Heads, ...] = ("folded", "raw")
LN: tuple[Ln, ...] = ("frozen", "per_component")
KINDS = ("embed", "pos_embed", "attn", "attn_head", "attn_bias", "mlp", "mlp_neuron", "mlp_bias", "ln_bias")
_CHUNK = 256  # positions unembedded at once when finding the default target: (256, V) floats, 51 MB for gpt2


# ----------------------------------------------------------------------------
# The values


@dataclass(frozen=True)
class Component:
    """One term of the decomposition: where in the model it writes.

    kind:   one of KINDS
    block:  the block index, -1 for embed, pos_embed and ln_bias
    head:   the head index for kind "attn_head", else None
    neuron: the neuron index for kind "mlp_neuron", else None
    """

    kind: str
    block: int = -1
    head: int | None = None
    neuron: int | None = None

    @property
    def label(self) -> str:
        """"embed", "pos_embed", "h.3.attn", "h.3.attn.head5", "h.3.attn_bias", "h.3.mlp", "h.3.mlp.n17",
        "h.3.mlp_bias" or "ln_bias" (ln_f's β, unembedded)."""
        if self.block < 0:
            return self.kind
        if self.kind == "attn_head":
            return f"h.{self.block}.attn.head{self.head}"
        if self.kind == "mlp_neuron":
            return f"h.{self.block}.mlp.n{self.neuron}"
        return f"h.{self.block}.{self.kind}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "block": self.block, "head": self.head, "neuron": self.neuron}


@dataclass(eq=False, repr=False)
class Attribution:
    """The components of one lens row's logit (or logit difference), at N components × T positions.

    `values.sum(0) + gap == total`; with ln="frozen" (the default) `gap` is float rounding only
    (≤ 1e-4 · max|total| + 1e-5). Positions are absolute from `start` (as in `LensResult`).
    """

    values: np.ndarray  # (N, T) float32: each component's share of the logit, in logit units
    components: list[Component]  # (N,) bottom to top: embed, pos_embed, per block attn then mlp, ln_bias
    total: np.ndarray  # (T,) float32: the row's logit-lens logit of `target_ids` (minus that of `against_ids`)
    target_ids: np.ndarray  # (T,) int64: the token whose logit is decomposed
    against_ids: np.ndarray | None  # (T,) int64 or None: the token subtracted (a logit difference)
    token_ids: np.ndarray  # (T,) int64: the input tokens at these positions
    row: Row  # the lens row decomposed (its own LayerNorm scale σ)
    by: str  # "component" | "head" | "neuron"
    heads: str  # "folded" | "raw"
    ln: str  # "frozen" (exact) | "per_component" (linearised; does not sum)
    start: int = 0  # the absolute position of the first column
    id_text: dict[int, str] | None = None  # token id -> text, when a tokenizer was given

    @property
    def labels(self) -> list[str]:
        """(N,) display strings of `components`."""
        return [c.label for c in self.components]

    @property
    def gap(self) -> np.ndarray:
        """(T,) float32: `total − values.sum(0)`; float rounding only when ln="frozen"."""
        return (self.total.astype(np.float64) - self.values.astype(np.float64).sum(0)).astype(np.float32)

    @property
    def exact(self) -> bool:
        """Whether the components sum to the logit by construction (ln="frozen")."""
        return self.ln == "frozen"

    def column(self, position: int | None = None) -> int:
        """The column of an absolute position (default: the last one)."""
        T = self.values.shape[1]
        if position is None:
            return T - 1
        if isinstance(position, bool) or not isinstance(position, numbers.Integral):
            raise LensError(f"position must be an integer, got {position!r}")
        if not self.start <= position < self.start + T:
            raise LensError(f"position {position} is outside this attribution's positions {self.start}:{self.start + T}")
        return int(position) - self.start

    def top(self, k: int = 10, position: int | None = None) -> list[tuple[Component, float]]:
        """The k components with the largest |value| at an absolute position (default: the last), largest first."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise LensError(f"k must be a positive integer, got {k!r}")
        col = self.values[:, self.column(position)]
        order = np.argsort(-np.abs(col), kind="stable")[:k]
        return [(self.components[i], float(col[i])) for i in order]

    def text(self, token_id: int) -> str:
        """A token's text, quoted ("' Paris'"), or its id ("#28") when no tokenizer was given."""
        if self.id_text and int(token_id) in self.id_text:
            return repr(self.id_text[int(token_id)])
        return f"#{int(token_id)}"

    def target_text(self, column: int = -1) -> str:
        """The decomposed quantity at a column, in words: "logit(' Paris')" or "logit(' Paris') − logit(' London')"."""
        t = f"logit({self.text(self.target_ids[column])})"
        return t if self.against_ids is None else f"{t} − logit({self.text(self.against_ids[column])})"

    def __repr__(self) -> str:
        N, T = self.values.shape
        mode = "exact" if self.exact else "linearised, does not sum"
        return (f"Attribution(row {self.row.label}, by {self.by}, {N} components × {T} positions, "
                f"{self.target_text()} at {self.start + T - 1}, max|gap| {np.abs(self.gap).max():.2g}, {mode})")  # fmt: skip

    # -- files

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON types; `Attribution.from_dict` reads it back."""
        return {
            "version": 1, "row": {"label": self.row.label, "site": self.row.site, "block": self.row.block},
            "by": self.by, "heads": self.heads, "ln": self.ln, "start": self.start,
            "components": [c.to_dict() for c in self.components], "labels": self.labels,
            "values": self.values.tolist(), "total": self.total.tolist(), "gap": self.gap.tolist(),
            "target_ids": self.target_ids.tolist(),
            "against_ids": None if self.against_ids is None else self.against_ids.tolist(),
            "token_ids": self.token_ids.tolist(),
            "id_text": {str(k): v for k, v in (self.id_text or {}).items()},
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attribution:
        row = d["row"]
        return cls(
            values=np.asarray(d["values"], dtype=np.float32), components=[Component(**c) for c in d["components"]],
            total=np.asarray(d["total"], dtype=np.float32), target_ids=np.asarray(d["target_ids"], dtype=np.int64),
            against_ids=None if d["against_ids"] is None else np.asarray(d["against_ids"], dtype=np.int64),
            token_ids=np.asarray(d["token_ids"], dtype=np.int64), row=Row(row["label"], row["site"], row["block"]),
            by=d["by"], heads=d["heads"], ln=d["ln"], start=d["start"],
            id_text={int(k): v for k, v in d.get("id_text", {}).items()} or None,
        )  # fmt: skip

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The result as JSON (a str); also written to `path` when given."""
        text = json.dumps(self.to_dict())
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> Attribution:
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            text = Path(path_or_text).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    # -- display

    def table(self, k: int = 10, position: int | None = None) -> str:
        """The top k components at a position as a plain-text table (what `minigpt attribute` prints)."""
        col = self.column(position)
        lines = [f"{self.target_text(col)} at position {self.start + col}, row {self.row.label}: "
                 f"total {self.total[col]:+.4f}, gap {self.gap[col]:+.2e}"
                 + ("" if self.exact else " (ln=per_component: linearised, does not sum)")]  # fmt: skip
        width = max(len(c.label) for c, _ in self.top(k, self.start + col))
        for c, v in self.top(k, self.start + col):
            lines.append(f"  {c.label:<{width}}  {v:+9.4f}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        col = self.values.shape[1] - 1
        top = self.top(10)
        scale = max(abs(v) for _, v in top) or 1.0
        rows = "".join(
            f"<tr><td style='font-family:monospace'>{html.escape(c.label)}</td><td style='text-align:right'>{v:+.4f}</td>"
            f"<td><div style='height:10px;width:{100 * abs(v) / scale:.0f}px;background:{'#2171b5' if v >= 0 else '#cb181d'}'></div></td></tr>"
            for c, v in top
        )  # fmt: skip
        note = "exact: the components sum to the total" if self.exact else "linearised (ln=per_component): does not sum"
        return (f"<div><b>{html.escape(self.target_text(col))}</b> at position {self.start + col}, row "
                f"{html.escape(self.row.label)}, by {self.by}: total {self.total[col]:+.4f}, gap {self.gap[col]:+.1e} ({note})"
                f"<table>{rows}</table></div>")  # fmt: skip


# ----------------------------------------------------------------------------
# The public function: check → walk → direction → decompose → result


@torch.inference_mode()
def attribute(
    model: GPT,
    tokens: Tensor | Sequence[int] | str,
    *,
    tokenizer: tiktoken.Encoding | None = None,
    target: int | str | Tensor | Sequence[int] | None = None,
    against: int | str | Tensor | Sequence[int] | None = None,
    positions: slice | None = None,
    row: Row | tuple[str, int] | str | None = None,
    by: By = "head",
    heads: Heads = "folded",
    ln: Ln = "frozen",
) -> Attribution:
    """Split a lens row's logit of `target` into the components that wrote it (see the module docstring).

    tokens: token ids (T,) (or (1, T), or a list), or a text with `tokenizer=`.
    target: a token id, a one-token text (with `tokenizer=`), or per-position ids (T,) (or one per
      selected position), e.g. the next tokens. Default: the model's final top-1 at each position.
    against: the same forms; the decomposed quantity is then logit(target) − logit(against). It may
      equal target: the difference, and every component, is then zero.
    row: a lens row, as a `Row`, a `(site, block)` pair such as ("resid_post", 8), or its label ("h.8",
      "h.3.resid_mid", "embed", "prior"). Default: the top row (the model's logits). A lower row
      decomposes that row's logit-lens logit, with that row's own LayerNorm scale.
    by: "component" (embed, pos_embed, attn and mlp per block, ln_bias), "head" (attention split into
      heads + attn_bias; default) or "neuron" (heads, and each MLP split into neurons + mlp_bias).
    heads: "folded" (default; a head's input-dependent part, as TransformerLens) or "raw" (z_h @ W_O[h]).
    ln: "frozen" (default; exact) or "per_component" (each component by its own σ; does not sum).
    positions: a slice of the positions to decompose (the model still reads every token).

    >>> att = attribute(model, "The capital of France is", tokenizer=tok, target=" Paris")
    >>> att.top(3)          # [(Component('attn_head', 9, 8), 2.31), ...] at the last position
    """
    # -- check
    if by not in BY:
        raise LensError(f"unknown by={by!r}; choose one of {', '.join(map(repr, BY))}")
    if heads not in HEADS:
        raise LensError(f"unknown heads={heads!r}; choose 'folded' (TransformerLens' convention) or 'raw' (z_h @ W_O[h])")
    if ln not in LN:
        raise LensError(f"unknown ln={ln!r}; choose 'frozen' (exact: σ of the row's residual) or 'per_component' (linearised)")
    the_row = as_row(row, model.config.n_layer)
    ids = sequence_ids(model, tokens, tokenizer, who="attribute", error=InputError).long()  # (T,)
    model.check_ids(ids[None])
    span = resolve_positions(positions, len(ids))
    n = span.stop - span.start
    target_ids = _as_targets(target, "target", model, tokenizer, len(ids), span)
    against_ids = _as_targets(against, "against", model, tokenizer, len(ids), span)

    # -- walk, then the default target (the final top-1) if none was given
    walk = _walk(model, ids, span, [the_row], _needs(by, ln), top=target_ids is None)
    if target_ids is None:
        target_ids = walk.final_top1
    # -- direction and decomposition
    values, components, total = _decompose(model, walk, the_row, target_ids, against_ids, by, heads, ln)

    id_text = None
    if tokenizer is not None:
        used = torch.cat([ids[span], target_ids, *([] if against_ids is None else [against_ids])]).unique().tolist()
        id_text = {i: token_text(tokenizer, i) for i in used if 0 <= i < tokenizer.n_vocab}
    return Attribution(
        values=values.cpu().numpy(), components=components, total=total.cpu().numpy(),
        target_ids=target_ids.cpu().numpy(), against_ids=None if against_ids is None else against_ids.cpu().numpy(),
        token_ids=ids[span].cpu().numpy(), row=the_row, by=by, heads=heads, ln=ln, start=span.start, id_text=id_text,
    )  # fmt: skip


# ----------------------------------------------------------------------------
# Checking the inputs


def as_row(row: Row | tuple[str, int] | str | None, n_layer: int) -> Row:
    """A lens row from a `Row`, a (site, block) pair or a label; the top row by default."""
    top = Row.post(n_layer - 1)
    if row is None:
        return top
    if isinstance(row, str):
        known = {r.label: r for r in lens_rows(n_layer, sub_blocks=True, prior=True)}
        if row not in known:
            raise LensError(f"no row {row!r}: this model's rows are prior, embed, h.0 .. h.{n_layer - 1} "
                            f"and h.N.resid_mid; the top row is {top.label}")  # fmt: skip
        return known[row]
    if isinstance(row, tuple) and len(row) == 2:
        site, block = row
        if site not in SITES:
            raise LensError(f"unknown row site {site!r}; choose one of {', '.join(SITES)}")
        row = Row("", site, -1 if site in ("prior", "embed") else block)
    if not isinstance(row, Row):
        raise LensError(f"row must be a Row, a (site, block) pair such as ('resid_post', 3), or a label such as 'h.3'; got {row!r}")
    if row.site in ("prior", "embed"):
        return Row.prior() if row.site == "prior" else Row.embed()
    b = row.block
    if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 0:
        raise LensError(f"row block must be a block index 0..{n_layer - 1}, got {b!r}")
    if b >= n_layer:
        raise LensError(f"row h.{b} is above the top row: the model has blocks 0..{n_layer - 1}; "
                        f"use at most {top.label} (the model's output)")  # fmt: skip
    return Row.mid(int(b)) if row.site == "resid_mid" else Row.post(int(b))


def _as_targets(value: Any, name: str, model: GPT, tokenizer: tiktoken.Encoding | None, T: int, span: slice) -> Tensor | None:
    """`target` or `against` as ids (n,) for the selected positions; None stays None."""
    if value is None:
        return None
    V, n = model.config.vocab_size, span.stop - span.start
    if isinstance(value, str):
        if tokenizer is None:
            raise InputError(f"{name}={value!r} is a text: pass tokenizer= to encode it, or give the token id")
        enc = tokenizer.encode_ordinary(value)
        if len(enc) != 1:
            raise InputError(f"{name}={value!r} is {len(enc)} tokens {enc}, not one; give one token, e.g. "
                             f"{token_text(tokenizer, enc[0])!r}" + (" (mind the leading space: ' Paris')" if enc else ""))
        value = enc[0]
    if isinstance(value, bool):
        raise InputError(f"{name} must be a token id, a one-token text or per-position ids, got {value!r}")
    if isinstance(value, numbers.Integral) or (isinstance(value, Tensor) and value.dim() == 0):
        ids = torch.full((n,), int(value), dtype=torch.int64)
    else:
        try:
            ids = torch.as_tensor(list(value) if isinstance(value, (list, tuple)) else value)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"{name} must be a token id, a one-token text or per-position ids, got {type(value).__name__}") from None
        if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise InputError(f"per-position {name} ids must be a 1-D integer sequence, got shape {tuple(ids.shape)} {ids.dtype}")
        if len(ids) == T:
            ids = ids[span]
        elif len(ids) != n:
            raise InputError(f"per-position {name} has {len(ids)} ids; give one per token ({T}) or per selected position ({n})")
        ids = ids.long()
    bad = ids[(ids < 0) | (ids >= V)]
    if len(bad):
        raise InputError(f"{name} id {int(bad[0])} is outside the vocabulary [0, {V}); use a token id of this model")
    return ids.to(model.device)


# ----------------------------------------------------------------------------
# The walk: what each block wrote, at the selected positions only


class _Block(NamedTuple):
    z: Tensor | None  # (H, n, D) each head's output before c_proj
    attn: Tensor | None  # (n, C) attn_out
    neurons: Tensor | None  # (n, M)
    mlp: Tensor | None  # (n, C) mlp_out


class _Walk(NamedTuple):
    embed: Tensor  # (n, C) token embeddings
    pos_embed: Tensor  # (n, C) position embeddings
    blocks: list[_Block]  # up to the highest row asked for
    rows: dict[tuple[str, int], Tensor]  # (site, block) -> the row's full residual (n, C)
    final_top1: Tensor | None  # (n,) the model's top-1, when asked for


def _needs(by: str, ln: str) -> set[str]:
    # ln="per_component" needs nothing more: a head's whole write comes from z, a neuron's σ from its activation.
    return {"component": {"attn", "mlp"}, "head": {"z", "mlp"}, "neuron": {"z", "neurons"}}[by]


def _walk(model: GPT, ids: Tensor, span: slice, rows: list[Row], need: set[str], top: bool) -> _Walk:
    """One walk through the blocks, keeping what `need` names and each row's residual (span positions)."""
    idx = ids[None]  # (1, T)
    pos = torch.arange(len(ids), device=ids.device)
    embed, pos_embed = model.wte(ids)[span].float(), model.wpe(pos)[span].float()  # (n, C)
    x = model.embed(idx)  # (1, T, C): exactly the model's resid[0]
    keep: dict[tuple[str, int], Tensor] = {("embed", -1): x[0, span].float()}
    last = model.config.n_layer - 1 if top else max(r.block for r in rows)
    blocks, final = [], None
    for b, parts in enumerate(model.walk(x) if last >= 0 else ()):
        if b > last:
            break
        cut = lambda t: t[0, span].float()  # noqa: E731  (1, T, ...) -> (n, ...)
        blocks.append(_Block(
            z=parts.z[0, :, span].float() if "z" in need else None, attn=cut(parts.attn) if "attn" in need else None,
            neurons=cut(parts.neurons) if "neurons" in need else None, mlp=cut(parts.mlp) if "mlp" in need else None,
        ))  # fmt: skip
        keep["resid_mid", b], keep["resid_post", b] = cut(parts.resid_mid), cut(parts.out)
        final = parts.out
    top1 = None
    if top:  # the final logits a chunk at a time: never (T, V) at once
        h = model.ln_f(final[0, span])  # (n, C)
        top1 = torch.cat([model.unembed(h[i : i + _CHUNK]).argmax(-1) for i in range(0, len(h), _CHUNK)])
    return _Walk(embed, pos_embed, blocks, keep, top1)


# ----------------------------------------------------------------------------
# The decomposition along one target direction


def _decompose(
    model: GPT, walk: _Walk, row: Row, target_ids: Tensor, against_ids: Tensor | None, by: str, heads: str, ln: str
) -> tuple[Tensor, list[Component], Tensor]:
    """values (N, n), components (N,), total (n,) for `row` and the target (minus against) at each position."""
    W_E, lnf = model.wte.weight.float(), model.ln_f
    gamma, beta, eps = lnf.weight.float(), lnf.bias.float(), lnf.eps
    w = W_E[target_ids] - (0 if against_ids is None else W_E[against_ids])  # (n, C): the unembedding direction
    u = w * gamma  # (n, C): γ ⊙ w, what the normalised residual is dotted with
    u_bar = u - u.mean(-1, keepdim=True)  # (n, C): (γ ⊙ w) · (c − μ(c)) = ū · c, so centring is folded into ū

    ln_bias = w @ beta  # (n,): W_E[t] · β, the same whatever the input
    if row.site == "prior":  # the lens' prior row is β alone
        return ln_bias[None], [Component("ln_bias")], ln_bias
    x = walk.rows[row.site, row.block]  # (n, C): the row's full residual
    sigma = torch.sqrt(x.var(-1, unbiased=False) + eps)  # (n,): frozen at the full residual's value
    total = (F.layer_norm(x, (x.shape[-1],), gamma, beta, eps) * w).sum(-1)  # (n,): the lens' logit, as ln_f computes it

    per = ln == "per_component"

    def value(c: Tensor) -> Tensor:
        """One component's write c (n, C) or (C,) -> its value (n,)."""
        s = torch.sqrt(c.var(-1, unbiased=False) + eps) if per else sigma  # per_component: its own σ(c)
        return (c * u_bar).sum(-1) / s

    vals: list[Tensor] = [value(walk.embed), value(walk.pos_embed)]
    comps = [Component("embed"), Component("pos_embed")]
    top_block = -1 if row.site == "embed" else row.block
    for b in range(top_block + 1):
        blk, layer = walk.blocks[b], model.h[b]
        if by == "component":
            vals.append(value(blk.attn))
            comps.append(Component("attn", b))
        else:
            hv, bias = _heads(layer, blk.z, u_bar, heads, per, eps)  # (H, n), (C,)
            vals += list(hv / (1.0 if per else sigma))
            comps += [Component("attn_head", b, head=h) for h in range(len(hv))]
            vals.append(value(bias.expand_as(u_bar)))
            comps.append(Component("attn_bias", b))
        if row.site == "resid_mid" and b == row.block:
            break  # a resid_mid row is read before its block's MLP
        if by == "neuron":
            nv = _neurons(layer, blk.neurons, u_bar, per, eps)  # (M, n)
            vals += list(nv / (1.0 if per else sigma))
            comps += [Component("mlp_neuron", b, neuron=m) for m in range(len(nv))]
            vals.append(value(layer.mlp.c_proj.bias.float().expand_as(u_bar)))
            comps.append(Component("mlp_bias", b))
        else:
            vals.append(value(blk.mlp))
            comps.append(Component("mlp", b))
    vals.append(ln_bias)
    comps.append(Component("ln_bias"))
    return torch.stack(vals), comps, total


def _heads(layer: torch.nn.Module, z: Tensor, u_bar: Tensor, heads: str, per: bool, eps: float) -> tuple[Tensor, Tensor]:
    """Each head's value (H, n), not yet divided by the frozen σ (with `per`: already by its own σ), and the
    block's attention bias vector (C,). Head h writes (z_h − c_h) @ W_O[h] (folded) or z_h @ W_O[h] (raw)."""
    H, n, D = z.shape
    C = H * D
    W_O = layer.attn.c_proj.weight.float()  # [in, out] = (H*D, C): head h owns rows h*D .. (h+1)*D - 1
    b_O = layer.attn.c_proj.bias.float()  # (C,)
    if heads == "folded":
        # c_h passes through every attention row unchanged (rows sum to 1): v = ln_1(x) @ W_V + b_V, and
        # ln_1(x) = γ_1 ⊙ x̂ + β_1, so every value vector holds b_V + β_1 @ W_V.
        W_V, b_V = layer.attn.c_attn.weight[:, 2 * C :].float(), layer.attn.c_attn.bias[2 * C :].float()  # (C, C), (C,)
        const = (b_V + layer.ln_1.bias.float() @ W_V).view(H, D)  # (H, D): c_h
        z = z - const[:, None, :]  # (H, n, D)
        bias = b_O + const.reshape(C) @ W_O  # (C,): b_O + Σ_h c_h @ W_O[h]
    else:
        bias = b_O
    if per:  # each head's whole write, for its own σ: (H, n, D) @ (H, D, C) -> (H, n, C)
        writes = z @ W_O.view(H, D, C)
        return (writes * u_bar).sum(-1) / torch.sqrt(writes.var(-1, unbiased=False) + eps), bias
    proj = (u_bar @ W_O.T).view(n, H, D).transpose(0, 1)  # (n, C) @ (C, H*D) -> (H, n, D): ū read back through W_O[h]
    return (z * proj).sum(-1), bias  # (H, n)


def _neurons(layer: torch.nn.Module, acts: Tensor, u_bar: Tensor, per: bool, eps: float) -> Tensor:
    """Each neuron's value (M, n), not yet divided by the frozen σ (with `per`: by its own σ). Neuron m
    writes act_m · W_out[m]; its value is act_m · (W_out[m] · ū): (n, M), never (n, M, C)."""
    W_out = layer.mlp.c_proj.weight.float()  # [in, out] = (M, C)
    vals = (acts * (u_bar @ W_out.T)).T  # (n, M) -> (M, n)
    if per:  # var(act · w_m) = act² · var(w_m): no (n, M, C) either
        var_w = W_out.var(-1, unbiased=False)  # (M,)
        vals = vals / torch.sqrt(acts.T**2 * var_w[:, None] + eps)
    return vals


# ----------------------------------------------------------------------------
# The HTML report's panel: each lens cell's top components


@torch.inference_mode()
def report_attribution(
    model: GPT, tokens: Tensor | Sequence[int], result: LensResult, *, k: int = 8, by: By = "head",
    heads: Heads = "folded", max_positions: int | None = None,
) -> dict[str, Any]:
    """For `lens_html(result, attribution=...)`: each cell's top k components writing that row's top-1.

    tokens: the whole sequence the lens read; result: its `logit_lens` (default decoder). One walk
    serves every row. Returns plain JSON: per row label, per position, the top-1 id, the total, the
    gap and the top components as [label, value] pairs, largest |value| first.
    """
    if result.decoder.name != "logit":
        raise LensError(f"attribution explains the logit lens (decoder 'logit'); this result used {result.decoder.name!r}")
    if by not in BY:
        raise LensError(f"unknown by={by!r}; choose one of {', '.join(map(repr, BY))}")
    ids = sequence_ids(model, tokens, None, who="report_attribution", error=InputError).long()
    model.check_ids(ids[None])
    T = len(result.token_ids)
    lo = result.start if max_positions is None else result.start + max(0, T - max_positions)
    span = slice(lo, result.start + T)
    if span.stop > len(ids) or not torch.equal(ids[result.start : span.stop].cpu(), torch.as_tensor(result.token_ids)):
        raise LensError("the lens result was computed on other tokens; pass the same ids to report_attribution")
    rows = [Row(str(l), str(s), int(b)) for l, s, b in zip(result.labels, result.sites, result.blocks)]
    walk = _walk(model, ids, span, [r for r in rows if r.site != "prior"] or [Row.embed()], _needs(by, "frozen"), top=False)
    cells: dict[str, list[dict[str, Any]]] = {}
    for r, row in enumerate(rows):
        top1 = torch.as_tensor(result.top_ids[r, span.start - result.start :, 0], device=ids.device)
        values, comps, total = _decompose(model, walk, row, top1, None, by, heads, "frozen")
        values, total = values.cpu().numpy(), total.cpu().numpy()
        gap = total.astype(np.float64) - values.astype(np.float64).sum(0)
        out = []
        for t in range(values.shape[1]):
            order = np.argsort(-np.abs(values[:, t]), kind="stable")[:k]
            out.append({
                "id": int(top1[t]), "total": float(total[t]), "gap": float(gap[t]),
                "top": [[comps[i].label, float(values[i, t])] for i in order],
            })  # fmt: skip
        cells[row.label] = out
    return {"by": by, "heads": heads, "k": k, "start": span.start, "T": span.stop - span.start, "cells": cells}
