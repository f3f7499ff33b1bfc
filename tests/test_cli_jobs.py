"""The CLI built from settings values (issue 14) and its new-user fixes (issue 18, items 5 and 15-28)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import minigpt
from minigpt.cli import build_parser, main
from minigpt.settings import command_line, flags

from test_cli import one_error_line, run

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 3


def lens_dir(model: minigpt.GPT, path: Path, seed: int, kind: str = "tuned") -> Path:
    """A saved lens with small random maps (seeded), so that two lenses decode differently."""
    lens = minigpt.TunedLens.from_model(model, kind)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in lens.translators:
            t.weight.copy_(0.5 / math.sqrt(t.weight.shape[0]) * torch.randn(t.weight.shape, generator=g))
    lens.save(path)
    return path


@pytest.fixture(scope="module")
def model(vocab_checkpoint: Path) -> minigpt.GPT:
    return minigpt.GPT.from_pretrained(str(vocab_checkpoint))


@pytest.fixture()
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------
# Jobs as values


def test_help_does_not_import_torch() -> None:
    """`minigpt --help` and `minigpt lens --help` never import torch (nor matplotlib)."""
    script = ("import sys\nfrom minigpt.cli import main\nfor argv in (['--help'], ['lens', '--help']):\n"
              "    assert main(argv) == 0\nprint('torch' in sys.modules, 'matplotlib' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "minigpt", "--help"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "shakespeare" in done.stdout  # item 5: the shipped model is a preset
    assert not re.search(r"\|\s+torch$", done.stderr, re.M), "python -m minigpt --help imported torch"


def test_the_library_names_the_help_shows_are_the_librarys() -> None:
    from minigpt import lens, report, sources
    from minigpt.cli import names
    from minigpt.lens.corpus import CURVE_METRICS

    assert names.METRICS == lens.METRICS and names.DECODERS == lens.DECODERS and names.MATMULS == lens.MATMULS
    assert names.ALIASES == tuple(lens.ALIASES) and names.CURVES == CURVE_METRICS
    assert (names.REPORT_POSITIONS, names.TOP) == (report.MAX_POSITIONS, report.TOP)
    assert names.PRESETS == tuple(sources.HUB_REPOS) and names.SHIPPED in sources.BUNDLED


def test_every_train_setting_is_an_option_and_the_reproduce_command_round_trips(tmp_path: Path) -> None:
    """A TrainSettings field is a `minigpt train` option, and the card's command gives back the settings."""
    import dataclasses

    from minigpt.card import reproduce_command
    from minigpt.cli.args import settings_from
    from minigpt.cli.train import Job

    settings = minigpt.TrainSettings(n_layer=3, n_head=2, n_embd=48, steps=7, lr=1e-3, save_dtype="float16")
    assert set(flags(minigpt.TrainSettings)) == {f.name for f in dataclasses.fields(minigpt.TrainSettings)}
    command = reproduce_command(settings, torch.device("cpu"), "text.txt", str(tmp_path / "out"))
    args = command.split()[1:]
    job, given = settings_from(Job, build_parser().parse_args(args))
    assert job.settings == settings and job.model.device == "cpu"
    assert set(flags(minigpt.TrainSettings)) <= given
    assert command_line(settings)[:2] == ["--layers", "3"]


def test_shared_options_are_declared_once() -> None:
    sources = [p.read_text(encoding="utf-8") for p in (ROOT / "minigpt" / "cli").glob("*.py")]
    sources.append((ROOT / "minigpt" / "train.py").read_text(encoding="utf-8"))
    for flag in ("--model", "--device", "--decoder", "--last-blocks", "--lens", "--sub-blocks", "--text-file",
                 "--window", "--json", "--dpi", "--title"):  # fmt: skip  (lens and generate --top-k differ)
        declared = sum(len(re.findall(rf'setting\(\s*[^"]{{0,20}}"{flag}"', s)) for s in sources)  # default, then flag
        assert declared == 1, (flag, declared)
    assert not (ROOT / "minigpt" / "cli.py").exists()
    lines = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "minigpt" / "cli").glob("*.py")}
    assert max(lines.values()) <= 250, lines


# ----------------------------------------------------------------------------
# issue 13 / 18 item 15: two tuned lenses, and --lens beside --decoder


