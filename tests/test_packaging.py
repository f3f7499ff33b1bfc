"""The wheel's package list: pyproject.toml names its packages explicitly, so a new subpackage
that is not listed would be left out of the wheel (and only an installed copy would notice)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (the only test in this file)

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    found = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "minigpt").rglob("__init__.py"))
    assert sorted(listed) == found
    assert "minigpt.lens" in found  # the lens package
