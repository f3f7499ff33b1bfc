"""The tuned lens and the input probe learn, on the suite's trained model (conftest's `trained_run`).

The model: `minigpt.train` on the first 300k characters of tinyshakespeare, 3 blocks, n_embd 64,
context 64 (conftest.TRAINED). For the fits its vocabulary is cut to the 2047 GPT-2 tokens most
frequent in that text plus one id for all the others (the mean of their embeddings), so that a lens
step costs milliseconds, not seconds: with tied embeddings the cut model is the trained one, its
output renormalised over those rows. The lenses train with the pinned call
`TunedLens.fit(model, ids, steps=60, tokens_per_step=2048, seed=0)` on the run's training split, and
are evaluated on its held-out split (its first 8192 tokens).

    python tests/test_tuned_trained.py --seeds 0 1 2     # the per-row tables for several fit seeds

Margins: numbers in the test bodies (fit seeds 0, 1, 2).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest, when run as a script

import minigpt  # noqa: E402
from minigpt import GPT, GPTConfig, TunedLens  # noqa: E402
from minigpt.tuned_train import TunedEvaluation  # noqa: E402

from conftest import SHAKESPEARE, TRAINED, TRAINED_CHARS, require  # noqa: E402

pytestmark = pytest.mark.slow  # the session's training run, then two lens fits

VOCAB = 2048
EVAL_TOKENS = 8192


@dataclass
class Trained:
    model: GPT  # the trained model, its vocabulary cut to VOCAB ids
    train_ids: torch.Tensor  # compact ids
    val_ids: torch.Tensor
    val_loss: float  # of the cut model, on its held-out windows
    unigram_loss: float  # the same targets under the training split's compact-id frequencies


def cut_vocabulary(run: minigpt.TrainResult) -> Trained:
    """The run's model and splits with the vocabulary cut to the VOCAB - 1 most frequent training
    tokens and one id (VOCAB - 1) for all the rest."""
    full = GPT.from_pretrained(run.out_dir).eval()
    tok = minigpt.load_tokenizer(run.out_dir)
    ids = torch.tensor(tok.encode_ordinary(require(SHAKESPEARE).read_text(encoding="utf-8")[:TRAINED_CHARS]))
    n_val = int(len(ids) * run.settings.val_fraction)  # minigpt.train's split
    counts = torch.bincount(ids[:-n_val], minlength=full.config.vocab_size)
    order = counts.argsort(descending=True, stable=True)
    keep, rest = order[: VOCAB - 1], order[VOCAB - 1 :]
    compact = torch.full((full.config.vocab_size,), VOCAB - 1, dtype=torch.long)
    compact[keep] = torch.arange(VOCAB - 1)
    config = GPTConfig(**{**vars(full.config), "vocab_size": VOCAB})
    model = GPT(config).eval()
    state = full.state_dict()
    wte = state["wte.weight"]
    weights = counts[rest].double() + 1e-9
    other = (wte[rest].double() * weights[:, None]).sum(0) / weights.sum()
    state["wte.weight"] = torch.cat([wte[keep], other[None].float()])
    model.load_state_dict(state)
    ids = compact[ids]
    train_ids, val_ids = ids[:-n_val], ids[-n_val:]
    T = config.n_positions
    val = val_ids[: (len(val_ids) - 1) // T * T + 1].unfold(0, T + 1, T)  # (N, T + 1)
    with torch.no_grad():
        logits = torch.cat([model(b[:, :-1]).logits for b in val.split(32)])
    val_loss = F.cross_entropy(logits.flatten(0, 1), val[:, 1:].flatten()).item()
    unigram = torch.bincount(train_ids, minlength=VOCAB).double() + 1
    unigram_loss = -(unigram / unigram.sum()).log()[val[:, 1:]].mean().item()
    return Trained(model, train_ids, val_ids, val_loss, unigram_loss)


def fit_and_evaluate(t: Trained, kind: str, seed: int = 0) -> tuple[TunedEvaluation, float]:
    start = time.perf_counter()
    lens, _ = TunedLens.fit(t.model, t.train_ids, kind=kind, steps=60, tokens_per_step=2048, seed=seed)
    seconds = time.perf_counter() - start
    return lens.evaluate(t.model, t.val_ids[:EVAL_TOKENS]), seconds


@pytest.fixture(scope="module")
def trained(trained_run: minigpt.TrainResult) -> Trained:
    return cut_vocabulary(trained_run)


def test_training_worked(trained: Trained) -> None:
    # Seed 0: val 4.86 nats (unigram 5.63, log V 7.62).
    assert trained.val_loss < math.log(VOCAB) - 2.0, trained.val_loss
    assert trained.val_loss < trained.unigram_loss - 0.5, (trained.val_loss, trained.unigram_loss)


def test_tuned_lens_beats_the_logit_lens_at_every_row(trained: Trained) -> None:
    # Fit seeds 0-2, KL in bits (logit -> tuned): embed 4.23 -> 0.327-0.329, h.0 1.02 -> 0.035, h.1 0.40 -> 0.008.
    result, seconds = fit_and_evaluate(trained, "tuned")
    print(f"fit: {seconds:.1f} s\n{result.table()}")
    logit, tuned = result.metrics["logit"]["kl"], result.metrics["tuned"]["kl"]
    for row in range(TRAINED["n_layer"]):
        assert tuned[row] < 0.5 * logit[row], (result.labels[row], logit, tuned)
    assert logit[-1] == tuned[-1] == 0.0  # the top row is the model's output under both
    # The tuned lens also predicts the next token at least as well, row by row.
    ce_logit, ce_tuned = result.metrics["logit"]["ce"], result.metrics["tuned"]["ce"]
    assert all(b < a for a, b in zip(ce_logit[:-1], ce_tuned[:-1])), (ce_logit, ce_tuned)


def test_probe_names_the_input_better_than_the_logit_lens(trained: Trained) -> None:
    # Fit seeds 0-2, top-1 input (logit -> probe): embed 0.32 -> 0.44-0.45, h.0 0.21 -> 0.31, h.1 0.13 -> 0.31,
    # h.2 0.16 -> 0.31; CE input (bits) 5.6 -> 4.8 at embed, 8.3-8.9 -> 5.9-6.0 above.
    result, seconds = fit_and_evaluate(trained, "probe")
    print(f"fit: {seconds:.1f} s\n{result.table()}")
    logit, probe = result.metrics["logit"]["top1_input"], result.metrics["probe"]["top1_input"]
    assert all(b > a + 0.03 for a, b in zip(logit, probe)), (logit, probe)
    ce_logit, ce_probe = result.metrics["logit"]["ce_input"], result.metrics["probe"]["ce_input"]
    assert all(b < a for a, b in zip(ce_logit, ce_probe)), (ce_logit, ce_probe)


def main() -> None:
    parser = argparse.ArgumentParser(description="Per-row tables of the tuned lens and the probe for several fit seeds.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    start = time.perf_counter()
    text = Path(tempfile.mkdtemp()) / "shakespeare-300k.txt"
    text.write_text(require(SHAKESPEARE).read_text(encoding="utf-8")[:TRAINED_CHARS], encoding="utf-8")
    run = minigpt.train(text, text.with_name("model"), **TRAINED, progress=False)
    t = cut_vocabulary(run)
    print(f"model: {time.perf_counter() - start:.1f} s to train, val {run.val_loss:.3f} nats "
          f"(unigram {run.unigram_loss:.3f}); cut to {VOCAB} ids: val {t.val_loss:.3f} (unigram {t.unigram_loss:.3f})")
    for seed in args.seeds:
        for kind in ("tuned", "probe"):
            result, seconds = fit_and_evaluate(t, kind, seed)
            print(f"\n{kind}, fit seed {seed}: {seconds:.1f} s to fit\n{result.table()}")


if __name__ == "__main__":
    main()