def test_eval_two_tuned_lenses_beside_a_decoder(capsys, tmp_path, vocab_checkpoint, model, corpus_file) -> None:
    a, b = lens_dir(model, tmp_path / "a", 1), lens_dir(model, tmp_path / "b", 2)
    js = tmp_path / "eval.json"
    code, out, err = run(capsys, "eval", "--text-file", corpus_file, "-m", vocab_checkpoint, "--window", "16",
                         "--decoder", "norm_only", "--lens", a, "--lens", b, "--json", js)  # fmt: skip
    assert code == 0, err
    metrics = json.loads(js.read_text())["metrics"]
    assert list(metrics) == ["norm_only", str(a), str(b)]  # each lens labelled by the argument given
    assert metrics[str(a)]["kl"] != metrics[str(b)]["kl"]
    tok = minigpt.load_tokenizer(vocab_checkpoint)
    expected = minigpt.evaluate_lens(model, CORPUS[:-1], tokenizer=tok, window=16, decoders={
        "norm_only": "norm_only", str(a): minigpt.TunedLens.load(a, model), str(b): minigpt.TunedLens.load(b, model)})
    assert metrics == json.loads(expected.to_json())["metrics"]
    assert out.splitlines()[0].split()[:2] == ["row", "norm_only"]


def test_a_lens_for_another_model_is_refused_before_the_weights(capsys, tmp_path, vocab_checkpoint, tiny_checkpoint,
                                                               monkeypatch, corpus_file) -> None:  # fmt: skip
    import minigpt.cli

    other = lens_dir(minigpt.GPT.from_pretrained(str(tiny_checkpoint)), tmp_path / "other", 0)
    monkeypatch.setattr(minigpt.cli, "load", lambda *a: pytest.fail("the weights were loaded"))
    code, _, err = run(capsys, "eval", "--text-file", corpus_file, "-m", vocab_checkpoint, "--lens", other)
    assert code == 2 and f"--lens {other}: a tuned lens for a model of" in one_error_line(err)


# ----------------------------------------------------------------------------
# issue 18: messages and options


def test_probe_table_and_figure_speak_of_the_input_token(capsys, tmp_path, vocab_checkpoint, model, corpus_file,
                                                         monkeypatch) -> None:  # fmt: skip
    """Item 16: the probe's table shows ce_input and top1_input. Item 17: titles and outlines come from the decoder."""
    from matplotlib.figure import Figure

    from minigpt.plot import OUTLINE_GID, plot_lens

    probe = lens_dir(model, tmp_path / "probe", 3, "probe")
    code, out, err = run(capsys, "eval", "--text-file", corpus_file, "-m", vocab_checkpoint, "--window", "16", "--lens", probe)
    assert code == 0, err
    head = out.splitlines()[0]
    assert f"{probe} ce_input" in head and f"{probe} top1_input" in head and f"{probe} KL" not in head
    titles: list[str] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: titles.append(self.axes[0].get_title()))
    for lens in (probe, lens_dir(model, tmp_path / "tuned", 4)):
        assert run(capsys, "lens", "The dog ran to the park", "-m", vocab_checkpoint, "--lens", lens, "-o", tmp_path / "x.png")[0] == 0
    assert titles[0].startswith("Input probe:") and titles[1].startswith("Tuned lens:")
    result = minigpt.logit_lens(model, "The dog ran to the park", tokenizer=minigpt.load_tokenizer(vocab_checkpoint),
                                decoder=minigpt.TunedLens.load(probe, model))  # fmt: skip
    outlined = sum(1 for p in plot_lens(result).axes[0].patches if p.get_gid() == OUTLINE_GID)
    assert outlined == int((result.top_ids[:, :, 0] == result.token_ids[None, :]).sum())
    assert outlined != int((result.top_ids[:, :, 0] == result.final_ids[None, :]).sum())


