"""minigpt train: a short run on tinyshakespeare beats the unigram baseline; its checkpoint is the official
layout and loads in minigpt, the lens CLI and transformers with the same logits; a resumed run equals a
straight one; bad settings and bad text fail with one line that says what to do.

The shipped model (`shakespeare`) and the wheel that carries it are tested in test_shipped.py.
"""

from __future__ import annotations

import importlib
import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import minigpt
from minigpt import GPT, InputError, TrainError
from minigpt.cli import build_parser, main

from conftest import SHAKESPEARE, TOKENIZER_DIR, require

train_module = importlib.import_module("minigpt.train")  # `minigpt.train` itself is the function

# The pinned check: the defaults (lr, batch, schedule) beat the unigram baseline after 150 steps
# of a 2-block, 64-wide model with context 64.
SMALL = dict(n_layer=2, n_head=2, n_embd=64, context=64, steps=150)
# For the resume and error tests: as small as a model with GPT-2's vocabulary gets.
TINY = dict(n_layer=1, n_head=2, n_embd=16, context=16, batch_size=2)


def official_keys(n_layer: int) -> set[str]:
    """The tensor names of an official GPT-2 file without its mask buffers (design.md)."""
    per_block = [f"{m}.{p}" for m in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
                 for p in ("weight", "bias")]  # fmt: skip
    return {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"} | {
        f"h.{i}.{k}" for i in range(n_layer) for k in per_block
    }


@pytest.fixture(scope="module")
def text() -> str:
    return require(SHAKESPEARE).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def short_text(text: str) -> str:
    return text[:20_000]  # about 6k tokens


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> minigpt.TrainResult:
    out = tmp_path_factory.mktemp("train") / "small"
    return minigpt.train(require(SHAKESPEARE), out, **SMALL, eval_every=75, progress=False)


