"""The logit lens as one interactive HTML file: hover a cell for its top 10, switch views, pin a token.

The page is the post's grid (layers up, positions across, input tokens below, next tokens above
with `*` where the model's final guess is right, outlines where a row's top-1 already is the
final top-1), built in the browser from data that sits in the file as JSON. Nothing is fetched
when it is viewed: no CDN, no fonts, no links; it works offline from `file://`.

Token text is data, never markup. It sits in a `<script type="application/json">` element with
`<`, `>`, `&`, U+2028 and U+2029 escaped, and the page writes it with `textContent` only. A
Content-Security-Policy allows the page's one script and one style sheet, by their sha256 hashes,
and nothing else. No matplotlib: the colour maps are the PNG views' (`Blues`), rebuilt from their
nine ColorBrewer colours the way matplotlib builds its 256-colour table.

>>> from minigpt.report import lens_html
>>> html = lens_html(minigpt.logit_lens(model, "The dog", tokenizer=tok, k=10), metric="ranks")
>>> Path("lens.html").write_text(html, encoding="utf-8")
"""

from __future__ import annotations

import base64
import hashlib
import html as html_escape
import json
import math
import numbers
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .attention import AttentionPatterns
from .display import display_token
from .errors import LensError

if TYPE_CHECKING:
    from .lens import LensResult

__all__ = ["lens_html", "notebook_html", "VIEWS", "MAX_POSITIONS", "TOP"]

MAX_POSITIONS = 256  # positions in one report by default: gpt2-xl's 49 rows x 256 positions is about 2 MB
NOTEBOOK_POSITIONS = 64  # positions shown inline in Jupyter: a notebook keeps every output it shows
TOP = 10  # tokens per cell in the hover list, whatever k the PNG uses
# The colour scales' clips, as in the PNG views (minigpt.plot.RANK_MAX; a test keeps them equal).
RANK_MAX = {"ranks": 100, "input_ranks": 1000}
# matplotlib's "Blues" (ColorBrewer's 9-class Blues), from light to dark; "Blues_r" is it reversed.
BLUES = ("#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b")
BAD_COLOR = "#dddddd"  # a cell without a value (the last position has no next token), as in the PNG
# The depth view's three categories, as the PNG draws them (minigpt.plot.DEPTH_SHADES and DEPTH_LABELS;
# a test keeps them equal): places on the Blues map, light to dark, and their names.
DEPTH_SHADES = (0.1, 0.4, 0.75)
DEPTH_LABELS = ("settled (row ≥ depth)", "= final, not yet settled", "≠ final top-1")


class _View(NamedTuple):
    label: str  # in the colour control
    legend: str  # beside the colour bar; {kl_max}, {lo} and {hi} (the scale's ends) and {how} are filled in
    cmap: str  # the PNG view's colour map: light means close to the reference, or confident
    log: bool  # a log scale (the ranks)


VIEWS: dict[str, _View] = {
    "logits": _View("top-1 logit", "top-1 logit, {lo:.4g} to {hi:.4g}, clipped: {how}", "Blues_r", False),
    "probs": _View("top-1 probability", "top-1 probability", "Blues_r", False),
    "ranks": _View("rank of the final top-1", "rank of the model's final top-1 token (clipped at 100)", "Blues", True),
    "kl": _View("KL(final ‖ row)", "KL(final ‖ row), nats (clipped at {kl_max:g})", "Blues", False),
    "input_ranks": _View("rank of the input token", "rank of the input token (clipped at 1000)", "Blues", True),
    "input_kl": _View("KL(input ‖ row)", "KL(input ‖ row), nats (clipped at {kl_max:g})", "Blues", False),
    "entropy": _View("entropy", "entropy of the row's distribution, nats (clipped at {kl_max:g})", "Blues", False),
    "depth": _View("prediction depth", "prediction depth; the row's top-1:", "Blues", False),  # + DEPTH_LABELS
}


# ----------------------------------------------------------------------------
# Reading a LensResult: the one place that knows its fields


