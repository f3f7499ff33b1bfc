"""The HTML report: its data, its safety and its size without a browser, then the page itself in headless Chromium.

The browser tests drive Debian's `chromium` through `chromium-driver` and selenium, from a file on
disk with the network switched off. They skip when any of the three is missing, and fail instead
when `CI` is set. One browser serves the whole module.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import minigpt
from minigpt import AttentionPatterns, InputError, LensError, LensResult, attention_patterns
from minigpt.cli import main
from minigpt.display import display_token
from minigpt.testing import row_structure
from minigpt.report import MAX_POSITIONS, TOP, VIEWS, colour_table, lens_html, notebook_html

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The dog ran to the park, and then it ran home again.\n"
# Token texts that would run or inject something if the page ever treated text as markup.
HOSTILE = [
    "</script><script>window.__pwned_script = 1</script>",
    '"><img src=x onerror="window.__pwned_img = 1">',
    "line\u2028sep\u2029para <!-- &amp; &lt;b&gt;",
    "<b onmouseover=window.__pwned_b=1>bold</b>",
]


# ----------------------------------------------------------------------------
# Results made by hand, and reading a page's data back


def synthetic_result(
    R: int, T: int, k: int = 10, *, seed: int = 0, labels: list[str] | None = None, chars: tuple[int, int] = (1, 8)
) -> LensResult:
    """A LensResult with random statistics over GPT-2's vocabulary size, and random token texts of
    `chars` characters (1 to 8). Its top ids are all different, so its JSON is as large as it can be."""
    rng = np.random.default_rng(seed)
    V = 50257
    labels = labels or ["embed", *(f"h.{l}" for l in range(R - 1))]
    f = lambda lo, hi: rng.uniform(lo, hi, (R, T)).astype(np.float32)  # noqa: E731
    ranks = lambda: rng.integers(1, V, (R, T)).astype(np.int64)  # noqa: E731
    top_ids = rng.integers(0, V, (R, T, k)).astype(np.int64)
    probs = np.sort(10 ** rng.uniform(-6, 0, (R, T, k)), axis=-1)[..., ::-1].astype(np.float32)
    token_ids = rng.integers(0, V, T).astype(np.int64)
    next_ids = np.append(token_ids[1:], -1)
    final_ids = top_ids[-1, :, 0].copy()
    used = np.unique(np.concatenate([top_ids.ravel(), token_ids]))
    ends = np.cumsum(rng.integers(chars[0], chars[1] + 1, len(used)))
    letters = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz ,."), ends[-1]))
    id_text = {int(i): letters[e - n : e] for i, e, n in zip(used, ends, np.diff(ends, prepend=0))}
    nan_last = lambda a: np.where(np.arange(T) == T - 1, np.nan, a).astype(np.float32)  # noqa: E731
    return LensResult(
        labels=labels, **row_structure(labels), decoder="ln_f", token_ids=token_ids, next_ids=next_ids, final_ids=final_ids,
        top_ids=top_ids, top_logits=np.sort(rng.uniform(-10, 30, (R, T, k)), -1)[..., ::-1].astype(np.float32),
        top_probs=probs, logit_final=f(-5, 5), prob_final=f(0, 1), rank_final=ranks(),
        logit_next=nan_last(f(-5, 5)), prob_next=nan_last(f(0, 1)), rank_next=np.where(np.arange(T) == T - 1, -1, ranks()),
        logit_input=f(-5, 5), prob_input=f(0, 1), rank_input=ranks(),
        kl_final=f(-1e-6, 30), kl_final_rev=f(0, 30), kl_input=f(0, 30), kl_input_rev=f(0, 30),
        entropy=f(0, 11), cross_entropy=nan_last(f(0, 10)), id_text=id_text,
    )  # fmt: skip


def depth_result(agree: np.ndarray) -> tuple[LensResult, np.ndarray, np.ndarray]:
    """A result whose top-1 is the final top-1 exactly where `agree` (R, T) is True, with its prediction
    depth and first hit by their definitions (row indices, R = never)."""
    R, T = agree.shape
    result = synthetic_result(R, T)
    top = result.top_ids.copy()
    top[:, :, 0] = np.where(agree, result.final_ids, (result.final_ids + 1) % 50257)
    result = dataclasses.replace(result, top_ids=top)
    first_hit = np.array([np.flatnonzero(agree[:, t])[0] if agree[:, t].any() else R for t in range(T)])
    settled = [next((i for i, a in enumerate(agree[::-1, t]) if not a), R) for t in range(T)]  # agreeing rows on top
    depth = R - np.array(settled)
    if not hasattr(type(result), "depth"):  # a LensResult without prediction depth: give it the fields it will have
        result.depth, result.first_hit = depth, first_hit
    return result, depth, first_hit


def page_data(page: str) -> dict:
    """The JSON the page carries, parsed as a browser would (NaN refused)."""
    m = re.search(r'<script type="application/json" class="mg-data">(.*?)</script>', page, re.S)
    assert m, "no data element"

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the page's JSON")

    return json.loads(m.group(1), parse_constant=refuse)


def inline_script(page: str) -> str:
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1, "exactly one executable script"
    return scripts[0]


def close(a, b, rel: float = 6e-4) -> bool:
    """Equal to the 4 significant digits the page keeps."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.all(np.abs(a - b) <= rel * np.abs(b) + 1e-12))


# ----------------------------------------------------------------------------
# A lens of real tokens on a small random GPT-2, with hostile token texts injected


@pytest.fixture(scope="module")
def model_tok(vocab_checkpoint: Path):
    return minigpt.GPT.from_pretrained(str(vocab_checkpoint)), minigpt.load_tokenizer(vocab_checkpoint)


@pytest.fixture(scope="module")
def lens(model_tok) -> tuple[LensResult, list[int], dict[int, str]]:
    """The lens of TEXT (every site: prior, embed, resid_mid and resid_post rows), k=12, with
    HOSTILE texts given to some of the ids it shows. Returns (result, ids, {id: hostile text})."""
    model, tok = model_tok
    ids = tok.encode_ordinary(TEXT)
    result = minigpt.logit_lens(model, ids, tokenizer=tok, k=12, sub_blocks=True, prior=True)
    candidates = [int(i) for i in result.top_ids[-1, :, 0]] + [int(i) for i in result.token_ids]
    chosen = list(dict.fromkeys(candidates))[: len(HOSTILE)]
    hostile = dict(zip(chosen, HOSTILE))
    return dataclasses.replace(result, id_text={**result.id_text, **hostile}), ids, hostile


@pytest.fixture(scope="module")
def attention(model_tok, lens) -> AttentionPatterns:
    model, _ = model_tok
    return attention_patterns(model, lens[1], blocks=[0, 2])


# ----------------------------------------------------------------------------
# The page without a browser: data, safety, size


