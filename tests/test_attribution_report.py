"""The HTML report's attribution panel, in headless Chromium: click (or Enter on) a lens cell and the
panel lists the top components writing that cell's top-1 token, equal to `attribute(...)` for the cell.

Chromium is started the way tests/test_report.py starts it (Debian's chromium + chromedriver, offline).
Waits poll a condition with a generous limit; there are no fixed sleeps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import minigpt
from minigpt import GPT, GPTConfig
from minigpt.attribution import report_attribution
from minigpt.report import lens_html
from minigpt.testing import random_state

from test_report import WAIT_S, browser  # noqa: F401  (the shared headless Chromium, and its polling limit)

CONFIG = GPTConfig(vocab_size=41, n_positions=20, n_embd=15, n_head=3, n_layer=3, n_inner=23)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    model = GPT(CONFIG).eval()
    model.load_state_dict(random_state(CONFIG, seed=4, scale=0.3), strict=False)
    ids = torch.randint(0, CONFIG.vocab_size, (12,), generator=torch.Generator().manual_seed(3))
    lens = minigpt.logit_lens(model, ids, k=10, sub_blocks=True)
    html = lens_html(lens, attribution=report_attribution(model, ids, lens, k=6))
    path = tmp_path_factory.mktemp("report") / "attribution.html"
    path.write_text(html, encoding="utf-8")
    return model, ids, lens, path


PANEL_JS = """const p = document.querySelector('.mg-att-panel');
if (!p || p.hidden) return null;
return {row: p.dataset.row, pos: Number(p.dataset.pos), id: Number(p.dataset.id),
        items: Array.from(p.querySelectorAll('.mg-att-item')).map(li => [li.dataset.label, Number(li.dataset.value)]),
        text: p.textContent, visible: p.offsetParent !== null};"""


def panel_for(driver, row: str, pos: int):
    """The panel once it shows this cell (polled)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d):
        p = d.execute_script(PANEL_JS)
        return p if p and p["row"] == row and p["pos"] == pos else False

    return WebDriverWait(driver, WAIT_S).until(ready)


@pytest.mark.parametrize("row,pos,how", [("h.2", 11, "click"), ("h.0", 4, "click"), ("h.1.resid_mid", 7, "enter"), ("embed", 0, "enter")])
def test_panel_equals_attribute_for_the_clicked_cell(browser, page, row: str, pos: int, how: str) -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    model, ids, lens, path = page
    if browser.current_url != path.as_uri():
        browser.get(path.as_uri())
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script(
        "const r = document.querySelector('.mg-report'); return r && r.dataset.ready && r.dataset.attributionReady"))
    td = browser.find_element("css selector", f'td.mg-cell[data-row="{row}"][data-pos="{pos}"]')
    if how == "click":
        td.click()
    else:
        browser.execute_script("arguments[0].focus()", td)
        td.send_keys(Keys.ENTER)
    shown = panel_for(browser, row, pos)
    r = lens.labels.index(row)
    top1 = int(lens.top_ids[r, pos, 0])
    assert shown["id"] == top1 and shown["visible"]
    att = minigpt.attribute(model, ids, target=top1, row=row, by="head")
    expected = att.top(6, position=pos)
    assert [label for label, _ in shown["items"]] == [c.label for c, _ in expected]
    np.testing.assert_allclose([v for _, v in shown["items"]], [v for _, v in expected], atol=1e-4)
    assert "gap" in shown["text"] and row in shown["text"]
    errors = [m for m in browser.get_log("browser") if m["level"] == "SEVERE"]
    assert not errors, errors


def test_report_without_attribution_has_no_panel(page, tmp_path: Path) -> None:
    _, _, lens, _ = page
    html = lens_html(lens)
    assert "mg-att-panel" not in html and '"attribution"' not in html
