"""The HTML report's generation mode in headless Chromium: the cells (top-1 and the sampled token's rank),
the sampled tokens on top, hover's top-k, pinning, and the toggle between lenses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import minigpt
from minigpt import GPT, GPTConfig, JacobianLens
from minigpt.report import generation_html
from minigpt.testing import random_state

from test_report import WAIT_S, browser, hover, open_page  # noqa: F401  (the shared headless Chromium)

CONFIG = GPTConfig(vocab_size=37, n_positions=24, n_embd=12, n_head=3, n_layer=3)


@pytest.fixture(scope="module")
def run() -> minigpt.GenerationLens:
    model = GPT(CONFIG)
    model.load_state_dict(random_state(CONFIG, seed=8, scale=0.4))
    g = torch.Generator().manual_seed(2)
    J = JacobianLens({l: torch.eye(12) + 0.5 * torch.randn(12, 12, generator=g) for l in (0, 1)}, d_model=12, n_prompts=1)
    return minigpt.generate_lens(model.eval(), [1, 2, 3], 7, decoders={"logit": "logit", "jlens": J},
                                 generator=torch.Generator().manual_seed(0))  # fmt: skip


def test_the_page_holds_its_data_as_json(run) -> None:
    page = generation_html(run, title="<b>gen</b>")
    data = json.loads(re.search(r'<script type="application/json" class="mg-data">(.*?)</script>', page, re.S).group(1))
    assert data["steps"] == run.generated.tolist() and [l["label"] for l in data["lenses"]] == ["logit", "jlens"]
    assert data["lenses"][1]["rank"] == run.lens["jlens"].rank_next.tolist()
    assert "<b>gen</b>" not in page.split("<body>")[1].split("<script")[0]  # the title is text


CELLS_JS = """return Array.from(document.querySelectorAll('td.mg-cell')).map(td => ({
    row: td.dataset.row, step: Number(td.dataset.step), rank: Number(td.dataset.rank), top1: Number(td.dataset.top1),
    text: td.textContent}));"""


def test_cells_hover_pin_and_the_lens_toggle(browser, run, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.support.ui import Select, WebDriverWait

    path = tmp_path / "run.html"
    path.write_text(generation_html(run), encoding="utf-8")
    console = open_page(browser, path)
    assert not [m for m in console if m["level"] in ("SEVERE", "ERROR")], console
    wait = WebDriverWait(browser, WAIT_S)  # polled: a generous limit for a loaded machine

    def check_cells(label: str) -> None:
        result = run.lens[label]
        cells = browser.execute_script(CELLS_JS)
        assert len(cells) == len(result.labels) * run.n
        assert cells[0]["row"] == result.labels[-1]  # rows go up: the top row first
        for c in cells:
            r = result.labels.index(c["row"])
            assert c["rank"] == result.rank_next[r, c["step"]] and c["top1"] == result.top_ids[r, c["step"], 0]
            assert c["text"].endswith(f" {c['rank']}")

    check_cells("logit")
    sampled = [th.text for th in browser.find_elements("css selector", "th.mg-sampled-token")]
    assert sampled == [run.text(i).replace(" ", "\u2423").replace("\n", "\u23ce") for i in run.generated]

    cell = browser.find_element("css selector", 'td.mg-cell[data-row="h.1"][data-step="2"]')
    hover(browser, cell)
    tip = browser.find_element("css selector", ".mg-tip")
    wait.until(lambda d: tip.is_displayed())
    items = tip.find_elements("css selector", "li")
    top = run.lens["logit"].top_ids[2, 2]
    assert len(items) == len(top) and all(li.text.endswith(f"#{i}") for li, i in zip(items, top))
    assert f"rank {run.lens['logit'].rank_next[2, 2]}" in tip.text

    cell.click()
    pin = browser.find_element("css selector", ".mg-pin")
    wait.until(lambda d: pin.is_displayed())
    assert "h.1, step 2" in pin.text

    before = browser.execute_script(CELLS_JS)
    Select(browser.find_element("css selector", "select.mg-lens")).select_by_visible_text("jlens")
    wait.until(lambda d: d.execute_script(CELLS_JS) != before)
    check_cells("jlens")
    assert not pin.is_displayed()  # the toggle unpins
    assert "Jacobian" in browser.find_element("css selector", ".mg-decoder").text  # which rows the lens covers