def test_the_data_is_the_result(lens) -> None:
    result, _, _ = lens
    data = page_data(lens_html(result, metric="kl"))
    R, T = len(result.labels), len(result)
    assert (data["R"], data["T"], data["K"], data["k"]) == (R, T, TOP, 12)
    assert [r["label"] for r in data["rows"]] == result.labels
    assert [r["site"] for r in data["rows"]] == ["prior", "embed"] + ["resid_mid", "resid_post"] * 3
    assert [r["block"] for r in data["rows"]] == [-1, -1, 0, 0, 1, 1, 2, 2]
    assert data["decoder"]["name"] == getattr(result.decoder, "name", result.decoder)  # "ln_f"; "logit" once a value
    assert data["decoder"]["title"] == "ln_f (the model's own decoder)"
    assert data["input"] == result.token_ids.tolist() and data["final"] == result.final_ids.tolist()
    assert data["next"] == result.next_ids.tolist() and data["next"][-1] == -1
    assert np.array_equal(np.array(data["top_ids"]).reshape(R, T, TOP), result.top_ids[:, :, :TOP])
    assert close(np.array(data["top_probs"]).reshape(R, T, TOP), result.top_probs[:, :, :TOP])
    for name, field in (("final", "final"), ("next", "next"), ("input", "input")):
        assert np.array_equal(np.array(data["targets"][name]["rank"]).reshape(R, T), getattr(result, f"rank_{field}"))
    probs_next = np.array([np.nan if v is None else v for v in data["targets"]["next"]["prob"]]).reshape(R, T)
    assert np.isnan(probs_next[:, -1]).all() and close(probs_next[:, :-1], result.prob_next[:, :-1])
    expected = {"logits": result.top_logits[:, :, 0], "probs": result.top_probs[:, :, 0], "ranks": result.rank_final,
                "kl": result.kl_final, "input_ranks": result.rank_input, "input_kl": result.kl_input,
                "entropy": result.entropy}  # fmt: skip
    depth = ["depth"] if getattr(result, "depth", None) is not None else []  # once LensResult has it (issue 7)
    assert list(data["views"]) == list(expected) + depth and data["view"] == "kl"
    for name, values in expected.items():
        assert close(np.array(data["views"][name]["values"]).reshape(R, T), values), name
    for i in {*result.top_ids[:, :, :TOP].ravel().tolist(), *result.token_ids.tolist()}:
        assert data["text"][str(i)] == display_token(result.text(i))


def test_hostile_text_stays_inside_the_json(lens) -> None:
    result, _, hostile = lens
    page = lens_html(result)
    assert page.count("<script") == 2 and page.count("</script") == 2  # the data element and the script, no more
    assert "<img" not in page and "<b " not in page and "<!--" not in page
    assert "\u2028" not in page and "\u2029" not in page
    raw = re.search(r'class="mg-data">(.*?)</script>', page, re.S).group(1)
    assert not set("<>&\u2028\u2029") & set(raw)  # all written as \uXXXX escapes
    data = page_data(page)
    for i, text in hostile.items():
        assert data["text"][str(i)] == display_token(text)  # the same text once parsed
    # The script only ever writes text: no markup sinks anywhere in it.
    script = inline_script(page)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert sink not in script


def test_nothing_external_and_the_policy_hashes_the_script(lens) -> None:
    result, _, _ = lens
    page = lens_html(result)
    assert not re.search(r"(?i)\b(?:https?|ftp|wss?|file|data|javascript):|//[\w-]+\.[\w.-]+|\bwww\.|@import|\burl\(", page)
    assert not re.search(r"(?i)<(?:link|iframe|img|object|embed|base|a)\b", page)
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page).group(1)
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    sha = lambda text: "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"  # noqa: E731
    assert directives["script-src"] == sha(inline_script(page))
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert directives["style-src"] == sha(style)


def test_non_finite_values_become_null(lens) -> None:
    result, _, _ = lens
    broken = dataclasses.replace(result, kl_final=result.kl_final.copy(), entropy=result.entropy.copy())
    broken.kl_final[1, 2] = np.nan
    broken.entropy[0, 0] = np.inf
    data = page_data(lens_html(broken))  # json.loads refuses NaN/Infinity here, as JSON.parse would
    T = len(result)
    assert data["views"]["kl"]["values"][1 * T + 2] is None and data["views"]["entropy"]["values"][0] is None


def test_the_cap_keeps_the_last_positions() -> None:
    result = dataclasses.replace(synthetic_result(3, 300), start=7)
    data = page_data(lens_html(result))
    assert (data["T"], data["total"], data["start"]) == (MAX_POSITIONS, 300, 7 + 300 - MAX_POSITIONS)
    assert data["input"] == result.token_ids[-MAX_POSITIONS:].tolist()
    small = page_data(lens_html(result, max_positions=5))
    assert small["T"] == 5 and np.array_equal(np.array(small["top_ids"]).reshape(3, 5, TOP), result.top_ids[:, -5:])
    assert page_data(lens_html(result[:40]))["total"] == 40  # under the cap: everything


def test_a_lens_with_fewer_than_ten_tokens_shows_what_it_has() -> None:
    data = page_data(lens_html(synthetic_result(2, 4, k=3)))
    assert (data["K"], data["k"]) == (3, 3) and len(data["top_ids"]) == 2 * 4 * 3


def test_depth_when_the_result_has_it() -> None:
    # Coded against the fields the lead pinned for LensResult (depth, first_hit: (T,) row indices, R = never).
    agree = np.array([[1, 0, 0, 0, 0, 1], [1, 1, 0, 0, 0, 1], [1, 1, 0, 1, 1, 0], [1, 1, 1, 0, 1, 1]], dtype=bool)
    result, depth, first_hit = depth_result(agree)
    assert depth.tolist() == [0, 1, 3, 4, 2, 3] and first_hit.tolist() == [0, 1, 3, 2, 2, 0]
    data = page_data(lens_html(result, metric="depth"))
    assert data["view"] == "depth" and data["depth"] == {"depth": depth.tolist(), "first_hit": first_hit.tolist()}
    # The PNG's three categories: 0 at or above the depth, 1 where the row agrees below it, 2 where it disagrees.
    want = [[0, 2, 2, 2, 2, 1],
            [0, 0, 2, 2, 2, 1],
            [0, 0, 2, 1, 0, 2],
            [0, 0, 0, 2, 0, 0]]  # fmt: skip
    assert np.array(data["views"]["depth"]["values"]).reshape(4, 6).tolist() == want


def test_the_depth_view_is_the_pngs() -> None:
    """Issue 18, item 11: the same three categories and colours as minigpt.plot's depth view."""
    import matplotlib as mpl

    from minigpt import plot

    assert minigpt.report.DEPTH_SHADES == plot.DEPTH_SHADES and minigpt.report.DEPTH_LABELS == plot.DEPTH_LABELS
    result, _, _ = depth_result(np.ones((3, 4), dtype=bool))
    categories = page_data(lens_html(result, metric="depth"))["views"]["depth"]["categories"]
    assert [c["label"] for c in categories] == list(plot.DEPTH_LABELS)
    theirs = mpl.colormaps["Blues"](plot.DEPTH_SHADES)[:, :3] * 255  # what the PNG's ListedColormap holds
    ours = [[int(c["colour"][i : i + 2], 16) for i in (1, 3, 5)] for c in categories]
    assert np.abs(np.array(ours) - theirs).max() <= 1


def test_the_logit_scale_is_in_the_legend_and_a_caller_can_fix_it() -> None:
    """Issue 18, item 12: the logit scale is each report's own unless fixed, and the legend gives its range."""
    a, b = synthetic_result(3, 6, seed=1), synthetic_result(3, 6, seed=2)
    own = page_data(lens_html(a))["views"]["logits"]
    lo, hi = np.percentile(a.top_logits[:, :, 0].astype(np.float64), [5, 95])
    assert close([own["lo"], own["hi"]], [lo, hi])  # by default, this report's 5th to 95th percentile...
    assert f"{lo:.4g} to {hi:.4g}" in own["legend"] and "this report's 5th to 95th percentile" in own["legend"]  # ...and it says so
    assert "scale=(lo, hi)" in own["legend"]  # with the way to compare reports
    for result in (a, b):  # fixed: the same scale in both reports, whatever their logits
        fixed = page_data(lens_html(result, scale=(-2, 7.5)))["views"]["logits"]
        assert (fixed["lo"], fixed["hi"]) == (-2.0, 7.5)
        assert "-2 to 7.5" in fixed["legend"] and "a fixed scale" in fixed["legend"]
    assert page_data(lens_html(a, scale=np.array([0, 20], dtype=np.float32)))["views"]["logits"]["hi"] == 20.0
    frame = notebook_html(a, scale=(1.0, 2.0))  # the notebook's frame passes it on
    page = html.unescape(re.search(r'srcdoc="([^"]*)"', frame).group(1))
    assert (page_data(page)["views"]["logits"]["lo"], page_data(page)["views"]["logits"]["hi"]) == (1.0, 2.0)
    assert page_data(lens_html(a, scale=(-2, 7.5)))["views"]["kl"]["hi"] == 10.0  # the other views keep theirs


