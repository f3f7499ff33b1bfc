"""Extreme repetition: when does the model notice that the text repeats itself?

The plasma sentence, repeated four times. From the second copy on, every next token can be
copied from the copy before; the logit-lens post observes that this shows up only in the upper
half of the network. The figures show the start of the second copy (where the repetition can
first be noticed) and of the fourth, in the ranks and KL views:
repetition_{ranks,kl}_copy{2,4}.png. The script also prints, per copy, how deep in the network
the model's final guess becomes the lens's top-1.

    python examples/repetition.py --model gpt2-xl --out out/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import minigpt
from minigpt.plot import plot_lens

SENTENCE = "Sometimes, when people say plasma, they mean a state of matter. Other times, when people say plasma."
COPIES = 4


def main() -> None:
    parser = argparse.ArgumentParser(description="The logit lens on a text that repeats itself.")
    parser.add_argument("--model", default="shakespeare",
                        help="name or path of the checkpoint (default: the shipped shakespeare model, offline; the post used gpt2-xl)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for the PNGs (default: out/)")
    args = parser.parse_args()

    model = minigpt.GPT.from_pretrained(args.model)
    tok = minigpt.load_tokenizer(args.model)
    text = " ".join([SENTENCE] * COPIES)
    lens = minigpt.logit_lens(model, text, tokenizer=tok)
    # Where each copy starts (copies are joined by a space, where the tokenizer always splits).
    starts = [len(tok.encode_ordinary(" ".join([SENTENCE] * k))) for k in range(COPIES)]

    layers = 2 if model.config.n_layer > 24 else None
    args.out.mkdir(parents=True, exist_ok=True)
    for copy in (2, 4):
        start = starts[copy - 1]
        window = lens[start - 3 : start + 13]  # the end of the copy before, then the new copy
        for metric in ("ranks", "kl"):
            fig = plot_lens(window, metric, layers=layers, title=f"copy {copy} of the repeated text: {metric}")
            path = args.out / f"repetition_{metric}_copy{copy}.png"
            fig.savefig(path, dpi=120, bbox_inches="tight")
            print(path)

    # Per copy: the mean depth (0 = embed, 1 = last block) from which the final guess stays the top-1.
    R = len(lens.labels)
    settled = np.array([next(r for r in range(R) if (lens.rank_final[r:, t] == 1).all()) for t in range(len(lens))])
    for copy, (lo, hi) in enumerate(zip(starts, starts[1:] + [len(lens)]), start=1):
        print(f"copy {copy}: the final guess becomes top-1 at depth {settled[lo:hi].mean() / (R - 1):.2f} on average")


if __name__ == "__main__":
    main()
