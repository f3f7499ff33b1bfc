"""The model shipped inside the package (`shakespeare`): offline with no hub probe, at most 16 MB with the
bundled tokenizer, float16 on disk and float32 in memory, its card's numbers its own, the logit-lens
pattern of the post; and the wheel that carries it, installed into a fresh venv and run with no network.
"""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import minigpt
from minigpt import GPT

from conftest import ROOT, SHAKESPEARE, TOKENIZER_DIR, require

ASSETS = ROOT / "minigpt" / "assets"
SHIPPED = ASSETS / "shakespeare"
DEAD_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens
CONTEXT = 256  # the shipped model's n_positions, and its training windows


def official_keys(n_layer: int) -> set[str]:
    per_block = [f"{m}.{p}" for m in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
                 for p in ("weight", "bias")]  # fmt: skip
    return {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"} | {
        f"h.{i}.{k}" for i in range(n_layer) for k in per_block
    }


def card() -> str:
    return (SHIPPED / "README.md").read_text(encoding="utf-8")


def card_number(pattern: str) -> float:
    match = re.search(pattern, card())
    assert match, pattern
    return float(match.group(1))


@pytest.fixture(scope="module")
def model() -> GPT:
    return GPT.from_pretrained("shakespeare")


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    """The shipped run's splits, cut here by the pinned rule: the last 10% of the tokens held out."""
    tok = minigpt.load_tokenizer(require(TOKENIZER_DIR))
    ids = np.array(tok.encode_ordinary(require(SHAKESPEARE).read_text(encoding="utf-8")))
    n_val = int(len(ids) * 0.1)
    val = ids[-n_val:]
    n = (len(val) - 1) // CONTEXT
    return ids[:-n_val], np.stack([val[i * CONTEXT : i * CONTEXT + CONTEXT + 1] for i in range(n)])


# ----------------------------------------------------------------------------
# The files


