"""`minigpt eval`: the corpus lens from the command line, against the Python API, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import minigpt
from minigpt.cli import CURVES

from test_cli import one_error_line, read_png, run

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n"
)


@pytest.fixture(scope="module")
def api(vocab_checkpoint: Path):
    return minigpt.GPT.from_pretrained(str(vocab_checkpoint)), minigpt.load_tokenizer(vocab_checkpoint)


@pytest.fixture()
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


def test_eval_json_and_figure_match_the_api(capsys, tmp_path, vocab_checkpoint, api, corpus_file) -> None:
    png, js = tmp_path / "curves.png", tmp_path / "metrics.json"
    code, out, err = run(
        capsys, "eval", "--text-file", corpus_file, "--model", vocab_checkpoint, "--decoder", "logit",
        "--decoder", "norm_only", "--decoder", "last_blocks", "--last-blocks", "2", "--window", "16",
        "--tokens", "40", "-o", png, "--json", js,
    )  # fmt: skip
    assert code == 0, err
    model, tok = api
    decoders = ["logit", "norm_only", minigpt.lens.LastBlocks(2)]
    # read_text drops one trailing newline, as for `minigpt lens`
    expected = minigpt.evaluate_lens(model, CORPUS[:-1], tokenizer=tok, decoders=decoders, window=16, max_tokens=40)
    assert json.loads(js.read_text(encoding="utf-8")) == json.loads(expected.to_json())
    read_png(png)
    # The table on stdout: a header, one line per row, the model's own numbers.
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["row", "logit", "KL"] and len(lines) == 1 + len(expected.labels) + 1
    assert lines[1].split()[0] == "embed" and float(lines[1].split()[1]) == pytest.approx(expected.metric("kl")[0], abs=1e-3)
    assert "40 tokens in 3 windows of 16" in err


def test_eval_lines_are_documents(capsys, tmp_path, vocab_checkpoint, api, corpus_file) -> None:
    code, out, err = run(capsys, "eval", "--text-file", corpus_file, "--lines", "-m", vocab_checkpoint,
                         "--window", "16", "--json", "-")  # fmt: skip
    assert code == 0, err
    model, tok = api
    docs = [line for line in CORPUS.splitlines() if line.strip()]
    expected = minigpt.evaluate_lens(model, docs, tokenizer=tok, window=16)
    assert json.loads(out) == json.loads(expected.to_json())  # --json - prints the JSON alone


BAD_USAGE = [
    (["--decoder", "tuned_lens"], "invalid choice: 'tuned_lens'"),
    (["--decoder", "ln_f", "--decoder", "logit"], "--decoder logit is given twice"),
    (["--last-blocks", "2"], "--last-blocks goes with --decoder last_blocks"),
    (["--tokens", "0"], "--tokens: expected a positive integer, got '0'"),
    (["--window", "0"], "--window: expected a positive integer"),
    (["--window", "2000"], "--window 2000: the model's context is 1024 tokens"),
    (["--decoder", "last_blocks", "--last-blocks", "9"], "--last-blocks 9: the model has 3 blocks"),
    (["--curves", "kl,rank"], "--curves rank: choose from"),
    (["-o", "x.html"], "minigpt eval draws a figure"),
    (["-o", "x.bmpx"], "unknown image format"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_USAGE, ids=lambda x: str(x)[:40])
def test_usage_errors_exit_2_before_loading(capsys, tmp_path, vocab_checkpoint, corpus_file, monkeypatch, extra, message):
    import minigpt.cli as cli

    def no_load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the options were checked")

    monkeypatch.setattr(cli, "load", no_load)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "eval", "--text-file", corpus_file, "-m", vocab_checkpoint, *extra)
    assert code == 2, err
    assert message in one_error_line(err)


def test_runtime_errors_exit_1(capsys, tmp_path, vocab_checkpoint) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n  \n", encoding="utf-8")
    cases = [
        (["--text-file", empty], "is empty"),
        (["--text-file", blank, "--lines"], "the corpus is empty"),
        (["--text-file", tmp_path / "missing.txt"], "cannot read --text-file"),
        (["--text-file", tmp_path / "missing.txt", "--lines"], "cannot read --text-file"),
    ]
    for extra, message in cases:
        code, _, err = run(capsys, "eval", "-m", vocab_checkpoint, *extra)
        assert code == 1, (extra, err)
        assert message in one_error_line(err), extra


def test_curve_names_are_the_corpus_metrics() -> None:
    from minigpt.plot import CURVES as PLOTTED

    assert set(PLOTTED) == set(CURVES)  # the figure can draw every metric the CLI offers
