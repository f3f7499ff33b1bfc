"""The lens family on the command line: --lens-kind jacobian, --patchscope, and the lens during generation (-o).

All on the shipped model, offline. The numbers are checked against the library's own calls, which
their own tests check against independent implementations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import minigpt
from minigpt import JacobianLens
from minigpt.cli import main

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "examples" / "abstract.txt"


@pytest.fixture(scope="module")
def shipped() -> minigpt.GPT:
    return minigpt.GPT.from_pretrained("shakespeare")


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("minigpt")]
    assert len(lines) == 1, err
    return lines[0]


def test_eval_takes_a_jacobian_lens_and_a_patchscope(tmp_path: Path, shipped, capsys) -> None:
    g = torch.Generator().manual_seed(0)
    C = shipped.config.n_embd
    J = {l: torch.eye(C) + 0.05 * torch.randn(C, C, generator=g) for l in range(shipped.config.n_layer - 1)}
    lens = JacobianLens(J, d_model=C, n_prompts=1)
    path = lens.save(tmp_path / "jlens.pt")
    code = main(["eval", "--text-file", str(TEXT), "--model", "shakespeare", "--lens-kind", "jacobian",
                 "--lens", str(path), "--patchscope", "--json", str(tmp_path / "m.json")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert list(metrics) == ["logit", str(path), "patchscope"]
    tok = minigpt.load_tokenizer("shakespeare")
    ref = minigpt.evaluate_lens(shipped, TEXT.read_text(encoding="utf-8").removesuffix("\n"), tokenizer=tok,  # as --text-file reads it
                                decoders={"j": JacobianLens.load(path, shipped), "p": minigpt.lens.Patchscope(tokenizer=tok)})  # fmt: skip
    for metric in ("kl", "surprisal", "prec@1"):
        np.testing.assert_allclose(metrics[str(path)][metric], ref.metric(metric, "j"), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics["patchscope"][metric], ref.metric(metric, "p"), rtol=1e-5, atol=1e-6)


def test_a_jacobian_lens_for_another_width_is_refused_before_the_weights(tmp_path: Path, capsys) -> None:
    path = JacobianLens({0: torch.eye(24)}, d_model=24, n_prompts=1).save(tmp_path / "other.pt")
    code = main(["eval", "--text-file", str(TEXT), "--model", "shakespeare", "--lens-kind", "jacobian", "--lens", str(path)])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert f"--lens {path}" in line and "24" in line and "128" in line, line
    assert main(["eval", "--text-file", str(TEXT), "--model", "shakespeare", "--lens-kind", "sideways"]) == 2
    assert "invalid choice: 'sideways'" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".json", ".html", ".png"])
def test_generate_writes_the_lens_while_it_samples(tmp_path: Path, shipped, suffix: str, capsys) -> None:
    out = tmp_path / f"run{suffix}"
    args = ["generate", "ROMEO:", "--model", "shakespeare", "-n", "6", "--temperature", "0.8", "--top-k", "50",
            "--seed", "3", "-o", str(out), "--decoder", "logit", "--patchscope"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    tok = minigpt.load_tokenizer("shakespeare")
    ids = tok.encode_ordinary("ROMEO:")
    g = torch.Generator().manual_seed(3)
    ref = minigpt.generate_lens(shipped, ids, 6, tokenizer=tok, temperature=0.8, top_k=50, generator=g,
                                decoders={"logit": "logit", "patchscope": minigpt.lens.Patchscope(tokenizer=tok)})  # fmt: skip
    assert printed.rstrip("\n") == tok.decode(ref.ids[len(ids):].tolist()).rstrip("\n")
    if suffix == ".json":
        data = json.loads(out.read_text())
        assert data["ids"] == ref.ids.tolist() and set(data["lens"]) == {"logit", "patchscope"}
    elif suffix == ".html":
        page = out.read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>") and "patchscope" in page
    else:
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["-o", "run.txt"], "written as .html, .png or .json"),
    (["--decoder", "norm_only"], "choose the lenses written with -o"),
    (["-o", "run.json", "--decoder", "last_blocks"], "cannot decode one new position at a time"),
    (["-o", "run.json", "-n", "300"], "-n 300: the model's context is 256 tokens"),
])  # fmt: skip
def test_generate_lens_options_are_checked_before_the_weights(tmp_path: Path, args, message, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(minigpt.GPT, "from_pretrained", lambda *a, **k: pytest.fail("loaded the weights"))
    assert main(["generate", "ROMEO:", "--model", "shakespeare", *args]) == 2
    assert message in one_line(capsys.readouterr().err)


def test_jlens_fits_what_the_library_fits(tmp_path: Path, shipped, capsys) -> None:
    text = tmp_path / "text.txt"
    text.write_text(TEXT.read_text(encoding="utf-8") * 3, encoding="utf-8")
    out = tmp_path / "j.pt"
    code = main(["jlens", "--text-file", str(text), "--model", "shakespeare", "-o", str(out),
                 "--n-prompts", "2", "--seq-len", "40", "--skip-first", "4", "--seed", "1"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    tok = minigpt.load_tokenizer("shakespeare")
    ref = JacobianLens.fit(shipped, text.read_text(encoding="utf-8").removesuffix("\n"), tokenizer=tok, n_prompts=2,
                           seq_len=40, skip_first=4, seed=1)  # fmt: skip
    got = JacobianLens.load(out, shipped)
    assert sorted(got.J) == sorted(ref.J)
    for l in ref.J:  # saved in fp16, as the reference format stores it
        assert (got.J[l] - ref.J[l]).abs().max() <= 1e-3 * ref.J[l].abs().max() + 1e-4, l
    for bad, message in ((["-o", str(tmp_path / "j.txt")], "a J-lens file is a .pt file"),
                         (["-o", str(out), "--seq-len", "999"], "--seq-len 999: the model's context is 256 tokens"),
                         (["-o", str(out), "--seq-len", "8", "--skip-first", "7"], "leaves no source position")):
        assert main(["jlens", "--text-file", str(text), "--model", "shakespeare", *bad]) == 2
        assert message in one_line(capsys.readouterr().err)


def test_the_lens_report_carries_the_attribution_panel(tmp_path: Path, shipped, capsys) -> None:
    """`minigpt lens -o x.html` with the model's own decoder: a click on a cell shows who wrote its top-1."""
    from minigpt.attribution import report_attribution

    page = tmp_path / "r.html"
    assert main(["lens", "ROMEO: But soft, what light", "--model", "shakespeare", "-o", str(page)]) == 0
    html = page.read_text(encoding="utf-8")
    tok = minigpt.load_tokenizer("shakespeare")
    ids = tok.encode_ordinary("ROMEO: But soft, what light")
    expected = report_attribution(shipped, ids, minigpt.logit_lens(shipped, ids, tokenizer=tok, k=10))
    data = json.loads(re.search(r'<script type="application/json" class="mg-data">(.*?)</script>', html, re.S).group(1))
    assert data["attribution"] == json.loads(json.dumps(expected)) and "mg-att" in html
    other = tmp_path / "n.html"
    assert main(["lens", "ROMEO: But soft", "--model", "shakespeare", "--decoder", "norm_only", "-o", str(other)]) == 0
    assert '"attribution"' not in other.read_text(encoding="utf-8")  # attribution explains the logit lens only
