"""The figures this issue adds: the prediction-depth view of a LensResult, and a CorpusResult's curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from minigpt import GPTConfig, LensError, evaluate_lens  # noqa: E402
from minigpt.plot import DEPTH_GID, DEPTH_LABELS, plot_curves, plot_lens  # noqa: E402

from test_lens import random_ids, sharp_model  # noqa: E402
from test_plot import image, main_axes, make_result  # noqa: E402


def depth_result():
    """Five rows, four positions with known depths: 1, 4, 0 and never (5)."""
    top = np.array([
        [9, 8, 4, 0],  # embed
        [1, 2, 4, 0],  # h.0
        [1, 2, 4, 0],  # h.1
        [1, 8, 4, 0],  # h.2
        [1, 2, 4, 7],  # h.3: the model's output at positions 0-2; position 3's top row disagrees
    ])  # fmt: skip
    return make_result(top, [0, 1, 2, 3], [1, 2, 3, -1], [1, 2, 4, 6], {i: f" t{i}" for i in range(10)})


def depth_lines(fig) -> list[tuple[float, float]]:
    """(y, x centre) of every depth marker."""
    out = []
    for coll in main_axes(fig).collections:
        if coll.get_gid() == DEPTH_GID:
            for seg in coll.get_segments():
                out.append((float(seg[0][1]), float((seg[0][0] + seg[1][0]) / 2)))
    return sorted(out, key=lambda p: p[1])


def test_depth_view_colours_and_lines():
    result = depth_result()
    assert result.depth.tolist() == [1, 4, 0, 5] and result.first_hit.tolist() == [1, 1, 0, 5]
    fig = plot_lens(result, "depth")
    want = np.array([
        [2, 2, 0, 2],
        [0, 1, 0, 2],
        [0, 1, 0, 2],
        [0, 2, 0, 2],
        [0, 0, 0, 2],
    ])  # fmt: skip  # 0: settled, 1: agrees but not settled, 2: disagrees
    np.testing.assert_array_equal(image(fig), want)
    assert depth_lines(fig) == [(0.5, 0.0), (3.5, 1.0), (-0.5, 2.0)]  # none for position 3 ("never")
    bar = fig.axes[-1]
    assert [t.get_text() for t in bar.get_yticklabels()] == list(DEPTH_LABELS)
    assert "prediction depth" in main_axes(fig).get_title()


def test_depth_view_with_rows_left_out():
    """The line sits under the first row shown at or above the depth (row indices, not block numbers)."""
    fig = plot_lens(depth_result(), "depth", layers=["embed", "h.2", "h.3"])
    np.testing.assert_array_equal(image(fig), [[2, 2, 0, 2], [0, 2, 0, 2], [0, 0, 0, 2]])
    assert depth_lines(fig) == [(0.5, 0.0), (1.5, 1.0), (-0.5, 2.0)]


@pytest.fixture(scope="module")
def corpus_result():
    model = sharp_model(GPTConfig(vocab_size=37, n_positions=12, n_embd=12, n_head=3, n_layer=3), seed=11)
    return evaluate_lens(model, random_ids(40, 37, seed=1), decoders=["logit", "norm_only", "last_blocks"], window=12)


def lines(ax) -> dict[str, np.ndarray]:
    return {line.get_gid(): np.asarray(line.get_ydata()) for line in ax.get_lines() if line.get_gid()}


def test_curves_draw_every_decoder_side_by_side(corpus_result):
    fig = plot_curves(corpus_result, ["kl", "ce", "top1_agreement"])
    axes = {ax.get_gid(): ax for ax in fig.axes}
    assert set(axes) == {"curves_kl", "curves_ce", "curves_top1_agreement"}
    for metric in ("kl", "ce", "top1_agreement"):
        got = lines(axes[f"curves_{metric}"])
        assert set(got) == {f"{metric}_{d}" for d in ("logit", "norm_only", "last_blocks")}
        for d in ("logit", "norm_only", "last_blocks"):
            np.testing.assert_allclose(got[f"{metric}_{d}"], corpus_result.metrics[d][metric])
        labels = [t.get_text() for t in axes[f"curves_{metric}"].get_xticklabels()]
        assert labels == corpus_result.labels
    # The model's own cross-entropy, dashed.
    dashed = [line for line in axes["curves_ce"].get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(corpus_result.baseline["ce"])
    assert "bits per token" in axes["curves_kl"].get_ylabel()


def test_curves_per_byte_and_bad_input(corpus_result):
    with pytest.raises(LensError, match="needs the corpus' byte count"):
        plot_curves(corpus_result, per_byte=True)  # an ids corpus without a tokenizer has no bytes
    with pytest.raises(LensError, match="unknown curves"):
        plot_curves(corpus_result, ["kl", "rank"])
    corpus_result.n_bytes = 2 * corpus_result.n_tokens  # two bytes a token
    try:
        ax = next(a for a in plot_curves(corpus_result, ["kl"], per_byte=True).axes if a.get_gid() == "curves_kl")
        np.testing.assert_allclose(lines(ax)["kl_logit"], corpus_result.metrics["logit"]["kl"] / 2)
        assert "bits per byte" in ax.get_ylabel()
    finally:
        corpus_result.n_bytes = None
