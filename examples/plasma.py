"""Copying a rare token: "plasma", from the logit-lens post.

    Sometimes, when people say plasma, they mean a state of matter. Other times, when people say plasma

The model predicts the second " plasma" correctly, but the lens shows it only in the last
layers (the post's "rare token" section): plasma_logits.png and plasma_ranks.png show the last
few tokens. The post's addendum then asks whether the *first* " plasma" is kept around from the
input: plasma_first_input_ranks.png (the rank of the input token in each layer) and
plasma_first_input_kl.png (KL(input ‖ layer)) show the stretch around it.

    python examples/plasma.py --model gpt2-xl --out out/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import minigpt
from minigpt.plot import plot_lens

TEXT = "Sometimes, when people say plasma, they mean a state of matter. Other times, when people say plasma"
LAST = 8  # the last few tokens


def main() -> None:
    parser = argparse.ArgumentParser(description='The logit lens on a copied rare token ("plasma").')
    parser.add_argument("--model", default="shakespeare",
                        help="name or path of the checkpoint (default: the shipped shakespeare model, offline; the post used gpt2-xl)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for the PNGs (default: out/)")
    args = parser.parse_args()

    model = minigpt.GPT.from_pretrained(args.model)
    tok = minigpt.load_tokenizer(args.model)
    lens = minigpt.logit_lens(model, TEXT, tokenizer=tok)  # every position: the text is short
    first = len(tok.encode_ordinary(TEXT[: TEXT.index(" plasma")]))  # the position of the first " plasma"

    layers = 2 if model.config.n_layer > 24 else None  # every other layer of the big models, as the post does
    figures = {
        "plasma_logits": plot_lens(lens[-LAST:], "logits", layers=layers),
        "plasma_ranks": plot_lens(lens[-LAST:], "ranks", layers=layers),
        "plasma_first_input_ranks": plot_lens(lens[max(first - 4, 0) : first + 5], "input_ranks", layers=layers),
        "plasma_first_input_kl": plot_lens(lens[max(first - 4, 0) : first + 5], "input_kl", layers=layers),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        path = args.out / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        print(path)

    # In numbers: in which row does the model's final guess at " say" (the second one) become the top-1?
    say = len(lens) - 2
    ranks = lens.rank_final[:, say]
    first_top = next(lens.labels[r] for r in range(len(ranks)) if (ranks[r:] == 1).all())
    print(f"after the second ' say', the final guess {lens.text(lens.final_ids[say])!r} is the top-1 from row {first_top} on")


if __name__ == "__main__":
    main()
