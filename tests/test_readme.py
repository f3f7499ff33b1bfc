"""The README's tour of the Python API runs as written, offline: it uses the shipped model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import minigpt

ROOT = Path(__file__).resolve().parents[1]


def tour() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A tour of the Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_tour_runs_as_written(tmp_path, monkeypatch):
    """Offline, as a reader runs it: the tour uses the shipped model, so nothing is swapped in."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(minigpt.sources, "hub_file", lambda *a, **k: pytest.fail("the tour went to the hub"))
    monkeypatch.chdir(tmp_path)
    code = tour()
    assert "lens[10:20]" not in code  # 0.1's tour sliced past the end of its own 6-token example
    scope: dict = {}
    exec(compile(code, "README.md (tour)", "exec"), scope)  # noqa: S102  (our own README)
    lens, corpus = scope["lens"], scope["corpus"]
    assert repr(lens).startswith("LensResult(5 rows [embed … h.3] × positions 0:6 'The dog ran to the park'")
    assert str(lens.rows[1]) == "Row(label='h.0', site='resid_post', block=0)"
    assert lens[2:5].start == 2 and len(lens[2:5]) == 3
    assert set(corpus.metrics) == {"logit", "norm_only"}
    for name in ("ranks.png", "depth.png", "curves.png", "metrics.json"):  # the files the tour writes
        assert (tmp_path / name).stat().st_size > 0, name


@pytest.mark.parametrize("line", [line for line in tour().splitlines() if line.startswith("lens.") and "#" in line])
def test_every_lens_attribute_in_the_tour_exists(line):
    name = line.split()[0].removeprefix("lens.").split("[")[0].split("(")[0]
    assert hasattr(minigpt.LensResult, name) or name in minigpt.LensResult.__dataclass_fields__, name


def test_the_attribution_section_runs_as_written(monkeypatch, tmp_path):
    """The attribution section uses the shipped model, so it runs offline as it stands."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Which component wrote it: direct logit attribution", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md (attribution)", "exec"), scope)  # noqa: S102  (our own README)
    att = scope["att"]
    assert abs(att.gap).max() <= 1e-4 * abs(att.total).max() + 1e-5
