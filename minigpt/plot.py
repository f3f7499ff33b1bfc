"""Draw a `LensResult` the way the logit-lens post draws it: layers up, positions across, a token in every cell;
and a `CorpusResult` as per-row curves, several decoders side by side (the tuned-lens paper's figure).

matplotlib only, through its object API (`matplotlib.figure.Figure`), so it works headless and
never touches pyplot's global state. `import minigpt` does not import this module (nor
matplotlib): import it on demand.

>>> from minigpt.plot import plot_lens
>>> fig = plot_lens(minigpt.logit_lens(model, "The dog", tokenizer=tok), "ranks")
>>> fig.savefig("lens.png")
>>> plot_curves(minigpt.evaluate_lens(model, text, tokenizer=tok, decoders=["logit", "norm_only"])).savefig("curves.png")
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import TYPE_CHECKING, NamedTuple, Sequence

import matplotlib as mpl
import numpy as np
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, Colormap, ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font
from matplotlib.patches import Rectangle

from . import display
from .errors import LensError
from .lens import METRICS, CorpusResult, LensResult, Metric, Row
from .lens.rows import row_index

if TYPE_CHECKING:
    from .lens import GenerationLens

__all__ = ["plot_lens", "plot_curves", "display_token", "METRICS", "Metric"]


# Colour-scale clips, as in the post: ranks of the final token bottom out at 100; ranks of
# the input token at 1000 (they sit much higher, and the post wants to see where they stay).
RANK_MAX = {"ranks": 100, "input_ranks": 1000}
# A learned decoder is not the logit lens: the title names it. A probe names the input token, so its
# outlines mark the cells whose top-1 is the input token, not the final top-1.
LENS_NAMES = {"tuned": "Tuned lens", "probe": "Input probe"}
OUTLINE_GID = "outline"  # the gid of every outline patch, so tests and users can find them
OUTLINE_COLOR = "#f28e2b"  # orange: stands out on both ends of the blue colour maps
# Figure sizing. A 20-position figure should stay readable at a normal screen width (about 1600 px
# at the default 150 dpi), so a cell holds 6 characters of 7 pt text and a label 12 of 8 pt; longer
# token texts are cut with "…" (GPT-2 has 64-character tokens). The tick and margin sizes below are
# in inches, measured for matplotlib's default font (DejaVu Sans: about 0.6 em per character).
CELL_CHARS, TICK_CHARS = 6, 12
CELL_PT, TICK_PT = 7, 8
CHAR_IN = 0.6 / 72  # inches per character per point of font size


class _View(NamedTuple):
    what: str  # for the title
    colorbar: str  # the colour bar's label
    cmap: str  # light always means "close to the reference / confident"


_VIEWS: dict[str, _View] = {
    "logits": _View("top-1 logit", "top-1 logit", "Blues_r"),
    "probs": _View("top-1 probability", "top-1 probability", "Blues_r"),
    "ranks": _View("rank of the model's final top-1 token", "rank of the final top-1", "Blues"),
    "kl": _View("KL(final ‖ row)", "KL(final ‖ row), nats", "Blues"),
    "input_ranks": _View("rank of the input token", "rank of the input token", "Blues"),
    "input_kl": _View("KL(input ‖ row)", "KL(input ‖ row), nats", "Blues"),
    "depth": _View("prediction depth", "the row's top-1", "Blues"),  # three categories of DEPTH_SHADES
}
# The depth view's cells, light to dark: the row is at or above the position's depth (its top-1 and
# every top-1 above it are the final top-1); its top-1 is the final one but a row above disagrees
# again; its top-1 is another token. The shades are taken from the view's colour map.
DEPTH_SHADES = (0.1, 0.4, 0.75)
DEPTH_LABELS = ("settled (row ≥ depth)", "= final, not yet settled", "≠ final top-1")
DEPTH_GID = "depth"  # the gid of the line under each position's depth row


# ----------------------------------------------------------------------------
# Token text a reader can see


def display_token(text: str) -> str:
    """A token's text made visible for a label, by the rules of `minigpt.display.display_token`
    (spaces as "␣", newlines as "⏎", control characters as escapes `\\x07`, ...). The current
    matplotlib font decides what can be drawn: characters it lacks become `U+4E2D`, and symbols
    it lacks their fallbacks ("·", "\\n").

    >>> display_token(" the\\n")
    '␣the⏎'
    """
    return _display(text, _font_key())


@functools.lru_cache(maxsize=65536)
def _display(text: str, font_key: tuple[str, ...]) -> str:
    fonts = _fonts(font_key)
    return display.display_token(text, lambda ch: _drawable(ch, fonts))


def _drawable(ch: str, fonts: list[FT2Font]) -> bool:
    return any(font.get_char_index(ord(ch)) != 0 for font in fonts)


def _has_glyph(ch: str) -> bool:
    """Whether a font of the current default family list (with matplotlib's fallback) can draw ch."""
    return _drawable(ch, _fonts(_font_key()))


def _font_key() -> tuple[str, ...]:
    # The fonts matplotlib picks depend on these rcParams; cache on them, not forever.
    families = tuple(mpl.rcParams["font.family"])
    generic = tuple(name for f in families if f"font.{f}" in mpl.rcParams for name in mpl.rcParams[f"font.{f}"])
    return families + ("|",) + generic


@functools.lru_cache(maxsize=8)
def _fonts(key: tuple[str, ...]) -> list[FT2Font]:
    prop = font_manager.FontProperties()  # the default family list, as every label here uses
    try:  # the same list matplotlib >= 3.6 renders with, fallback fonts included
        paths = font_manager.fontManager._find_fonts_by_props(prop)
    except AttributeError:  # older matplotlib: one font, no fallback
        paths = [font_manager.findfont(prop)]
    return [font_manager.get_font(str(p)) for p in paths]


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ----------------------------------------------------------------------------
# Choosing rows and positions


def _choose_rows(rows: list[Row], layers: int | Sequence[int | str] | None, sub_blocks: bool) -> list[int]:
    """Indices of the rows to show, bottom to top in the model's order."""
    labels = [r.label for r in rows]
    if isinstance(layers, str):
        layers = [layers]
    if layers is not None and not isinstance(layers, (int, np.integer)):
        wanted = list(layers) if isinstance(layers, Sequence) else []
        ok = lambda w: isinstance(w, (str, Row, tuple)) or (isinstance(w, (int, np.integer)) and not isinstance(w, bool))  # noqa: E731
        if not wanted or not all(ok(w) for w in wanted):
            raise LensError(f"layers must be a stride (int >= 1) or a non-empty list of block numbers, Rows and row "
                            f"labels from: {', '.join(labels)}")  # fmt: skip
        found, missing = set(), []
        for w in wanted:  # a number is a block, meaning its output row (5 is h.5), never a row index
            try:
                found.add(row_index(rows, Row.post(int(w)) if isinstance(w, (int, np.integer)) else w))
            except LensError:
                missing.append(w)
        if missing:
            raise LensError(f"no row {', '.join(map(repr, missing))} in this result; the rows are {', '.join(labels)}")
        return sorted(found)  # depth order, whatever order they were listed in

    stride = 1 if layers is None else layers
    if isinstance(stride, bool) or stride < 1:
        raise LensError(f"layers must be a stride >= 1 or a list of block numbers and row labels, got {layers!r}")
    last = max((r.block for r in rows), default=-1)
    keep = []
    for i, row in enumerate(rows):
        if row.site == "prior":
            continue  # the same at every position, and not part of the stream: shown only when listed
        if row.site == "embed":
            keep.append(i)  # "embed" stays at the bottom whatever the stride
        elif (sub_blocks or row.site != "resid_mid") and (row.block % stride == 0 or row.block == last):
            keep.append(i)  # every stride-th block, and always the last one
    return keep


def _choose_positions(result: LensResult, positions: slice | None, max_positions: int) -> LensResult:
    if isinstance(max_positions, bool) or not isinstance(max_positions, (int, np.integer)) or max_positions < 1:
        raise LensError(f"max_positions must be a positive integer, got {max_positions!r}")
    if positions is None:
        T = len(result)
        return result.positions(T - max_positions, T) if T > max_positions else result
    if not isinstance(positions, slice):
        raise LensError(f"positions must be a slice of the result's positions such as slice(2, 6), got {positions!r}")
    return result.positions(positions)  # clamped like a Python slice; raises LensError when empty


# ----------------------------------------------------------------------------
# The statistic behind the colours


def _statistic(
    result: LensResult, rows: list[int], metric: str, kl_max: float
) -> tuple[np.ndarray, Normalize, str, str]:
    """The (R, T) colour values of these rows (already clipped), their norm, the colour bar's `extend`, and its label."""
    view = _VIEWS[metric]
    if metric in ("logits", "probs"):
        values = (result.top_logits if metric == "logits" else result.top_probs)[rows, :, 0].astype(np.float64)
        if metric == "probs":
            return values, Normalize(0.0, 1.0), "neither", view.colorbar
        # Logits have no natural scale, and the embed row is often far off: use the 5th to 95th
        # percentile of the cells shown, as the post does, so the rows in between stay distinguishable.
        finite = values[np.isfinite(values)]
        lo, hi = np.percentile(finite, [5, 95]) if finite.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        return values, Normalize(lo, hi), "both", view.colorbar
    if metric in RANK_MAX:
        top = RANK_MAX[metric]
        ranks = result.rank_final if metric == "ranks" else result.rank_input
        values = np.clip(ranks[rows], 1, top).astype(np.float64)
        return values, LogNorm(1, top), "max", f"{view.colorbar}\n(clipped at {top})"
    if metric == "depth":
        shown = np.array(rows)[:, None]  # (R, 1): row indices, as depth counts them
        agree = result.top_ids[rows, :, 0] == result.final_ids  # (R, T)
        values = np.where(shown >= result.depth, 0, np.where(agree, 1, 2)).astype(np.float64)
        return values, BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3), "neither", view.colorbar
    kl = result.kl_final if metric == "kl" else result.kl_input
    # KL >= 0; float rounding can give -1e-7 for a row equal to its reference.
    values = np.clip(kl[rows].astype(np.float64), 0.0, kl_max)
    return values, Normalize(0.0, kl_max), "max", f"{view.colorbar}\n(clipped at {kl_max:g})"