class _Data(NamedTuple):
    """What the report shows, cut to its positions. R rows (bottom first), T positions, K <= TOP."""

    labels: list[str]  # (R,)
    blocks: list[int]  # (R,): -1 for prior and embed
    sites: list[str]  # (R,): "prior" | "embed" | "resid_mid" | "resid_post"
    decoder: str  # the decoder's name
    decoder_title: str  # in words
    start: int  # absolute position of the first position shown
    total: int  # positions in the result, before the cap
    k: int  # the top-k the lens kept (the report shows min(k, TOP))
    token_ids: np.ndarray  # (T,) input tokens
    next_ids: np.ndarray  # (T,) true next tokens, -1 at the end of the sequence
    final_ids: np.ndarray  # (T,) the model's top-1
    top_ids: np.ndarray  # (R, T, K)
    top_probs: np.ndarray  # (R, T, K)
    targets: dict[str, tuple[np.ndarray, np.ndarray]]  # final/next/input -> rank (R, T), probability (R, T)
    stats: dict[str, np.ndarray]  # view name -> (R, T) values
    depth: np.ndarray  # (T,) row indices; R = never
    first_hit: np.ndarray  # (T,)
    text: dict[int, str]  # display text of every id above


_TARGETS = ("final", "next", "input")  # the tokens whose rank and probability every row has


def _report_data(result: LensResult, max_positions: int) -> _Data:
    """Everything the report needs from `result`, its last `max_positions` positions only."""
    T_all = len(result.token_ids)
    lo = max(0, T_all - max_positions)
    cut = lambda a: a[lo:] if a.ndim == 1 else a[:, lo:]  # noqa: E731  (T,) or (R, T, ...) -> the shown positions
    K = min(TOP, result.top_ids.shape[2])
    top_ids, top_probs = cut(result.top_ids)[:, :, :K], cut(result.top_probs)[:, :, :K]

    ids = [cut(result.token_ids), cut(result.next_ids), cut(result.final_ids), top_ids.ravel()]
    used = np.unique(np.concatenate(ids))
    return _Data(
        labels=list(result.labels), blocks=[int(b) for b in result.blocks], sites=[str(s) for s in result.sites],
        decoder=result.decoder.name, decoder_title=result.decoder.title, start=result.start + lo, total=T_all, k=result.top_ids.shape[2],
        token_ids=cut(result.token_ids), next_ids=cut(result.next_ids), final_ids=cut(result.final_ids),
        top_ids=top_ids, top_probs=top_probs,
        targets={t: (cut(getattr(result, f"rank_{t}")), cut(getattr(result, f"prob_{t}"))) for t in _TARGETS},
        stats={
            "logits": cut(result.top_logits)[:, :, 0], "probs": top_probs[:, :, 0], "ranks": cut(result.rank_final),
            "kl": cut(result.kl_final), "input_ranks": cut(result.rank_input), "input_kl": cut(result.kl_input),
            "entropy": cut(result.entropy),
        },
        depth=cut(result.depth), first_hit=cut(result.first_hit),
        text={int(i): display_token(result.text(int(i))) for i in used if i >= 0},
    )  # fmt: skip


# ----------------------------------------------------------------------------
# Colours and views


@lru_cache(maxsize=1)
def colour_table() -> tuple[str, ...]:
    """matplotlib's 256-entry "Blues" table as hex colours: its nine colours at evenly spaced
    stops, linearly interpolated at 256 evenly spaced points (as `LinearSegmentedColormap` does)."""
    stops = np.array([[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in BLUES])  # (9, 3)
    x = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.interp(x, np.linspace(0.0, 1.0, len(BLUES)), stops[:, j]) for j in range(3)], axis=1)
    return tuple("#" + "".join(f"{round(v * 255):02x}" for v in c) for c in rgb)