def test_files_size_and_dtype() -> None:
    assert sorted(p.name for p in SHIPPED.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    package_bytes = sum(p.stat().st_size for p in SHIPPED.iterdir()) + (ASSETS / "gpt2.tiktoken").stat().st_size
    print(f"shipped model + bundled tokenizer: {package_bytes / 1e6:.2f} MB")
    assert package_bytes <= 16e6
    with safe_open(str(SHIPPED / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert set(f.keys()) == official_keys(4)
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        assert tuple(f.get_slice("wte.weight").get_shape()) == (50257, 128)  # the full GPT-2 vocabulary
    config = json.loads((SHIPPED / "config.json").read_text())
    assert config["n_positions"] == CONTEXT >= 256


def test_float32_in_memory(model: GPT) -> None:
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd) == (4, 4, 128)
    with safe_open(str(SHIPPED / "model.safetensors"), framework="pt") as f:
        wte = f.get_tensor("wte.weight")
    assert torch.equal(model.wte.weight, wte.float())  # an exact upcast


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys, time
    attempts = []
    def record(kind):
        def refuse(*args, **kwargs):
            attempts.append([kind, repr(args[:2])])
            raise OSError("no network in this test")
        return refuse
    socket.create_connection = record("connect")
    socket.getaddrinfo = record("dns")
    start = time.perf_counter()
    import minigpt
    imported = time.perf_counter()
    model = minigpt.GPT.from_pretrained("shakespeare")
    tok = minigpt.load_tokenizer("shakespeare")
    done = time.perf_counter()
    shakespeare_attempts = list(attempts)
    gpt2_tok = minigpt.load_tokenizer("gpt2")  # no hub: the bundled ranks, not tiktoken's download
    print(json.dumps({"attempts": shakespeare_attempts, "gpt2_attempts": attempts[len(shakespeare_attempts):],
                      "dtype": str(model.dtype), "ids": tok.encode("Hello world"),
                      "gpt2": gpt2_tok.encode("Hello world"), "load_s": round(done - imported, 2),
                      "import_s": round(imported - start, 2)}))
    """
)


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "endpoint-closed"])
def test_loads_offline_without_asking_the_hub(tmp_path: Path, offline: bool) -> None:
    """No connection is even tried: the preset is package data, not a hub name (run in a fresh interpreter,
    since huggingface_hub reads the environment at import)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TIKTOKEN"))}
    env.update(HF_ENDPOINT=DEAD_ENDPOINT, HF_HOME=str(tmp_path / "hf"), TIKTOKEN_CACHE_DIR=str(tmp_path / "tt"))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    run = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"shakespeare offline={offline}: import {result['import_s']} s, load model + tokenizers {result['load_s']} s")
    assert result["attempts"] == []
    assert result["dtype"] == "torch.float32"
    assert result["ids"] == result["gpt2"] == [15496, 995]
    if offline:  # "gpt2" may ask the hub for its own vocab.json unless told not to; then it never tries
        assert result["gpt2_attempts"] == []


# ----------------------------------------------------------------------------
# The card's numbers are this model's


@pytest.mark.slow
def test_val_loss_and_baseline_are_the_cards(model: GPT, held_out) -> None:
    train_ids, windows = held_out
    counts = np.bincount(train_ids, minlength=50257) + 1.0
    unigram = -np.log(counts / counts.sum())[windows[:, 1:]].mean()
    ids = torch.from_numpy(windows)
    with torch.no_grad():
        total = sum(
            torch.nn.functional.cross_entropy(model(b[:, :-1]).logits.flatten(0, 1), b[:, 1:].flatten(), reduction="sum")
            for b in ids.split(16)
        ).item()
    val = total / ids[:, 1:].numel()
    print(f"shipped model: val loss {val:.4f} nats, unigram baseline {unigram:.4f}")
    # The card reports the loss of the float16 weights it ships (to 3 decimals).
    assert val == pytest.approx(card_number(r"\*\*([\d.]+) nats per token\*\*"), abs=6e-4)
    assert unigram == pytest.approx(card_number(r"against\s+\*\*([\d.]+)\*\*"), abs=5e-4)
    assert val < unigram - 1.0


def test_lens_shows_the_posts_pattern(model: GPT, held_out) -> None:
    """On held-out text: KL(final ‖ row) jumps after `embed`, then falls smoothly to 0; the rows agree
    more and more with the final top-1. Margins: see the numbers printed and in the card."""
    _, windows = held_out
    results = [minigpt.logit_lens(model, torch.from_numpy(w[:-1]), k=1) for w in windows[-4:]]
    kl = np.concatenate([r.kl_final for r in results], axis=1).mean(axis=1)  # (R,)
    agree = np.concatenate([r.rank_final == 1 for r in results], axis=1).mean(axis=1)  # (R,)
    print("labels", results[0].labels, "KL(final||row) nats", kl.round(3), "top-1 agreement", agree.round(3))
    assert results[0].labels == ["embed", "h.0", "h.1", "h.2", "h.3"]
    drops = kl[:-1] - kl[1:]
    assert kl[0] > 4.0 and kl[0] > 4 * kl[1], kl  # the jump after embed
    assert drops[0] > 5 * drops[1:].max(), kl
    assert np.all(drops > 0), kl  # then a smooth fall
    assert kl[-1] == pytest.approx(0, abs=1e-5)
    assert np.all(np.diff(agree) > 0) and agree[-1] == 1.0, agree
    # The card shows these numbers (the same windows, the same weights; 3 decimals).
    table = dict(re.findall(r"\| `(embed|h\.\d)` \| ([\d.]+) \|", card()))
    assert [float(table[label]) for label in results[0].labels] == pytest.approx(kl, abs=6e-4)


def test_card_says_how_to_reproduce_it() -> None:
    text = card()
    assert "minigpt train ../shared/data/tinyshakespeare/input.txt --out weights/shakespeare" in text
    assert "--save-dtype float16" in text and "--device cpu" in text and "--seed 0" in text
    assert "public domain" in text and "The weights: MIT" in text
    assert "benchmarks/reproduce_shakespeare.py" in text


# ----------------------------------------------------------------------------
# The wheel: what `pip install .` (not editable) really ships


@pytest.mark.slow
def test_wheel_installs_and_runs_offline(tmp_path: Path) -> None:
    """Build the wheel, install it (no deps) into a fresh venv that sees this environment's packages,
    and run the main job from a folder outside the repo with no network."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("minigpt_lens-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    for name in ("gpt2.tiktoken", "shakespeare/model.safetensors", "shakespeare/config.json", "shakespeare/README.md"):
        assert f"minigpt/assets/{name}" in names, name

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    venv_site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # This environment's packages (torch, ...), but not the repo (PYTHONPATH) nor an editable install:
    # a .pth line is a plain path, so the .pth files inside it (an editable finder) are not run.
    (venv_site / "parent-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TIKTOKEN", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", HF_ENDPOINT=DEAD_ENDPOINT, HF_HOME=str(tmp_path / "hf"),
               TIKTOKEN_CACHE_DIR=str(tmp_path / "tt"), MPLBACKEND="Agg")  # fmt: skip
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                             capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import minigpt; print(minigpt.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    lens = subprocess.run(
        [str(venv / "bin" / "minigpt"), "lens", "To be, or not to be, that is the question", "--model", "shakespeare",
         "-o", "out.png"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert lens.returncode == 0, lens.stderr[-3000:]
    assert (elsewhere / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
