"""The README's tour of the Python API runs as written.

The tour loads "gpt2"; offline, "gpt2" here is a random checkpoint with gpt2's depth (12 blocks)
and vocabulary but a tiny width, and GPT-2's real tokenizer, so that every line, shape and row
name the tour uses exists. Only the numbers differ from the real model's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import minigpt
from minigpt import GPTConfig
from minigpt.testing import random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
GPT2_DEPTH = GPTConfig(vocab_size=50257, n_positions=64, n_embd=16, n_head=2, n_layer=12)


def tour() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A tour of the Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_tour_runs_as_written(tmp_path, tokenizer_dir, monkeypatch):
    checkpoint = random_checkpoint(tmp_path / "gpt2", GPT2_DEPTH, seed=3, tokenizer_dir=tokenizer_dir)
    load_model, load_tokenizer = minigpt.GPT.from_pretrained, minigpt.load_tokenizer
    monkeypatch.setattr(minigpt.GPT, "from_pretrained", lambda name, **kw: load_model(checkpoint if name == "gpt2" else name, **kw))
    monkeypatch.setattr(minigpt, "load_tokenizer", lambda name: load_tokenizer(checkpoint if name == "gpt2" else name))
    monkeypatch.chdir(tmp_path)
    code = tour()
    assert "lens[10:20]" not in code  # 0.1's tour sliced past the end of its own 6-token example
    scope: dict = {}
    exec(compile(code, "README.md (tour)", "exec"), scope)  # noqa: S102  (our own README)
    lens, corpus = scope["lens"], scope["corpus"]
    assert repr(lens).startswith("LensResult(13 rows [embed … h.11] × positions 0:6 'The dog ran to the park'")
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
