"""The README's figures: the logit lens on the small Shakespeare model that ships with minigpt.

The text comes from the held-out tenth of tinyshakespeare (the model never trained on it). The
figures show the last 16 positions in four views (logits, ranks, KL(final ‖ row), KL(input ‖ row)),
the direct logit attribution of the top-1 after "KING RICHARD III:\nMy lord, I" (attribution.png), and
the lens while the model writes 16 tokens after "ROMEO:\nBut soft" (generation.png);
`readme_figures.json` holds the numbers behind them, so that CI can check the committed figures
against a fresh run without comparing image bytes (those depend on the matplotlib and freetype versions).

    python examples/readme_figures.py --out examples/figures    # rewrites the committed figures
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import minigpt
from minigpt.plot import plot_generation, plot_lens
from minigpt.plot_attribution import plot_attribution

TEXT = """GRUMIO:
Lend thine ear.

CURTIS:
Here.

GRUMIO:
There.

CURTIS:
This is to feel a tale, not to hear a tale."""
SHOWN = 16  # the last positions, as in the post's figures
ATTRIBUTION_TEXT = "KING RICHARD III:\nMy lord, I"  # the README's attribution section explains its last position
GENERATION_PROMPT = "ROMEO:\nBut soft"  # the lens during generation: 16 sampled tokens, seeded
VIEWS = ("logits", "ranks", "kl", "input_kl")


def main() -> None:
    parser = argparse.ArgumentParser(description="Render the README's figures from the shipped Shakespeare model.")
    parser.add_argument("--model", default="shakespeare", help="name or path of the checkpoint (default: shakespeare)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for the PNGs and the JSON (default: out/)")
    args = parser.parse_args()

    model = minigpt.GPT.from_pretrained(args.model)
    tok = minigpt.load_tokenizer(args.model)
    lens = minigpt.logit_lens(model, TEXT, tokenizer=tok)[-SHOWN:]
    args.out.mkdir(parents=True, exist_ok=True)
    for view in VIEWS:
        path = args.out / f"lens_{view}.png"
        plot_lens(lens, view).savefig(path, dpi=110, bbox_inches="tight")
        print(path)

    att = minigpt.attribute(model, ATTRIBUTION_TEXT, tokenizer=tok)  # the final top-1, by head
    path = args.out / "attribution.png"
    plot_attribution(att, k=12).savefig(path, dpi=110, bbox_inches="tight")
    print(path)

    g = torch.Generator().manual_seed(0)
    run = minigpt.generate_lens(model, GENERATION_PROMPT, 16, tokenizer=tok, temperature=0.8, top_k=50, generator=g)
    path = args.out / "generation.png"
    plot_generation(run).savefig(path, dpi=110, bbox_inches="tight")
    print(path)

    # The numbers behind the figures, for CI (not the sampled tokens: a near-tie may sample otherwise on another CPU): top-1 ids (with the top-2 gap, to tell near-ties), ranks, KLs.
    numbers = {
        "labels": lens.labels, "tokens": lens.tokens, "token_ids": lens.token_ids.tolist(),
        "top1": lens.top_ids[:, :, 0].tolist(), "top_gap": (lens.top_logits[:, :, 0] - lens.top_logits[:, :, 1]).tolist(),
        "rank_final": lens.rank_final.tolist(), "kl_final": lens.kl_final.tolist(), "kl_input": lens.kl_input.tolist(),
        "attribution_labels": att.labels, "attribution": att.values[:, -1].tolist(), "attribution_total": float(att.total[-1]),
    }  # fmt: skip
    path = args.out / "readme_figures.json"
    path.write_text(json.dumps(numbers, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(path)


if __name__ == "__main__":
    main()
