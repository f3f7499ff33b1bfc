"""Shared fixtures: tiny random checkpoints in the official layout, the shared data folder, and the
suite's trained models: the shipped `shakespeare` model, and one small model that `minigpt.train`
trains once per session (for the tests that need a training run's own output).

Tests that need `../shared/data` skip when it is absent (a user's machine), but fail when
the `CI` environment variable is set, so that CI cannot pass by skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import minigpt
from minigpt import GPTConfig
from minigpt.testing import random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TOKENIZER_DIR = SHARED / "data" / "gpt2-tokenizer"
SHAKESPEARE = SHARED / "data" / "tinyshakespeare" / "input.txt"
EXAMPLE_TEXTS = SHARED / "seed" / "example-texts.md"

# Odd, distinct sizes, so that a transposed or mis-split tensor cannot pass by coincidence.
TINY = GPTConfig(vocab_size=37, n_positions=16, n_embd=12, n_head=3, n_layer=2)
# The real GPT-2 vocabulary, so that real text tokenizes; everything else small.
SMALL_VOCAB = GPTConfig(vocab_size=50257, n_positions=1024, n_embd=32, n_head=2, n_layer=3)


def require(path: Path) -> Path:
    """Skip when shared data is missing, unless running in CI, where that is a failure."""
    if not path.exists():
        message = f"shared data {path} is missing"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must have ../shared beside the clone)")
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return require(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint in the official layout (no prefix, mask buffers), vocab 37."""
    return random_checkpoint(tmp_path_factory.mktemp("tiny"), TINY, seed=1)


@pytest.fixture(scope="session")
def vocab_checkpoint(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A small random checkpoint in the official layout with GPT-2's real vocabulary and tokenizer files."""
    return random_checkpoint(tmp_path_factory.mktemp("vocab"), SMALL_VOCAB, seed=2, tokenizer_dir=tokenizer_dir)


# ----------------------------------------------------------------------------
# Trained models

# The suite's one training run: minigpt.train with its default lr, batch size and schedule, on the
# first 300,000 characters of tinyshakespeare (about 90k tokens, the last 10% held out), 150 steps
# of a 3-block, 64-wide model with context 64. Measured numbers are in test_train.py.
TRAINED_CHARS = 300_000
TRAINED = dict(n_layer=3, n_head=4, n_embd=64, context=64, steps=150, eval_every=75)


@pytest.fixture(scope="session")
def trained_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slice of tinyshakespeare the session's model trains on, as a file (the model card names it)."""
    path = tmp_path_factory.mktemp("trained-text") / "shakespeare-300k.txt"
    path.write_text(require(SHAKESPEARE).read_text(encoding="utf-8")[:TRAINED_CHARS], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, trained_text: Path) -> minigpt.TrainResult:
    """The session's training run (a few CPU minutes; tests that use it are marked slow). Read-only."""
    out = tmp_path_factory.mktemp("trained") / "small"
    return minigpt.train(trained_text, out, **TRAINED, progress=False)


@pytest.fixture(scope="session")
def shipped() -> minigpt.GPT:
    """The shipped `shakespeare` model (4 blocks, 128 wide, context 256; the last 10% of
    tinyshakespeare's tokens held out): a trained model that loads offline in under a second."""
    return minigpt.GPT.from_pretrained("shakespeare").eval()