@pytest.mark.parametrize(
    "scale", [(1, 1), (3, 1), (0, float("nan")), (float("-inf"), 0), (1,), (1, 2, 3), "ab", (True, 2), 5, ("0", "1")]
)
def test_a_bad_logit_scale_says_what_it_must_be(scale) -> None:
    with pytest.raises(LensError, match=r"scale must be two finite numbers \(lo, hi\) with lo < hi.*e\.g\. scale=\(0\.0, 20\.0\)"):
        lens_html(synthetic_result(2, 3), scale=scale)


def test_rows_and_decoder_from_the_result() -> None:
    plain = page_data(lens_html(synthetic_result(3, 2)))
    assert [r["block"] for r in plain["rows"]] == [-1, 0, 1] and [r["site"] for r in plain["rows"]][0] == "embed"

    # A decoder value (as the lens package gives) is read by its name and title, rows by their blocks and sites.
    class Decoder:
        name, title = "norm_only", "normalisation only (no γ, no β)"

    result = synthetic_result(3, 2)
    result.decoder = Decoder()
    result.blocks, result.sites = np.array([-1, 1, 0]), np.array(["embed", "resid_mid", "resid_post"])
    data = page_data(lens_html(result))
    assert data["decoder"] == {"name": "norm_only", "title": "normalisation only (no γ, no β)"}
    assert [(r["block"], r["site"]) for r in data["rows"]] == [(-1, "embed"), (1, "resid_mid"), (0, "resid_post")]



@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"metric": "nope"}, "unknown metric 'nope'.*logits"),
        ({"max_positions": 0}, "max_positions"),
        ({"max_positions": True}, "max_positions"),
        ({"kl_max": -1}, "kl_max"),
        ({"kl_max": float("inf")}, "kl_max"),
        ({"attention": np.zeros((1, 2, 3, 3))}, "attention_patterns"),
        ({"title": 5}, "title"),
    ],
)
def test_bad_options_raise_lens_errors(kwargs, match) -> None:
    with pytest.raises(LensError, match=match):
        lens_html(synthetic_result(2, 3), **kwargs)


def test_attention_must_match_the_lens(tiny_checkpoint: Path) -> None:
    model = minigpt.GPT.from_pretrained(str(tiny_checkpoint))
    ids = [1, 5, 9, 2, 7, 3, 3, 8]
    result = minigpt.logit_lens(model, ids, k=5)
    with pytest.raises(LensError, match="other tokens"):
        lens_html(result, attention=attention_patterns(model, [2, 5, 9, 2, 7, 3, 3, 8]))
    late = minigpt.logit_lens(model, ids, positions=slice(0, 3))
    with pytest.raises(LensError, match="cover positions 4:8"):
        lens_html(late, attention=attention_patterns(model, ids, positions=slice(4, 8)))
    # Overlapping windows: the report keeps the overlap, and counts the keys it cuts off as "before".
    att = attention_patterns(model, ids, blocks=[1], positions=slice(0, 8))
    data = page_data(lens_html(result[3:], attention=att))["attention"]
    assert (data["start"], data["T"], data["blocks"]) == (3, 5, [1])
    w = np.frombuffer(base64.b64decode(data["heads"][0][2]["w"]), dtype=np.uint8)  # head 2, lower triangle
    full = att.pattern[0, 2, 3:, 3:]
    assert np.array_equal(w, full[np.tril_indices(5)])
    assert data["heads"][0][2]["before"] == att.pattern[0, 2, 3:, :3].sum(-1).tolist()


def test_colours_are_matplotlibs() -> None:
    import matplotlib as mpl

    ours = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colour_table()])
    for name, table in (("Blues", ours), ("Blues_r", ours[::-1])):
        theirs = np.round(mpl.colormaps[name](np.arange(256))[:, :3] * 255)
        assert np.abs(table - theirs).max() <= 1, name  # rounding of the last bit only


def test_views_agree_with_the_png_views() -> None:
    from minigpt import plot

    for name, view in plot._VIEWS.items():
        assert name in VIEWS, f"the report lacks the PNG view {name!r}"
        assert VIEWS[name].cmap == view.cmap, name
    assert minigpt.report.RANK_MAX == plot.RANK_MAX and minigpt.report.BAD_COLOR == "#dddddd"


