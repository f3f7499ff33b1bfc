"""The logit lens on a GPT-2 trained here, briefly, on tinyshakespeare.

The rest of the suite checks that the lens computes the right numbers on random weights.
This file checks that those numbers show, on a real (if small) trained model, the pattern the
logit-lens post describes for gpt2-xl:

- KL(final ‖ row) makes one big jump after `embed`, then falls smoothly to 0 at the last block;
- the model's final top-1 climbs in rank with depth, and so does top-1 accuracy on the true next token;
- the jump away from the input, KL(input ‖ h.0), is smaller than the jump towards the output,
  KL(final ‖ embed) (the post's addendum).

The model has 4 blocks and a vocabulary cut to the GPT-2 ids that occur in the corpus (about 11k),
and trains for a fixed number of steps with a fixed seed, once per module (about a minute on 2 CPU
cores). A first test checks that training worked, so the lens tests are about a real model: on an
untrained one they fail. Margins were chosen from several seeds (numbers in the test bodies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import minigpt
from minigpt import GPT, GPTConfig

from conftest import SHAKESPEARE, TOKENIZER_DIR, require

SEED = 0
STEPS = 300
BATCH = 16
CONTEXT = 64
LR = 3e-3
N_LAYER = 4
LENS_WINDOWS = 4  # the last 4 windows of the corpus, 256 positions in all
VAL_WINDOWS = 32


@dataclass
class Trained:
    model: GPT
    val_loss: float
    unigram_loss: float
    lens: dict[str, np.ndarray]  # the lens's fields, positions of all windows side by side
    labels: list[str]
    plot_result: minigpt.LensResult  # one window's result, for the figure
    held_out: torch.Tensor  # the held-out tenth of the corpus (compact ids)


def corpus() -> tuple[torch.Tensor, int]:
    """tinyshakespeare as GPT-2 tokens, remapped to a compact vocabulary of the ids that occur."""
    tok = minigpt.load_tokenizer(require(TOKENIZER_DIR))
    text = require(SHAKESPEARE).read_text(encoding="utf-8")
    ids = torch.tensor(tok.encode_ordinary(text))
    used, compact = torch.unique(ids, return_inverse=True)
    return compact, len(used)


def train(seed: int = SEED, steps: int = STEPS, n_layer: int = N_LAYER) -> Trained:
    ids, V = corpus()
    n_val = len(ids) // 10
    train_ids, val_ids = ids[:-n_val], ids[-n_val:]

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    config = GPTConfig(vocab_size=V, n_positions=CONTEXT, n_embd=128, n_head=4, n_layer=n_layer)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 10)
    # Linear warm-up over the first tenth, then cosine decay to 0.
    schedule = lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * i / max(1, steps)))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    offsets = torch.arange(CONTEXT + 1)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(train_ids) - CONTEXT - 1, (BATCH, 1), generator=g)
        chunk = train_ids[starts + offsets]  # (B, T + 1)
        logits = model(chunk[:, :-1]).logits  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, V), chunk[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()

    # Validation: the first VAL_WINDOWS non-overlapping windows of the held-out tenth.
    val = val_ids[: VAL_WINDOWS * (CONTEXT + 1)].view(VAL_WINDOWS, CONTEXT + 1)
    with torch.no_grad():
        logits = model(val[:, :-1]).logits
    val_loss = F.cross_entropy(logits.reshape(-1, V), val[:, 1:].reshape(-1)).item()
    # Baseline: the training set's unigram frequencies (add-one smoothed), on the same targets.
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
def trained() -> Trained:
    return train()


@pytest.fixture(scope="module")
def stats(trained: Trained) -> dict[str, np.ndarray]:
    return summary(trained)


# Margins: seeds 0-5 at STEPS gave val 4.99-5.24 nats (unigram 6.27, log V 9.37); the lens numbers
# are in each test. An untrained model (STEPS = 0) fails every test below up to the figure's.


def test_training_worked(trained: Trained) -> None:
    V = trained.model.config.vocab_size
    assert trained.val_loss < math.log(V) - 3.0, (trained.val_loss, math.log(V))
    assert trained.val_loss < trained.unigram_loss - 0.75, (trained.val_loss, trained.unigram_loss)


def test_rows_are_embed_then_blocks(trained: Trained) -> None:
    assert trained.labels == ["embed"] + [f"h.{l}" for l in range(N_LAYER)]


def test_kl_big_jump_after_embed(stats: dict[str, np.ndarray]) -> None:
    # Seeds 0-5: KL(final || embed) 7.4-8.0 nats, 7.5-29x KL(final || h.0); the embed -> h.0 drop
    # is 10-42x any later one. Untrained: 0.04 nats, 1.5x and 1.2x.
    kl = stats["kl_final"]
    drops = kl[:-1] - kl[1:]  # drops[0]: embed -> h.0
    assert kl[0] > 4.0, kl
    assert kl[0] > 4 * kl[1], kl
    assert drops[0] > 5 * drops[1:].max(), kl


def test_kl_converges_smoothly_to_zero(stats: dict[str, np.ndarray]) -> None:
    # Seeds 0-5: strictly decreasing, e.g. 8.0, 0.68, 0.18, 0.04, 0. The first check rules out
    # a near-uniform (untrained) model, whose rows are all close to each other anyway.
    kl = stats["kl_final"]
    assert kl[0] > 4.0, kl
    assert np.all(kl[1:] <= kl[:-1] * 1.02 + 1e-3), kl
    assert abs(kl[-1]) < 1e-4, kl  # the last row is the final distribution itself


def test_rank_of_final_top1_improves_with_depth(stats: dict[str, np.ndarray]) -> None:
    # Median rank, seeds 0-5: embed 14.5-78.5, h.0 1-2, then 1. Untrained: 2089, 264, 34, 6, 1.
    rank = stats["rank_final"]
    assert rank[0] >= 10, rank
    assert rank[1] <= 3, rank
    assert np.all(np.diff(rank) <= 0), rank
    assert rank[-1] == 1, rank


def test_jump_from_input_smaller_than_jump_to_output(stats: dict[str, np.ndarray]) -> None:
    # The post's addendum. Seeds 0-5: KL(input || h.0) 4.3-6.4 nats, 0.58-0.82 of KL(final || embed).
    # Untrained: 0.03 nats, no jump at all.
    jump_from_input, jump_to_output = stats["kl_input"][1], stats["kl_final"][0]
    assert 1.0 < jump_from_input < jump_to_output, (stats["kl_input"], stats["kl_final"])


def test_top1_accuracy_improves_with_depth(stats: dict[str, np.ndarray]) -> None:
    # Seeds 0-5: embed 0.03-0.05, last row 0.16-0.18; at most one position lost between rows.
    # Untrained: 0.02 falling to 0.
    acc = stats["top1_acc"]
    assert acc[-1] > 2 * acc[0] and acc[-1] > acc[0] + 0.05, acc
    assert np.all(acc[1:] >= acc[:-1] - 0.02), acc


def test_corpus_kl_falls_monotonically_with_depth(trained: Trained) -> None:
    """evaluate_lens over 64 held-out windows: KL(final ‖ row) in bits per token falls at every
    block and is exactly 0 at the last row; the other decoders tell the same story, less well.
    Seed 0 gave (bits): logit 11.8, 1.08, 0.29, 0.07, 0; norm_only 11.2, 1.0, 0.34, 0.18, 0.18;
    last_blocks (k = 1) 5.1, 0.46, 0.06, 0, 0.
    Untrained (STEPS = 0) the first check fails: KL(final ‖ embed) is 0.06 bits."""
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