@pytest.fixture(scope="module")
def held_out(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The training split and the held-out windows (N, 65), computed here from the pinned rule:
    GPT-2 BPE of the whole text, the last 10% of the tokens held out, windows of context + 1."""
    tok = minigpt.load_tokenizer(require(TOKENIZER_DIR))
    ids = np.array(tok.encode_ordinary(text))
    n_val = int(len(ids) * 0.1)
    train_ids, val = ids[:-n_val], ids[-n_val:]
    n = (len(val) - 1) // 64
    windows = np.stack([val[i * 64 : i * 64 + 65] for i in range(n)])
    return train_ids, windows


# ----------------------------------------------------------------------------
# A short run: better than the unigram baseline, files in the official layout


def test_defaults_beat_the_unigram_baseline(trained: minigpt.TrainResult) -> None:
    # Measured (seed 0): val 6.18 nats, unigram 7.34; an untrained model is at about log(50257) = 10.8.
    print(trained, [(e.step, round(e.val_loss, 3)) for e in trained.history])
    assert trained.step == 150 and [e.step for e in trained.history] == [75, 150]
    assert trained.val_loss < trained.unigram_loss - 0.1, (trained.val_loss, trained.unigram_loss)
    assert trained.history[-1].val_loss < trained.history[0].val_loss


def test_reported_losses_match_an_independent_computation(trained, held_out) -> None:
    """The val loss (recomputed with transformers on windows cut here) and the unigram baseline
    (counted here with numpy) are what the result claims."""
    transformers = pytest.importorskip("transformers")
    train_ids, windows = held_out
    counts = np.bincount(train_ids, minlength=50257) + 1.0
    unigram = -np.log(counts / counts.sum())[windows[:, 1:]].mean()
    assert trained.unigram_loss == pytest.approx(unigram, abs=1e-9)

    hf = transformers.GPT2LMHeadModel.from_pretrained(trained.out_dir).eval()
    ids = torch.from_numpy(windows)
    with torch.no_grad():
        logits = torch.cat([hf(batch[:, :-1]).logits for batch in ids.split(64)])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).item()
    assert trained.val_loss == pytest.approx(loss, abs=1e-4)


def test_checkpoint_is_the_official_layout(trained: minigpt.TrainResult, tokenizer_dir: Path) -> None:
    out = trained.out_dir
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "merges.txt", "model.safetensors",
                                                     "vocab.json"]  # fmt: skip
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert set(f.keys()) == official_keys(2)  # no mask buffers, no prefix, no lm_head
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
        assert tuple(f.get_slice("wpe.weight").get_shape()) == (64, 64)
    config = json.loads((out / "config.json").read_text())
    assert (config["n_positions"], config["n_layer"], config["n_head"], config["n_embd"]) == (64, 2, 2, 64)
    assert config["vocab_size"] == 50257 and config["model_type"] == "gpt2"
    # The tokenizer, written from the bundled ranks: byte-identical to OpenAI's files.
    assert (out / "vocab.json").read_bytes() == (tokenizer_dir / "encoder.json").read_bytes()
    assert (out / "merges.txt").read_bytes() == (tokenizer_dir / "vocab.bpe").read_bytes()
    # The resumable state lives beside the checkpoint, not in it.
    state = out.with_name(out.name + ".train-state")
    assert sorted(p.name for p in state.iterdir()) == ["state.json", "state.safetensors"]


def test_loads_in_minigpt_and_transformers_with_equal_logits(trained: minigpt.TrainResult) -> None:
    transformers = pytest.importorskip("transformers")
    ours = GPT.from_pretrained(trained.out_dir)
    hf = transformers.GPT2LMHeadModel.from_pretrained(trained.out_dir).eval()
    ids = torch.tensor([minigpt.load_tokenizer(trained.out_dir).encode("ROMEO:\nWhat light through yonder window")])
    with torch.no_grad():
        ours_logits, hf_logits = ours(ids).logits, hf(ids).logits
    diff = (ours_logits - hf_logits).abs().max().item()
    print(f"minigpt vs transformers on the trained checkpoint: max |diff| {diff:.2e}")
    assert diff <= 1e-4
    assert ours.config.n_positions == 64


def test_lens_cli_reads_the_checkpoint(trained: minigpt.TrainResult, tmp_path: Path, capsys) -> None:
    png = tmp_path / "lens.png"
    assert main(["lens", "To be, or not to be", "--model", str(trained.out_dir), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_card(trained: minigpt.TrainResult) -> None:
    card = (trained.out_dir / "README.md").read_text(encoding="utf-8")
    assert f"**{trained.val_loss:.3f} nats per token**" in card
    assert f"**{trained.unigram_loss:.3f}**" in card
    assert "weight decay 0.1" in card and "warm-up over the first 15 steps" in card
    assert "The weights: MIT" in card and "Samples" in card
    assert trained.settings.save_dtype == "float32" and "upcasts" not in card  # float32 is stored as trained
    # The reproduce command, read back by the CLI's own parser, gives this run's settings.
    command = card.split("## Reproduce\n```\n", 1)[1].split("\n```", 1)[0]
    argv = shlex.split(command)
    assert argv[:2] == ["minigpt", "train"]
    args = build_parser().parse_args(argv[1:])
    assert Path(args.text_file) == SHAKESPEARE and args.out == trained.out_dir
    for name, value in vars(trained.settings).items():
        assert getattr(args, name) == value, name
    # The lens summary: one row per layer, the last row is the model's own output.
    lens = trained.lens
    assert lens["labels"] == ["embed", "h.0", "h.1"]
    assert lens["kl_final"][-1] == pytest.approx(0, abs=1e-5) and lens["top1_agreement"][-1] == 1.0


# ----------------------------------------------------------------------------
# Resume: k steps, an interruption, then a resume to N equal N steps straight


def interrupt_after(monkeypatch: pytest.MonkeyPatch, steps: int) -> None:
    """Make the run raise KeyboardInterrupt (as Ctrl-C would) once `steps` steps are done."""
    real, done = train_module.train_step, []

    def step(*args, **kwargs):
        if len(done) == steps:
            raise KeyboardInterrupt
        done.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step)


def state_of(out: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    state = out.with_name(out.name + ".train-state")
    with safe_open(str(state / "state.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return json.loads((state / "state.json").read_text()), tensors


def test_resume_continues_the_same_run(tmp_path: Path, short_text: str, monkeypatch) -> None:
    settings = dict(TINY, steps=8, save_every=3, eval_every=4)
    straight = minigpt.train(short_text, tmp_path / "straight", **settings, progress=False)

    with monkeypatch.context() as m:
        interrupt_after(m, 5)  # saved at step 3, interrupted during step 6
        with pytest.raises(KeyboardInterrupt):
            minigpt.train(short_text, tmp_path / "resumed", **settings, progress=False)
    meta, _ = state_of(tmp_path / "resumed")
    assert meta["step"] == 3 and len(meta["losses"]) == 3 and meta["adam_step"] == 3
    resumed = minigpt.train(short_text, tmp_path / "resumed", **settings, resume=True, progress=False)

    assert resumed.step == straight.step == 8
    assert resumed.val_loss == straight.val_loss
    meta_a, tensors_a = state_of(tmp_path / "straight")
    meta_b, tensors_b = state_of(tmp_path / "resumed")
    assert meta_a["losses"] == meta_b["losses"]  # every step's loss, the same floats
    assert tensors_a.keys() == tensors_b.keys()
    for k in tensors_a:  # model, AdamW moments and the data generator's state: bit for bit
        assert torch.equal(tensors_a[k], tensors_b[k]), k
    a = (tmp_path / "straight" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "resumed" / "model.safetensors").read_bytes()


def test_resume_refuses_other_settings_or_text(tmp_path: Path, short_text: str) -> None:
    settings = dict(TINY, steps=2)
    minigpt.train(short_text, tmp_path / "run", **settings, progress=False)
    with pytest.raises(TrainError, match=r"settings differ: n_embd 16 \(now 32\).*start a new run"):
        minigpt.train(short_text, tmp_path / "run", **dict(settings, n_embd=32), resume=True, progress=False)
    with pytest.raises(TrainError, match=r"this text differs from the one it trained on"):
        minigpt.train(short_text + "\nMore.", tmp_path / "run", **settings, resume=True, progress=False)
    with pytest.raises(TrainError, match=r"already holds a model.*--resume"):
        minigpt.train(short_text, tmp_path / "run", **settings, progress=False)


def test_train_does_not_touch_the_callers_rng(tmp_path: Path, short_text: str) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    minigpt.train(short_text, tmp_path / "run", **dict(TINY, steps=1), progress=False)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_uses_bf16_autocast_and_saves_float32(tmp_path: Path, short_text: str) -> None:
    result = minigpt.train(short_text, tmp_path / "gpu", **dict(TINY, steps=20), device="cuda", progress=False)
    assert result.history[-1].val_loss < result.history[0].val_loss + 1e-3 < math.log(50257)
    with safe_open(str(tmp_path / "gpu" / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    assert "cuda, bf16 autocast" in (tmp_path / "gpu" / "README.md").read_text(encoding="utf-8")
    assert torch.isfinite(GPT.from_pretrained(tmp_path / "gpu")(torch.tensor([[1, 2, 3]])).logits).all()


# ----------------------------------------------------------------------------
# Bad settings and bad text: a minigpt error that says what to do, before any work


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(steps=0), r"steps must be a positive integer, got 0"),
        (dict(n_head=5), r"n_head 5 does not divide n_embd 128.*try n_head 4 or 8"),
        (dict(save_dtype="int8"), r"save_dtype must be one of float32, float16, bfloat16, got 'int8'"),
        (dict(lr=0.0), r"lr must be a positive number"),
        (dict(lr=float("nan")), r"lr must be a positive number"),
        (dict(val_fraction=1.0), r"val_fraction is the share of the tokens held out, between 0 and 1"),
        (dict(batch_size=2.5), r"batch_size must be a positive integer"),
        (dict(device="tpu9"), r"unknown device 'tpu9'"),
    ],
)
def test_bad_settings(tmp_path: Path, short_text: str, settings: dict, message: str) -> None:
    with pytest.raises(TrainError, match=message):
        minigpt.train(short_text, tmp_path / "run", **settings, progress=False)
    assert not (tmp_path / "run").exists()


def test_bad_text(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no text file .*missing\.txt: check the path"):
        minigpt.train(tmp_path / "missing.txt", tmp_path / "run")
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(InputError, match=r"the text is empty"):
        minigpt.train(tmp_path / "empty.txt", tmp_path / "run")
    (tmp_path / "short.txt").write_text("To be, or not to be: that is the question.\n" * 20)
    with pytest.raises(InputError, match=r"only 280 tokens.*at least 2570 tokens\) or a smaller context"):
        minigpt.train(tmp_path / "short.txt", tmp_path / "run")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"not UTF-8 text.*convert it to UTF-8"):
        minigpt.train(tmp_path / "latin1.txt", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_without_a_run(tmp_path: Path, short_text: str) -> None:
    with pytest.raises(TrainError, match=r"nothing to resume: .*run\.train-state holds no training state"):
        minigpt.train(short_text, tmp_path / "run", resume=True)


def test_learning_rate_schedule() -> None:
    s = minigpt.TrainSettings(steps=100, lr=1e-3)
    lrs = [train_module.learning_rate(i, s) for i in range(100)]
    assert s.warmup_steps == 10
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # linear warm-up to the peak
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # then a decay
    assert lrs[-1] == pytest.approx(1e-4)  # to lr / 10 at the last step
    assert lrs[54] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 44 / 89)))  # 44 of the 89 decay steps


# ----------------------------------------------------------------------------
# The command


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_cli_trains_and_resumes(tmp_path: Path, short_text: str, capsys) -> None:
    (tmp_path / "text.txt").write_text(short_text, encoding="utf-8")
    flags = ["--layers", "1", "--heads", "2", "--embd", "16", "--context", "16", "--batch-size", "2",
             "--steps", "4", "--eval-every", "2", "--save-dtype", "float16"]  # fmt: skip
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "text.txt"), "--out", str(out), *flags]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "step 2/4: train loss" in captured.err and "unigram baseline" in captured.err
    # issue 18, item 22: the train loss is the mean over the last interval, and says so
    assert "(mean of steps 1-2)" in captured.err and "step 4/4: train loss" in captured.err and "(mean of steps 3-4)" in captured.err
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert GPT.from_pretrained(out).dtype == torch.float32
    # --resume with no other flag takes the saved run's settings; a complete run has nothing left to do.
    assert main(["train", str(tmp_path / "text.txt"), "--out", str(out), "--resume"]) == 0
    assert "after 4 steps" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "text.txt"), "--out", str(out), "--resume", "--embd", "32"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--resume continues the run" in line and "--embd 32 (the run has 16)" in line


@pytest.mark.parametrize(
    "flags, code, message",
    [
        (["--steps", "0"], 2, "--steps must be a positive integer, got 0"),
        (["--heads", "5"], 2, "--heads 5 does not divide --embd 128 (each head gets n_embd / n_head dimensions); "
                              "try --heads 4 or 8"),
        (["--save-dtype", "int8"], 2, "argument --save-dtype: invalid choice: 'int8'"),
        (["--lr", "-1"], 2, "--lr must be a positive number such as 3e-3"),
        (["--val-fraction", "0"], 2, "--val-fraction is the share of the tokens held out"),
        (["--layers", "two"], 2, "argument --layers: invalid int value: 'two'"),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "nope"], None, "--device"),
        (["--resume"], 1, "nothing to resume"),
    ],
)
def test_cli_bad_options(tmp_path: Path, capsys, flags: list[str], code: int | None, message: str) -> None:
    (tmp_path / "text.txt").write_text("some text\n")
    out = tmp_path / "run"
    rc = main(["train", str(tmp_path / "text.txt"), "--out", str(out), *flags])
    line = one_error_line(capsys.readouterr().err)
    assert message in line, line
    assert rc == code if code is not None else rc in (1, 2)
    assert not out.exists()  # nothing was started


def test_cli_bad_text(tmp_path: Path, capsys) -> None:
    assert main(["train", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "run")]) == 1
    assert "no text file" in one_error_line(capsys.readouterr().err)
    (tmp_path / "empty.txt").write_text("")
    assert main(["train", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "run")]) == 1
    assert "the text is empty" in one_error_line(capsys.readouterr().err)
    (tmp_path / "short.txt").write_text("Too short to train on.\n")
    assert main(["train", str(tmp_path / "short.txt"), "--out", str(tmp_path / "run")]) == 1
    assert "give a longer text" in one_error_line(capsys.readouterr().err)


def test_cli_help_says_layers_differs_from_lens(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "not the same as lens --layers" in help_text
    assert "weight decay 0.1" in help_text and "first 10% of the steps" in help_text