@pytest.mark.parametrize(("argv", "message"), [
    (["lens", "hi", "--dpi", "5", "-o", "x.png"], "--dpi: expected a resolution of at least 20 dpi, got '5'"),
    (["lens", "hi", "--device", "gpu", "-o", "x.png"], "'gpu' is not a device; use cpu, cuda, cuda:N or mps"),
    (["generate", "hi", "--device", "gpu"], "use cpu, cuda, cuda:N or mps"),
    (["lens", "hi", "--layers", "h.1.resid_mid", "-o", "x.png"], "a sub-block row; add --sub-blocks"),
    (["lens", "hi", "--layers", "7", "-o", "x.png"], "--layers 7 is a stride (every 7th block), but the model has 3 blocks"),
])  # fmt: skip
def test_bad_options_name_what_to_do(capsys, tmp_path, vocab_checkpoint, monkeypatch, argv, message) -> None:
    """Items 19 and 20: a checked --dpi, the valid devices, --layers that need --sub-blocks or are strides."""
    import minigpt.cli

    monkeypatch.setattr(minigpt.cli, "load", lambda *a: pytest.fail("the weights were loaded"))
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv, "-m", vocab_checkpoint)
    assert code == 2 and message in one_error_line(err), err


def test_train_messages_name_the_flags(capsys, tmp_path) -> None:
    """Item 18: on the command line, --resume and --save-every; never resume=True or save_every."""
    (tmp_path / "text.txt").write_text("some text\n")
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "text.txt"), "--out", str(out), "--resume"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "every --save-every steps" in line and "without --resume" in line
    (out / "model.safetensors").parent.mkdir()
    (out / "model.safetensors").write_bytes(b"")
    assert main(["train", str(tmp_path / "text.txt"), "--out", str(out)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "continue its run with --resume" in line
    assert "resume=True" not in line and "save_every" not in line


def test_plain_progress_lines_when_piped(capsys) -> None:
    """Item 21: with stderr not a terminal (here, captured), show=True prints plain lines, not a bar."""
    from minigpt.progress import progress_bar

    bar = progress_bar(total=3, desc="train", unit="step", show=True, every_s=0.0)
    for _ in range(3):
        bar.update(1)
        bar.set_postfix_str("loss 1.5")
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("train: 1/3 steps (33%)") and lines[-1].startswith("train: 3/3 steps (100%)")
    assert lines[-1].endswith("loss 1.5") and "\r" not in "".join(lines)
    progress_bar(total=3, desc="quiet", show=None).update(3)  # the library's default: nothing when piped
    assert capsys.readouterr().err == ""


def test_singular_counts_and_generate_text_file(capsys, tmp_path, vocab_checkpoint) -> None:
    """Item 23: '1 token', '1 window', '1 position'. Item 28: generate --text-file reads its prompt from a file."""
    one = tmp_path / "one.txt"
    one.write_text(" the\n", encoding="utf-8")
    code, _, err = run(capsys, "eval", "--text-file", one, "-m", vocab_checkpoint, "--json", tmp_path / "e.json")
    assert code == 0 and "eval: 1 token in 1 window of 1024" in err, err
    code, _, err = run(capsys, "lens", " the", "-m", vocab_checkpoint, "--json", tmp_path / "l.json")
    assert code == 0 and "lens: 1 token, decoding 4 rows x 1 position" in err, err
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("The dog\n", encoding="utf-8")
    by_file = run(capsys, "generate", "--text-file", prompt, "-m", vocab_checkpoint, "-n", "5", "--temperature", "0")
    by_arg = run(capsys, "generate", "The dog", "-m", vocab_checkpoint, "-n", "5", "--temperature", "0")
    assert by_file[0] == 0 and by_file[1] == by_arg[1] and by_file[1].strip()


def test_one_device_rule(capsys) -> None:
    """Item 28: every command that runs a model defaults to cpu, and says so."""
    for command in ("lens", "eval", "generate", "train", "tune"):
        assert main([command, "--help"]) == 0
        assert re.search(r"--device DEVICE\s+cpu, cuda, cuda:N or mps \(default:\s+cpu\)", capsys.readouterr().out), command


def test_the_shipped_model_is_the_default_offline(tmp_path) -> None:
    """Item 5: with gpt2 not in the (empty) Hugging Face cache, a command without --model uses shakespeare."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "minigpt", "generate", "ROMEO:", "-n", "3", "--seed", "0"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no --model given: using shakespeare (gpt2 is not in the Hugging Face cache)" in done.stderr
