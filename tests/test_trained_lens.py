"""The logit lens on a trained GPT-2: the shipped `shakespeare` model, on tinyshakespeare's held-out tail.

The rest of the suite checks that the lens computes the right numbers on random weights.
This file checks that those numbers show, on a real (if small) trained model, the pattern the
logit-lens post describes for gpt2-xl:

- KL(final ‖ row) makes one big jump after `embed`, then falls smoothly to 0 at the last block;
- the model's final top-1 climbs in rank with depth, and so does top-1 accuracy on the true next token;
- the jump away from the input, KL(input ‖ h.0), is smaller than the jump towards the output,
  KL(final ‖ embed) (the post's addendum).

The model (4 blocks, 128 wide, GPT-2's vocabulary) was trained with `minigpt train` on the first 90%
of the corpus' tokens; the lens reads the held-out last 10%, which training never saw. A first test
checks that the model beats the unigram baseline there, so the lens tests are about a real model.
Margins: numbers in the test bodies, measured on the shipped model, and on an untrained model of the
same shape (`GPT(config)`, seed 0), which fails every test below up to the figure's.

    python tests/test_trained_lens.py     # the per-row numbers, shipped and untrained
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest, when run as a script

import minigpt  # noqa: E402
from minigpt import GPT  # noqa: E402

from conftest import SHAKESPEARE, require  # noqa: E402

CONTEXT = 64  # the lens's windows (the model's context is 256)
N_LAYER = 4
LENS_WINDOWS = 4  # the last 4 windows of the corpus, 256 positions in all
VAL_WINDOWS = 32
VAL_FRACTION = 0.1  # the shipped model's held-out share (its card)


@dataclass
class Trained:
    model: GPT
    val_loss: float
    unigram_loss: float
    lens: dict[str, np.ndarray]  # the lens's fields, positions of all windows side by side
    labels: list[str]
    plot_result: minigpt.LensResult  # one window's result, for the figure
    held_out: torch.Tensor  # the held-out tenth of the corpus (GPT-2 ids)


def corpus() -> torch.Tensor:
    """tinyshakespeare as GPT-2 tokens."""
    tok = minigpt.load_tokenizer("shakespeare")
    return torch.tensor(tok.encode_ordinary(require(SHAKESPEARE).read_text(encoding="utf-8")))


def measure(model: GPT) -> Trained:
    ids = corpus()
    V = model.config.vocab_size
    n_val = int(len(ids) * VAL_FRACTION)
    train_ids, val_ids = ids[:-n_val], ids[-n_val:]

    # Validation: the first VAL_WINDOWS non-overlapping windows of the held-out tenth.
    val = val_ids[: VAL_WINDOWS * (CONTEXT + 1)].view(VAL_WINDOWS, CONTEXT + 1)
    with torch.no_grad():
        logits = model(val[:, :-1]).logits
    val_loss = F.cross_entropy(logits.reshape(-1, V), val[:, 1:].reshape(-1)).item()
    # Baseline: the training split's unigram frequencies (add-one smoothed), on the same targets.
    counts = torch.bincount(train_ids, minlength=V).double() + 1
    unigram_loss = -(counts / counts.sum()).log()[val[:, 1:]].mean().item()

    # The lens on the very end of the corpus, which training never saw.
    tail = ids[-LENS_WINDOWS * CONTEXT :].view(LENS_WINDOWS, CONTEXT)
    with torch.no_grad():
        results = [minigpt.logit_lens(model, window) for window in tail]
    fields = ("kl_final", "kl_input", "rank_final", "top_ids", "next_ids")
    lens = {f: np.concatenate([getattr(r, f) for r in results], axis=0 if f == "next_ids" else 1) for f in fields}
    return Trained(model, val_loss, unigram_loss, lens, results[0].labels, results[0], val_ids)


def summary(t: Trained) -> dict[str, np.ndarray]:
    """Per-row statistics over all lens positions (the last position of each window has no next token)."""
    has_next = t.lens["next_ids"] >= 0
    return {
        "kl_final": t.lens["kl_final"].mean(axis=1),
        "kl_final_median": np.median(t.lens["kl_final"], axis=1),
        "kl_input": t.lens["kl_input"].mean(axis=1),
        "rank_final": np.median(t.lens["rank_final"], axis=1),
        "top1_acc": (t.lens["top_ids"][:, has_next, 0] == t.lens["next_ids"][has_next]).mean(axis=1),
    }


@pytest.fixture(scope="module")
def trained(shipped: GPT) -> Trained:
    return measure(shipped)


@pytest.fixture(scope="module")
def stats(trained: Trained) -> dict[str, np.ndarray]:
    return summary(trained)


# Margins: the shipped model gives val 5.03 nats (unigram 6.39, log V 10.82); untrained, 10.84.
# The lens numbers are in each test.


def test_training_worked(trained: Trained) -> None:
    V = trained.model.config.vocab_size
    assert trained.val_loss < math.log(V) - 3.0, (trained.val_loss, math.log(V))
    assert trained.val_loss < trained.unigram_loss - 0.75, (trained.val_loss, trained.unigram_loss)


def test_rows_are_embed_then_blocks(trained: Trained) -> None:
    assert trained.labels == ["embed"] + [f"h.{l}" for l in range(N_LAYER)]


def test_kl_big_jump_after_embed(stats: dict[str, np.ndarray]) -> None:
    # Shipped: KL(final || embed) 8.06 nats, 8.6x KL(final || h.0); the embed -> h.0 drop is 12x
    # any later one. Untrained: 0.04 nats, 1.5x and 1.2x.
    kl = stats["kl_final"]
    drops = kl[:-1] - kl[1:]  # drops[0]: embed -> h.0
    assert kl[0] > 4.0, kl
    assert kl[0] > 4 * kl[1], kl
    assert drops[0] > 5 * drops[1:].max(), kl


def test_kl_converges_smoothly_to_zero(stats: dict[str, np.ndarray]) -> None:
    # Shipped: strictly decreasing, 8.06, 0.94, 0.35, 0.04, 0. The first check rules out
    # a near-uniform (untrained) model, whose rows are all close to each other anyway.
    kl = stats["kl_final"]
    assert kl[0] > 4.0, kl
    assert np.all(kl[1:] <= kl[:-1] * 1.02 + 1e-3), kl
    assert abs(kl[-1]) < 1e-4, kl  # the last row is the final distribution itself


def test_rank_of_final_top1_improves_with_depth(stats: dict[str, np.ndarray]) -> None:
    # Median rank, shipped: embed 21.5, h.0 4, then 1. Untrained: 8810, 1060, 98, 10, 1.
    # (A 4-block model trained by hand for an earlier version of this file reached 1-2 at h.0.)
    rank = stats["rank_final"]
    assert rank[0] >= 10, rank
    assert rank[1] <= 5, rank
    assert np.all(np.diff(rank) <= 0), rank
    assert rank[-1] == 1, rank


def test_jump_from_input_smaller_than_jump_to_output(stats: dict[str, np.ndarray]) -> None:
    # The post's addendum. Shipped: KL(input || h.0) 5.55 nats, 0.69 of KL(final || embed).
    # Untrained: 0.03 nats, no jump at all.
    jump_from_input, jump_to_output = stats["kl_input"][1], stats["kl_final"][0]
    assert 1.0 < jump_from_input < jump_to_output, (stats["kl_input"], stats["kl_final"])


def test_top1_accuracy_improves_with_depth(stats: dict[str, np.ndarray]) -> None:
    # Shipped: 0.036, 0.115, 0.167, 0.171, 0.163 (two positions lost at the last row).
    # Untrained: 0.02 falling to 0.
    acc = stats["top1_acc"]
    assert acc[-1] > 2 * acc[0] and acc[-1] > acc[0] + 0.05, acc
    assert np.all(acc[1:] >= acc[:-1] - 0.02), acc


@pytest.mark.slow  # evaluate_lens over 4096 positions, three decoders, GPT-2's vocabulary
def test_corpus_kl_falls_monotonically_with_depth(trained: Trained) -> None:
    """evaluate_lens over 64 held-out windows: KL(final ‖ row) in bits per token falls at every
    block and is exactly 0 at the last row; the other decoders tell the same story, less well.
    Shipped (bits): logit 11.9, 1.4, 0.51, 0.05, 0; norm_only 11.4, 1.9, 0.74, 0.20, 0.22;
    last_blocks (k = 1) 4.5, 0.85, 0.17, 0, 0.
    Untrained, the first check fails: KL(final ‖ embed) is 0.06 bits."""
    corpus = trained.held_out[-64 * CONTEXT :]
    result = minigpt.evaluate_lens(trained.model, corpus, window=CONTEXT, decoders=["logit", "norm_only", "last_blocks"])
    assert result.n_tokens == 64 * CONTEXT and result.n_windows == 64
    kl = result.metric("kl")
    assert kl[0] > 4.0 / math.log(2), kl
    assert np.all(np.diff(kl) < 0), kl  # strictly falling, row by row
    assert kl[-1] == 0, kl  # the top row is the model's output, bit for bit
    assert result.metric("kl", "last_blocks")[-1] == 0  # so is last_blocks' top row
    assert np.all(result.metric("kl", "last_blocks")[:-1] < kl[:-1])  # running a block brings a row closer
    top1 = result.metric("top1_agreement")
    assert top1[-1] == 1 and top1[0] < 0.5, top1
    hist = result.metric("depth_hist")
    assert hist.sum() == result.n_tokens and hist[-1] == 0  # under the model's decoder the top row always agrees


def test_kl_figure_has_a_row_per_layer(trained: Trained, tmp_path) -> None:
    from minigpt.plot import plot_lens

    fig = plot_lens(trained.plot_result, "kl")
    ax = next(a for a in fig.axes if a.get_gid() == "lens")
    assert [t.get_text() for t in ax.get_yticklabels()] == trained.labels
    fig.savefig(tmp_path / "kl.png")
    assert (tmp_path / "kl.png").stat().st_size > 0


def main() -> None:
    shipped = GPT.from_pretrained("shakespeare").eval()
    torch.manual_seed(0)
    for name, model in (("shipped", shipped), ("untrained", GPT(shipped.config).eval())):
        t = measure(model)
        print(f"{name}: val {t.val_loss:.3f} nats, unigram {t.unigram_loss:.3f}, log V {math.log(model.config.vocab_size):.2f}")
        for key, values in summary(t).items():
            print(f"  {key:16s}", " ".join(f"{x:.3g}" for x in values))
        corpus = t.held_out[-64 * CONTEXT :]
        result = minigpt.evaluate_lens(model, corpus, window=CONTEXT, decoders=["logit", "norm_only", "last_blocks"])
        for decoder in ("logit", "norm_only", "last_blocks"):
            print(f"  corpus kl (bits) {decoder:12s}", " ".join(f"{x:.3g}" for x in result.metric("kl", decoder)))
        print("  corpus top1", result.metric("top1_agreement"), "depth_hist", result.metric("depth_hist"))


if __name__ == "__main__":
    main()