def _text_color(cmap: Colormap, norm: Normalize, value: float) -> str:
    if not np.isfinite(value):
        return "black"
    r, g, b, _ = cmap(norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"  # perceived brightness


# ----------------------------------------------------------------------------
# The plot


def plot_lens(
    result: LensResult,
    metric: Metric = "logits",
    *,
    layers: int | Sequence[int | str] | None = None,
    positions: slice | None = None,
    max_positions: int = 20,
    sub_blocks: bool = True,
    kl_max: float = 10.0,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Draw the logit lens as a grid: one row per layer (`embed` at the bottom), one column per position.

    Reading it:
      - bottom axis: the input token at each position (spaces "␣", newlines "⏎"; see `display_token`);
      - top axis: the true next token, with a "*" where the model's final top-1 guess is that token;
      - each cell: the row's top-1 token at that position (what that layer "would predict");
      - outlined cell (orange; a Rectangle with gid "outline"): the row's top-1 is already the model's final top-1
        (for an input probe: the input token);
      - colour (light = closer to the reference, or more confident), by `metric`:
        "logits": the top-1 token's logit (scale from the 5th to the 95th percentile);
        "probs": its probability (0 to 1);
        "ranks": the rank of the model's final top-1 in this row (log scale, 1 to 100);
        "kl": KL(p_final ‖ p_row) in nats, clipped at `kl_max`;
        "input_ranks": the rank of the input token (log scale, 1 to 1000);
        "input_kl": KL(p_input ‖ p_row) in nats, with the same clip as "kl" so the two compare;
        "depth": light where the row is at or above the position's prediction depth (`result.depth`:
          from that row up, every row's top-1 is the final top-1), mid blue where the row's top-1
          is the final one but a row above disagrees again, dark where it is another token; a black
          line sits under each position's depth row.

    layers: an int n keeps every n-th block (h.0, h.n, h.2n, ...) and always the last one and
      `embed`; a list shows exactly those rows (in depth order): numbers are *block* numbers
      (`[0, 5, 11]` shows h.0, h.5, h.11, as `--layers 0,5,11` does), strings are row labels
      ("embed", "h.3.resid_mid"). Block numbers are not row indices: `result.depth` holds row
      indices (0 = the bottom row). The "prior" row, if the result has one, is shown only when listed.
    positions: a slice of the result's positions, shown in full (clamped like a Python slice); when
      None, the last `max_positions` of a longer result.
    kl_max: top of both KL colour scales, in nats (the post cut gpt2-xl's at 30; 10 keeps the
      differences between middle layers of the smaller models visible).
    sub_blocks: show the "h.l.resid_mid" rows when the result has them (a list in `layers` wins).
    ax: draw into this Axes (its figure is returned) instead of a new, suitably sized Figure.
    title: the title's first line (default: the view); the line naming the decoder always follows.
    """
    if metric not in METRICS:
        raise LensError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if isinstance(kl_max, bool) or not (isinstance(kl_max, numbers.Real) and 0 < kl_max < math.inf):
        raise LensError(f"kl_max must be a positive number of nats, got {kl_max!r}")
    rows = _choose_rows(result.rows, layers, sub_blocks)
    if not rows:
        raise LensError(f"no rows left to show out of {', '.join(result.labels)}; list some in layers=")
    res = _choose_positions(result, positions, max_positions)
    R, T = len(rows), len(res)

    values, norm, extend, colorbar_label = _statistic(res, rows, metric, kl_max)  # (R, T), bottom row first
    top1 = res.top_ids[rows, :, 0]  # (R, T)
    cells = [[_shorten(display_token(res.text(i)), CELL_CHARS) for i in row] for row in top1]
    bottom = [_shorten(display_token(t), TICK_CHARS) for t in res.tokens]
    top = [
        "" if nxt is None else _shorten(display_token(nxt), TICK_CHARS) + ("*" if f == n else "")
        for nxt, f, n in zip(res.next_tokens, res.final_ids, res.next_ids)
    ]
    labels = [result.labels[r] for r in rows]
    target = res.token_ids if res.decoder.name == "probe" else res.final_ids  # what an outline compares with

    if ax is None:
        # Size from the content: cells wide enough for their text, margins for the labels.
        longest = max(len(s) for row in cells for s in row)
        cell_w = max(0.12 + CELL_PT * CHAR_IN * longest, 0.3)  # the text plus a little padding
        tick = max(len(s) for s in bottom + top + [""])
        tilted = 0.71 * TICK_PT * CHAR_IN * tick  # a 45° label's height (and overhang)
        width = 0.5 + TICK_PT * CHAR_IN * max(map(len, labels)) + T * cell_w + 1.0  # y labels, grid, colour bar
        margins = 1.0 + 2 * tilted  # title, axis labels and the tilted tokens above and below
        height = max(margins + R * 0.32, 4.0)
        fig = Figure(figsize=(max(width, 4.5), height), layout="constrained")
        ax = fig.add_subplot()
        # A colour bar about 0.16 in wide and as tall as the grid (fraction is of the grid's width).
        bar_aspect, bar_fraction = max((height - margins) / 0.16, 5.0), min(max(0.16 / (T * cell_w), 0.05), 0.3)
    else:
        fig = ax.figure.figure  # the root Figure, also when ax sits in a SubFigure
        bar_aspect, bar_fraction = 20.0, 0.05
    ax.set_gid("lens")

    cmap = mpl.colormaps[_VIEWS[metric].cmap]
    if metric == "depth":
        cmap = ListedColormap(cmap(DEPTH_SHADES))
    cmap = cmap.with_extremes(bad="#dddddd")
    image = ax.imshow(values, cmap=cmap, norm=norm, origin="lower", aspect="auto", interpolation="nearest")
    for r in range(R):
        for t in range(T):
            ax.text(t, r, cells[r][t], ha="center", va="center", fontsize=CELL_PT, clip_on=True,
                    color=_text_color(cmap, norm, values[r, t]), parse_math=False)  # fmt: skip
            if top1[r, t] == target[t]:
                ax.add_patch(Rectangle((t - 0.46, r - 0.46), 0.92, 0.92, fill=False, edgecolor=OUTLINE_COLOR,
                                       linewidth=1.6, gid=OUTLINE_GID))  # fmt: skip

    # Thin white lines between cells (two line collections: far cheaper than minor-tick grids).
    ax.vlines(np.arange(0.5, T - 1), -0.5, R - 0.5, colors="white", linewidth=0.6)
    ax.hlines(np.arange(0.5, R - 1), -0.5, T - 0.5, colors="white", linewidth=0.6)
    if metric == "depth":  # under each position's depth row (none where the depth is "never")
        for t, d in enumerate(res.depth):
            shown = [i for i, r in enumerate(rows) if r >= d]
            if d < len(result.labels) and shown:
                ax.hlines(shown[0] - 0.5, t - 0.5, t + 0.5, colors="black", linewidth=2.0, gid=DEPTH_GID)
    ax.tick_params(length=2, labelsize=TICK_PT)
    ax.set_yticks(np.arange(R), labels)
    ax.set_xticks(np.arange(T), bottom, rotation=45, ha="right", rotation_mode="anchor")
    span = f"position {res.start}" if T == 1 else f"positions {res.start}–{res.start + T - 1}"
    ax.set_xlabel(f"input token ({span})", parse_math=False)
    ax.set_ylabel("layer", parse_math=False)

    next_axis = ax.secondary_xaxis("top")
    next_axis.set_gid("next_tokens")
    next_axis.set_xticks(np.arange(T), top, rotation=45, ha="left", rotation_mode="anchor")
    next_axis.tick_params(length=2, labelsize=TICK_PT)
    next_axis.set_xlabel("next token (* = the model's top guess)", parse_math=False)
    # Token text is never mathtext ("$5" would start a formula): switch parsing off on every label.
    # (label2 too: it is hidden, but a user may switch it on with tick_params.)
    for axis in (ax.xaxis, ax.yaxis, next_axis.xaxis):
        for tick in axis.get_major_ticks():
            tick.label1.set_parse_math(False)
            tick.label2.set_parse_math(False)

    bar = fig.colorbar(image, ax=ax, extend=extend, fraction=bar_fraction, pad=0.02, aspect=bar_aspect)
    bar.set_label(colorbar_label, parse_math=False)
    if metric == "depth":
        bar.set_ticks([0, 1, 2], labels=list(DEPTH_LABELS))
    elif isinstance(norm, LogNorm):  # plain 1, 10, 100 rather than 10^0, 10^1, 10^2
        decades = [10**i for i in range(int(np.log10(norm.vmax)) + 1)]
        bar.set_ticks(decades, labels=[str(d) for d in decades])
    bar.ax.tick_params(labelsize=8)
    first_line = f"{LENS_NAMES.get(res.decoder.name, 'Logit lens')}: {_VIEWS[metric].what}" if title is None else title
    ax.set_title(f"{first_line}\ndecoder: {res.decoder.title}", fontsize=11, parse_math=False)
    return fig


# ----------------------------------------------------------------------------
# A corpus: per-row curves


CURVES = {  # metric -> (axis label, unit)
    "kl": ("KL(final ‖ row)", "bits"), "ce": ("cross-entropy (next token)", "bits"),
    "entropy": ("entropy", "bits"), "ce_input": ("-log p(input token)", "bits"),
    "top1_agreement": ("top-1 = final top-1", "fraction"), "top1_accuracy": ("top-1 = next token", "fraction"),
    "top1_input": ("top-1 = input token", "fraction"),
    "surprisal": ("surprisal, -log p_final(row's top-1)", "bits"), "prec@1": ("prec@1 (top-1 = final top-1)", "fraction"),
}  # fmt: skip


def plot_curves(
    result: CorpusResult,
    metrics: Sequence[str] = ("kl", "ce"),
    *,
    per_byte: bool = False,
    title: str | None = None,
) -> Figure:
    """The lens over a corpus as curves: one panel per metric, rows (layers) across, one line per
    decoder with a band of ±2 standard errors. The model's own cross-entropy and entropy are a
    dashed line in their panels.

    metrics: any of "kl", "ce", "entropy", "ce_input", "surprisal" (bits per token) and "top1_agreement"
      (= "prec@1"), "top1_accuracy", "top1_input" (fractions).
    per_byte: bits per byte (tuned-lens' unit) instead of bits per token; needs the corpus' bytes.
    """
    unknown = [m for m in metrics if m not in CURVES]
    if unknown or not metrics:
        raise LensError(f"unknown curves {unknown or metrics!r}; choose from {', '.join(CURVES)}")
    if per_byte and not result.n_bytes:
        raise LensError("per_byte needs the corpus' byte count: evaluate with tokenizer=")
    scale = result.n_tokens / result.n_bytes if per_byte else 1.0
    R = len(result.labels)
    fig = Figure(figsize=(max(4.0, 0.28 * R + 2.0) * len(metrics), 3.8), layout="constrained")
    x = np.arange(R)
    for j, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), j + 1)
        ax.set_gid(f"curves_{metric}")
        what, unit = CURVES[metric]
        factor = scale if unit == "bits" else 1.0
        for name, values in result.metrics.items():
            y = values[metric] * factor
            (line,) = ax.plot(x, y, marker="o", markersize=3, label=name, gid=f"{metric}_{name}")
            se = values.get(f"{metric}_se")
            if se is not None:
                ax.fill_between(x, y - 2 * se * factor, y + 2 * se * factor, color=line.get_color(), alpha=0.2, linewidth=0)
        if metric in ("ce", "entropy"):
            ax.axhline(result.baseline[metric] * factor, color="grey", linestyle="--", linewidth=1, label="the model")
        ax.set_xticks(x, result.labels, rotation=90, fontsize=7)
        ax.set_xlabel("row", parse_math=False)
        ylabel = f"{what}, {unit} per {'byte' if per_byte else 'token'}" if unit == "bits" else f"{what} ({unit})"
        ax.set_ylabel(ylabel, parse_math=False)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n, w = result.n_tokens, result.n_windows
    words = title or f"The lens over {n} token{'s' * (n != 1)} ({w} window{'s' * (w != 1)} of {result.window})"
    fig.suptitle(words, fontsize=11)
    return fig


# ----------------------------------------------------------------------------
# The lens during generation


def plot_generation(run: GenerationLens, lens: str | None = None, *, title: str | None = None) -> Figure:
    """The lens during generation as a grid: steps run across, rows go up, the sampled token on top.

    Each cell shows its row's top-1 token at that step; its colour is the row's rank of the token the
    model then sampled (1 = the row already predicts it; log scale, capped at 1000). A star marks the
    prediction depth: the lowest row from which every row's top-1 is the model's own top-1.
    lens: which decoder's lens to draw, by its label in `run.lens` (default: the first).
    """
    label = next(iter(run.lens)) if lens is None else lens
    if label not in run.lens:
        raise LensError(f"no lens {label!r} in this run; it has {', '.join(run.lens)}")
    result = run.lens[label]
    R, n = result.rank_next.shape
    ranks = np.clip(result.rank_next.astype(np.float64), 1, 1000)  # (R, n)
    cmap, norm = mpl.colormaps["viridis_r"], LogNorm(1, 1000)
    fig = Figure(figsize=(max(5.0, 0.62 * n + 2.0), max(3.0, 0.34 * R + 1.6)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(ranks, origin="lower", aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    for r in range(R):
        for s in range(n):
            ax.text(s, r, _shorten(display_token(result.text(result.top_ids[r, s, 0])), 7), ha="center", va="center",
                    fontsize=6.5, color=_text_color(cmap, norm, ranks[r, s]))  # fmt: skip
    depth = result.depth
    stars = [(s, depth[s] - 0.5) for s in range(n) if depth[s] < R]
    if stars:
        ax.plot(*zip(*stars), linestyle="none", marker="*", color="red", markersize=6)
    ax.set_xticks(np.arange(n), [_shorten(display_token(run.text(i)), 8) for i in run.generated], rotation=90, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks(np.arange(R), result.labels, fontsize=7)
    ax.set_xlabel("sampled token at each step", parse_math=False)
    ax.set_ylabel("row", parse_math=False)
    fig.colorbar(image, ax=ax, label="rank of the sampled token")
    prompt = "".join(run.text(i) for i in run.ids[: run.prompt_len])
    fig.suptitle(title or f"{result.decoder.title} while generating after {_shorten(prompt, 40)!r}", fontsize=10)
    return fig
