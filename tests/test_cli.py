"""The `minigpt` command: end to end on a small random checkpoint, and one readable line for every bad input.

Most cases call `main([...])` in-process; a few run `python -m minigpt` in a subprocess,
where the environment (huggingface_hub reads it at import) or the exit path matters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import minigpt
from minigpt.cli import METRICS, main, parse_layers, parse_range, row_labels

TEXT = "Sometimes, when people say plasma, they mean a state of matter. Other times, when people say plasma"
ROOT = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """main(argv) in-process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(*argv: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The timeout only keeps a hung run from hanging the suite; it is not a timing check.
    return subprocess.run(
        [sys.executable, "-m", "minigpt", *map(str, argv)], capture_output=True, text=True,
        env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip


def one_error_line(err: str) -> str:
    """The single line an error must print (no usage block, no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)  # (H, W, 3 or 4) floats in [0, 1]
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.05, "the image is (nearly) one flat colour"
    return image


def assert_json_equals_api(data: dict, api: minigpt.LensResult) -> None:
    """The CLI's JSON against the Python API's result: ints and strings exactly, floats with NaN <-> null."""
    for key in ("labels", "start", "tokens", "next_tokens"):
        assert data[key] == getattr(api, key), key
    assert data["decoder"] == api.decoder.to_dict()
    for key in ("token_ids", "next_ids", "final_ids", "top_ids", "rank_final", "rank_next", "rank_input"):
        np.testing.assert_array_equal(np.array(data[key]), getattr(api, key), err_msg=key)
    for key in ("top_logits", "top_probs", "kl_final", "kl_final_rev", "kl_input", "entropy", "cross_entropy", "prob_next"):
        got = np.array(data[key], dtype=float)  # None -> nan
        np.testing.assert_allclose(got, getattr(api, key), rtol=1e-6, atol=1e-7, equal_nan=True, err_msg=key)
    assert data["id_text"] == {str(k): v for k, v in sorted(api.id_text.items())}


@pytest.fixture(scope="module")
def api(vocab_checkpoint: Path) -> tuple[minigpt.GPT, object]:
    return minigpt.GPT.from_pretrained(str(vocab_checkpoint)), minigpt.load_tokenizer(vocab_checkpoint)


# ----------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    "spec, expected",
    [("2", 2), ("0,5,11", ["h.0", "h.5", "h.11"]), ("embed,h.3.resid_mid,2", ["embed", "h.3.resid_mid", "h.2"]),
     ("h.5", ["h.5"]), (" 1 , 2 ", ["h.1", "h.2"])],
)  # fmt: skip
def test_parse_layers(spec: str, expected: object) -> None:
    assert parse_layers(spec) == expected


@pytest.mark.parametrize("spec, expected", [("10:20", slice(10, 20)), (":5", slice(None, 5)), ("-8:", slice(-8, None)), ("3:-1", slice(3, -1))])
def test_parse_range(spec: str, expected: slice) -> None:
    assert parse_range(spec) == expected


def test_metrics_and_rows_agree_with_the_library(tiny_checkpoint: Path) -> None:
    from minigpt.cli import METRIC_HELP, build_parser

    # Every view the plot draws is a --metric choice, and each has its help line.
    choices = next(a.choices for a in build_parser()._subparsers._group_actions[0].choices["lens"]._actions
                   if a.dest == "metric")  # fmt: skip
    assert tuple(choices) == METRICS and set(METRIC_HELP) == set(METRICS)
    model = minigpt.GPT.from_pretrained(str(tiny_checkpoint))
    for sub_blocks in (False, True):
        for prior in (False, True):
            lens = minigpt.logit_lens(model, [1, 2, 3], sub_blocks=sub_blocks, prior=prior)
            assert row_labels(model.config.n_layer, sub_blocks, prior) == lens.labels
            assert len(lens.labels) == lens.kl_final.shape[0] == 1 + prior + (2 if sub_blocks else 1) * model.config.n_layer


def test_help_teaches_the_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(c in out for c in ("lens", "generate", "download", "examples:"))
    code, out, _ = run(capsys, "lens", "--help")
    assert code == 0
    for fragment in ("--layers 0,5,11", "--range=-10:", "--truncate", "--text-file", "input_kl", "last_blocks", "examples:"):
        assert fragment in out, fragment


# ----------------------------------------------------------------------------
# End to end


def test_lens_png_and_json_match_the_api(capsys, tmp_path, vocab_checkpoint, api) -> None:
    text = TEXT + " <|endoftext|> and more"  # the special token's text is ordinary text here
    png, js = tmp_path / "lens.png", tmp_path / "lens.json"
    code, out, err = run(capsys, "lens", text, "--model", vocab_checkpoint, "--metric", "ranks", "-o", png, "--json", js)
    assert code == 0, err
    assert "tokens" in err and str(png) in err
    read_png(png)
    model, tok = api
    expected = minigpt.logit_lens(model, text, tokenizer=tok)
    data = json.loads(js.read_text(encoding="utf-8"))
    assert len(data["tokens"]) == len(tok.encode_ordinary(text))
    assert data["next_ids"][-1] == -1 and data["cross_entropy"][0][-1] is None  # no next token: null, not NaN
    assert_json_equals_api(data, expected)


def test_lens_range_decoder_and_sub_blocks_reach_the_api(capsys, tmp_path, vocab_checkpoint, api) -> None:
    js = tmp_path / "lens.json"
    code, _, err = run(
        capsys, "lens", TEXT, "--model", vocab_checkpoint, "--json", js, "--range", "3:9",
        "--decoder", "norm_only", "--sub-blocks", "--top-k", "3",
    )  # fmt: skip
    assert code == 0, err
    model, tok = api
    expected = minigpt.logit_lens(model, TEXT, tokenizer=tok, decoder="norm_only", sub_blocks=True, k=3, positions=slice(3, 9))
    data = json.loads(js.read_text(encoding="utf-8"))
    assert data["start"] == 3 and len(data["tokens"]) == 6 and np.array(data["top_ids"]).shape[2] == 3
    assert_json_equals_api(data, expected)

    code, _, err = run(capsys, "lens", TEXT, "--model", vocab_checkpoint, "--json", js, "--last-blocks", "2", "--range=-4:")
    assert code == 0, err
    expected = minigpt.logit_lens(model, TEXT, tokenizer=tok, decoder="last_blocks", last_blocks=2, positions=slice(-4, None))
    assert_json_equals_api(json.loads(js.read_text(encoding="utf-8")), expected)


@pytest.mark.parametrize("metric", ["logits", "input_kl", "depth"])  # "ranks" and "kl" render in the tests below
def test_metrics_render(capsys, tmp_path, vocab_checkpoint, metric) -> None:
    png = tmp_path / f"{metric}.png"
    code, _, err = run(capsys, "lens", TEXT, "-m", vocab_checkpoint, "--metric", metric, "-o", png, "--range", "0:6")
    assert code == 0, err
    read_png(png)


@pytest.mark.parametrize("layers", ["2", "embed,1,h.2.resid_mid"])
def test_layers_and_sub_blocks(capsys, tmp_path, vocab_checkpoint, layers) -> None:
    png = tmp_path / "lens.png"
    code, _, err = run(capsys, "lens", "The dog ran", "-m", vocab_checkpoint, "--layers", layers, "--sub-blocks", "-o", png)
    assert code == 0, err
    read_png(png)


def test_long_text_is_refused_unless_truncated(capsys, tmp_path, vocab_checkpoint) -> None:
    text = " the" * 1100  # 1100 tokens; the checkpoint's context is 1024
    code, _, err = run(capsys, "lens", text, "-m", vocab_checkpoint, "--json", tmp_path / "x.json")
    assert code == 1
    line = one_error_line(err)
    assert "1100 tokens" in line and "1024" in line and "--truncate" in line
    assert not (tmp_path / "x.json").exists()

    code, _, err = run(capsys, "lens", text, "-m", vocab_checkpoint, "--json", tmp_path / "x.json", "--truncate", "--range=-3:")
    assert code == 0, err
    assert "keeps the last 1024" in err
    data = json.loads((tmp_path / "x.json").read_text())
    assert data["start"] == 1021 and data["tokens"] == [" the"] * 3


def test_text_file_and_figure_window(capsys, tmp_path, vocab_checkpoint) -> None:
    source = tmp_path / "text.txt"
    source.write_text(TEXT * 2, encoding="utf-8")
    png = tmp_path / "lens.png"
    code, _, err = run(capsys, "lens", "--text-file", source, "-m", vocab_checkpoint, "-o", png, "--max-positions", "8")
    assert code == 0, err
    assert "shows the last 8 of" in err and "x 8 positions" in err  # only what the figure shows is decoded
    read_png(png)


def test_generate_matches_the_api(capsys, vocab_checkpoint, api) -> None:
    model, tok = api
    code, out, err = run(capsys, "generate", "The dog", "-m", vocab_checkpoint, "-n", "6", "--temperature", "0")
    assert code == 0, err
    ids = torch.tensor(tok.encode("The dog"))
    assert out == tok.decode(minigpt.generate(model, ids, 6, temperature=0)[2:].tolist()) + "\n"
    sampled = [run(capsys, "generate", "The dog", "-m", vocab_checkpoint, "-n", "6", "--seed", "3", "--top-k", "50")[1] for _ in range(2)]
    assert sampled[0] == sampled[1] and sampled[0].strip()


def test_download_copies_a_checkpoint(capsys, tmp_path, vocab_checkpoint) -> None:
    target = tmp_path / "weights" / "small"
    code, out, err = run(capsys, "download", vocab_checkpoint, "--dir", target)
    assert code == 0, err
    assert out.strip() == str(target)
    assert {p.name for p in target.iterdir()} == {"model.safetensors", "config.json", "vocab.json", "merges.txt"}


# ----------------------------------------------------------------------------
# Bad input: one line, the right exit status


def test_usage_errors_exit_2(capsys, tmp_path, vocab_checkpoint) -> None:
    png = tmp_path / "x.png"
    cases = [
        (["lens", "hi", "--metric", "nope", "-o", png], "invalid choice: 'nope'"),
        (["lens", "-o", png], "give a TEXT argument or --text-file"),
        (["lens", "hi", "--text-file", "t.txt", "-o", png], "not both"),
        (["lens", "hi", "-m", vocab_checkpoint], "nothing to write"),
        (["lens", "hi", "-o", tmp_path / "x.bmpx"], "unknown image format"),
        (["lens", "hi", "--range", "5", "-o", png], "START:END"),
        (["lens", "hi", "--layers", ",", "-o", png], "--layers"),
        (["lens", "hi", "--decoder", "ln_f", "--last-blocks", "2", "-o", png], "--last-blocks goes with"),
        (["lens", "hi", "-m", vocab_checkpoint, "--layers", "0,7", "-o", png], "no row h.7"),
        (["generate", "hi", "--top-k", "0"], "positive integer"),
        ([], "required: COMMAND"),
    ]
    for argv, expected in cases:
        code, _, err = run(capsys, *argv)
        line = one_error_line(err)
        assert code == 2 and expected in line, (argv, err)
        assert "--help" in line
    assert not png.exists()


def test_options_are_checked_before_the_weights_load(capsys, tmp_path, vocab_checkpoint, monkeypatch) -> None:
    """Options that need the model's shape are checked against config.json alone: exit 2, the option's own
    name, and the weights never read."""
    import minigpt.cli

    def no_loading(*args: object) -> None:
        raise AssertionError("the weights were loaded before the options were checked")

    monkeypatch.setattr(minigpt.cli, "load", no_loading)
    png = tmp_path / "x.png"
    cases = [
        (["lens", "hi", "-m", vocab_checkpoint, "--kl-max", "0", "-o", png], "--kl-max: expected a positive number"),
        (["lens", "hi", "-m", vocab_checkpoint, "--kl-max", "nan", "-o", png], "--kl-max"),
        (["lens", "hi", "-m", vocab_checkpoint, "--last-blocks", "99", "-o", png], "--last-blocks 99: the model has 3 blocks"),
        (["lens", "hi", "-m", vocab_checkpoint, "--top-k", "100000", "-o", png], "--top-k 100000 is more than the vocabulary"),
        (["lens", "hi", "-m", vocab_checkpoint, "--layers", "0,7", "-o", png], "no row h.7"),
        (["generate", "hi", "-m", vocab_checkpoint, "-n", "-3"], "-n/--max-new-tokens: expected an integer >= 0"),
        (["generate", "hi", "-m", vocab_checkpoint, "--temperature", "-1"], "--temperature: expected a number >= 0"),
        (["generate", "hi", "-m", vocab_checkpoint, "--top-k", "100000"], "--top-k 100000"),
        (["generate", "hi", "-m", vocab_checkpoint, "-n", "2000"], "-n 2000: the model's context is 1024"),
    ]  # fmt: skip
    for argv, expected in cases:
        code, _, err = run(capsys, *argv)
        line = one_error_line(err)
        assert code == 2 and expected in line and "--help" in line, (argv, err)
    assert not png.exists()


def test_json_to_stdout(capsys, vocab_checkpoint, api) -> None:
    code, out, err = run(capsys, "lens", TEXT, "-m", vocab_checkpoint, "--json", "-", "--range", "2:5")
    assert code == 0, err
    model, tok = api
    assert_json_equals_api(json.loads(out), minigpt.logit_lens(model, TEXT, tokenizer=tok, positions=slice(2, 5)))
    assert not Path("-").exists()


def test_negative_range_with_a_space(capsys, tmp_path, vocab_checkpoint) -> None:
    """`--range -3:` (a space, as people type it) means what `--range=-3:` means."""
    spaced, joined = tmp_path / "a.json", tmp_path / "b.json"
    for path, argv in ((spaced, ["--range", "-3:"]), (joined, ["--range=-3:"])):
        code, _, err = run(capsys, "lens", TEXT, "-m", vocab_checkpoint, "--json", path, *argv)
        assert code == 0, err
    a, b = json.loads(spaced.read_text()), json.loads(joined.read_text())
    assert a == b and len(a["tokens"]) == 3 and a["start"] == len(a["token_ids"]) + a["start"] - 3
    assert parse_range("-3:") == slice(-3, None)


def test_text_file_drops_one_trailing_newline(capsys, tmp_path, vocab_checkpoint, api) -> None:
    model, tok = api
    for content, expected in (("The dog ran\n", "The dog ran"), ("The dog ran\r\n", "The dog ran"),
                              ("The dog ran\n\n", "The dog ran\n"), ("The dog ran", "The dog ran")):  # fmt: skip
        source, js = tmp_path / "t.txt", tmp_path / "t.json"
        source.write_bytes(content.encode())
        code, _, err = run(capsys, "lens", "--text-file", source, "-m", vocab_checkpoint, "--json", js)
        assert code == 0, err
        assert json.loads(js.read_text())["token_ids"] == tok.encode_ordinary(expected), repr(content)


def test_title_keeps_the_decoder_line(capsys, tmp_path, vocab_checkpoint, monkeypatch) -> None:
    from matplotlib.figure import Figure

    titles: list[str] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: titles.append(self.axes[0].get_title()))
    code, _, err = run(capsys, "lens", "The dog", "-m", vocab_checkpoint, "--title", "My run", "-o", tmp_path / "x.png",
                       "--decoder", "norm_only")  # fmt: skip
    assert code == 0, err
    assert titles[0].splitlines()[0] == "My run" and "normalisation only" in titles[0].splitlines()[1]


def test_version_and_debug_after_the_command(capsys, tmp_path) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"minigpt {minigpt.__version__}"
    with pytest.raises(minigpt.ModelNameError):  # --debug shows the traceback, wherever it is written
        main(["lens", "hi", "--model", "no-such-model", "-o", str(tmp_path / "x.png"), "--debug"])
    code, _, err = run(capsys, "lens", "hi", "--model", "no-such-model", "-o", tmp_path / "x.png")
    assert code == 1 and "Traceback" not in err


def test_generate_truncates_a_long_prompt(capsys, vocab_checkpoint, api) -> None:
    model, tok = api
    prompt = " the" * 1030
    code, out, err = run(capsys, "generate", prompt, "-m", vocab_checkpoint, "-n", "4", "--temperature", "0", "--truncate")
    assert code == 0, err
    assert "keeps the last 1020" in err
    ids = torch.tensor(tok.encode_ordinary(prompt)[-1020:])
    assert out == tok.decode(minigpt.generate(model, ids, 4, temperature=0)[1020:].tolist()) + "\n"


def test_runtime_errors_exit_1(capsys, tmp_path, vocab_checkpoint) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases = [
        (["lens", "hi", "--model", "no-such-model", "-o", tmp_path / "x.png"], "unknown model 'no-such-model'"),
        (["lens", "", "-m", vocab_checkpoint, "-o", tmp_path / "x.png"], "the text is empty"),
        (["lens", "hi", "-m", vocab_checkpoint, "-o", blocker / "x.png"], f"{blocker} is a file"),
        (["lens", "hi", "-m", vocab_checkpoint, "--json", blocker / "x.json"], f"{blocker} is a file"),
        (["lens", "hi", "-m", vocab_checkpoint, "-o", tmp_path / "no" / "x.png"], "does not exist"),
        (["lens", "--text-file", tmp_path / "missing.txt", "-m", vocab_checkpoint, "-o", tmp_path / "x.png"],
         "cannot read --text-file"),
        (["lens", "hi", "-m", vocab_checkpoint, "--range", "5:9", "-o", tmp_path / "x.png"], "selects no position"),
        (["generate", "", "-m", vocab_checkpoint], "the prompt is empty"),
        (["generate", " the" * 1030, "-m", vocab_checkpoint, "-n", "2"], "pass --truncate"),
        (["download", vocab_checkpoint, "--dir", blocker / "sub"], "cannot write the checkpoint"),
    ]  # fmt: skip
    for argv, expected in cases:
        code, out, err = run(capsys, *argv)
        line = one_error_line(err)
        assert code == 1 and line.startswith("minigpt: error: ") and expected in line, (argv, err)
    assert list(tmp_path.iterdir()) == [blocker]  # nothing written


# ----------------------------------------------------------------------------
# As a program


def test_python_dash_m_end_to_end(tmp_path, vocab_checkpoint) -> None:
    png = tmp_path / "lens.png"
    done = run_subprocess("lens", TEXT, "--model", vocab_checkpoint, "--metric", "kl", "-o", png, "--range=-6:")
    assert done.returncode == 0, done.stderr
    read_png(png)


def test_generate_does_not_import_matplotlib(vocab_checkpoint) -> None:
    script = (
        "import sys; from minigpt.cli import main; "
        f"code = main(['generate', 'Hi', '-m', {str(vocab_checkpoint)!r}, '-n', '2']); "
        "print('matplotlib' in sys.modules, code)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "False 0", done.stdout + done.stderr


def test_no_network_fails_with_a_hint(tmp_path) -> None:
    """A hub name with an unreachable hub fails fast with one line saying what to do (run in a subprocess:
    huggingface_hub reads HF_ENDPOINT and HF_HOME when it is imported)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    started = time.monotonic()
    done = run_subprocess("lens", "hi", "--model", "gpt2", "-o", tmp_path / "x.png", env=env)
    elapsed = time.monotonic() - started
    print(f"no-network failure took {elapsed:.1f} s")  # reported, not asserted: timing on shared CI is noisy
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "hub" in line and "127.0.0.1:9" in line and "directory" in line