def _views(data: _Data, kl_max: float, scale: tuple[float, float] | None) -> dict[str, dict[str, Any]]:
    """Each view's values (R, T) and colour scale, keyed by name, as the page reads them.
    scale: the top-1 logit's (lo, hi), or None for this report's 5th to 95th percentile."""
    stats = dict(data.stats)
    stats["depth"] = _depth_categories(data)
    out = {}
    for name, values in stats.items():
        view = VIEWS[name]
        how = ""
        if name == "logits" and scale is not None:
            (lo, hi), how = scale, "a fixed scale (lens_html's scale=)"
        elif name == "logits":
            # No natural scale; the embed row is often far off: the 5th to 95th percentile, as the PNG does.
            # That makes the colours of two reports differ for the same logit, so the legend says so.
            finite = values[np.isfinite(values)].astype(np.float64)
            lo, hi = np.percentile(finite, [5, 95]) if finite.size else (0.0, 1.0)
            lo, hi = (lo - 0.5, hi + 0.5) if hi <= lo else (lo, hi)
            how = "this report's 5th to 95th percentile (to compare reports, give each the same scale=(lo, hi))"
        elif name == "probs":
            lo, hi = 0.0, 1.0
        elif name in RANK_MAX:
            lo, hi = 1.0, float(RANK_MAX[name])
        elif name == "depth":
            lo, hi = 0.0, float(len(DEPTH_SHADES) - 1)  # the categories' indices
        else:  # the KLs and the entropy, in nats
            lo, hi = 0.0, kl_max
        out[name] = {
            "label": view.label, "legend": view.legend.format(kl_max=kl_max, lo=lo, hi=hi, how=how),
            "reversed": view.cmap.endswith("_r"),
            "log": view.log, "lo": float(lo), "hi": float(hi), "values": _numbers(values),
        }  # fmt: skip
    if "depth" in out:
        # Three colours, not a scale: the PNG's ListedColormap of Blues at DEPTH_SHADES, read off the
        # same 256-colour table matplotlib samples (index int(x * 256)).
        table = colour_table()
        out["depth"]["categories"] = [
            {"colour": table[min(int(x * 256), 255)], "label": label} for x, label in zip(DEPTH_SHADES, DEPTH_LABELS)
        ]
    return out


def _depth_categories(data: _Data) -> np.ndarray:
    """(R, T) int64, the PNG depth view's cells: 0 where the row is at or above its position's depth,
    1 where its top-1 is the final top-1 below that, 2 where it is another token."""
    rows = np.arange(len(data.labels))[:, None]  # (R, 1): row indices, as depth counts them
    agree = data.top_ids[:, :, 0] == data.final_ids[None, :]  # (R, T)
    return np.where(rows >= data.depth[None, :], 0, np.where(agree, 1, 2)).astype(np.int64)


def _numbers(a: np.ndarray) -> list[Any]:
    """A flat list for JSON: integers as they are, floats to 4 significant digits, NaN and ±inf as None."""
    flat = np.asarray(a).ravel()
    if flat.dtype.kind in "iub":
        return flat.tolist()
    return [float(f"{v:.4g}") if math.isfinite(v) else None for v in flat.tolist()]


# ----------------------------------------------------------------------------
# The page


def _attention(data: _Data, attention: AttentionPatterns) -> dict[str, Any]:
    """The patterns of the report's positions: each head's lower triangle (query t, keys 0..t), base64."""
    a0, a1 = attention.start, attention.start + len(attention)
    lo, hi = max(a0, data.start), min(a1, data.start + len(data.token_ids))
    if lo >= hi:
        raise LensError(
            f"the attention patterns cover positions {a0}:{a1}, the lens {data.start}:{data.start + len(data.token_ids)}; "
            "compute them for the lens's positions: attention_patterns(model, ids, positions=slice(result.start, ...))"
        )
    ours = data.token_ids[lo - data.start : hi - data.start]
    if not np.array_equal(attention.token_ids[lo - a0 : hi - a0], ours):
        raise LensError("the attention patterns were computed on other tokens than the lens result; use the same ids")
    T = hi - lo
    rows, cols = np.tril_indices(T)  # query t, key s <= t, row by row
    heads = []
    for a in range(len(attention.blocks)):
        window = attention.pattern[a][:, lo - a0 : hi - a0, lo - a0 : hi - a0]  # (H, T, T)
        before = attention.pattern[a][:, lo - a0 : hi - a0, : lo - a0].sum(-1, dtype=np.int64)  # (H, T): cut-off keys
        before = before + attention.before[a][:, lo - a0 : hi - a0]
        heads.append([
            {"w": base64.b64encode(window[h][rows, cols].tobytes()).decode("ascii"),
             "before": np.minimum(before[h], 255).tolist()}
            for h in range(attention.n_head)
        ])  # fmt: skip
    return {"blocks": attention.blocks.tolist(), "start": lo, "T": T, "scale": 255, "heads": heads}


