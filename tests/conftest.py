"""Shared fixtures: tiny random checkpoints in the official layout, and the shared data folder.

Tests that need `../shared/data` skip when it is absent (a user's machine), but fail when
the `CI` environment variable is set, so that CI cannot pass by skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
