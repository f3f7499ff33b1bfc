"""Four lenses side by side on the shipped `shakespeare` model: the logit lens, a tuned lens and a J-lens
fitted here by minigpt, and the patchscope (the paper's token-identity prompt).

Both learned lenses are fitted on the first 90% of tinyshakespeare and every lens is evaluated on
held-out text from the last 10%. The fits are kept small so that CI runs this in about two minutes on two
cores; more steps and prompts move the tuned and J-lens rows a little, not the picture.

    python examples/four_lenses.py [--model shakespeare] [--out DIR]

It prints a Markdown table, per row and lens: KL(final ‖ row), cross-entropy against the next token
(bits per token), top-1 agreement with the model, the patchscope paper's prec@1 (the same fraction under its
name) and surprisal (-log2 p_final of the row's top-1).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import minigpt
from minigpt import JacobianLens, TunedLens
from minigpt.lens import Patchscope

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
EVAL_TOKENS = 2048  # held-out tokens evaluated
TUNED = dict(steps=12, tokens_per_step=1024, window=256, seed=0)
JLENS = dict(n_prompts=4, seq_len=128, seed=0)
COLUMNS = [("kl", "KL (bits)"), ("ce", "CE (bits)"), ("top1_agreement", "top-1 agreement"), ("prec@1", "prec@1"),
           ("surprisal", "surprisal (bits)")]  # fmt: skip


def table(result: minigpt.CorpusResult) -> str:
    head = "| row | lens | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (2 + len(COLUMNS))]
    for r, label in enumerate(result.labels):
        for lens, ms in result.metrics.items():
            cells = [f"{ms[m][r]:.3f}" for m, _ in COLUMNS]
            lines.append(f"| {label} | {lens} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shakespeare", help="a name or path (default: the shipped model)")
    parser.add_argument("--out", type=Path, help="a folder for four_lenses.md (the table) and four_lenses.png (the curves)")
    args = parser.parse_args()
    model = minigpt.GPT.from_pretrained(args.model)
    tok = minigpt.load_tokenizer(args.model)
    text = CORPUS.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    train, held_out = text[:cut], text[cut:]

    start = time.perf_counter()
    tuned, _ = TunedLens.fit(model, train, tokenizer=tok, progress=False, **TUNED)
    t_tuned = time.perf_counter() - start
    start = time.perf_counter()
    jlens = JacobianLens.fit(model, train, tokenizer=tok, progress=False, **JLENS)
    t_jlens = time.perf_counter() - start
    scope = Patchscope(tokenizer=tok)
    start = time.perf_counter()
    result = minigpt.evaluate_lens(model, held_out, tokenizer=tok, decoders=["logit", tuned, jlens, scope],
                                   window=256, max_tokens=EVAL_TOKENS, progress=False)  # fmt: skip
    t_eval = time.perf_counter() - start

    note = (f"Model `{args.model}`, {result.n_tokens} held-out tokens of tinyshakespeare (windows of "
            f"{result.window}). Tuned lens: {TUNED['steps']} steps x {TUNED['tokens_per_step']} tokens "
            f"({t_tuned:.0f} s); J-lens: {jlens.n_prompts} prompts of {JLENS['seq_len']} tokens ({t_jlens:.0f} s); "
            f"evaluation {t_eval:.0f} s. The J-lens has no matrix for embed (decoded as the logit lens); every "
            "lens's top row is the model's output.")  # fmt: skip
    out = f"{note}\n\n{table(result)}\n"
    print(out)
    if args.out:
        from minigpt.plot import plot_curves

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "four_lenses.md").write_text(out, encoding="utf-8")
        plot_curves(result, metrics=("kl", "ce", "prec@1", "surprisal")).savefig(args.out / "four_lenses.png", dpi=110)
        print(f"wrote {args.out / 'four_lenses.md'} and {args.out / 'four_lenses.png'}")


if __name__ == "__main__":
    main()
