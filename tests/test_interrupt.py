"""Ctrl-C in `minigpt train` and `minigpt tune`: the step finishes, the run is saved, and --resume goes on.

Each run is a real process that receives a real SIGINT. To make "during step k" exact, a small
wrapper sends the process SIGINT from inside step k (os.kill on itself), then runs the CLI as usual.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, SHAKESPEARE, require

# Runs `minigpt ARGS...` with SIGINT sent to itself during step KILL_AT (0-based) of train or tune.
WRAPPER = textwrap.dedent(
    """
    import importlib, os, signal, sys
    kill_at, which, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    train_module = importlib.import_module("minigpt.train")  # the module (minigpt.train is the function)
    tune_module = importlib.import_module("minigpt.tuned_train")
    module, name = (train_module, "train_step") if which == "train" else (tune_module, "_fit_step")
    real, calls = getattr(module, name), []

    def step(*a, **k):
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, in the middle of this step
        calls.append(1)
        return real(*a, **k)

    setattr(module, name, step)
    from minigpt.cli import main
    sys.exit(main(args))
    """
)
TRAIN = ["--layers", "1", "--heads", "2", "--embd", "16", "--context", "16", "--batch-size", "2",
         "--steps", "6", "--eval-every", "3", "--save-every", "100", "--device", "cpu"]  # fmt: skip


def run(*args: str, kill_at: int | None = None, which: str = "train") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", WRAPPER, str(kill_at), which, *args] if kill_at is not None else \
              [sys.executable, "-m", "minigpt", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(require(SHAKESPEARE).read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    return path


def test_ctrl_c_in_train_saves_the_step_and_resume_finishes_the_run(tmp_path: Path, text: Path) -> None:
    out = tmp_path / "run"
    done = run("train", str(text), "--out", str(out), *TRAIN, kill_at=2)  # Ctrl-C during step 3 of 6
    assert done.returncode == 130, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"minigpt train: interrupted after step 3 of 6: saved in {out}; continue it with --resume", last
    assert "finishing this step" in done.stderr
    state = json.loads((out.parent / f"{out.name}.train-state" / "state.json").read_text())
    assert state["step"] == 3 and (out / "model.safetensors").is_file()
    assert run("train", str(text), "--out", str(out), "--resume").returncode == 0
    straight = tmp_path / "straight"
    assert run("train", str(text), "--out", str(straight), *TRAIN).returncode == 0
    a, b = load_file(str(out / "model.safetensors")), load_file(str(straight / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), "interrupted and resumed is not the straight run"


def test_ctrl_c_in_train_before_any_save_says_so_and_a_second_one_stops_at_once(tmp_path: Path, text: Path) -> None:
    """Even before the first checkpoint, the first Ctrl-C saves; the message never promises a resume that fails."""
    out = tmp_path / "run"
    done = run("train", str(text), "--out", str(out), *TRAIN, kill_at=0)
    assert done.returncode == 130 and "interrupted after step 1 of 6: saved in" in done.stderr, done.stderr
    assert run("train", str(text), "--out", str(out), "--resume").returncode == 0


def test_ctrl_c_in_tune_saves_and_resume_says_where_it_starts(tmp_path: Path, text: Path, vocab_checkpoint: Path) -> None:
    out = tmp_path / "lens"
    args = ["tune", "--text-file", str(text), "--model", str(vocab_checkpoint), "--out", str(out),
            "--steps", "5", "--tokens-per-step", "64", "--window", "32", "--device", "cpu"]  # fmt: skip
    done = run(*args, kill_at=2, which="tune")  # during step 3 of 5
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"minigpt tune: interrupted after step 3 of 5: saved in {out}; continue it with --resume"
    assert json.loads((out / "train_state.json").read_text())["step"] == 3
    resumed = run(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "tune: resuming at step 3 of 5" in resumed.stderr
    assert json.loads((out / "train_state.json").read_text())["step"] == 5


def test_an_unwritable_output_is_refused_before_the_first_step(tmp_path: Path, text: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, so nothing can be made under it")
    done = run("train", str(text), "--out", str(blocked / "run"), *TRAIN)
    assert done.returncode != 0 and "cannot write the model into" in done.stderr, done.stderr
    assert "step 3/6" not in done.stderr  # no step ran