def _payload(
    data: _Data, views: dict[str, dict[str, Any]], metric: str, title: str | None, attention: dict[str, Any] | None
) -> dict[str, Any]:
    R, T = len(data.labels), len(data.token_ids)
    return {
        "version": 1,
        "title": title or "Logit lens",
        "decoder": {"name": data.decoder, "title": data.decoder_title},
        "rows": [{"label": l, "block": b, "site": s} for l, b, s in zip(data.labels, data.blocks, data.sites)],
        "start": data.start, "total": data.total, "k": data.k, "K": data.top_ids.shape[2], "R": R, "T": T,
        "input": data.token_ids.tolist(), "next": data.next_ids.tolist(), "final": data.final_ids.tolist(),
        "text": {str(i): t for i, t in sorted(data.text.items())},
        "top_ids": _numbers(data.top_ids), "top_probs": _numbers(data.top_probs),
        "targets": {t: {"rank": _numbers(rank), "prob": _numbers(prob)} for t, (rank, prob) in data.targets.items()},
        "views": views, "view": metric,
        "depth": {"depth": data.depth.tolist(), "first_hit": data.first_hit.tolist()},
        "attention": attention,
        "colours": list(colour_table()), "bad": BAD_COLOR,
    }  # fmt: skip


def _script_json(obj: Any) -> str:
    """JSON that is safe inside a <script> element: it cannot close the element or start a comment,
    and no line separator breaks old parsers. NaN is refused (JSON.parse rejects it)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    # These characters only occur inside JSON strings, where \\uXXXX means the same character.
    for ch, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, escaped)
    return text


def _asset(name: str) -> str:
    return resources.files("minigpt").joinpath(name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


_BODY = """\
<div class="mg-report">
<header>
<h1 class="mg-title"></h1>
<p class="mg-decoder"></p>
<p class="mg-notice" hidden></p>
</header>
<div class="mg-controls">
<label>colour <select class="mg-view"></select></label>
<label>layer stride <input class="mg-stride" type="number" min="1" step="1" value="1"></label>
<label>positions <input class="mg-from" type="number" step="1"></label>
<label>to <input class="mg-to" type="number" step="1"></label>
<span class="mg-att-controls" hidden><label>attention: block <select class="mg-att-block"></select></label>
<label>head <select class="mg-att-head"></select></label></span>
</div>
<div class="mg-legend"></div>
<div class="mg-main">
<div class="mg-scroll"><table class="mg-grid" role="grid"></table></div>
<aside class="mg-pin" hidden></aside>
</div>
<div class="mg-tip" role="tooltip" hidden></div>
<p class="mg-help">Hover or focus a cell for its top {top}. Arrow keys move, Home/End go to the ends of a row,
Page Up/Down to the top and bottom rows; click or Enter pins the cell's top-1 token, Escape unpins.</p>
<script type="application/json" class="mg-data">{data}</script>
<script>{script}</script>
</div>"""


def lens_html(
    result: LensResult,
    *,
    attention: AttentionPatterns | None = None,
    metric: str = "logits",
    max_positions: int = MAX_POSITIONS,
    kl_max: float = 10.0,
    scale: tuple[float, float] | None = None,
    title: str | None = None,
    attribution: dict[str, Any] | None = None,
) -> str:
    """The lens as one self-contained HTML page (a str; write it to a `.html` file and open it anywhere).

    Every row of `result` and its last `max_positions` positions (a notice says so when that cuts).
    Each cell shows its row's top-1 token; hover or focus it for the top 10 (compute the lens with
    `k=10` or more), their probabilities and ids, and the ranks of the final, next and input tokens.
    metric: the view shown first (any of `VIEWS`; "depth" when the result has `depth`); the page
      switches among all of them, with the PNG views' colour maps and scales (kl_max: the top of
      the KL and entropy scales, in nats).
    scale: (lo, hi), the top-1 logit view's colour scale. By default it is this report's 5th to 95th
      percentile, so the same colour means different logits in two reports; give reports you
      compare the same scale. The legend shows the range either way.
    attention: `minigpt.attention_patterns(model, ids, ...)` on the same tokens, to show which
      earlier tokens each position reads, per block and head.
    attribution: `minigpt.attribution.report_attribution(model, ids, result)`: clicking a cell (or Enter)
      opens its top components writing that row's top-1 (report_attribution.js).
    """
    if isinstance(max_positions, bool) or not isinstance(max_positions, numbers.Integral) or max_positions < 1:
        raise LensError(f"max_positions must be a positive integer, got {max_positions!r}")
    if isinstance(kl_max, bool) or not (isinstance(kl_max, numbers.Real) and 0 < kl_max < math.inf):
        raise LensError(f"kl_max must be a positive number of nats, got {kl_max!r}")
    scale = _check_scale(scale)
    if attention is not None and not isinstance(attention, AttentionPatterns):
        raise LensError(f"attention must come from minigpt.attention_patterns(model, ids), got {type(attention).__name__}")
    if title is not None and not isinstance(title, str):
        raise LensError(f"title must be a str, got {type(title).__name__}")
    data = _report_data(result, int(max_positions))
    views = _views(data, float(kl_max), scale)
    if metric not in views:
        raise LensError(f"unknown metric {metric!r}; choose one of {', '.join(views)}")
    payload = _payload(data, views, metric, title, None if attention is None else _attention(data, attention))
    script, style = _asset("report_dom.js") + "\n" + _asset("report.js"), _asset("report.css")
    # -- the attribution panel (minigpt/attribution.py): its data, and its script after the report's own
    if attribution is not None:
        payload["attribution"] = attribution
        script += "\n" + _asset("report_attribution.js")
    # The policy names the page's only script and style sheet by hash: nothing else may run,
    # load or connect, whatever a token's text holds.
    policy = (
        f"default-src 'none'; script-src '{_sha256(script)}'; style-src '{_sha256(style)}'; "
        "img-src 'none'; base-uri 'none'; form-action 'none'"
    )
    body = _BODY.replace("{top}", str(TOP)).replace("{data}", _script_json(payload)).replace("{script}", script)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html_escape.escape(payload['title'])}</title>\n<style>{style}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _check_scale(scale: Any) -> tuple[float, float] | None:
    """`scale` as two floats, or None; a LensError that says what it must be otherwise."""
    if scale is None:
        return None
    real = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    pair = tuple(scale) if isinstance(scale, (tuple, list, np.ndarray)) else ()
    if len(pair) != 2 or not all(real(v) for v in pair) or not pair[0] < pair[1]:
        raise LensError(
            f"scale must be two finite numbers (lo, hi) with lo < hi, the top-1 logit's colour range, got {scale!r}; "
            "e.g. scale=(0.0, 20.0), the same for every report you compare (or None for each report's own percentiles)"
        )
    return float(pair[0]), float(pair[1])


# Beside the frame in a notebook: sets each report frame's height to the one its page posts (a number,
# checked and kept within bounds), so that the frame fits its content and nothing in it is cut off.
# Every report brings one; each handles every frame, so any number of them on a page agree.
_FRAME_SIZER = """<script>
window.addEventListener("message", function (event) {
  var height = event.data && event.data.minigptReportHeight;
  if (typeof height !== "number" || !isFinite(height)) return;
  var frames = document.querySelectorAll("iframe.minigpt-report");
  for (var i = 0; i < frames.length; i++) {
    if (frames[i].contentWindow === event.source) frames[i].style.height = Math.min(Math.max(Math.ceil(height), 50), 30000) + "px";
  }
});
</script>"""


def notebook_html(result: LensResult, *, max_positions: int = NOTEBOOK_POSITIONS, **options: Any) -> str:
    """The report for Jupyter: `lens_html` inside a sandboxed `<iframe srcdoc>`, so that its script,
    styles and ids stay apart from the notebook and from other reports on the same page, and a small
    script that sizes the frame to its content. Capped at `max_positions` (64) positions, since a
    notebook stores what it shows. Jupyter runs scripts only in a trusted notebook; elsewhere the
    frame stays empty."""
    page = lens_html(result, max_positions=max_positions, **options)
    # Until the page posts its height (or where no script runs): an estimate of the grid's rows,
    # headers and controls, in pixels.
    height = 260 + 22 * (len(result.labels) + 4)
    return (
        f'<iframe class="minigpt-report" srcdoc="{html_escape.escape(page, quote=True)}" sandbox="allow-scripts" '
        f'style="width: 100%; height: {height}px; border: 0" title="logit lens report"></iframe>{_FRAME_SIZER}'
    )


# ----------------------------------------------------------------------------
# The generation mode: the lens while the model samples (its own script, report_generation.js)

if TYPE_CHECKING:
    from .lens import GenerationLens

_GENERATION_BODY = """\
<div class="mg-report mg-generation">
<header>
<h1 class="mg-title"></h1>
<p class="mg-decoder"></p>
</header>
<div class="mg-controls"><label>lens <select class="mg-lens"></select></label></div>
<div class="mg-main">
<div class="mg-scroll"><table class="mg-grid" role="grid"></table></div>
<aside class="mg-pin" hidden></aside>
</div>
<div class="mg-tip" role="tooltip" hidden></div>
<p class="mg-help">Steps run across, rows go up; the sampled token is on top. Each cell is the row's top-1 and
the row's rank of the sampled token (darker = closer to 1). Hover or focus a cell for its top tokens; click or
Enter pins it, Escape unpins.</p>
<script type="application/json" class="mg-data">{data}</script>
<script>{script}</script>
</div>"""


def generation_html(run: GenerationLens, *, title: str | None = None) -> str:
    """The lens during generation (`minigpt.generate_lens`) as one self-contained HTML page, with a toggle
    between its lenses. Each lens says which rows it covers in its title (the J-lens: embed as the logit lens)."""
    if title is not None and not isinstance(title, str):
        raise LensError(f"title must be a str, got {type(title).__name__}")
    lenses = [{
        "label": label, "title": r.decoder.title, "rows": list(r.labels),
        "top_ids": r.top_ids.tolist(), "top_probs": np.round(r.top_probs.astype(np.float64), 4).tolist(),
        "rank": r.rank_next.tolist(), "depth": r.depth.tolist(),
    } for label, r in run.lens.items()]  # fmt: skip
    used = {int(i) for i in run.ids} | {int(i) for r in run.lens.values() for i in r.top_ids.flatten()}
    prompt = "".join(run.text(i) for i in run.ids[: run.prompt_len])
    payload = {
        "title": title or f"The lens while generating after {prompt[-60:]!r}", "steps": run.generated.tolist(),
        "lenses": lenses, "text": {str(i): run.text(i) for i in sorted(used)},
    }  # fmt: skip
    script, style = _asset("report_dom.js") + "\n" + _asset("report_generation.js"), _asset("report.css")
    policy = (
        f"default-src 'none'; script-src '{_sha256(script)}'; style-src '{_sha256(style)}'; "
        "img-src 'none'; base-uri 'none'; form-action 'none'"
    )
    body = _GENERATION_BODY.replace("{data}", _script_json(payload)).replace("{script}", script)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">\n"
        f"<title>{html_escape.escape(payload['title'])}</title>\n<style>{style}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