def test_the_report_never_imports_matplotlib(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np, minigpt\n"
        "from minigpt.report import lens_html\n"
        "from tests.test_report import synthetic_result\n"
        "page = lens_html(synthetic_result(3, 4))\n"
        "assert 'matplotlib' not in sys.modules, sorted(m for m in sys.modules if 'matplotlib' in m)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr


def test_display_rules_without_fonts() -> None:
    assert display_token(" the\n\t\r") == "␣the⏎⇥␍"
    assert display_token("a\u200bb\x07") == "a\\u200bb\\x07"
    assert display_token("中😀") == "中😀"  # a browser finds a font by itself
    assert display_token("中 ", drawable=lambda ch: ch.isascii()) == "U+4E2D·"  # a font without them


def test_file_sizes() -> None:
    """gpt2 (13 rows) and gpt2-xl (49 rows) at 100 positions and at the cap, every top id different (the worst case)."""
    sizes = {}
    for name, R in (("gpt2", 13), ("gpt2-xl", 49)):
        for T in (100, MAX_POSITIONS):
            sizes[name, T] = len(lens_html(synthetic_result(R, T)).encode("utf-8"))
    print({f"{n} x {T}": f"{s / 1e6:.2f} MB" for (n, T), s in sizes.items()})
    assert sizes["gpt2-xl", 100] <= 5e6 and sizes["gpt2-xl", MAX_POSITIONS] <= 5e6
    assert sizes["gpt2", 100] < sizes["gpt2-xl", 100] < sizes["gpt2-xl", MAX_POSITIONS]


def test_notebook_html_is_a_sandboxed_frame() -> None:
    result = synthetic_result(3, 100)
    frame = notebook_html(result)
    pattern = r'<iframe class="minigpt-report" srcdoc="([^"]*)" sandbox="allow-scripts" style="[^"]*" title="[^"]*"></iframe><script>(.*)</script>'
    m = re.fullmatch(pattern, frame, re.S)
    assert m, frame[:200]
    assert html.unescape(m.group(1)) == lens_html(result, max_positions=64)  # capped for notebooks
    assert page_data(html.unescape(m.group(1)))["T"] == 64
    assert result._repr_html_() == frame  # what Jupyter shows for a LensResult
    # The script beside the frame (it sizes the frame) carries nothing of the result: the same for any.
    assert re.fullmatch(pattern, notebook_html(synthetic_result(2, 3, seed=5)), re.S).group(2) == m.group(2)


# ----------------------------------------------------------------------------
# Attention patterns


def test_attention_patterns_are_the_quantised_pattern(tiny_checkpoint: Path) -> None:
    model = minigpt.GPT.from_pretrained(str(tiny_checkpoint))
    ids = torch.tensor([1, 5, 9, 2, 7, 3, 3, 8, 30, 12])
    att = attention_patterns(model, ids, blocks=[1, 0, 1], positions=slice(3, 9))
    assert att.blocks.tolist() == [0, 1] and att.start == 3 and len(att) == 6 and att.n_head == 3
    assert att.pattern.dtype == np.uint8 and att.pattern.shape == (2, 3, 6, 6) and att.before.shape == (2, 3, 6)
    assert att.token_ids.tolist() == ids[3:9].tolist()
    resid = model(ids[None]).resid  # (L + 1, 1, T, C): resid[b] is what block b reads
    for a, b in enumerate([0, 1]):
        block = model.h[b]
        full = block.attn.pattern(block.ln_1(resid[b]))[0].detach().numpy()  # (H, T, T)
        for h in range(3):
            assert np.abs(att.weights(b, h) - full[h, 3:9, 3:9]).max() <= 0.5 / 255 + 1e-6
            assert np.abs(att.before[a, h] / 255 - full[h, 3:9, :3].sum(-1)).max() <= 0.5 / 255 + 1e-6
        assert not np.triu(att.pattern[a], 1).any()  # nothing above the diagonal: no position reads ahead
        assert np.abs(att.pattern[a].sum(-1).astype(int) + att.before[a] - 255).max() <= 4  # rows sum to 1, ± rounding
    assert att.pattern[0, :, 0, 0].max() < 255  # position 3 also reads 0..2: the window starts after them
    assert "blocks=[0, 1]" in repr(att) and "positions=3:9" in repr(att)


def test_attention_patterns_defaults_and_errors(tiny_checkpoint: Path) -> None:
    model = minigpt.GPT.from_pretrained(str(tiny_checkpoint))
    ids = [1, 5, 9, 2, 7]
    att = attention_patterns(model, ids)
    assert att.blocks.tolist() == [1] and att.start == 0 and len(att) == 5 and not att.before.any()
    assert attention_patterns(model, ids, positions=slice(-2, None)).start == 3
    with pytest.raises(LensError, match="no block 2: this model's blocks are 0..1"):
        attention_patterns(model, ids, blocks=[2])
    with pytest.raises(LensError, match="non-empty list"):
        attention_patterns(model, ids, blocks=[])
    with pytest.raises(LensError, match="non-empty list"):
        attention_patterns(model, ids, blocks=[True])
    with pytest.raises(LensError, match="contiguous slice"):
        attention_patterns(model, ids, positions=slice(0, 4, 2))
    with pytest.raises(LensError, match="select nothing"):
        attention_patterns(model, ids, positions=slice(4, 2))
    with pytest.raises(LensError, match=r"more than max_positions=3.*slice\(2, 5\)"):
        attention_patterns(model, ids, max_positions=3)
    with pytest.raises(InputError, match="one non-empty sequence"):
        attention_patterns(model, [[1, 2], [3, 4]])
    with pytest.raises(InputError, match="outside the vocabulary"):
        attention_patterns(model, [1, 99])
    with pytest.raises(LensError, match="no head 3"):
        att.weights(1, 3)
    with pytest.raises(LensError, match="no block 0 in these patterns"):
        att.weights(0, 0)


# ----------------------------------------------------------------------------
# The command line


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_cli_writes_a_report(capsys, tmp_path: Path, vocab_checkpoint: Path, model_tok) -> None:
    out = tmp_path / "lens.HTML"
    code, err = run(capsys, "lens", TEXT, "-m", vocab_checkpoint, "--metric", "ranks", "--attention", "2,0", "-o", out)
    assert code == 0, err
    data = page_data(out.read_text(encoding="utf-8"))
    model, tok = model_tok
    ids = tok.encode_ordinary(TEXT)
    expected = minigpt.logit_lens(model, ids, tokenizer=tok, k=10)  # the top 10, whatever --top-k says
    assert data["view"] == "ranks" and data["K"] == 10 and data["T"] == len(ids)
    assert np.array_equal(np.array(data["top_ids"]).reshape(4, len(ids), 10), expected.top_ids)
    att = attention_patterns(model, ids, blocks=[0, 2])
    assert data["attention"]["blocks"] == [0, 2]
    assert base64.b64decode(data["attention"]["heads"][1][0]["w"]) == att.pattern[1, 0][np.tril_indices(len(ids))].tobytes()


def test_cli_report_caps_at_its_own_default(capsys, tmp_path: Path, vocab_checkpoint: Path) -> None:
    text = " ".join(["word"] * 300)
    out = tmp_path / "long.html"
    code, err = run(capsys, "lens", text, "-m", vocab_checkpoint, "-o", out, "--attention", "1")
    assert code == 0, err
    data = page_data(out.read_text(encoding="utf-8"))
    assert data["T"] == MAX_POSITIONS and data["total"] == MAX_POSITIONS and data["attention"]["T"] == MAX_POSITIONS
    assert f"the report shows the last {MAX_POSITIONS} of 300 positions" in err
    code, err = run(capsys, "lens", text, "-m", vocab_checkpoint, "-o", out, "--max-positions", "7", "--top-k", "12")
    assert code == 0 and page_data(out.read_text(encoding="utf-8"))["T"] == 7


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--attention", "0", "-o", "x.png"], "--attention goes into an HTML report"),
        (["--layers", "2", "-o", "x.html"], "--layers picks a figure's rows"),
        (["--attention", "3", "-o", "x.html"], "this model's blocks are 0..2, not 3"),
        (["-o", "x.htmlx"], "unknown image format 'htmlx'.*html"),
    ],
)
def test_cli_report_usage_errors(capsys, tmp_path: Path, vocab_checkpoint: Path, argv, message) -> None:
    argv = [a if not a.startswith("x.") else tmp_path / a for a in argv]
    code, err = run(capsys, "lens", "The dog", "-m", vocab_checkpoint, *argv)
    assert code == 2 and re.search(message, err) and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_cli_attention_needs_block_numbers(capsys) -> None:
    code, err = run(capsys, "lens", "The dog", "--attention", "h.1", "-o", "x.html")
    assert code == 2 and "expected block numbers such as 5 or 0,5,11" in err


# ----------------------------------------------------------------------------
# The page in a browser


