"""The lens plot: rows, labels, stars, outlines, cell texts and colours, read back from the Figure."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import get_args

import matplotlib

matplotlib.use("Agg")  # minigpt.plot never needs pyplot; this keeps any other import of it headless too

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.text import Text  # noqa: E402

import minigpt  # noqa: E402
from minigpt import LensError, LensResult  # noqa: E402
from minigpt.lens import DecoderSpec, LastBlocks  # noqa: E402
from minigpt.plot import METRICS, Metric, _has_glyph, display_token, plot_lens  # noqa: E402
from minigpt.testing import row_structure  # noqa: E402

# ----------------------------------------------------------------------------
# Building results by hand, and reading a figure back


def make_result(
    top_ids: np.ndarray,
    token_ids: list[int],
    next_ids: list[int],
    final_ids: list[int],
    id_text: dict[int, str],
    labels: list[str] | None = None,
    seed: int = 0,
) -> LensResult:
    """A LensResult with chosen top-1 ids, tokens and targets; every statistic random but known."""
    top_ids = np.asarray(top_ids, dtype=np.int64)  # (R, T)
    R, T = top_ids.shape
    labels = labels or ["embed", *(f"h.{l}" for l in range(R - 1))]
    assert len(labels) == R
    rng = np.random.default_rng(seed)
    f = lambda lo, hi: rng.uniform(lo, hi, (R, T)).astype(np.float32)  # noqa: E731
    i = lambda lo, hi: rng.integers(lo, hi, (R, T)).astype(np.int64)  # noqa: E731
    k = np.stack([top_ids, top_ids + 1000], axis=-1)  # (R, T, 2)
    return LensResult(
        labels=labels, **row_structure(labels), decoder="ln_f", token_ids=np.array(token_ids, dtype=np.int64),
        next_ids=np.array(next_ids, dtype=np.int64), final_ids=np.array(final_ids, dtype=np.int64),
        top_ids=k, top_logits=np.stack([f(-5, 30), f(-10, -5)], -1), top_probs=np.stack([f(0, 1), f(0, 0.1)], -1),
        logit_final=f(-5, 5), prob_final=f(0, 1), rank_final=i(1, 5000),
        logit_next=f(-5, 5), prob_next=f(0, 1), rank_next=i(1, 5000),
        logit_input=f(-5, 5), prob_input=f(0, 1), rank_input=i(1, 50000),
        kl_final=f(-1e-6, 30), kl_final_rev=f(0, 30), kl_input=f(0, 30), kl_input_rev=f(0, 30),
        entropy=f(0, 10), cross_entropy=f(0, 10), id_text=id_text,
    )  # fmt: skip


def simple_result(R: int = 4, T: int = 5, labels: list[str] | None = None, seed: int = 0) -> LensResult:
    """R rows, T positions over a vocabulary of 9 word tokens (ids 0-8), random but reproducible."""
    rng = np.random.default_rng(seed)
    words = {n: w for n, w in enumerate([" the", " cat", " sat", " on", " a", " mat", ".", "\n", "Hello"])}
    tokens = rng.integers(0, 9, T).tolist()
    nxt = tokens[1:] + [-1]
    top = rng.integers(0, 9, (R, T))
    final = top[-1].tolist()
    return make_result(top, tokens, nxt, final, words, labels, seed)


def main_axes(fig: Figure):
    return next(a for a in fig.axes if a.get_gid() == "lens")


def next_axis(fig: Figure):
    ax = main_axes(fig)
    return next(a for a in ax.child_axes if a.get_gid() == "next_tokens")


def image(fig: Figure) -> np.ndarray:
    images = main_axes(fig).get_images()
    assert len(images) == 1 and isinstance(images[0], AxesImage)
    return np.ma.getdata(images[0].get_array())


def ytick_labels(fig: Figure) -> list[str]:
    return [t.get_text() for t in main_axes(fig).get_yticklabels()]


def bottom_labels(fig: Figure) -> list[str]:
    return [t.get_text() for t in main_axes(fig).get_xticklabels()]


def top_labels(fig: Figure) -> list[str]:
    return [t.get_text() for t in next_axis(fig).get_xticklabels()]


def outlines(fig: Figure) -> list[Rectangle]:
    return [p for p in main_axes(fig).patches if isinstance(p, Rectangle) and p.get_gid() == "outline"]


def cell_texts(fig: Figure) -> dict[tuple[int, int], str]:
    """The text in each cell, keyed by (row, position) in image coordinates."""
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in main_axes(fig).texts}


def all_text(fig: Figure) -> list[Text]:
    fig.draw_without_rendering()  # lays out every label, as savefig would, without the pixels
    return [t for t in fig.findobj(Text) if t.get_text()]


# ----------------------------------------------------------------------------
# The module and its names


def test_import_minigpt_does_not_import_matplotlib() -> None:
    code = (
        "import sys, minigpt; assert 'matplotlib' not in sys.modules, 'import minigpt imported matplotlib'\n"
        "import minigpt.plot; assert 'matplotlib.pyplot' not in sys.modules, 'minigpt.plot imported pyplot'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_metrics_match_the_literal() -> None:
    assert METRICS == get_args(Metric) == ("logits", "probs", "ranks", "kl", "input_ranks", "input_kl", "depth")


def test_bad_metric_lists_the_valid_ones() -> None:
    with pytest.raises(LensError) as e:
        plot_lens(simple_result(), "rank")  # type: ignore[arg-type]
    for name in METRICS:
        assert name in str(e.value)


# ----------------------------------------------------------------------------
# Rows


@pytest.mark.parametrize("stride", [1, 2, 3, 6, 20])
def test_stride_keeps_embed_every_nth_block_and_the_last(stride: int) -> None:
    result = simple_result(R=8, T=3)  # embed, h.0 .. h.6
    fig = plot_lens(result, "kl", layers=stride)
    want = ["embed", *(f"h.{l}" for l in range(7) if l % stride == 0 or l == 6)]
    assert ytick_labels(fig) == want
    assert image(fig).shape == (len(want), 3)
    rows = [result.labels.index(w) for w in want]
    np.testing.assert_allclose(image(fig), np.clip(result.kl_final[rows], 0, 10))


def test_explicit_rows_are_shown_in_depth_order() -> None:
    result = simple_result(R=8, T=3)
    fig = plot_lens(result, layers=["h.5", "embed", "h.2"])
    assert ytick_labels(fig) == ["embed", "h.2", "h.5"]  # no forced last row: the list is what was asked
    assert image(fig).shape == (3, 3)
    assert ytick_labels(plot_lens(result, layers="h.3")) == ["h.3"]


def test_numbers_in_a_list_are_block_numbers() -> None:
    """layers=[0, 5, 6] shows h.0, h.5, h.6 (as --layers 0,5,6 does): blocks, not row indices."""
    labels = ["embed"] + [x for l in range(7) for x in (f"h.{l}.resid_mid", f"h.{l}")]
    result = simple_result(R=len(labels), T=3, labels=labels)
    fig = plot_lens(result, layers=[6, 0, 5])
    assert ytick_labels(fig) == ["h.0", "h.5", "h.6"]
    np.testing.assert_allclose(image(fig), result.top_logits[[2, 12, 14], :, 0])
    assert ytick_labels(plot_lens(result, layers=[0, "embed", "h.3.resid_mid"])) == ["embed", "h.0", "h.3.resid_mid"]
    with pytest.raises(LensError, match=r"no row 7 in this result"):
        plot_lens(result, layers=[0, 7])


@pytest.mark.parametrize("layers", [0, -2, True, 1.5, [], ["h.99"], [3]])
def test_bad_layers_raise(layers: object) -> None:
    with pytest.raises(LensError):
        plot_lens(simple_result(), layers=layers)  # type: ignore[arg-type]


def test_unknown_row_lists_the_rows() -> None:
    with pytest.raises(LensError, match="embed, h.0, h.1, h.2"):
        plot_lens(simple_result(R=4), layers=["h.7"])


def test_sub_blocks_and_prior_rows() -> None:
    labels = ["prior", "embed"] + [x for l in range(4) for x in (f"h.{l}.resid_mid", f"h.{l}")]
    result = simple_result(R=len(labels), T=3, labels=labels)
    assert ytick_labels(plot_lens(result)) == labels[1:]  # prior hidden by default
    assert ytick_labels(plot_lens(result, sub_blocks=False)) == ["embed", "h.0", "h.1", "h.2", "h.3"]
    assert ytick_labels(plot_lens(result, layers=2)) == ["embed", "h.0.resid_mid", "h.0", "h.2.resid_mid", "h.2",
                                                         "h.3.resid_mid", "h.3"]  # fmt: skip
    assert ytick_labels(plot_lens(result, layers=2, sub_blocks=False)) == ["embed", "h.0", "h.2", "h.3"]
    fig = plot_lens(result, layers=["prior", "embed", "h.3"])
    assert ytick_labels(fig) == ["prior", "embed", "h.3"]
    np.testing.assert_allclose(image(fig), result.top_logits[[0, 1, len(labels) - 1], :, 0])


# ----------------------------------------------------------------------------
# Labels, stars, outlines and cells


def controlled_result() -> LensResult:
    """Three rows, four positions; matches and mismatches chosen by hand."""
    words = {0: " The", 1: " cat", 2: "\n", 3: " sat", 4: " mat", 5: "$", 6: "\t", 7: "dog"}
    top = np.array([[7, 7, 7, 7],  # embed: never the final guess
                    [1, 4, 3, 7],  # h.0: matches at positions 0 and 2
                    [1, 2, 3, 4]])  # fmt: skip
    tokens = [0, 1, 2, 3]
    nxt = [1, 5, 3, -1]  # the text goes on " The cat\n sat" and ends there
    final = [1, 2, 3, 4]  # right at 0 and 2, wrong at 1; nothing to be right about at 3
    return make_result(top, tokens, nxt, final, words)


def test_labels_stars_outlines_and_cells() -> None:
    result = controlled_result()
    fig = plot_lens(result, "probs")
    assert ytick_labels(fig) == ["embed", "h.0", "h.1"]
    assert bottom_labels(fig) == ["␣The", "␣cat", "⏎", "␣sat"]
    assert bottom_labels(fig) == [display_token(t) for t in result.tokens]
    assert top_labels(fig) == ["␣cat*", "$", "␣sat*", ""]

    boxes = outlines(fig)
    expected = {(r, t) for r in range(3) for t in range(4) if result.top_ids[r, t, 0] == result.final_ids[t]}
    assert len(expected) == 2 + 4
    assert len(boxes) == len(expected)
    centres = {(round(b.get_y() + b.get_height() / 2), round(b.get_x() + b.get_width() / 2)) for b in boxes}
    assert centres == expected

    cells = cell_texts(fig)
    assert len(cells) == 12
    for (r, t), text in cells.items():
        assert text == display_token(result.text(result.top_ids[r, t, 0]))
    assert cells[(0, 0)] == "dog" and cells[(2, 1)] == "⏎"


def test_star_uses_final_guess_not_the_rows() -> None:
    result = controlled_result()
    result.final_ids[:] = [6, 6, 6, 6]  # the model is never right
    assert top_labels(plot_lens(result)) == ["␣cat", "$", "␣sat", ""]
    assert outlines(plot_lens(result)) == []


def test_tokens_without_text_show_their_ids() -> None:
    result = controlled_result()
    result.id_text.clear()
    fig = plot_lens(result)
    assert bottom_labels(fig) == ["<0>", "<1>", "<2>", "<3>"]
    assert top_labels(fig) == ["<1>*", "<5>", "<3>*", ""]


def test_long_tokens_are_cut_in_cells() -> None:
    result = controlled_result()
    result.id_text[7] = "=" * 64  # a real GPT-2 token
    cells = cell_texts(plot_lens(result))
    assert cells[(0, 0)].endswith("…") and len(cells[(0, 0)]) <= 12


# ----------------------------------------------------------------------------
# Colours


@pytest.mark.parametrize("metric", METRICS)
def test_colours_are_the_statistic(metric: str) -> None:
    result = simple_result(R=4, T=6, seed=3)
    fig = plot_lens(result, metric, kl_max=7.5)  # type: ignore[arg-type]
    want = {
        "logits": result.top_logits[:, :, 0],
        "probs": result.top_probs[:, :, 0],
        "ranks": np.clip(result.rank_final, 1, 100),
        "kl": np.clip(result.kl_final, 0, 7.5),
        "input_ranks": np.clip(result.rank_input, 1, 1000),
        "input_kl": np.clip(result.kl_input, 0, 7.5),
        # 0 at or above the depth, 1 where the row agrees below it, 2 where it disagrees
        "depth": np.where(np.arange(4)[:, None] >= result.depth, 0,
                          np.where(result.top_ids[:, :, 0] == result.final_ids, 1, 2)),  # fmt: skip
    }[metric]
    np.testing.assert_allclose(image(fig), want, rtol=1e-6)
    if metric in ("ranks", "kl", "input_ranks", "input_kl"):  # the random values do exceed the clip
        assert (image(fig) == image(fig).max()).sum() > 1
    # every view prints the top-1 tokens, and the title names the metric and the decoder
    assert len(cell_texts(fig)) == 24
    title = main_axes(fig).get_title()
    assert "ln_f (the model's own decoder)" in title
    bar_label = fig.axes[-1].get_ylabel()
    assert bar_label and ("clipped" in bar_label) == (metric not in ("logits", "probs", "depth"))


def test_text_stays_readable_on_dark_and_light_cells() -> None:
    result = controlled_result()
    result.rank_final[0, :] = [1, 100, 3, 5000]  # light, dark, light-ish, dark (clipped)
    colours = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_color()
               for t in main_axes(plot_lens(result, "ranks")).texts}  # fmt: skip
    assert colours[(0, 0)] == "black" and colours[(0, 1)] == "white" and colours[(0, 3)] == "white"


def test_titles_and_decoder_words() -> None:
    result = simple_result()
    assert "KL(input ‖ row)" in main_axes(plot_lens(result, "input_kl")).get_title()
    assert "rank of the model's final top-1" in main_axes(plot_lens(result, "ranks")).get_title()
    result.decoder = DecoderSpec.of(LastBlocks(2))
    assert "the last 2 blocks, then ln_f" in main_axes(plot_lens(result)).get_title()
    assert main_axes(plot_lens(result, title="mine")).get_title().splitlines() == [
        "mine", "decoder: the last 2 blocks, then ln_f"]  # a title replaces the first line only


@pytest.mark.parametrize("kl_max", [0, -1.0, float("nan"), float("inf"), "10"])
def test_bad_kl_max_raises(kl_max: object) -> None:
    with pytest.raises(LensError, match="kl_max"):
        plot_lens(simple_result(), "kl", kl_max=kl_max)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------
# Positions


def test_long_text_shows_the_last_positions() -> None:
    result = simple_result(R=3, T=30)
    fig = plot_lens(result)
    assert image(fig).shape == (3, 20)
    assert bottom_labels(fig) == [display_token(t) for t in result.tokens[-20:]]
    assert "positions 10–29" in main_axes(fig).get_xlabel()
    assert image(plot_lens(result, max_positions=7)).shape == (3, 7)
    assert image(plot_lens(result, max_positions=50)).shape == (3, 30)


def test_positions_pick_a_window() -> None:
    result = simple_result(R=3, T=30)
    fig = plot_lens(result, "ranks", positions=slice(2, 6))
    assert bottom_labels(fig) == [display_token(t) for t in result.tokens[2:6]]
    np.testing.assert_allclose(image(fig), np.clip(result.rank_final[:, 2:6], 1, 100))
    assert bottom_labels(plot_lens(result, positions=slice(-3, 30))) == [display_token(t) for t in result.tokens[-3:]]
    # Clamped like a Python slice, as the lens and the result clamp.
    assert bottom_labels(plot_lens(result, positions=slice(25, 99))) == [display_token(t) for t in result.tokens[25:]]


def windowed_result(T: int = 30, seed: int = 3) -> LensResult:
    """A result whose stars and outlines differ from position to position, so that computing them
    against the wrong positions (the whole result rather than the window shown) changes them."""
    rng = np.random.default_rng(seed)
    words = {n: f" w{n}" for n in range(6)}
    tokens = rng.integers(0, 6, T).tolist()
    nxt = tokens[1:] + [-1]
    final = [n if rng.random() < 0.5 else (n + 1) % 6 for n in nxt[:-1]] + [2]
    top = rng.integers(0, 6, (4, T))
    top[-1] = final
    return make_result(top, tokens, nxt, final, words, seed=seed)


@pytest.mark.parametrize("window", [dict(positions=slice(7, 13)), dict(max_positions=6), dict(positions=slice(0, 6))])
def test_stars_and_outlines_follow_the_window(window: dict) -> None:
    """Stars and outlines are those of the positions shown, whether picked or the last ones of a long result."""
    result = windowed_result()
    span = window.get("positions", slice(len(result) - window.get("max_positions", 0), len(result)))
    lo, hi = span.start, span.stop
    fig = plot_lens(result, **window)
    stars = [label.endswith("*") for label in top_labels(fig)]
    assert stars == [bool(result.final_ids[t] == result.next_ids[t]) for t in range(lo, hi)]
    assert 0 < sum(stars) < hi - lo  # the window has both, so a shifted window would differ
    expected = {(r, t - lo) for r in range(4) for t in range(lo, hi) if result.top_ids[r, t, 0] == result.final_ids[t]}
    got = {(round(b.get_y() + b.get_height() / 2), round(b.get_x() + b.get_width() / 2)) for b in outlines(fig)}
    assert got == expected
    shifted = {(r, t - lo) for r in range(4) for t in range(hi - lo) if result.top_ids[r, t, 0] == result.final_ids[t]}
    assert lo == 0 or shifted != expected  # the fixture really tells the window from the first positions


def test_the_embed_row_is_drawn_at_the_bottom() -> None:
    """Layers go up: the first row (embed) is the lowest on screen, in its colour, label and cell text alike.
    (An image drawn with origin="upper" would put it on top.)"""
    result = simple_result(R=4, T=3)
    result.top_probs[:, :, 0] = np.array([[0.0], [0.3], [0.6], [1.0]])  # embed darkest, the top row lightest
    fig = plot_lens(result, "probs")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    ax = main_axes(fig)
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].astype(float) / 255
    height = pixels.shape[0]
    cmap, norm = ax.get_images()[0].get_cmap(), ax.get_images()[0].norm
    screen_y = []
    for r in range(4):
        screen_y.append(ax.transData.transform((0, r))[1])  # display coordinates: y grows upwards
        x, y = ax.transData.transform((0, r + 0.3))  # inside the cell, above its text
        colour = pixels[int(round(height - y)), int(round(x))]
        np.testing.assert_allclose(colour, cmap(norm(result.top_probs[r, 0, 0]))[:3], atol=0.02, err_msg=f"row {r}")
    assert screen_y == sorted(screen_y)  # row 0 lowest
    tick_y = [t.get_window_extent().y0 for t in ax.get_yticklabels()]
    assert [t.get_text() for t in ax.get_yticklabels()] == result.labels and tick_y == sorted(tick_y)


def test_twenty_positions_fit_a_screen(vocab_checkpoint: Path, tmp_path: Path) -> None:
    """A 20-position figure of real GPT-2 tokens stays near 1600 px wide at the default 150 dpi."""
    import matplotlib.image

    model = minigpt.GPT.from_pretrained(str(vocab_checkpoint))
    tok = minigpt.load_tokenizer(vocab_checkpoint)
    text = "Specifically, we train GPT-3, an autoregressive language model with 175 billion parameters, 10x more"
    fig = plot_lens(minigpt.logit_lens(model, text, tokenizer=tok, positions=slice(0, 20)), "logits")
    fig.savefig(tmp_path / "w.png", dpi=150, bbox_inches="tight")
    width = matplotlib.image.imread(tmp_path / "w.png").shape[1]
    assert 1200 <= width <= 1800, width


@pytest.mark.parametrize("positions", [slice(5, 2), slice(40, 50), slice(3, 3), "ab", (1, 2), slice(0.5, 2), 4, slice(0, 9, 2)])
def test_bad_positions_raise(positions: object) -> None:
    with pytest.raises(LensError):
        plot_lens(simple_result(R=3, T=30), positions=positions)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_positions", [0, -1, 2.5])
def test_bad_max_positions_raise(max_positions: object) -> None:
    with pytest.raises(LensError):
        plot_lens(simple_result(), max_positions=max_positions)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------
# Token text


def test_display_token() -> None:
    assert display_token(" the") == "␣the"
    assert display_token("  ") == "␣␣"
    assert display_token("\n\n") == "⏎⏎"
    assert display_token("\tx") == "⇥x"
    assert display_token("\x07") == "\\x07"
    assert display_token("a\u200bb") == "a\\u200bb"  # zero-width space
    assert display_token("\xa0") == "\\xa0"  # no-break space
    assert display_token("\\xe2\\x80") == "\\xe2\\x80"  # byte fragments as LensResult spells them
    assert display_token("$5") == "$5"
    assert display_token("café") == "café"
    assert display_token("中") in ("中", "U+4E2D")
    assert display_token("中") == ("中" if _has_glyph("中") else "U+4E2D")
    assert display_token("😀") == ("😀" if _has_glyph("😀") else "U+1F600")


def special_result() -> LensResult:
    """Tokens that break naive plotting: dollars (mathtext), CJK and emoji (missing glyphs), controls."""
    words = {0: "$", 1: " $5", 2: "$\\foo$", 3: "中", 4: "😀", 5: "\r\n", 6: "\\xe4\\xb8", 7: "$$"}
    top = np.array([[2, 3, 4, 7, 1, 0], [7, 2, 3, 4, 5, 6]])
    return make_result(top, [0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6], [7, 2, 3, 4, 5, 6], words)


def test_dollars_are_never_mathtext(tmp_path: Path) -> None:
    fig = plot_lens(special_result())
    # "$\foo$" is invalid mathtext: drawing would raise if any label were parsed as math
    fig.savefig(tmp_path / "dollars.png")
    texts = [t for t in all_text(fig) if "$" in t.get_text()]
    assert {"$", "␣$5", "$\\foo$", "$$"} <= {t.get_text() for t in texts}
    assert all(not t.get_parse_math() for t in texts)
    assert bottom_labels(fig)[:3] == ["$", "␣$5", "$\\foo$"]


def test_cjk_and_emoji_draw_without_warnings(tmp_path: Path) -> None:
    result = special_result()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_lens(result)
        fig.savefig(tmp_path / "cjk.png")
    labels = bottom_labels(fig)
    assert labels[3] == display_token("中") and labels[3] in ("中", "U+4E2D")
    assert labels[4] == display_token("😀") and labels[4] in ("😀", "U+1F600")
    assert labels[5] == ("␍" if _has_glyph("␍") else "\\r") + "⏎"
    assert labels[5] != "\r\n"
    cell, spelled = cell_texts(fig)[(1, 5)], "\\xe4\\xb8"  # byte fragments kept as their bytes, maybe cut
    assert cell == spelled or (cell.endswith("…") and spelled.startswith(cell[:-1]) and len(cell) > 4), cell


# ----------------------------------------------------------------------------
# Figures, axes and files


def test_figure_grows_with_rows_and_positions() -> None:
    small = plot_lens(simple_result(R=3, T=4)).get_size_inches()
    wide = plot_lens(simple_result(R=3, T=16)).get_size_inches()
    tall = plot_lens(simple_result(R=25, T=4)).get_size_inches()
    assert wide[0] > small[0] and tall[1] > small[1]


def test_draws_into_a_given_axes() -> None:
    fig = Figure()
    left, right = fig.subplots(1, 2)
    out = plot_lens(simple_result(), "kl", ax=right)
    assert out is fig
    assert right.get_images() and not left.get_images()


def test_savefig_png(tmp_path: Path) -> None:
    fig = plot_lens(simple_result(R=5, T=8), "input_ranks")
    path = tmp_path / "lens.png"
    fig.savefig(path, dpi=50)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert np.allclose((width, height), fig.get_size_inches() * 50, atol=1)


# ----------------------------------------------------------------------------
# Real lens results from tiny random models


def test_plots_a_real_lens_with_real_tokens(vocab_checkpoint: Path, tmp_path: Path) -> None:
    model = minigpt.GPT.from_pretrained(vocab_checkpoint)
    tok = minigpt.load_tokenizer(vocab_checkpoint)
    text = "It costs $5.\n\tThe 中 cat"
    result = minigpt.logit_lens(model, text, tokenizer=tok, sub_blocks=True)
    T = len(result)
    figs = {}
    for metric in METRICS:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no missing glyphs, no mathtext, nothing
            figs[metric] = fig = plot_lens(result, metric)  # type: ignore[arg-type]
            fig.draw_without_rendering()
        assert ytick_labels(fig) == result.labels
        assert bottom_labels(fig) == [display_token(t) for t in result.tokens]
        stars = [label.endswith("*") for label in top_labels(fig)]
        assert stars == list(result.final_ids == result.next_ids)
        assert top_labels(fig)[-1] == ""
        assert len(outlines(fig)) == int((result.top_ids[:, :, 0] == result.final_ids).sum())
        assert len(cell_texts(fig)) == len(result.labels) * T
    figs["kl"].savefig(tmp_path / "kl.png", dpi=40)
    # The last row is the model's own output: rank 1 and KL 0 everywhere, every cell outlined;
    # the embed row is the input reference: KL(input || embed) = 0.
    assert np.all(image(figs["ranks"])[-1] == 1)
    np.testing.assert_allclose(image(figs["kl"])[-1], 0, atol=1e-5)
    np.testing.assert_allclose(image(figs["input_kl"])[0], 0, atol=1e-5)
    rows = [round(b.get_y() + b.get_height() / 2) for b in outlines(figs["logits"])]
    assert rows.count(len(result.labels) - 1) == T
    fig = plot_lens(result, layers=2, sub_blocks=False)
    assert ytick_labels(fig) == ["embed", "h.0", "h.2"]


def test_plots_a_lens_without_tokenizer(tiny_checkpoint: Path) -> None:
    model = minigpt.GPT.from_pretrained(tiny_checkpoint)
    result = minigpt.logit_lens(model, [3, 1, 4, 1, 5, 9, 2, 6], decoder="norm_only")
    fig = plot_lens(result, "logits", positions=slice(1, 5))
    assert bottom_labels(fig) == ["<1>", "<4>", "<1>", "<5>"]
    assert "normalisation only" in main_axes(fig).get_title()
    np.testing.assert_allclose(image(fig), result.top_logits[:, 1:5, 0])
