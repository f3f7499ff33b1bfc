"""The logit lens on the GPT-3 abstract: the main figures of the logit-lens post.

GPT-2 reads the abstract's opening; the figures show the stretch "Specifically, we train GPT-3,
an autoregressive language model with 175 billion parameters," as two consecutive windows of
10 tokens, in three views: the top-1 logits, the rank of the model's final top-1 token, and
KL(final ‖ layer). Six PNGs: gpt3_abstract_{logits,ranks,kl}_{1,2}.png.

    python examples/gpt3_abstract.py --model gpt2-xl --out out/   # the post used gpt2-xl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import minigpt
from minigpt.plot import plot_lens

# Brown et al. 2020, "Language Models are Few-Shot Learners" (arXiv:2005.14165), the abstract's opening.
ABSTRACT = (
    "Recent work has demonstrated substantial gains on many NLP tasks and benchmarks by pre-training on a "
    "large corpus of text followed by fine-tuning on a specific task. While typically task-agnostic in "
    "architecture, this method still requires task-specific fine-tuning datasets of thousands or tens of "
    "thousands of examples. By contrast, humans can generally perform a new language task from only a few "
    "examples or from simple instructions - something which current NLP systems still largely struggle to do. "
    "Here we show that scaling up language models greatly improves task-agnostic, few-shot performance, "
    "sometimes even reaching competitiveness with prior state-of-the-art fine-tuning approaches. Specifically, "
    "we train GPT-3, an autoregressive language model with 175 billion parameters, 10x more than any previous "
    "non-sparse language model, and test its performance in the few-shot setting."
)
STRETCH = " Specifically, we train GPT-3, an autoregressive language model with 175 billion parameters,"
WINDOW = 10  # tokens per figure, as in the post


def main() -> None:
    parser = argparse.ArgumentParser(description="The logit lens on the GPT-3 abstract (the post's main figures).")
    parser.add_argument("--model", default="shakespeare",
                        help="name or path of the checkpoint (default: the shipped shakespeare model, offline; the post used gpt2-xl)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for the PNGs (default: out/)")
    args = parser.parse_args()

    model = minigpt.GPT.from_pretrained(args.model)
    tok = minigpt.load_tokenizer(args.model)
    ids = tok.encode_ordinary(ABSTRACT)
    # Where the stretch starts: the number of tokens before it. The split falls before a space,
    # where GPT-2's tokenizer always splits, so the prefix tokenizes as it does in the whole text.
    start = len(tok.encode_ordinary(ABSTRACT[: ABSTRACT.index(STRETCH)]))
    end = start + len(tok.encode_ordinary(STRETCH))  # 20 tokens

    # The model reads the whole abstract; only the plotted positions are decoded.
    lens = minigpt.logit_lens(model, ids, tokenizer=tok, positions=slice(start, end))

    # The post skips every other layer of gpt2-xl, and hides the embed row in the logits and
    # ranks views (it looks like nothing else and distracts the eye); the KL view keeps it.
    stride = 2 if model.config.n_layer > 24 else 1
    blocks = [label for label in lens.labels if label.startswith("h.")]
    shown = [b for i, b in enumerate(blocks) if i % stride == 0 or i == len(blocks) - 1]
    rows = {"logits": shown, "ranks": shown, "kl": ["embed", *shown]}

    args.out.mkdir(parents=True, exist_ok=True)
    for metric, layers in rows.items():
        for i in range(2):
            window = lens[i * WINDOW : (i + 1) * WINDOW]
            fig = plot_lens(window, metric, layers=layers)
            path = args.out / f"gpt3_abstract_{metric}_{i + 1}.png"
            fig.savefig(path, dpi=120, bbox_inches="tight")
            print(path)


if __name__ == "__main__":
    main()