def need(ok: bool, what: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{what} (CI must run the browser tests: .ci/run installs chromium and chromium-driver)")
        pytest.skip(what)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        need(False, "selenium is not installed (pip install -e '.[test]')")
    driver_path = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else shutil.which("chromedriver")
    need(driver_path is not None, "chromedriver is missing (Debian: apt-get install chromium chromium-driver)")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    need(binary is not None, "chromium is missing (Debian: apt-get install chromium chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"  # otherwise Selenium Manager tries to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    started = time.perf_counter()
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    print(f"browser started in {time.perf_counter() - started:.1f} s")
    yield driver
    driver.quit()


# Set when the page is built. Null-safe: a frame may still hold about:blank when the first poll runs.
READY_JS = "const r = document.querySelector('.mg-report'); return r !== null && r.dataset.ready === 'true'"
# Browser waits poll for a condition, never sleep: a loaded machine only makes them slower. The limit
# is generous because CI runners share their cores (a 20 s wait once timed out under load, issue 14).
WAIT_S = 120


def wait_until(driver, condition, what: str):
    """Poll `condition(driver)` until it is truthy (its value is returned); fail after WAIT_S, naming `what`."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message=f"waited {WAIT_S} s for {what}")


def open_page(driver, path: Path) -> list[dict]:
    """Load a report from disk; return the console messages of the load."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.as_uri())
    wait_until(driver, lambda d: d.execute_script(READY_JS), f"{path.name} to be built")
    return driver.get_log("browser")


CELLS_JS = """return Array.from(document.querySelectorAll('td.mg-cell')).map(td => ({
    row: td.dataset.row, pos: Number(td.dataset.pos), top1: Number(td.dataset.top1), text: td.textContent,
    value: td.dataset.value, bg: getComputedStyle(td).backgroundColor, hidden: td.offsetParent === null,
    hit: td.classList.contains('mg-hit'), tabindex: td.getAttribute('tabindex')}));"""


def cell(driver, row: str, pos: int):
    return driver.find_element("css selector", f'td.mg-cell[data-row="{row}"][data-pos="{pos}"]')


def hover(driver, element) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'})", element)
    ActionChains(driver).move_to_element(element).perform()


@pytest.fixture(scope="module")
def page(browser, lens, attention, tmp_path_factory) -> SimpleNamespace:
    """The report of `lens` with attention, loaded once (its path, and the console messages of the load).
    The tests below share it: each one that changes a control puts it back."""
    result, _, _ = lens
    path = tmp_path_factory.mktemp("report") / "lens.html"
    path.write_text(lens_html(result, attention=attention, metric="ranks", title="A <b>test</b> report"), encoding="utf-8")
    return SimpleNamespace(path=path, console=open_page(browser, path))


def rgb(text: str) -> tuple[int, int, int]:
    return tuple(int(v) for v in re.findall(r"\d+", text)[:3])


def test_page_loads_offline_with_no_console_errors(browser, page) -> None:
    errors = [m for m in page.console if m["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0  # nothing fetched
    assert browser.title == "A <b>test</b> report"  # the title is text too
    assert browser.execute_script("return document.querySelectorAll('b').length") == 0


def test_grid_cells_show_the_top1_tokens(browser, page, lens) -> None:
    result, _, _ = lens
    cells = browser.execute_script(CELLS_JS)
    R, T = len(result.labels), len(result)
    assert len(cells) == R * T
    assert [c["row"] for c in cells[::T]] == result.labels[::-1]  # the last row on top
    for c in cells:
        r, t = result.labels.index(c["row"]), c["pos"] - result.start
        top1 = int(result.top_ids[r, t, 0])
        assert c["top1"] == top1 and c["text"] == display_token(result.text(top1)), c  # textContent keeps spaces
        assert c["hit"] == (top1 == result.final_ids[t])
    assert sum(c["tabindex"] == "0" for c in cells) == 1  # one tab stop for the whole grid
    js = "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent)"
    assert browser.execute_script(js, "th.mg-input") == [display_token(t) for t in result.tokens]
    stars = ["" if n < 0 else display_token(result.text(n)) + ("*" if n == f else "")
             for n, f in zip(result.next_ids, result.final_ids)]  # fmt: skip
    assert browser.execute_script(js, "th.mg-next") == stars
    assert "decoder: ln_f (the model's own decoder)" in browser.find_element("css selector", ".mg-decoder").text
    assert not browser.find_element("css selector", ".mg-notice").is_displayed()  # no cap here


def test_hover_shows_the_top_10_and_the_targets(browser, page, lens) -> None:
    result, _, _ = lens
    for label, t in (("h.2", 0), ("h.0.resid_mid", 5), ("embed", len(result) - 1), ("prior", 3)):
        r = result.labels.index(label)
        hover(browser, cell(browser, label, result.start + t))
        tip = browser.find_element("css selector", ".mg-tip")
        assert tip.is_displayed()
        entries = tip.find_elements("css selector", "tr.mg-top-entry")
        assert [int(e.get_attribute("data-id")) for e in entries] == result.top_ids[r, t, :10].tolist()
        assert close([float(e.get_attribute("data-prob")) for e in entries], result.top_probs[r, t, :10])
        texts = [e.find_element("css selector", ".mg-tok").get_property("textContent") for e in entries]
        assert texts == [display_token(result.text(i)) for i in result.top_ids[r, t, :10]]
        assert f"id {result.top_ids[r, t, 0]}" in entries[0].get_property("textContent")
        targets = tip.find_elements("css selector", "tr.mg-target")
        ranks = {e.get_attribute("data-target"): e.get_attribute("data-rank") for e in targets}
        assert ranks["final"] == str(result.rank_final[r, t]) and ranks["input"] == str(result.rank_input[r, t])
        assert ranks["next"] == ("" if t == len(result) - 1 else str(result.rank_next[r, t]))


def view_stats(result: LensResult) -> dict[str, np.ndarray]:
    return {"logits": result.top_logits[:, :, 0], "probs": result.top_probs[:, :, 0], "ranks": result.rank_final,
            "kl": result.kl_final, "input_ranks": result.rank_input, "input_kl": result.kl_input,
            "entropy": result.entropy}  # fmt: skip


def expected_colour(name: str, value: float, result: LensResult) -> tuple[int, int, int]:
    """The PNG view's colour for a value, computed with matplotlib and the PNG's scales (`result`: the positions shown)."""
    import matplotlib as mpl
    from matplotlib.colors import LogNorm, Normalize

    if name == "logits":
        lo, hi = np.percentile(result.top_logits[:, :, 0].astype(np.float64), [5, 95])
        norm, cmap = Normalize(lo, hi), "Blues_r"
    elif name == "probs":
        norm, cmap = Normalize(0, 1), "Blues_r"
    elif name in ("ranks", "input_ranks"):
        top = 100 if name == "ranks" else 1000
        value, norm, cmap = min(max(value, 1), top), LogNorm(1, top), "Blues"
    else:  # kl, input_kl, entropy: 0 to 10 nats
        value, norm, cmap = min(max(value, 0), 10), Normalize(0, 10), "Blues"
    return tuple(int(round(v * 255)) for v in mpl.colormaps[cmap](norm(value))[:3])


def check_views(browser, result: LensResult, n: int = 12) -> None:
    """Select every view; on n sampled cells, the value is the statistic and the colour is the PNG view's."""
    from selenium.webdriver.support.ui import Select

    select = Select(browser.find_element("css selector", ".mg-view"))
    initial = select.first_selected_option.get_attribute("value")
    stats = view_stats(result)
    assert [o.get_attribute("value") for o in select.options][: len(stats)] == list(stats)
    rng = np.random.default_rng(0)
    try:
        for name, values in stats.items():
            select.select_by_value(name)
            cells = browser.execute_script(CELLS_JS)
            for i in rng.choice(len(cells), min(n, len(cells)), replace=False):
                c = cells[i]
                r, t = result.labels.index(c["row"]), c["pos"] - result.start
                assert close(float(c["value"]), values[r, t]), (name, c)
                got, want = rgb(c["bg"]), expected_colour(name, float(c["value"]), result)
                assert max(abs(a - b) for a, b in zip(got, want)) <= 1, (name, c, want)
            legend = browser.find_element("css selector", ".mg-legend").text
            assert re.split(r", | \(", VIEWS[name].legend)[0] in legend  # what the colours show, in words
    finally:
        select.select_by_value(initial)


def test_switching_the_view_recolours_the_cells(browser, page, lens) -> None:
    from selenium.webdriver.support.ui import Select

    result, _, _ = lens
    select = Select(browser.find_element("css selector", ".mg-view"))
    assert select.first_selected_option.get_attribute("value") == "ranks"  # --metric's view first
    check_views(browser, result)


def test_pinning_a_token_draws_its_trajectory(browser, page, lens) -> None:
    result, _, _ = lens
    t = 4
    pos = result.start + t

    def expected(token: int) -> list[str]:
        """Its rank in each row, top row first: exact for the targets and the top 10, else unknown."""
        out = []
        for r in reversed(range(len(result.labels))):
            if token == result.final_ids[t]:
                out.append(str(result.rank_final[r, t]))
            elif token == result.next_ids[t]:
                out.append(str(result.rank_next[r, t]))
            elif token == result.token_ids[t]:
                out.append(str(result.rank_input[r, t]))
            elif token in result.top_ids[r, t, :10]:
                out.append(str(result.top_ids[r, t, :10].tolist().index(token) + 1))
            else:
                out.append("")
        return out

    target = cell(browser, "h.0", pos)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", target)
    target.click()
    panel = browser.find_element("css selector", ".mg-pin")
    assert panel.is_displayed()
    top1 = int(result.top_ids[result.labels.index("h.0"), t, 0])
    assert panel.get_attribute("data-id") == str(top1) and panel.get_attribute("data-pos") == str(pos)
    bars = lambda: browser.find_elements("css selector", ".mg-chart .mg-bar-row")  # noqa: E731
    assert [b.get_attribute("data-row") for b in bars()] == result.labels[::-1]
    assert [b.get_attribute("data-rank") for b in bars()] == expected(top1)
    assert "rank " in bars()[0].text

    panel.find_element("css selector", 'button[data-mode="prob"]').click()
    assert browser.find_element("css selector", ".mg-chart").get_attribute("data-mode") == "prob"
    probs = [b.get_attribute("data-prob") for b in bars()]
    assert [p == "" for p in probs] == [r == "" for r in expected(top1)]

    final = int(result.final_ids[t])  # pin another token: the model's final top-1, known in every row
    panel.find_element("css selector", f'.mg-others button[data-id="{final}"]').click()
    assert browser.find_element("css selector", ".mg-pin").get_attribute("data-id") == str(final)
    assert [b.get_attribute("data-rank") for b in bars()] == expected(final)
    assert close([float(b.get_attribute("data-prob")) for b in bars()], result.prob_final[::-1, t])


def test_the_pin_chart_has_log_axes(browser, page, lens) -> None:
    """Issue 18, item 13: probabilities near 1e-4 must show, so both of the chart's axes are logarithmic,
    with ticks a decade or more apart, and every bar ends where the axis puts its value."""
    from selenium.webdriver.common.keys import Keys

    result, _, _ = lens
    t = 5
    final = int(result.final_ids[t])  # known in every row: its probability is exact everywhere
    target = cell(browser, "h.0", result.start + t)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", target)
    target.click()
    panel = browser.find_element("css selector", ".mg-pin")
    panel.find_element("css selector", f'.mg-others button[data-id="{final}"]').click()
    read_chart = """const chart = document.querySelector('.mg-chart'), x = (e) => e.getBoundingClientRect();
        return {mode: chart.dataset.mode, note: chart.nextElementSibling.textContent,
                caption: chart.querySelector('.mg-axis .mg-num').textContent,
                ticks: Array.from(chart.querySelectorAll('.mg-axis .mg-track span')).map(s =>
                    [Number(s.dataset.value), (x(s).left + x(s).right) / 2]),
                bars: Array.from(chart.querySelectorAll('.mg-bar-row')).map(b =>
                    [b.dataset.rank, b.dataset.prob, x(b.querySelector('.mg-track')).left, x(b.querySelector('.mg-fill')).right])}"""
    try:
        for mode, field in (("rank", 0), ("prob", 1)):
            browser.find_element("css selector", f'.mg-pin button[data-mode="{mode}"]').click()
            chart = browser.execute_script(read_chart)
            assert chart["mode"] == mode and "log scale" in chart["note"] and "log" in chart["caption"]
            values, xs = np.log10([v for v, _ in chart["ticks"]]), np.array([x for _, x in chart["ticks"]])
            assert np.all(np.abs(np.diff(values)) >= 1) and len(set(np.sign(np.diff(values)))) == 1  # decades, in order
            steps = np.diff(xs) / np.diff(values)  # pixels per decade: the same between every two ticks
            assert np.all(np.diff(xs) > 0) and np.all(np.abs(steps - steps[0]) <= 1), chart["ticks"]
            order = np.argsort(values)
            for bar in chart["bars"]:
                v = np.log10(float(bar[field]))
                where = np.interp(v, values[order], xs[order])  # the axis' x for this value (its ends beyond them)
                assert abs(bar[3] - where) <= 1, (mode, bar, where, chart["ticks"])
        small = [float(b[1]) for b in chart["bars"] if 1e-6 < float(b[1]) < 1e-3]
        assert small, "no probability between 1e-6 and 1e-3 here: the test would not see a linear axis"
        assert all(b[3] - b[2] >= 5 for b in chart["bars"] if float(b[1]) >= 1e-4)  # p = 1e-4 is a bar you see
    finally:
        browser.switch_to.active_element.send_keys(Keys.ESCAPE)


def rect(driver, element) -> dict:
    return driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                 " return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}", element)


def overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def test_pinning_closes_the_tooltip_over_the_chart(browser, page, lens) -> None:
    """Issue 18, item 8: a click pins the cell and keeps its focus; its tooltip must not stay open on the chart."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    result, _, _ = lens
    tip = browser.find_element("css selector", ".mg-tip")
    last = result.start + len(result) - 1  # the column beside the chart, where a tooltip would cover it
    target = cell(browser, result.labels[-2], last)
    hover(browser, target)
    assert tip.is_displayed()  # hovering shows it...
    target.click()
    chart = browser.find_element("css selector", ".mg-chart")
    assert chart.is_displayed() and browser.execute_script("return document.activeElement") == target
    assert not tip.is_displayed()  # ...the pin closes it
    ActionChains(browser).move_to_element(chart).perform()  # to the chart: the pointer leaves the grid
    assert not tip.is_displayed(), "the focused cell's tooltip reopened over the pin chart"
    hover(browser, cell(browser, result.labels[-1], last))  # hovering another cell still shows its tooltip
    assert tip.is_displayed()
    ActionChains(browser).move_to_element(chart).perform()
    assert not tip.is_displayed()

    target.send_keys(Keys.ARROW_LEFT)  # from the keyboard: a move shows the tooltip, Enter pins and closes it
    assert tip.is_displayed()
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    panel = browser.find_element("css selector", ".mg-pin")
    assert panel.is_displayed() and panel.get_attribute("data-pos") == str(last - 1)
    assert not tip.is_displayed()
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)  # unpin: the tests share the page
    assert not panel.is_displayed()


def test_keyboard_moves_focus_and_pins(browser, page, lens) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    result, _, _ = lens
    active = lambda: browser.execute_script(  # noqa: E731
        "const e = document.activeElement;"
        " return e.classList.contains('mg-cell') ? [e.dataset.row, Number(e.dataset.pos)] : null")
    browser.execute_script("document.activeElement.blur(); document.querySelector('.mg-view').focus()")
    keys = ActionChains(browser)
    for _ in range(8):  # the controls, then the grid's one tab stop
        keys.send_keys(Keys.TAB).perform()
        if active():
            break
    stop = browser.execute_script(
        "const e = document.querySelector('td.mg-cell[tabindex=\"0\"]'); return [e.dataset.row, Number(e.dataset.pos)]")
    assert active() == stop  # Tab reaches the grid at its one roving stop...
    assert browser.find_element("css selector", ".mg-tip").is_displayed()  # ...and focus shows its tooltip
    keys.send_keys(Keys.PAGE_UP).perform()
    keys.send_keys(Keys.HOME).perform()
    row, pos = active()
    assert [row, pos] == [result.labels[-1], result.start]
    keys.send_keys(Keys.ARROW_DOWN).perform()
    assert active() == [result.labels[-2], pos]
    keys.send_keys(Keys.ARROW_RIGHT).perform()
    keys.send_keys(Keys.ARROW_RIGHT).perform()
    assert active() == [result.labels[-2], pos + 2]
    keys.send_keys(Keys.ARROW_UP).perform()
    assert active() == [result.labels[-1], pos + 2]
    keys.send_keys(Keys.PAGE_DOWN).perform()
    assert active() == [result.labels[0], pos + 2]
    keys.send_keys(Keys.END).perform()
    assert active() == [result.labels[0], result.start + len(result) - 1]
    keys.send_keys(Keys.HOME).perform()
    keys.send_keys(Keys.ARROW_LEFT).perform()  # stays at the edge
    assert active() == [result.labels[0], result.start]
    assert browser.execute_script("return document.querySelectorAll('td.mg-cell[tabindex=\"0\"]').length") == 1
    keys.send_keys(Keys.ENTER).perform()
    panel = browser.find_element("css selector", ".mg-pin")
    assert panel.is_displayed() and panel.get_attribute("data-id") == str(result.top_ids[0, 0, 0])
    keys.send_keys(Keys.ESCAPE).perform()
    assert not panel.is_displayed()
    keys.send_keys(Keys.TAB).perform()
    assert active() is None  # Tab leaves the grid: it is one tab stop, not R x T of them


def test_stride_and_range_controls(browser, page, lens) -> None:
    result, _, _ = lens
    visible = lambda: browser.execute_script(  # noqa: E731
        "return [Array.from(document.querySelectorAll('tbody tr')).filter(tr => !tr.hidden).map(tr => tr.dataset.row),"
        " Array.from(document.querySelectorAll('th.mg-input')).filter(th => !th.hidden).map(th => Number(th.dataset.pos)),"
        " Array.from(document.querySelectorAll('td.mg-cell')).filter(td => td.offsetParent !== null).length]")

    def set_value(selector: str, value: int) -> None:
        browser.execute_script(
            "const e = document.querySelector(arguments[0]); e.value = arguments[1]; e.dispatchEvent(new Event('change'))",
            selector, str(value))  # fmt: skip

    try:
        set_value(".mg-stride", 2)  # blocks 0 and 2 (the last) stay, with their resid_mid rows; prior and embed always
        rows, positions, n = visible()
        assert rows == ["h.2", "h.2.resid_mid", "h.0", "h.0.resid_mid", "embed", "prior"] and n == 6 * len(result)
        set_value(".mg-from", result.start + 3)
        set_value(".mg-to", result.start + 6)
        rows, positions, n = visible()
        assert positions == list(range(result.start + 3, result.start + 7)) and n == 6 * 4
    finally:
        set_value(".mg-stride", 1)
        set_value(".mg-from", result.start)
        set_value(".mg-to", result.start + len(result) - 1)
    rows, positions, n = visible()
    assert len(rows) == len(result.labels) and n == len(result.labels) * len(result)


def test_attention_shows_what_a_position_reads(browser, page, lens, attention) -> None:
    from selenium.webdriver.support.ui import Select

    result, _, _ = lens
    Select(browser.find_element("css selector", ".mg-att-block")).select_by_visible_text("2")
    Select(browser.find_element("css selector", ".mg-att-head")).select_by_visible_text("1")
    t = 6
    hover(browser, cell(browser, "h.1", result.start + t))
    got = browser.execute_script("return Array.from(document.querySelectorAll('td.mg-att')).map(td => td.dataset.weight)")
    want = attention.weights(2, 1)[t]
    for s, w in enumerate(got):
        if s <= t:
            assert abs(float(w) - want[s]) < 1e-6, (s, w, want[s])
        else:
            assert w == "", s  # a position never reads ahead
    assert "block 2, head 1 reads" in browser.find_element("css selector", ".mg-tip").text


def test_hostile_text_is_shown_literally_and_runs_nothing(browser, page, lens) -> None:
    result, _, hostile = lens
    assert browser.execute_script("return Object.keys(window).filter(k => k.startsWith('__pwned'))") == []
    assert browser.execute_script("return [document.images.length, document.scripts.length]") == [0, 2]
    texts = browser.execute_script("return Array.from(document.querySelectorAll('td.mg-cell, th')).map(e => e.textContent)")
    for text in hostile.values():
        assert display_token(text) in texts, text
    hostile_cell = next(c for c in browser.execute_script(CELLS_JS) if c["top1"] in hostile)
    hover(browser, cell(browser, hostile_cell["row"], hostile_cell["pos"]))  # and in the tooltip, as text
    shown = browser.find_element("css selector", ".mg-tip tr.mg-top-entry .mg-tok").get_property("textContent")
    assert shown == display_token(hostile[hostile_cell["top1"]])
    assert browser.execute_script("return Object.keys(window).filter(k => k.startsWith('__pwned'))") == []


def test_screenshot_is_not_blank(browser, page, tmp_path_factory) -> None:
    from PIL import Image

    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path_factory.mktemp("shot") / "report.png"
    browser.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64) / 255
    print(f"screenshot: {shot}")
    assert pixels.shape[0] >= 500 and pixels.shape[1] >= 800
    assert pixels.std() > 0.1
    blue = (pixels[..., 2] > pixels[..., 0] + 0.15).mean()  # the Blues of the cells
    assert blue > 0.01, blue


def test_cap_notice_and_depth_view(browser, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    wanted = np.array([t % 5 for t in range(30)])  # 4 = never
    agree = np.arange(4)[:, None] >= wanted[None, :]
    agree[1, 1::3] = True  # early hits that do not hold (28); 27 settles at h.1, which a stride of 2 hides
    result, depth, _ = depth_result(agree)
    path = tmp_path / "capped.html"
    path.write_text(lens_html(result, max_positions=6), encoding="utf-8")
    console = open_page(browser, path)
    assert not [m for m in console if m["level"] == "SEVERE"], console
    notice = browser.find_element("css selector", ".mg-notice")
    assert notice.is_displayed() and "the last 6 of 30 positions (24–29)" in notice.text
    cells = browser.execute_script(CELLS_JS)
    assert len(cells) == 4 * 6 and {c["pos"] for c in cells} == set(range(24, 30))
    check_views(browser, result[24:], n=24)  # random statistics: colours all over the scales
    check_depth_view(browser, result, agree, depth, range(24, 30))


def check_depth_view(browser, result: LensResult, agree: np.ndarray, depth: np.ndarray, positions) -> None:
    """The depth view as the PNG draws it: each cell in the colour of its category (light: at or above
    the depth; mid: the final top-1 below it; dark: another token), a line under the depth row (under
    the first row shown at or above it when the stride hides it), none where the depth is never."""
    import matplotlib as mpl
    from selenium.webdriver.support.ui import Select

    from minigpt.plot import DEPTH_LABELS, DEPTH_SHADES

    R = len(result.labels)
    shades = mpl.colormaps["Blues"](DEPTH_SHADES)[:, :3] * 255
    marks_js = "return Array.from(document.querySelectorAll('td.mg-settle')).map(td => [td.dataset.row, Number(td.dataset.pos)])"
    Select(browser.find_element("css selector", ".mg-view")).select_by_value("depth")
    try:
        for c in browser.execute_script(CELLS_JS):
            r, t = result.labels.index(c["row"]), c["pos"]
            category = 0 if r >= depth[t] else 1 if agree[r, t] else 2
            assert c["value"] == str(category), c
            assert np.abs(np.array(rgb(c["bg"])) - shades[category]).max() <= 1, c
        legend = browser.find_element("css selector", ".mg-legend").text
        assert all(label in legend for label in DEPTH_LABELS) and "line: under the depth row" in legend
        assert sorted(browser.execute_script(marks_js)) == sorted([result.labels[depth[p]], p] for p in positions if depth[p] < R)
        browser.execute_script(
            "const e = document.querySelector('.mg-stride'); e.value = '2'; e.dispatchEvent(new Event('change'))")
        shown = [i for i, label in enumerate(result.labels) if label in ("embed", "h.0", f"h.{R - 2}")]  # stride 2
        assert len(shown) == 3  # embed, h.0 and the last block: the depth's row is hidden for some positions
        under = {p: min(i for i in shown if i >= depth[p]) for p in positions if depth[p] < R}
        assert any(under[p] != depth[p] for p in under)
        assert sorted(browser.execute_script(marks_js)) == sorted([result.labels[i], p] for p, i in under.items())
    finally:
        browser.execute_script(
            "const e = document.querySelector('.mg-stride'); e.value = '1'; e.dispatchEvent(new Event('change'))")


def test_two_reports_in_one_page_keep_apart(browser, tmp_path: Path) -> None:
    a, b = synthetic_result(2, 3, seed=1), synthetic_result(3, 4, seed=2)
    path = tmp_path / "two.html"
    path.write_text(f"<!DOCTYPE html><html><body>{notebook_html(a)}{notebook_html(b)}</body></html>", encoding="utf-8")
    browser.get(path.as_uri())
    frames = browser.find_elements("css selector", "iframe")
    counts = []
    for frame in frames:
        browser.switch_to.frame(frame)
        wait_until(browser, lambda d: d.execute_script(READY_JS), "a report in its frame to be built")
        counts.append(browser.execute_script("return document.querySelectorAll('td.mg-cell').length"))
        browser.switch_to.default_content()
    assert counts == [2 * 3, 3 * 4]


def test_the_pin_panel_leaves_a_25_position_grid_unscrolled(browser, tmp_path: Path) -> None:
    """Issue 18, item 9: at 1400 px, pinning a cell of a 25-position grid that fits the page must not
    push the grid into a horizontal scroll."""
    result = synthetic_result(13, 25, chars=(6, 6))  # gpt2's 13 rows; 6-character tokens: about 1230 px wide
    path = tmp_path / "wide.html"
    path.write_text(lens_html(result), encoding="utf-8")
    open_page(browser, path)
    assert browser.execute_script("return window.innerWidth") == 1400
    scroll = browser.find_element("css selector", ".mg-scroll")
    widths = lambda: browser.execute_script(  # noqa: E731
        "const s = document.querySelector('.mg-scroll'), m = document.querySelector('.mg-main');"
        " return {scroll: s.scrollWidth, client: s.clientWidth, main: m.clientWidth}")
    before = widths()
    assert before["scroll"] <= before["client"]  # the grid fits the page...
    assert before["scroll"] + 330 > before["main"]  # ...but not beside a 330 px panel: the case of the issue
    cell(browser, "h.5", 12).click()
    panel = browser.find_element("css selector", ".mg-pin")
    assert panel.is_displayed()
    after = widths()
    assert after["scroll"] <= after["client"], after  # no horizontal scroll
    assert not overlap(rect(browser, panel), rect(browser, scroll))  # and the panel covers none of it


def test_a_fixed_logit_scale_colours_the_page(browser, tmp_path: Path) -> None:
    """Issue 18, item 12, in the browser: with scale=(0, 20) the colours are matplotlib's for that scale
    (clipped at its ends) and the legend names the range."""
    import matplotlib as mpl
    from matplotlib.colors import Normalize

    result = synthetic_result(3, 8, seed=3)  # logits from -10 to 30: some beyond both ends of the scale
    path = tmp_path / "fixed.html"
    path.write_text(lens_html(result, metric="logits", scale=(0, 20)), encoding="utf-8")
    open_page(browser, path)
    legend = browser.find_element("css selector", ".mg-legend").text
    assert "0 to 20" in legend and "a fixed scale" in legend
    assert browser.execute_script("return Array.from(document.querySelectorAll('.mg-ticks span')).map(s => s.textContent)") == [
        "0", "10", "20"]  # fmt: skip
    for c in browser.execute_script(CELLS_JS):
        r, t = result.labels.index(c["row"]), c["pos"]
        value = float(result.top_logits[r, t, 0])
        want = tuple(int(round(v * 255)) for v in mpl.colormaps["Blues_r"](Normalize(0, 20, clip=True)(value))[:3])
        assert max(abs(x - y) for x, y in zip(rgb(c["bg"]), want)) <= 1, (c, value, want)


def test_a_legend_swatch_stays_with_its_words(browser, tmp_path: Path) -> None:
    """Issue 18, item 11: however narrow the page, the legend wraps between its keys, never between
    a swatch and its text."""
    result, _, _ = depth_result(np.tril(np.ones((4, 6), dtype=bool)))
    path = tmp_path / "legend.html"
    path.write_text(lens_html(result, metric="ranks"), encoding="utf-8")
    open_page(browser, path)
    stranded = """const legend = document.querySelector('.mg-legend'), bad = [];
        for (let w = 200; w <= 1400; w += 7) {
          legend.style.width = w + 'px';
          for (const s of legend.querySelectorAll('.mg-swatch')) {
            const a = s.getBoundingClientRect(), b = s.nextElementSibling.getBoundingClientRect(), y = (a.top + a.bottom) / 2;
            if (!(y > b.top && y < b.bottom && a.right <= b.left + 1 && b.left - a.right < 20)) bad.push([w, s.nextElementSibling.textContent]);
          }
        }
        legend.style.width = '';
        return bad;"""
    from selenium.webdriver.support.ui import Select

    for view in ("ranks", "depth"):
        Select(browser.find_element("css selector", ".mg-view")).select_by_value(view)
        assert browser.execute_script("return document.querySelectorAll('.mg-legend .mg-swatch').length") >= 2
        assert browser.execute_script(stranded) == [], view


def test_in_a_notebook_the_frame_fits_the_report_and_its_tooltips(browser, tmp_path: Path) -> None:
    """Issue 18, item 10: a notebook's frame is sized to its report, so nothing is cut off or left blank,
    and the tooltip of a bottom-row cell stays inside the frame. Two notebook widths: in the narrow one
    the controls wrap and the report is taller than the frame's first estimate, in the wide one shorter."""
    from selenium.webdriver.common.keys import Keys

    result = synthetic_result(3, 6, seed=4)
    fallback = int(re.search(r'style="width: 100%; height: (\d+)px', notebook_html(result)).group(1))  # the first height
    path = tmp_path / "notebook.html"
    cells = "".join(f'<div style="width: {w}px">{notebook_html(result)}</div>' for w in (420, 1000))
    path.write_text(f"<!DOCTYPE html><html><body>{cells}</body></html>", encoding="utf-8")
    browser.get(path.as_uri())
    fits = ("const html = document.documentElement, help = document.querySelector('.mg-help').getBoundingClientRect();"
            " return [html.scrollHeight <= window.innerHeight && help.bottom >= window.innerHeight - 40, window.innerHeight]")
    inside = ("const r = document.querySelector('.mg-tip').getBoundingClientRect();"
              " return [r.left >= 0, r.top >= 0, r.right <= document.documentElement.clientWidth, r.bottom <= window.innerHeight,"
              " r.width > 0]")
    heights = []
    try:
        for frame in browser.find_elements("css selector", "iframe"):
            browser.switch_to.frame(frame)
            wait_until(browser, lambda d: d.execute_script(READY_JS), "a report in its frame to be built")
            # all of the report shows, without a scroll bar, and the frame ends with it
            heights.append(wait_until(browser, lambda d: (lambda ok, h: ok and h)(*d.execute_script(fits)), "the frame to fit"))
            for t in (0, len(result) - 1):  # the bottom row, at both ends
                hover(browser, cell(browser, "embed", t))
                assert browser.execute_script(inside) == [True] * 5, t
            cell(browser, "h.1", 2).click()  # a pin panel makes the report taller: the frame follows
            wait_until(browser, lambda d: (lambda ok, h: ok and h > heights[-1])(*d.execute_script(fits)), "the frame to grow")
            browser.switch_to.active_element.send_keys(Keys.ESCAPE)
            browser.switch_to.default_content()
    finally:
        browser.switch_to.default_content()
    assert heights[0] > fallback > heights[1]  # the estimate would have cut the narrow one off, and padded the wide one
